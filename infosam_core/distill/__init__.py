"""Distillation from the frozen pre-trained SAM (teacher) into the PEFT student: one module per distiller
behind :mod:`.registry`, all implementing :class:`.base.Distiller` (each class names itself once: ``name``,
``config_cls``, ``description``; :data:`DISTILLERS` is built from the classes).

* :mod:`.infosam` -- InfoSAM (the default): :class:`.relation.RelationModule` and the Renyi-entropy terms
  of :mod:`.renyi` (``relation_compression_loss`` L_r, ``relation_distillation_loss`` L_d); also
  ``WithRelationModule``, the ``relation_module`` option of the SAM-compression recipes.
* the InfoSAM paper's baselines, one module each: :mod:`.logit`, :mod:`.pkd`, :mod:`.pkt` (single level),
  :mod:`.ibd`, :mod:`.vid` (paired encoder blocks), :mod:`.semckd`, :mod:`.reviewkd` (cross-level),
  :mod:`.tinysam`, :mod:`.mobilesam` (SAM compression recipes). See docs/DISTILLERS.md.
"""

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims
from infosam_core.distill.registry import (
    DISTILLERS,
    NO_DISTILLATION,
    distiller_names,
    make_distiller,
    register_distiller,
    unregister_distiller,
)

__all__ = [
    "DISTILLERS",
    "NO_DISTILLATION",
    "DistillInputs",
    "DistillLoss",
    "Distiller",
    "ModelDims",
    "distiller_names",
    "make_distiller",
    "register_distiller",
    "unregister_distiller",
]
