"""Models: every model type by name and safe loading (:mod:`.registry`), one module per backbone family, each
with its :class:`~infosam_core.models.family.BackboneFamily` (:mod:`.sam`: segment-anything SAM and the bundled
tiny SAM; :mod:`.mobile_sam`; :mod:`.sam2`), weight files (:mod:`.checkpoints`), weight
fingerprints (:mod:`.fingerprint`), and the decoder variants we run (:mod:`.batched_decoder` for training,
:mod:`.interactive_decoder` for clicks)."""

from infosam_core.models.checkpoints import CheckpointError
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import MODEL_TYPES, MODELS, load_sam, model_choices
from infosam_core.models.sam import build_sam

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
