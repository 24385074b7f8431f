"""Models: every model type by name and safe loading (:mod:`.registry`), one module per backbone family, each
with its :class:`~infosam_core.models.family.BackboneFamily` (:mod:`.sam`: segment-anything SAM and the bundled
tiny SAM; :mod:`.mobile_sam`; :mod:`.sam2`), weight files (:mod:`.checkpoints`), weight
fingerprints (:mod:`.fingerprint`), and the decoder variants we run (:mod:`.batched_decoder` for training,
:mod:`.interactive_decoder` for clicks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infosam_core.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from infosam_core.models.checkpoints import CheckpointError
    from infosam_core.models.fingerprint import model_fingerprint
    from infosam_core.models.protocols import SamLike
    from infosam_core.models.registry import MODEL_TYPES, MODELS, load_sam, model_choices
    from infosam_core.models.sam import build_sam

# name -> the module it comes from, imported on first use (PEP 562): importing a light submodule such as
# :mod:`.model_types` (the CLI parser does) then imports no torch
_LAZY = {
    "CheckpointError": "infosam_core.models.checkpoints",
    "model_fingerprint": "infosam_core.models.fingerprint",
    "SamLike": "infosam_core.models.protocols",
    "MODEL_TYPES": "infosam_core.models.registry",
    "MODELS": "infosam_core.models.registry",
    "load_sam": "infosam_core.models.registry",
    "model_choices": "infosam_core.models.registry",
    "build_sam": "infosam_core.models.sam",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "MODELS",
    "MODEL_TYPES",
    "CheckpointError",
    "SamLike",
    "build_sam",
    "load_sam",
    "model_choices",
    "model_fingerprint",
]
