"""Every model type by name, and loading one safely: ``load_sam(model_type, checkpoint)``.

Each backbone family has its own module with its :class:`~infosam_core.models.family.BackboneFamily` object
(:mod:`.sam` for segment-anything's SAM and the bundled tiny model, :mod:`.mobile_sam`, :mod:`.sam2`) and one
:class:`ModelSpec` line per model type in :data:`MODELS`, which names its family. The type guessers are the
families' (:func:`detect_model_type`), and :func:`family_of` finds a built model's family: every other module
asks it what differs between families. A new backbone is its family's module plus its entries here.

``load_sam(model_type, checkpoint)`` returns a segment-anything :class:`Sam` (SAM2: a
:class:`~infosam_core.models.sam2.Sam2Model` with the same part names):

* ``tiny`` (default) -- the project's own small SAM, pretrained on a synthetic data engine
  (``infosam pretrain``) and bundled in ``resources/models/``. Same classes as SAM, smaller sizes.
* ``vit_b`` / ``vit_l`` / ``vit_h`` -- Meta's architectures, from a checkpoint the user names
  (e.g. ``sam_vit_b_01ec64.pth``). Without a checkpoint they are randomly initialised (with a
  warning): useful for tests and benchmarks only.
* ``vit_t`` -- MobileSAM (:mod:`.mobile_sam`): TinyViT encoder + SAM's prompt encoder and decoder, from
  ``mobile_sam.pt``.
* ``sam2.1_hiera_tiny|small|base_plus|large`` and ``sam2_hiera_*`` -- SAM2 (:mod:`.sam2`, Meta's classes from
  the ``sam2`` package, imported only when one of these is loaded), from Meta's checkpoint files.

``model_type="auto"`` (the CLI's default) is the bundled tiny model without a checkpoint, and otherwise the
type the checkpoint's tensor names and shapes belong to (:func:`checkpoint_model_type`, which reads no weights);
a checkpoint of another type than the one asked for is refused with the type to use.

Checkpoints are never unpickled with code: ``.pth`` files go through ``torch.load(weights_only=True)``,
``.safetensors`` through safetensors. Every failure raises :class:`CheckpointError` naming the file and
the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from infosam_core.models import model_types
from infosam_core.models.checkpoints import (
    CheckpointError,
    inspect_checkpoint_shapes,
    load_state_dict_file,
    read_checkpoint_shapes,
)
from infosam_core.models.family import BackboneFamily
from infosam_core.models.mobile_sam import FAMILY as MOBILE_SAM
from infosam_core.models.protocols import SamLike
from infosam_core.models.sam import FAMILY as SAM
from infosam_core.models.sam2 import FAMILY as SAM2
from infosam_core.models.sam2 import SAM2_MODEL_TYPES
from infosam_core.resources import BUNDLED_TINY_CHECKPOINT


@dataclass(frozen=True)
class ModelSpec:
    """One model type: ``title`` (shown in the app), its backbone ``family`` (which loads it and says everything
    that differs per family, :class:`~infosam_core.models.family.BackboneFamily`) and the file used when no
    checkpoint is given (None: random weights, with a warning)."""

    name: str
    title: str
    family: BackboneFamily
    default_checkpoint: Path | None = None


def _sam2_title(name: str) -> str:
    version, size = name.split("_hiera_")
    return f"SAM {version[3:]} Hiera-{size.replace('_plus', '+').replace('base', 'B').title()}"


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("tiny", "tiny (bundled)", SAM, BUNDLED_TINY_CHECKPOINT),
    "vit_b": ModelSpec("vit_b", "SAM ViT-B", SAM),
    "vit_l": ModelSpec("vit_l", "SAM ViT-L", SAM),
    "vit_h": ModelSpec("vit_h", "SAM ViT-H", SAM),
    "vit_t": ModelSpec("vit_t", "MobileSAM (TinyViT)", MOBILE_SAM),
    **{
        name: ModelSpec(name, _sam2_title(name), SAM2)
        for name in SAM2_MODEL_TYPES  # sam2.1_hiera_tiny, ..., sam2_hiera_large
    },
}
MODEL_TYPES: tuple[str, ...] = tuple(MODELS)
if MODEL_TYPES != model_types.MODEL_TYPES:  # the torch-free name list the CLI parser uses must match
    raise RuntimeError(f"infosam_core.models.model_types.MODEL_TYPES differs from MODELS: {MODEL_TYPES}")
AUTO = model_types.AUTO  # the model type of the checkpoint given (the bundled tiny model without one)


def families() -> tuple[BackboneFamily, ...]:
    """The backbone families of the registered model types, in :data:`MODELS` order (each once)."""
    return tuple(dict.fromkeys(spec.family for spec in MODELS.values()))


def find_family(model: SamLike | nn.Module) -> BackboneFamily | None:
    """The backbone family of a built model: its model type's (``model.model_type``, set by every loader) when
    that family owns it, else the first family that does; None when none does."""
    spec = MODELS.get(str(getattr(model, "model_type", "")))
    if spec is not None and spec.family.owns(model):
        return spec.family
    return next((family for family in families() if family.owns(model)), None)


def family_of(model: SamLike | nn.Module) -> BackboneFamily:
    """:func:`find_family`, with a ValueError naming the model's classes when no family owns it."""
    family = find_family(model)
    if family is not None:
        return family
    encoder = getattr(model, "image_encoder", None)
    raise ValueError(
        f"no backbone family owns this model (a {type(model).__name__} with a {type(encoder).__name__} image "
        f"encoder); the families are {', '.join(f.name for f in families())}"
    )


