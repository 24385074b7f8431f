"""What several sub-commands share: the ``--device`` argument and its check, the ``--out`` folder check, and
``KEY=VALUE`` option parsing. Every command imports these from here (none from another command's module)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from infosam_core.cli import CLIError

DEVICE_DEFAULT = "auto"  # CUDA when present, else the CPU: the same for every command that takes --device


def add_device_argument(parser: argparse.ArgumentParser, extra_help: str = "") -> None:
    """``--device`` with the one default of every command (:data:`DEVICE_DEFAULT`); ``extra_help`` is appended
    to the help text."""
    parser.add_argument(
        "--device",
        default=DEVICE_DEFAULT,
        help=f"{DEVICE_DEFAULT} (default: CUDA when available, else the CPU), cpu, cuda, cuda:1, ...{extra_help}",
    )


#: ``--precision`` choices: ``infosam_core.inference.precision.PRECISIONS`` (not imported here: no torch at parse time)
PRECISION_CHOICES = ("auto", "float32", "bfloat16", "int8")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of the image encoder, the same in every command that predicts (default ``auto``)."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="image encoder precision: auto (default: bfloat16 where the hardware multiplies it natively -- CUDA "
        "with bf16, a CPU with AMX -- else float32), float32, bfloat16, int8 (CPU: dynamically quantized linear "
        "layers)",
    )


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision the device cannot run (int8 on a GPU), before any data or model is loaded."""
    if precision in ("auto", "float32", "bfloat16"):  # every device runs these: no torch import to say so
        return
    import torch

    from infosam_core.inference.precision import resolve_precision
    from infosam_core.models.devices import resolve_device

    try:
        resolve_precision(precision, torch.device(resolve_device(device)))
    except ValueError as exc:
        raise CLIError(f"--precision {precision}: {exc}") from None


def add_embeddings_argument(parser: argparse.ArgumentParser) -> None:
    """``--embeddings STORE``: precomputed embeddings (``infosam embed``) read before any encoder pass."""
    parser.add_argument(
        "--embeddings",
        type=Path,
        metavar="STORE.zarr",
        help="precomputed embeddings made by `infosam embed` (a stored image runs no encoder pass)",
    )


def open_embedding_store(path: Path | None) -> Any:
    """The :class:`~infosam_core.inference.embedding_store.EmbeddingStore` at ``path`` for reading (None: none);
    CLIError when it is not one."""
    if path is None:
        return None
    from infosam_core.inference.embedding_store import EmbeddingStore, EmbeddingStoreError

    try:
        return EmbeddingStore(path)
    except EmbeddingStoreError as exc:
        raise CLIError(f"--embeddings {exc}") from None


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any data or model is loaded."""
    if device == "auto" or device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CLIError(f"--device {device}: Apple MPS is not available here; use --device cpu (or auto)")
    else:
        raise CLIError(f"--device {device}: unsupported; use auto, cpu, cuda or cuda:N")


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder this process can write, checked before any long work starts."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: is a file; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None


def parse_option(text: str, flag: str = "--peft-option", example: str = "rank=8") -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(key, value)``; the value is read as JSON when it is (numbers, true/false/null, lists),
    else kept as text. CLIError naming ``flag`` and an ``example`` when there is no ``=`` or no key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CLIError(f"{flag} {text!r}: expected KEY=VALUE, e.g. {example}")
    raw = value.strip()
    try:
        parsed = json.loads(raw.lower() if raw.lower() in ("true", "false", "null") else raw)
    except json.JSONDecodeError:
        parsed = raw
    return key.strip(), parsed
