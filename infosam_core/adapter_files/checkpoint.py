"""Adapter files: PEFT checkpoints ("adapters" in the app and CLI, whatever the PEFT method): only the trained
tensors, plus the JSON needed to rebuild the method and the distiller.

``save_peft_checkpoint(model, path)`` writes

* ``<path>.<hash>.safetensors`` (``<hash>``: the first 16 hex digits of the file's SHA-256): the PEFT state's
  trainable tensors (added modules and trained base parameters such as the mask decoder, norms or biases)
  and the distiller's own parts (``distiller.*``, e.g. InfoSAM's relation module);
* ``<path>.json``: format version, PEFT method and options, the base model's type and
  :func:`~infosam_core.models.fingerprint.model_fingerprint` (of the *base* weights, taken when PEFT was applied),
  the name and SHA-256 of the tensor file, creation time, torch / infosam versions and an optional training
  summary.

All or nothing. The tensors go to a new file under a new name first (atomically); then the JSON that names
them replaces the old JSON in one rename -- the commit point; only then is the old tensors file deleted.
At every instant ``<path>.json`` names a complete tensors file that matches it: a crash (kill -9, power
loss, a second Ctrl-C) leaves the previous adapter or the new one, never a mismatched pair. Files left by
an interrupted save are removed by the next save. Files written before this scheme (tensors in
``<path>.safetensors``) load as before: the loader reads the file the JSON names.

``load_peft_checkpoint(base_sam, path)`` checks that ``base_sam`` is the model the adapter was made for (same
fingerprint), rebuilds the method on a copy of it and loads the tensors. Nothing is ever unpickled
(safetensors + JSON only). Every problem raises :class:`PeftCheckpointError` naming the file.
Format 1 files (before distillers had a registry) stored InfoSAM's relation module as ``relation.*``;
they load as format 2's ``distiller.relation.*``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

import infosam_core
from infosam_core.distill.base import ModelDims, distiller_of, set_distiller
from infosam_core.distill.registry import make_distiller
from infosam_core.io.atomic import remove_stale_temp_files, write_bytes_atomic, write_json_atomic
from infosam_core.io.hashing import file_sha256
from infosam_core.io.paths import UnsafePathError, regular_file_problem, resolve_inside, safe_name
from infosam_core.models.checkpoints import ACCEPTED_DTYPES
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.protocols import SamLike
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import peft_state_of, trained_state

FORMAT = "infosam-adapter"


FORMAT_VERSION = 2


#: the largest adapter description read (a real one is a few KB)
MAX_JSON_BYTES = 16 << 20


class PeftCheckpointError(ValueError):
    """An adapter that cannot be saved or loaded; the message names the file and what to do."""


_HASHED_RE = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{16})$")


def peft_checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for ``path`` given with or without either suffix.

    ``<stem>.<hash>.safetensors`` (a tensors file as saved now) maps to ``<stem>.json`` too. The first
    path is where tensors were kept before hashed names; :func:`tensors_path_of` gives the file an adapter's
    JSON actually names.
    """
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    m = _HASHED_RE.match(path.name)
    if m and not path.with_name(path.name + ".json").exists():
        path = path.with_name(m.group("stem"))
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def tensors_path_of(json_path: Path, meta: dict[str, Any]) -> Path:
    """The tensors file ``meta`` (read from ``json_path``) names: a plain file name beside the JSON."""
    name = meta.get("tensors_file") or peft_checkpoint_paths(json_path)[0].name
    try:
        return resolve_inside(json_path.parent, safe_name(name))
    except UnsafePathError as exc:
        raise PeftCheckpointError(
            f"{json_path}: field 'tensors_file' must name a file beside it ({exc}); the file is damaged."
        ) from None


