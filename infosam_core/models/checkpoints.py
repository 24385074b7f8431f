"""Reading and writing model weight files safely (no pickled code): safetensors or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from infosam_core.io.paths import regular_file_problem
from infosam_core.models.legacy_torch_files import LegacyFileError, NotALegacyFileError, check_legacy_file


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


#: weight dtypes accepted in a checkpoint; float8 and other exotic types are refused (they cannot be checked for
#: NaN, and no SAM family is saved so). Integer and bool tensors pass here (BatchNorm counters are int64) and
#: are refused where the model expects floats (:func:`check_state_matches`).
ACCEPTED_DTYPES = frozenset(
    {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.int16}
    | {torch.int8, torch.uint8, torch.bool}
)

#: the declared (uncompressed) size of a ``torch.save`` zip's members may exceed the file's size by this much at
#: most: ``torch.save`` stores them uncompressed, so a larger total is a decompression bomb.
ZIP_SLACK_BYTES = 1 << 20


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a ``torch.save`` file, never executing code.

    Accepts the raw state dict or the usual wrappers (``{"model": ...}``, ``{"state_dict": ...}``, micro-sam's
    training checkpoints ``{"model_state": {"sam.<SAM key>": ...}, ...}``; a ``module.`` / ``sam.`` prefix on
    every key is removed). Bounded before it allocates: only regular files; a zip ``torch.save`` file's members
    may not expand beyond the file's size (:data:`ZIP_SLACK_BYTES`) and its tensors are checked memory-mapped
    first (no tensor larger than its storage, e.g. stride 0); an old non-zip ``torch.save`` file's declared
    storages must fit in the file (:mod:`.legacy_torch_files`) and its tensors in their storages; safetensors files
    are bounded by their format.
    """
    path = Path(path)
    _check_readable_file(path)
    if _is_safetensors(path):
        return _check_finite(_check_dtypes(_load_safetensors(path), path), path)
    if zipfile.is_zipfile(path):
        _check_zip_members(path)
        _check_layout(_unwrap_state_dict(_torch_load(path, mmap=True), path), path)
    else:
        _check_legacy_storages(path)
    tensors = _unwrap_state_dict(_torch_load(path, mmap=False), path)
    return _check_finite(_check_layout(tensors, path), path)


