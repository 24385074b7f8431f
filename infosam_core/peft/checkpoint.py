"""PEFT checkpoints ("adapters" in the app and CLI, whatever the PEFT method): only the trained tensors, plus
the JSON needed to rebuild the method.

``save_peft_checkpoint(model, path)`` writes, atomically,

* ``<path>.safetensors``: the PEFT state's trainable tensors (added modules and trained base parameters
  such as the mask decoder, norms or biases) and the distiller's own parts (``distiller.*``, e.g. InfoSAM's
  relation module);
* ``<path>.json``: format version, PEFT method and options, the base model's type and
  :func:`~infosam_core.models.fingerprint.model_fingerprint` (of the *base* weights, taken when PEFT was applied),
  the SHA-256 of the tensor file, creation time, torch / infosam versions and an optional training summary.

``load_peft_checkpoint(base_sam, path)`` checks that ``base_sam`` is the model the adapter was made for (same
fingerprint), rebuilds the method on a copy of it and loads the tensors. Nothing is ever unpickled
(safetensors + JSON only). Every problem raises :class:`PeftCheckpointError` naming the file.
Format 1 files (before distillers had a registry) stored InfoSAM's relation module as ``relation.*``;
they load as format 2's ``distiller.relation.*``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam

import infosam_core
from infosam_core.distill.base import Distiller, ModelDims
from infosam_core.distill.registry import make_distiller
from infosam_core.io.atomic import atomic_path, write_json_atomic
from infosam_core.io.hashing import file_sha256
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import trained_state

FORMAT = "infosam-adapter"


FORMAT_VERSION = 2


class PeftCheckpointError(ValueError):
    """An adapter that cannot be saved or loaded; the message names the file and what to do."""


def peft_checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for ``path`` given with or without either suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_peft_checkpoint(model: Sam, path: str | Path, summary: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the adapter of ``model`` (which went through :func:`~infosam_core.peft.registry.apply_peft`).

    ``summary``: JSON-able training facts (e.g. ``TrainResult.summary()``). Returns both paths.
    """
    from safetensors.torch import save_file

    state = getattr(model, "peft_state", None)
    if state is None:
        raise PeftCheckpointError("this model has no PEFT method applied (apply_peft / train first): nothing to save")
    tensors_path, json_path = peft_checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in trained_state(model).items()}
    with atomic_path(tensors_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "method": state.method})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": state.method,
        "options": state.options,
        "base_model_type": state.base_model_type,
        "base_fingerprint": state.base_fingerprint,
        "distiller": _distiller_info(model),
        "tensors_file": tensors_path.name,
        "tensors_sha256": file_sha256(tensors_path),
        "n_tensors": len(tensors),
        "n_parameters": sum(t.numel() for t in tensors.values()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "infosam_version": infosam_core.__version__,
        "summary": summary,
    }
    write_json_atomic(json_path, meta)
    return tensors_path, json_path


def read_peft_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The adapter's JSON (validated), e.g. to show what it is before loading it."""
    _, json_path = peft_checkpoint_paths(path)
    if not json_path.exists():
        raise PeftCheckpointError(
            f"{json_path}: adapter description not found (an adapter is a .json + .safetensors pair)."
        )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeftCheckpointError(f"{json_path}: not a valid adapter description (corrupt JSON: {exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PeftCheckpointError(f"{json_path}: not an InfoSAM adapter description (no 'format: {FORMAT}').")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise PeftCheckpointError(
            f"{json_path}: made by a newer InfoSAM Studio (format {meta['format_version']}); update it."
        )
    for key in ("method", "options", "base_fingerprint", "tensors_sha256"):
        if key not in meta:
            raise PeftCheckpointError(f"{json_path}: adapter description lacks {key!r}; the file is damaged.")
    return meta


def load_peft_checkpoint(base_sam: Sam, path: str | Path) -> Sam:
    """A copy of ``base_sam`` with the saved adapter applied and loaded (eval mode, on ``base_sam``'s device).

    Refuses (PeftCheckpointError) when ``base_sam`` is not the model the adapter was made for, when either file
    is missing, damaged or does not match the other, or when the tensors do not fit the rebuilt method.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors_path, json_path = peft_checkpoint_paths(path)
    meta = read_peft_checkpoint_info(path)
    if getattr(base_sam, "peft_state", None) is not None:
        raise PeftCheckpointError(f"{json_path}: load adapters onto the base model, not onto an already adapted one.")
    fingerprint = model_fingerprint(base_sam)
    if fingerprint != meta["base_fingerprint"]:
        raise PeftCheckpointError(
            f"{json_path}: this adapter was made for another base model (SAM {meta.get('base_model_type', '?')}, "
            f"fingerprint {meta['base_fingerprint']}), but the loaded model is SAM "
            f"{getattr(base_sam, 'model_type', '?')} with fingerprint {fingerprint}. Load the base model it was "
            "trained from (same model type and checkpoint) before loading this adapter."
        )
    if not tensors_path.exists():
        raise PeftCheckpointError(f"{tensors_path}: adapter weights not found (expected beside {json_path.name}).")
    if file_sha256(tensors_path) != meta["tensors_sha256"]:
        raise PeftCheckpointError(
            f"{tensors_path}: the weights do not match {json_path.name} (damaged, or from another save). "
            "Copy both files of the adapter again."
        )
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PeftCheckpointError(f"{tensors_path}: not a readable safetensors file ({exc}).") from None

    model = copy.deepcopy(base_sam)
    unused_rng = torch.Generator()  # initial values are overwritten; keeps the global RNG untouched
    try:
        apply_peft(model, meta["method"], generator=unused_rng, base_fingerprint=fingerprint, **meta["options"])
    except (ValueError, TypeError) as exc:
        raise PeftCheckpointError(f"{json_path}: cannot rebuild PEFT {meta['method']!r}: {exc}") from None
    expected = set(model.peft_state.trainable)
    if meta.get("format_version", 1) < 2 and any(k.startswith("relation.") for k in tensors):
        tensors = {("distiller." + k if k.startswith("relation.") else k): v for k, v in tensors.items()}
        meta["distiller"] = {"name": "infosam", "options": {}}
    info = meta.get("distiller")
    if info:
        try:
            distiller = make_distiller(info["name"], dict(info.get("options", {})), ModelDims.of(model), unused_rng)
        except (ValueError, TypeError, KeyError) as exc:
            raise PeftCheckpointError(f"{json_path}: cannot rebuild distiller {info!r}: {exc}") from None
        model.distiller = distiller.to(base_sam.device) if distiller is not None else None
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
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _distiller_info(model: Sam) -> dict[str, Any] | None:
    distiller = getattr(model, "distiller", None)
    if not isinstance(distiller, Distiller):
        return None
    return {"name": distiller.name, "options": dataclasses.asdict(distiller.config)}
