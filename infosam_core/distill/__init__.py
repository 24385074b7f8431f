"""Distillation from the frozen pre-trained SAM (teacher) into the PEFT student: one module per distiller
behind :mod:`.registry`, all implementing :class:`.base.Distiller`.

* :mod:`.infosam` -- InfoSAM (the default): :class:`.relation.RelationModule` and the Renyi-entropy terms
  of :mod:`.renyi` (``relation_compression_loss`` L_r, ``relation_distillation_loss`` L_d).
"""

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims
from infosam_core.distill.registry import DISTILLERS, NO_DISTILLATION, distiller_names, make_distiller

__all__ = [
    "DISTILLERS",
    "NO_DISTILLATION",
    "DistillInputs",
    "DistillLoss",
    "Distiller",
    "ModelDims",
    "distiller_names",
    "make_distiller",
]
