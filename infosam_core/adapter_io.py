"""Saving and loading adapters: only the trained tensors, plus the JSON needed to rebuild the method.

``save_adapter(model, path)`` writes, atomically,

* ``<path>.safetensors``: the PEFT state's trainable tensors (added modules and trained base parameters
  such as the mask decoder, norms or biases) and, with InfoSAM, the relation module (``relation.*``);
* ``<path>.json``: format version, PEFT method and options, the base model's type and
  :func:`~infosam_core.models.model_fingerprint` (of the *base* weights, taken when PEFT was applied),
  the SHA-256 of the tensor file, creation time, torch / infosam versions and an optional training summary.

``load_adapter(base_sam, path)`` checks that ``base_sam`` is the model the adapter was made for (same
fingerprint), rebuilds the method on a copy of it and loads the tensors. Nothing is ever unpickled
(safetensors + JSON only). Every problem raises :class:`AdapterError` naming the file.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam

import infosam_core
from infosam_core.atomic import atomic_path, write_json_atomic

FORMAT = "infosam-adapter"
FORMAT_VERSION = 1


class AdapterError(ValueError):
    """An adapter that cannot be saved or loaded; the message names the file and what to do."""


def adapter_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for ``path`` given with or without either suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_adapter(model: Sam, path: str | Path, summary: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the adapter of ``model`` (which went through :func:`~infosam_core.peft.apply_peft`).

    ``summary``: JSON-able training facts (e.g. ``TrainResult.summary()``). Returns both paths.
    """
    from safetensors.torch import save_file

    from infosam_core.train import trained_state

    state = getattr(model, "peft_state", None)
    if state is None:
        raise AdapterError("this model has no PEFT method applied (apply_peft / train first): nothing to save")
    tensors_path, json_path = adapter_paths(path)
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
        "relation_module": any(k.startswith("relation.") for k in tensors),
        "tensors_file": tensors_path.name,
        "tensors_sha256": _sha256(tensors_path),
        "n_tensors": len(tensors),
        "n_parameters": sum(t.numel() for t in tensors.values()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "infosam_version": infosam_core.__version__,
        "summary": summary,
    }
    write_json_atomic(json_path, meta)
    return tensors_path, json_path


def read_adapter_info(path: str | Path) -> dict[str, Any]:
    """The adapter's JSON (validated), e.g. to show what it is before loading it."""
    _, json_path = adapter_paths(path)
    if not json_path.exists():
        raise AdapterError(f"{json_path}: adapter description not found (an adapter is a .json + .safetensors pair).")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{json_path}: not a valid adapter description (corrupt JSON: {exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AdapterError(f"{json_path}: not an InfoSAM adapter description (no 'format: {FORMAT}').")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise AdapterError(f"{json_path}: made by a newer InfoSAM Studio (format {meta['format_version']}); update it.")
    for key in ("method", "options", "base_fingerprint", "tensors_sha256"):
        if key not in meta:
            raise AdapterError(f"{json_path}: adapter description lacks {key!r}; the file is damaged.")
    return meta


def load_adapter(base_sam: Sam, path: str | Path) -> Sam:
    """A copy of ``base_sam`` with the saved adapter applied and loaded (eval mode, on ``base_sam``'s device).

    Refuses (AdapterError) when ``base_sam`` is not the model the adapter was made for, when either file
    is missing, damaged or does not match the other, or when the tensors do not fit the rebuilt method.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from infosam_core.distill import RelationModule
    from infosam_core.models import model_fingerprint
    from infosam_core.peft import apply_peft

    tensors_path, json_path = adapter_paths(path)
    meta = read_adapter_info(path)
    if getattr(base_sam, "peft_state", None) is not None:
        raise AdapterError(f"{json_path}: load adapters onto the base model, not onto an already adapted one.")
    fingerprint = model_fingerprint(base_sam)
    if fingerprint != meta["base_fingerprint"]:
        raise AdapterError(
            f"{json_path}: this adapter was made for another base model (SAM {meta.get('base_model_type', '?')}, "
            f"fingerprint {meta['base_fingerprint']}), but the loaded model is SAM "
            f"{getattr(base_sam, 'model_type', '?')} with fingerprint {fingerprint}. Load the base model it was "
            "trained from (same model type and checkpoint) before loading this adapter."
        )
    if not tensors_path.exists():
        raise AdapterError(f"{tensors_path}: adapter weights not found (expected beside {json_path.name}).")
    if _sha256(tensors_path) != meta["tensors_sha256"]:
        raise AdapterError(
            f"{tensors_path}: the weights do not match {json_path.name} (damaged, or from another save). "
            "Copy both files of the adapter again."
        )
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"{tensors_path}: not a readable safetensors file ({exc}).") from None

    model = copy.deepcopy(base_sam)
    unused_rng = torch.Generator()  # initial values are overwritten; keeps the global RNG untouched
    try:
        apply_peft(model, meta["method"], generator=unused_rng, base_fingerprint=fingerprint, **meta["options"])
    except (ValueError, TypeError) as exc:
        raise AdapterError(f"{json_path}: cannot rebuild PEFT {meta['method']!r}: {exc}") from None
    expected = set(model.peft_state.trainable)
    if any(k.startswith("relation.") for k in tensors):
        model.relation = RelationModule(model.prompt_encoder.embed_dim, unused_rng).to(base_sam.device)
        expected |= {f"relation.{k}" for k in model.relation.state_dict()}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise AdapterError(
            f"{tensors_path}: does not fit PEFT {meta['method']!r} on this model: {len(missing)} tensors missing"
            f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
            f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}."
        )
    current = model.state_dict()
    bad = [k for k, v in tensors.items() if v.shape != current[k].shape]
    if bad:
        raise AdapterError(f"{tensors_path}: {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, expected "
                           f"{tuple(current[bad[0]].shape)}: the adapter was made for another architecture.")
    model.load_state_dict(tensors, strict=False)
    return model.eval()