def save_peft_checkpoint(model: SamLike, path: str | Path, summary: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the adapter of ``model`` (which went through :func:`~infosam_core.peft.registry.apply_peft`).

    ``summary``: JSON-able training facts (e.g. ``TrainResult.summary()``). Returns both paths.
    """
    from safetensors.torch import save

    state = peft_state_of(model)
    if state is None:
        raise PeftCheckpointError("this model has no PEFT method applied (apply_peft / train first): nothing to save")
    _, json_path = peft_checkpoint_paths(path)
    folder = json_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in trained_state(model).items()}
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise PeftCheckpointError(f"{json_path}: not saved: tensor {bad!r} holds NaN or infinite values.")
    previous = _committed_tensors_name(json_path)
    stem = json_path.name[: -len(".json")]
    data = save(tensors, metadata={"format": FORMAT, "method": state.method})
    digest = hashlib.sha256(data).hexdigest()
    tensors_path = folder / f"{stem}.{digest[:16]}.safetensors"
    write_bytes_atomic(tensors_path, data)  # a new name: the committed adapter is untouched
    del data
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": state.method,
        "options": state.options,
        "base_model_type": state.base_model_type,
        "base_fingerprint": state.base_fingerprint,
        "distiller": _distiller_info(model),
        "tensors_file": tensors_path.name,
        "tensors_sha256": digest,
        "n_tensors": len(tensors),
        "n_parameters": sum(t.numel() for t in tensors.values()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "infosam_version": infosam_core.__version__,
        "summary": summary,
    }
    write_json_atomic(json_path, meta)  # the commit point
    _remove_superseded(json_path, stem, keep=tensors_path.name, previous=previous)
    return tensors_path, json_path


def _committed_tensors_name(json_path: Path) -> str | None:
    """The tensors file the current JSON names (None when there is no readable one)."""
    try:
        meta = json.loads(json_path.read_text("utf-8"))
        name = meta.get("tensors_file") if isinstance(meta, dict) else None
        return safe_name(name) if name else None
    except (OSError, ValueError, UnsafePathError):
        return None


def _remove_superseded(json_path: Path, stem: str, keep: str, previous: str | None) -> None:
    """After the commit: delete the tensors file the old JSON named, older saves' leftovers and stale temps."""
    folder = json_path.parent
    doomed = {previous} if previous and previous != keep else set()
    doomed |= {
        p.name
        for p in folder.glob(f"{glob_escape(stem)}.*.safetensors")
        if _HASHED_RE.match(p.name[: -len(".safetensors")]) and p.name != keep
    }
    for name in doomed:
        if name.startswith(stem + "."):  # never another adapter's files in the same folder
            with contextlib.suppress(OSError):
                (folder / name).unlink()
    remove_stale_temp_files(folder)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_peft_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The adapter's JSON (validated), e.g. to show what it is before loading it."""
    _, json_path = peft_checkpoint_paths(path)
    problem = regular_file_problem(json_path)
    if problem == "not found":
        raise PeftCheckpointError(
            f"{json_path}: adapter description not found (an adapter is a .json + .safetensors pair)."
        )
    if problem is not None:
        raise PeftCheckpointError(f"{json_path}: is {problem}, not a regular file; give the adapter's .json file.")
    if json_path.stat().st_size > MAX_JSON_BYTES:
        raise PeftCheckpointError(
            f"{json_path}: {json_path.stat().st_size / 2**20:.0f} MiB, too large for an adapter description "
            f"(at most {MAX_JSON_BYTES >> 20} MiB); it is not one."
        )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PeftCheckpointError(
            f"{json_path}: not a valid adapter description (corrupt JSON: {str(exc)[:160]})."
        ) from None
    except OSError as exc:
        raise PeftCheckpointError(f"{json_path}: cannot be read ({exc.strerror or exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PeftCheckpointError(f"{json_path}: not an InfoSAM adapter description (no 'format: {FORMAT}').")
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PeftCheckpointError(
            f"{json_path}: field 'format_version' must be a positive integer, found {version!r:.40}; "
            "the file is damaged."
        )
    if version > FORMAT_VERSION:
        raise PeftCheckpointError(f"{json_path}: made by a newer InfoSAM Studio (format {version}); update it.")
    expected = {"method": str, "options": dict, "base_fingerprint": str, "tensors_sha256": str}
    for key, kind in expected.items():
        if key not in meta:
            raise PeftCheckpointError(f"{json_path}: adapter description lacks {key!r}; the file is damaged.")
        if not isinstance(meta[key], kind):
            raise PeftCheckpointError(
                f"{json_path}: field {key!r} must be a {'JSON object' if kind is dict else 'string'}; "
                "the file is damaged."
            )
    if not all(isinstance(k, str) for k in meta["options"]):
        raise PeftCheckpointError(f"{json_path}: field 'options' has non-string keys; the file is damaged.")
    info = meta.get("distiller")
    if info is not None and not (
        isinstance(info, dict) and isinstance(info.get("name"), str) and isinstance(info.get("options", {}), dict)
    ):
        raise PeftCheckpointError(
            f"{json_path}: field 'distiller' must be {{'name': str, 'options': {{}}}}; the file is damaged."
        )
    if meta.get("tensors_file") is not None and not isinstance(meta["tensors_file"], str):
        raise PeftCheckpointError(f"{json_path}: field 'tensors_file' must be a file name; the file is damaged.")
    return meta


def load_peft_checkpoint(base_sam: SamLike, path: str | Path) -> SamLike:
    """A copy of ``base_sam`` with the saved adapter applied and loaded (eval mode, on ``base_sam``'s device).

    Refuses (PeftCheckpointError) when ``base_sam`` is not the model the adapter was made for, when either file
    is missing, damaged or does not match the other, or when the tensors do not fit the rebuilt method.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _, json_path = peft_checkpoint_paths(path)
    meta = read_peft_checkpoint_info(path)
    tensors_path = tensors_path_of(json_path, meta)
    if peft_state_of(base_sam) is not None:
        raise PeftCheckpointError(f"{json_path}: load adapters onto the base model, not onto an already adapted one.")
    fingerprint = model_fingerprint(base_sam)
    if fingerprint != meta["base_fingerprint"]:
        raise PeftCheckpointError(
            f"{json_path}: this adapter was made for another base model (SAM {meta.get('base_model_type', '?')}, "
            f"fingerprint {meta['base_fingerprint']}), but the loaded model is SAM "
            f"{getattr(base_sam, 'model_type', '?')} with fingerprint {fingerprint}. Load the base model it was "
            "trained from (same model type and checkpoint) before loading this adapter."
        )
    problem = regular_file_problem(tensors_path)
    if problem == "not found":
        raise PeftCheckpointError(f"{tensors_path}: adapter weights not found (expected beside {json_path.name}).")
    if problem is not None:
        raise PeftCheckpointError(
            f"{tensors_path}: is {problem}, not a regular file; the adapter's weights file is damaged. Copy both "
            "files of the adapter again."
        )
    if file_sha256(tensors_path) != meta["tensors_sha256"]:
        raise PeftCheckpointError(
            f"{tensors_path}: the weights do not match {json_path.name} (damaged, or from another save). "
            "Copy both files of the adapter again."
        )
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PeftCheckpointError(f"{tensors_path}: not a readable safetensors file ({str(exc)[:160]}).") from None
    for name, tensor in tensors.items():
        if tensor.dtype not in ACCEPTED_DTYPES:  # e.g. float8: not a dtype adapters are saved in
            raise _dtype_error(tensors_path, name, tensor)
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise PeftCheckpointError(
                f"{tensors_path}: tensor {name!r} holds NaN or infinite values; the adapter is unusable "
                "(it was saved from a diverged run, or damaged). Train it again."
            )

    model = copy.deepcopy(base_sam)
    unused_rng = torch.Generator()  # initial values are overwritten; keeps the global RNG untouched
    try:
        apply_peft(model, meta["method"], generator=unused_rng, base_fingerprint=fingerprint, **meta["options"])
    except (ValueError, TypeError, OverflowError) as exc:
        raise PeftCheckpointError(f"{json_path}: cannot rebuild PEFT {meta['method']!r}: {exc}") from None
    state = peft_state_of(model)
    assert state is not None  # apply_peft recorded it
    expected = set(state.trainable)
    if meta.get("format_version", 1) < 2 and any(k.startswith("relation.") for k in tensors):
        tensors = {("distiller." + k if k.startswith("relation.") else k): v for k, v in tensors.items()}
        meta["distiller"] = {"name": "infosam", "options": {}}
    info = meta.get("distiller")
    if info:
        try:
            distiller = make_distiller(info["name"], dict(info.get("options", {})), ModelDims.of(model), unused_rng)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise PeftCheckpointError(f"{json_path}: cannot rebuild distiller {info!r}: {exc}") from None
        set_distiller(model, distiller.to(base_sam.device) if distiller is not None else None)
        if distiller is not None:
            expected |= {f"distiller.{k}" for k in distiller.state_dict()}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise PeftCheckpointError(
            f"{tensors_path}: does not fit PEFT {meta['method']!r} on this model: {len(missing)} tensors missing"
            f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}."
        )
    current = model.state_dict()
    bad = [k for k, v in tensors.items() if v.shape != current[k].shape]
    if bad:
        raise PeftCheckpointError(
            f"{tensors_path}: {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, expected "
            f"{tuple(current[bad[0]].shape)}: the adapter was made for another architecture."
        )
    not_float = next((k for k, v in tensors.items() if current[k].is_floating_point() != v.is_floating_point()), None)
    if not_float is not None:  # an integer or bool copy of a weight predicts nonsense; a float counter is wrong too
        raise _dtype_error(tensors_path, not_float, tensors[not_float], current[not_float].dtype)
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _dtype_error(
    path: Path, name: str, tensor: torch.Tensor, expected: torch.dtype | None = None
) -> PeftCheckpointError:
    want = "float32, float16, bfloat16 or float64" if expected is None or expected.is_floating_point else "an integer"
    return PeftCheckpointError(
        f"{path}: tensor {name!r} has dtype {str(tensor.dtype).removeprefix('torch.')}, expected {want}; the file is "
        "damaged or was not saved by InfoSAM Studio. Train or export the adapter again."
    )


def _distiller_info(model: SamLike) -> dict[str, Any] | None:
    distiller = distiller_of(model)
    if distiller is None:
        return None
    return {"name": distiller.name, "options": dataclasses.asdict(distiller.config)}
