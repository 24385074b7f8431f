"""The `infosam` command line. Each sub-command lives in its own module with `register(subparsers)`.

Other installed packages add sub-commands through the ``infosam.commands`` entry-point group (a
``register(subparsers)`` function each): that is how the app's ``infosam app`` joins without the core knowing
the app.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

# module path -> registers one sub-command
SUBCOMMAND_MODULES = (
    "infosam_core.cli.predict_cmd",
    "infosam_core.cli.pretrain_cmd",
    "infosam_core.cli.train_cmd",
    "infosam_core.cli.eval_cmd",
    "infosam_core.cli.segment_cmd",
    "infosam_core.cli.embed_cmd",
    "infosam_core.cli.info_cmd",
    "infosam_core.cli.experiment_cmd",
    "infosam_core.cli.export_model_cmd",
    "infosam_core.cli.import_cmd",
    "infosam_core.cli.export_cmd",
)
ENTRY_POINT_GROUP = "infosam.commands"


class InterruptToStop:
    """Ctrl-C for long commands: the first one sets ``stop`` (the work checks ``stop.is_set()`` at its next safe
    point and ends cleanly, printing ``message`` to stderr when given); a second one aborts with
    KeyboardInterrupt. Installed only on the main thread; :meth:`restore` puts the previous handler back."""

    def __init__(self, message: str | None) -> None:
        self.stop = threading.Event()
        self.message = message
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: a registered model type, or ``auto`` (the default): the type of ``--checkpoint``'s file, read
    from its tensor names and shapes, or the bundled tiny model without a checkpoint. :func:`main` makes
    ``auto`` concrete before the command runs, so commands see a registered type."""
    from infosam_core.models.model_types import AUTO, MODEL_TYPES  # names only: no torch at parse time

    parser.add_argument(
        "--model",
        choices=(AUTO, *MODEL_TYPES),
        default=AUTO,
        metavar="TYPE",
        help=f"model type: {AUTO} (default: the type of --checkpoint's file, or the bundled tiny model without "
        f"one), {', '.join(MODEL_TYPES)}",
    )


def _resolve_model(args: argparse.Namespace) -> None:
    """``args.model == "auto"`` -> the checkpoint's model type (or tiny); CheckpointError becomes a CLIError."""
    from infosam_core.models.model_types import AUTO, DEFAULT_MODEL_TYPE

    if getattr(args, "model", None) != AUTO:
        return
    if getattr(args, "checkpoint", None) is None:  # no file to read: decided without importing torch
        args.model = DEFAULT_MODEL_TYPE
        return
    from infosam_core.models.checkpoints import CheckpointError
    from infosam_core.models.registry import resolve_model_type

    try:
        args.model = resolve_model_type(AUTO, getattr(args, "checkpoint", None))
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None


_DEFERRED = "_infosam_deferred_arguments"


def defer_arguments(parser: argparse.ArgumentParser, add_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add a sub-command's arguments only when that sub-command is chosen (parsed or its ``--help`` shown).

    For arguments whose choices or help come from a registry that imports torch (PEFT methods, distillers,
    metrics): ``infosam --help`` and every other command then never import it. :func:`complete_arguments` adds
    them (the parser calls it itself)."""
    setattr(parser, _DEFERRED, [*getattr(parser, _DEFERRED, []), add_arguments])


def complete_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments :func:`defer_arguments` put off (once); returns ``parser``."""
    pending = getattr(parser, _DEFERRED, [])
    setattr(parser, _DEFERRED, [])
    for add_arguments in pending:
        add_arguments(parser)
    return parser


class _SubcommandsAction(argparse._SubParsersAction):
    """argparse's sub-command action that completes the chosen sub-command's deferred arguments first."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        chosen = self._name_parser_map.get(values[0]) if values else None
        if chosen is not None:
            complete_arguments(chosen)
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The ``infosam`` parser. Building it and refusing bad arguments imports no torch (each command imports
    what it needs when it runs; :func:`defer_arguments` for registry-backed choices)."""
    parser = argparse.ArgumentParser(prog="infosam", description="Segment with SAM and adapt it to your images.")
    parser.register("action", "parsers", _SubcommandsAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError:  # an optional part that is not (fully) installed: its command is left out
            continue
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        _resolve_model(args)
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"infosam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