def inspect_checkpoint_shapes(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensor names and shapes of a checkpoint file, as tensors on the ``meta`` device, without reading the
    weights: the safetensors header, or a ``torch.save`` zip file memory-mapped (``weights_only=True``, its
    members and layouts checked as :func:`load_state_dict_file` does). None for an old non-zip ``torch.save``
    file (readable only whole). Raises :class:`CheckpointError` naming the file and what is wrong with it
    (missing, not a regular file, empty, truncated, corrupt, pickled code, a bomb)."""
    path = Path(path)
    _check_readable_file(path)
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                names = list(f.keys())  # a safetensors handle is not iterable
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in names}
        except Exception as exc:  # noqa: BLE001 - the header parser's complaint, with the file's name
            raise CheckpointError(
                f"{path}: not a readable safetensors file (corrupt header: {_first_line(str(exc), exc)[:160]}). "
                "It may be truncated: copy it again."
            ) from None
    if not zipfile.is_zipfile(path):
        return None
    _check_zip_members(path)
    tensors = _check_layout(_unwrap_state_dict(_torch_load(path, mmap=True), path), path)
    return {k: torch.empty(v.shape, device="meta") for k, v in tensors.items()}


def read_checkpoint_shapes(path: str | Path) -> dict[str, torch.Tensor] | None:
    """:func:`inspect_checkpoint_shapes`, None when the file cannot be read that way (for a guess that may fail
    quietly, e.g. the app's model menu following a chosen file); :func:`load_state_dict_file` then says what is
    wrong."""
    try:
        return inspect_checkpoint_shapes(path)
    except CheckpointError:
        return None


def _check_readable_file(path: Path) -> None:
    """Refuse a missing path, a folder, a FIFO / device / socket (reading one hangs or never ends) and an empty
    file, each with its own message."""
    problem = regular_file_problem(path)
    if problem == "not found":
        raise CheckpointError(f"{path}: file not found. Give the path of a SAM checkpoint (.pth or .safetensors).")
    if problem == "a folder":
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file.")
    if problem is not None:
        raise CheckpointError(f"{path}: is {problem}, not a regular file; give the checkpoint file itself.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty. Download or copy the checkpoint again.")


def _torch_load(path: Path, mmap: bool) -> object:
    """``torch.load(weights_only=True)`` (memory-mapped when ``mmap``: storages are not read), every failure one
    :class:`CheckpointError` naming the file; torch's warnings (e.g. on old pickles) are not shown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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


def _check_legacy_storages(path: Path) -> None:
    """Refuse an old (pre-1.6, non-zip) ``torch.save`` file whose pickle declares more storage than the file holds
    (torch allocates the declared size before reading), or that cannot be followed; nothing is allocated here."""
    try:
        check_legacy_file(path)
    except NotALegacyFileError:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: neither a zip nor an old torch.save "
            "file). Download it again and check its size."
        ) from None
    except LegacyFileError as exc:
        raise CheckpointError(
            f"{path}: refused: {exc}. If it is your own checkpoint, re-save it with a current torch "
            "(`torch.save(state_dict, new_path)`) or as .safetensors."
        ) from None


def _check_zip_members(path: Path) -> None:
    """Refuse a ``torch.save`` zip whose members declare more bytes than the file holds (a decompression bomb:
    ``torch.save`` never compresses) or that cannot be listed."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt zip: {_first_line(str(exc), exc)[:160]}). "
            "Download it again and check its size."
        ) from None
    if declared > size + ZIP_SLACK_BYTES:
        raise CheckpointError(
            f"{path}: refused: its zip members expand to {declared / 2**20:.0f} MiB from a {size / 2**20:.1f} MiB "
            "file (a decompression bomb; torch.save stores tensors uncompressed). Re-save the weights with "
            "torch.save or as .safetensors."
        )


def _check_layout(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse tensors with more elements than their storage holds (stride 0 or overlapping strides: a tiny file
    that becomes gigabytes when copied) and exotic dtypes; ``tensors`` are memory-mapped, nothing is read."""
    _check_dtypes(tensors, path)
    for name, tensor in tensors.items():
        storage_bytes = tensor.untyped_storage().nbytes()
        if tensor.numel() * tensor.element_size() > storage_bytes:
            raise CheckpointError(
                f"{path}: refused: tensor {name!r} has {tensor.numel()} elements but its storage holds "
                f"{storage_bytes // max(tensor.element_size(), 1)} (strides {tuple(tensor.stride())}: a crafted "
                "file that expands when copied). Re-save the weights with torch.save or as .safetensors."
            )
    return tensors


def _check_dtypes(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    for name, tensor in tensors.items():
        if tensor.dtype not in ACCEPTED_DTYPES:
            _refuse_dtype(path, name, tensor)
    return tensors


def _refuse_dtype(path: Path, name: str, tensor: torch.Tensor) -> None:
    raise CheckpointError(
        f"{path}: tensor {name!r} has dtype {str(tensor.dtype).removeprefix('torch.')}; weights must be float32, "
        "float16, bfloat16 or float64. Convert the checkpoint (e.g. tensor.float()) and save it again."
    )


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


def block_count(state: Mapping[str, object], prefix: str) -> int | None:
    """1 + the largest block number ``N`` in keys ``<prefix>N.<...>`` (0 without such keys); None when a key under
    ``prefix`` has no number there (a crafted or foreign file: no model type matches)."""
    numbers = [str(k)[len(prefix) :].split(".", 1)[0] for k in state if str(k).startswith(prefix)]
    if not all(n.isdigit() and n.isascii() and len(n) < 6 for n in numbers):
        return None
    return 1 + max((int(n) for n in numbers), default=-1)


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
    not_float = [k for k, v in expected.items() if v.is_floating_point() and not state[k].is_floating_point()]
    if not_float:
        k = not_float[0]
        raise CheckpointError(
            f"{path}: {len(not_float)} weights of {what} are not floating point, e.g. {k} has dtype "
            f"{str(state[k].dtype).removeprefix('torch.')}; weights must be float32, float16, bfloat16 or float64 "
            "(an integer or bool copy predicts nonsense). Use the original checkpoint."
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
