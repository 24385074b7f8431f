"""MobileSAM's decoupled distillation (Zhang et al. 2023, "Faster Segment Anything: Towards lightweight SAM
for mobile applications") as a fine-tuning regulariser.

MobileSAM trains its small encoder alone on ``MSE(E_S, E_T)``, the mean squared error between the student's
and the teacher's image embeddings (B, 256, h, w), with the decoder frozen. Here the PEFT student keeps the
segmentation loss and adds

    L_mobilesam = weight * MSE(E_s, E_t)        (weight 1: MobileSAM has a single term; assumed)

0 (its minimum) when student == teacher. ``relation_module=true`` adds InfoSAM's relation module and terms
(:class:`~infosam_core.distill.infosam.WithRelationModule`; the paper's "MobileSAM w RM").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from infosam_core.distill.base import DistillInputs, DistillLoss, ModelDims, loss_dtype
from infosam_core.distill.infosam import WithRelationModule
from infosam_core.options import Options, bounds


@dataclass
class MobilesamConfig(Options):
    """``weight``: of the embedding MSE; ``relation_module``: add InfoSAM's relation-module terms, weighted
    ``rm_alpha`` (L_r) and ``rm_beta`` (L_d)."""

    weight: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    relation_module: bool = False
    rm_alpha: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    rm_beta: float = field(default=0.5, metadata=bounds(0.0, 1e6))


class MobilesamDistiller(WithRelationModule):
    name = "mobilesam"
    config_cls = MobilesamConfig
    description = "MobileSAM: MSE between image embeddings (relation_module=true adds InfoSAM's RM)"
    own_terms = ("mse",)

    def __init__(self, config: MobilesamConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config, dims, generator)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        mse = F.mse_loss(loss_dtype(inputs.student_embeddings), loss_dtype(inputs.teacher_embeddings).detach())
        return self.add_relation_terms(inputs, DistillLoss(self.config.weight * mse, {"mse": mse}))
