"""Reading and writing model weight files safely (no pickled code): safetensors or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from segment_anything.modeling import Sam


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a ``torch.save`` file, never executing code.

    Accepts the raw state dict or the usual wrappers (``{"model": ...}``, ``{"state_dict": ...}``, micro-sam's
    training checkpoints ``{"model_state": {"sam.<SAM key>": ...}, ...}``; a ``module.`` / ``sam.`` prefix on
    every key is removed).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found. Give the path of a SAM checkpoint (.pth or .safetensors).")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty. Download or copy the checkpoint again.")
    if _is_safetensors(path):
        return _check_finite(_load_safetensors(path), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - we classify and re-raise with the file's name
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "Unsupported operand" in msg:
            raise CheckpointError(
                f"{path}: refused: the file contains pickled Python objects other than tensors, which could run "
                "code when loaded. Only plain state dicts are accepted; re-save the weights with "
                "`torch.save(model.state_dict(), ...)` or as .safetensors (a micro-sam training checkpoint: "
                "micro_sam.util.export_custom_sam_model writes one)."
            ) from None
        if isinstance(exc, (zipfile.BadZipFile, EOFError, RuntimeError)) or "zip" in msg.lower():
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: {_first_line(msg, exc)[:160]}). "
                "Download it again and check its size."
            ) from None
        raise CheckpointError(f"{path}: could not be read as a checkpoint: {_first_line(msg, exc)[:200]}") from None
    return _check_finite(_unwrap_state_dict(obj, path), path)


def read_checkpoint_shapes(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensor names and shapes of a checkpoint file, as tensors on the ``meta`` device, without reading the
    weights: the safetensors header, or a ``torch.save`` zip file memory-mapped (``weights_only=True``). For
    telling which model a file is before loading it. None when the file cannot be read that way (missing, not
    a checkpoint, an old non-zip ``torch.save`` file): :func:`load_state_dict_file` then says what is wrong."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                names = list(f.keys())  # a safetensors handle is not iterable
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in names}
        if not zipfile.is_zipfile(path):
            return None
        tensors = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path)
        return {k: torch.empty(v.shape, device="meta") for k, v in tensors.items()}
    except Exception:  # noqa: BLE001 - unreadable this way: the full load reports the problem with the file's name
        return None


def _is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` name, or a file that starts as one does (an 8-byte header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{")


def _first_line(message: str, exc: BaseException) -> str:
    """The first line of an error message, or the error's type when it has no message (e.g. EOFError)."""
    return (message.strip().splitlines() or [type(exc).__name__])[0]


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse weights holding NaN or infinity: they would predict garbage ("score nan") without an error."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or infinite values; the checkpoint is damaged or comes from a "
                "diverged training run. Download or export it again."
            )
    return tensors


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever the parser's complaint, one message naming the file
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({_first_line(str(exc), exc)[:160]}). "
            "It may be truncated: copy it again."
        ) from None


#: wrappers around a state dict: Meta's SAM2 files ({"model": ...}), Lightning and plain training scripts, micro-sam
#: (torch_em) training checkpoints ({"model_state": ..., "optimizer_state": ..., ...})
_STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
#: prefixes that wrappers put before every key: DDP's ``module.``, micro-sam's ``TrainableSAM`` (``sam.``)
_WRAPPER_PREFIXES = ("module.", "sam.")


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in _STATE_DICT_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: does not hold a state dict of tensors (found {type(obj).__name__}).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors; it is not a model checkpoint.")
    for prefix in _WRAPPER_PREFIXES:  # in this order: micro-sam trained with DDP saves "module.sam.*"
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def check_state_matches(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path, what: str
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of ``expected`` (a model's
    state dict); ``what`` names the model in the message (e.g. "SAM vit_b", "MobileSAM vit_t")."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match {what}: {len(missing)} weights missing"
            f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}. Is it a {what} checkpoint?"
        )
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(
            f"{path}: shapes do not match {what}: {len(bad)} tensors differ, e.g. {k} is {got}, "
            f"expected {want}. The file was made for another architecture."
        )


def save_sam_weights(sam: Sam, path: str | Path, half: bool = True, metadata: dict | None = None) -> Path:
    """Write SAM weights as safetensors (fp16 by default, to keep the bundled file small), atomically."""
    from safetensors.torch import save_file

    from infosam_core.io.atomic import atomic_path

    path = Path(path)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in sam.state_dict().items()
    }
    meta = {"model_type": getattr(sam, "model_type", "unknown")}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
