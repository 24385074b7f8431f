"""Every model type by name, and loading one safely: ``load_sam(model_type, checkpoint)``.

Each backbone family has its own module (:mod:`.sam` for segment-anything's SAM and the bundled tiny model;
SAM2 and MobileSAM go beside it) and one :class:`ModelSpec` line per model type in :data:`MODELS`.

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

Checkpoints are never unpickled with code: ``.pth`` files go through ``torch.load(weights_only=True)``,
``.safetensors`` through safetensors. Every failure raises :class:`CheckpointError` naming the file and
the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segment_anything.modeling import Sam

from infosam_core.models.checkpoints import CheckpointError
from infosam_core.models.mobile_sam import load_mobile_sam
from infosam_core.models.sam import load_segment_anything
from infosam_core.models.sam2 import SAM2_MODEL_TYPES, Sam2Model, load_sam2
from infosam_core.resources import BUNDLED_TINY_CHECKPOINT


@dataclass(frozen=True)
class ModelSpec:
    """One model type: ``title`` (shown in the app), its backbone ``family`` (which module builds it), the
    loader ``load(model_type, checkpoint or None) -> model``, the file used when no checkpoint is given
    (None: random weights, with a warning) and ``vit_blocks``: whether the image encoder is a stack of ViT
    blocks of one width and grid (what multi-level distillers read; not TinyViT, not Hiera)."""

    name: str
    title: str
    family: str
    load: Callable[[str, Path | None], Sam | Sam2Model]
    default_checkpoint: Path | None = None
    vit_blocks: bool = True


def _sam2_title(name: str) -> str:
    version, size = name.split("_hiera_")
    return f"SAM {version[3:]} Hiera-{size.replace('_plus', '+').replace('base', 'B').title()}"


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("tiny", "tiny (bundled)", "sam", load_segment_anything, BUNDLED_TINY_CHECKPOINT),
    "vit_b": ModelSpec("vit_b", "SAM ViT-B", "sam", load_segment_anything),
    "vit_l": ModelSpec("vit_l", "SAM ViT-L", "sam", load_segment_anything),
    "vit_h": ModelSpec("vit_h", "SAM ViT-H", "sam", load_segment_anything),
    "vit_t": ModelSpec("vit_t", "MobileSAM (TinyViT)", "mobile_sam", load_mobile_sam, vit_blocks=False),
    **{
        name: ModelSpec(name, _sam2_title(name), "sam2", load_sam2, vit_blocks=False)
        for name in SAM2_MODEL_TYPES  # sam2.1_hiera_tiny, ..., sam2_hiera_large
    },
}
MODEL_TYPES: tuple[str, ...] = tuple(MODELS)


def model_choices() -> list[tuple[str, str]]:
    """``(title, model type)`` of every model type, for menus."""
    return [(spec.title, spec.name) for spec in MODELS.values()]


def load_sam(model_type: str = "tiny", checkpoint: str | Path | None = None) -> Sam | Sam2Model:
    """Build ``model_type`` and load ``checkpoint`` into it (eval mode, CPU, float32).

    ``tiny`` loads the bundled weights when ``checkpoint`` is None. Other types without a checkpoint are
    randomly initialised, with a warning. Raises :class:`CheckpointError` for any unusable file.
    """
    if model_type not in MODELS:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    spec = MODELS[model_type]
    if checkpoint is None and spec.default_checkpoint is not None:
        checkpoint = spec.default_checkpoint
        if not checkpoint.exists():
            raise CheckpointError(
                f"{checkpoint}: the bundled {model_type} model is missing from this installation. "
                "Reinstall the project or run `infosam pretrain` and pass --checkpoint."
            )
    return spec.load(model_type, Path(checkpoint) if checkpoint is not None else None)
