"""Load a model with its adapter: the one way `infosam eval`, `predict`, `segment` and the app build a base model,
put a saved adapter on it and move it to a device.

``load_model_with_adapter(model_type, checkpoint, adapter, device)`` raises only ValueErrors whose one-line
message names the file and the fix: :class:`~infosam_core.models.checkpoints.CheckpointError` for the model
file (or an unknown model type), :class:`~infosam_core.adapter_files.checkpoint.PeftCheckpointError` for the
adapter file (missing, damaged, made for another base model), :class:`ModelDeviceError` when the model does
not fit on the device. Callers catch ``ValueError`` once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infosam_core.adapter_files.checkpoint import (
    PeftCheckpointError,
    load_peft_checkpoint,
    peft_checkpoint_paths,
    read_peft_checkpoint_info,
)
from infosam_core.models.devices import AUTO_DEVICE, resolve_device
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import AUTO, MODEL_TYPES, load_sam, resolve_model_type


class ModelDeviceError(ValueError):
    """The model cannot be moved to the device asked for (out of memory, a device that is gone, ...)."""


def check_adapter_file(adapter: str | Path, model_type: str = AUTO, checkpoint: str | Path | None = None) -> None:
    """Refuse a broken adapter file, or one made for another model type than ``model_type`` (``auto``: the type
    of ``checkpoint``, or tiny without one), before anything slow is read. PeftCheckpointError naming the file.
    """
    meta = read_peft_checkpoint_info(adapter)
    made_for = meta.get("base_model_type")
    if made_for not in MODEL_TYPES:
        return  # no (known) type recorded: the fingerprint check at load time decides
    given = resolve_model_type(model_type, checkpoint)
    if made_for != given:
        json_path = peft_checkpoint_paths(adapter)[1]
        raise PeftCheckpointError(
            f"{json_path}: this adapter was made for another base model (SAM {made_for}), but the model given is "
            f"SAM {given}. Load the base model it was trained from (model type {made_for} and the same checkpoint)."
        )


def load_model_with_adapter(
    model_type: str = AUTO,
    checkpoint: str | Path | None = None,
    adapter: str | Path | None = None,
    device: str | torch.device = AUTO_DEVICE,
) -> SamLike:
    """The model ``model_type`` (``auto``: the type of ``checkpoint``, or the bundled tiny model without one) with
    ``checkpoint``'s weights, ``adapter`` (a saved adapter file, or None) on it, on ``device`` (``auto``: CUDA when
    present, else the CPU), in eval mode. Raises the ValueErrors listed in the module docstring."""
    if adapter is not None:
        check_adapter_file(adapter, model_type, checkpoint)  # before the (large) base model is read
    model = load_sam(model_type, checkpoint)
    if adapter is not None:
        model = load_peft_checkpoint(model, adapter)
    target = resolve_device(device)
    try:
        model = model.to(target)
    except RuntimeError as exc:  # CUDA out of memory, a device that is not there, ...
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelDeviceError(
            f"cannot move the model to {target} ({first_line}); use the CPU, or a smaller model"
        ) from None
    return model.eval()
