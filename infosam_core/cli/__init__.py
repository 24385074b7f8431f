"""The `infosam` command line. Each sub-command lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# module path -> registers one sub-command. `infosam_app.cli` adds `app` when the GUI is installed.
SUBCOMMAND_MODULES = (
    "infosam_core.cli.predict_cmd",
    "infosam_core.cli.pretrain_cmd",
    "infosam_core.cli.train_cmd",
    "infosam_core.cli.eval_cmd",
    "infosam_app.cli",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infosam", description="Segment with SAM and adapt it to your images.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name.startswith(exc.name) or exc.name in {"napari", "qtpy", "PySide6"}):
                continue  # optional part not installed
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"infosam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
