"""A merged checkpoint: the adapted model's weights folded into the base model's own parameters and written in
the base model's own format, loadable by stock code with ``load_state_dict(strict=True)``.

* SAM family (SAM ViT-B/L/H, the tiny SAM, MobileSAM ``vit_t``): Meta's plain state dict
  (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), what ``sam_model_registry[type](checkpoint)``
  reads (``segment_anything``; ``mobile_sam`` for ``vit_t``; micro-sam's ``get_sam_model`` alike);
* SAM2: ``{"model": state_dict}`` of Meta's full ``SAM2Base``; the image parts come from the adapted model,
  renamed back to Meta's names (see :mod:`infosam_core.models.sam2`), the video-memory parts (which the
  adapted model does not hold) from the base checkpoint the model was loaded from.

LoRA merges as ``W + (alpha / rank) * B A`` into each ``qkv`` weight; BitFit and decoder-only already train
the base parameters themselves; the distiller's parts (``distiller.*``) are dropped. Methods that add modules
are refused (:func:`~infosam_core.model_export.formats.check_format`). Files are written atomically and hold
tensors only (``torch.load(weights_only=True)`` reads them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from infosam_core.io.atomic import atomic_path
from infosam_core.model_export.formats import SAM2_FORMAT, ExportFormatError, check_format, checkpoint_format
from infosam_core.models.checkpoints import check_state_matches, load_state_dict_file
from infosam_core.models.protocols import SamLike
from infosam_core.models.sam2 import SAM2_META_KEY_PREFIXES
from infosam_core.peft.lora import LoraLinear
from infosam_core.peft.state import peft_state_of


def merged_state_dict(model: SamLike | nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with its adapter merged, under the model's own (segment-anything style) names, on the
    CPU in float32: the added LoRA matrices folded into ``qkv``, the distiller's parts left out. Call
    :func:`~infosam_core.model_export.formats.check_format` first (other added modules stay in the dict)."""
    state = peft_state_of(model)
    added = set(state.added) if state is not None else set()
    out = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).to("cpu", copy=True).contiguous()
        for k, v in model.state_dict().items()
        if k not in added and not k.startswith("distiller.")
    }
    for name, module in model.named_modules():
        if type(module) is LoraLinear:
            delta = (module.lora_B.detach().float() @ module.lora_A.detach().float()) * module.scaling
            out[f"{name}.weight"] = out[f"{name}.weight"] + delta.cpu()
    return out


def sam2_checkpoint_state(model: SamLike | nn.Module, merged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's full ``SAM2Base`` state dict: ``merged`` (the adapted model's image parts) renamed to Meta's names,
    over the base checkpoint the model was loaded from (its video-memory parts). ExportFormatError without one."""
    base_file = getattr(model, "checkpoint_path", None)
    if not base_file:
        raise ExportFormatError(
            "a SAM2 checkpoint needs the base model's checkpoint file (for the video-memory parts the adapted "
            "model does not hold), and this model was built without one; load it with --checkpoint"
        )
    full = load_state_dict_file(base_file)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in merged.items():
        for ours, meta in SAM2_META_KEY_PREFIXES:
            if key.startswith(ours):
                renamed[meta + key[len(ours) :]] = value
                break
        else:
            raise ExportFormatError(f"cannot place weight {key!r} in SAM2's checkpoint layout")
    unknown = sorted(set(renamed) - set(full))
    if unknown:
        raise ExportFormatError(f"{base_file}: has no weight {unknown[0]!r}; is it this model's base checkpoint?")
    out = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
    out.update(renamed)
    check_state_matches(out, full, Path(base_file), "the base SAM2 checkpoint")
    return out


def save_merged_checkpoint(model: SamLike | nn.Module, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``model`` (adapted or not) as a merged checkpoint in its base model's format (``fmt``: ``sam`` or
    ``sam2``; None: the model's own), atomically, with ``torch.save``. Raises ExportFormatError (one line) when
    the format does not apply. Returns the path written."""
    fmt = fmt or checkpoint_format(model) or "sam"
    check_format(model, fmt)
    merged = merged_state_dict(model)
    obj: dict = {"model": sam2_checkpoint_state(model, merged)} if fmt == SAM2_FORMAT else merged
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path