def detect_model_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """The model type a state dict belongs to, from its tensor names and shapes (None when none matches): the
    first answer of the families' guessers. A guesser that fails on crafted names or shapes counts as no match
    (each is written not to; this keeps one bad file from being a traceback)."""
    for family in families():
        try:
            found = family.guess_model_type(state)
        except Exception:  # noqa: BLE001 - a state dict no guesser understands matches no model type
            found = None
        if found is not None and found in MODELS:
            return found
    return None


def checkpoint_model_type(checkpoint: str | Path) -> str | None:
    """The model type of a checkpoint file, read from its tensor names and shapes without loading the weights
    (None when the file cannot be read that way or matches no model type)."""
    shapes = read_checkpoint_shapes(checkpoint)
    return detect_model_type(shapes) if shapes else None


def resolve_model_type(model_type: str, checkpoint: str | Path | None) -> str:
    """``model_type``, with ``"auto"`` made concrete: ``tiny`` without a checkpoint, else the checkpoint's type.
    Raises :class:`CheckpointError` when an ``auto`` checkpoint matches no model type, ValueError for an unknown
    type."""
    if model_type != AUTO:
        if model_type not in MODELS:
            raise ValueError(f"unknown model type {model_type!r}; choose one of {AUTO}, {', '.join(MODEL_TYPES)}")
        return model_type
    if checkpoint is None:
        return model_types.DEFAULT_MODEL_TYPE
    shapes = inspect_checkpoint_shapes(checkpoint)  # a missing, special, truncated, corrupt or crafted file: says so
    if shapes is None:  # an old non-zip torch.save file: readable only whole
        shapes = load_state_dict_file(checkpoint)
    found = detect_model_type(shapes)
    if found is None:
        raise CheckpointError(
            f"{checkpoint}: cannot tell which model this file is for (its tensors match none of "
            f"{', '.join(MODEL_TYPES)}). Name the model type (--model), or check that it is a SAM, SAM2 or "
            "MobileSAM checkpoint."
        )
    return found


def model_choices() -> list[tuple[str, str]]:
    """``(title, model type)`` of every model type, for menus."""
    return [(spec.title, spec.name) for spec in MODELS.values()]


def load_sam(model_type: str = "tiny", checkpoint: str | Path | None = None) -> SamLike:
    """Build ``model_type`` and load ``checkpoint`` into it (eval mode, CPU, float32).

    ``tiny`` loads the bundled weights when ``checkpoint`` is None. Other types without a checkpoint are
    randomly initialised, with a warning. ``auto``: see :func:`resolve_model_type`. Raises
    :class:`CheckpointError` for any unusable file, and for a checkpoint of another model type (naming it).
    """
    asked = model_type
    model_type = resolve_model_type(model_type, checkpoint)
    if checkpoint is not None and asked != AUTO:
        found = checkpoint_model_type(checkpoint)
        if found is not None and found != model_type:
            held = MODELS[found].title.removesuffix(" (bundled)")
            raise CheckpointError(
                f"{checkpoint}: this checkpoint holds a {held} model (type {found}), not {model_type}. "
                f"Use --model {found} (or --model auto)."
            )
    spec = MODELS[model_type]
    if checkpoint is None and spec.default_checkpoint is not None:
        checkpoint = spec.default_checkpoint
        if not checkpoint.exists():
            raise CheckpointError(
                f"{checkpoint}: the bundled {model_type} model is missing from this installation. "
                "Reinstall the project or run `infosam pretrain` and pass --checkpoint."
            )
    return spec.family.load(model_type, Path(checkpoint) if checkpoint is not None else None)
