"""TinySAM's full-stage distillation (Shu et al., AAAI 2025, "TinySAM: Pushing the envelope for efficient
segment anything model", Sec. 3.1) as a fine-tuning regulariser.

TinySAM distils every stage with the L1 distance ("MSE ... too small to be well optimised"):

    L_embedding = |E_t - E_s|_1                       image embeddings (B, 256, h, w), mean
    L_token     = |m_t - m_s|_1                       the decoder's output token (here the single-mask token), mean
    L_output    = mean_b H_b |z_t,b - z_s,b|_1         low-res mask logits (B, 1, 4h, 4w), per-sample mean
    H_b         = sigmoid(IoU(M_t,b, GT_b) / (IoU(M_s,b, GT_b) + eps) - 1)    hard-mask weight, no gradient
    L_tinysam   = w_embedding L_embedding + w_token L_token + w_output L_output

M = logits > 0 at the low-res size, GT area-downsampled to it (> 0.5). A mask is "hard" (H > 0.5) when the
student is worse than the teacher. Choices where the paper is silent (no training code is public):
w_embedding = w_token = w_output = 1, eps = 1e-6, the batch mean of H_b L_output,b (the paper sums over
masks), the single-mask token for "output tokens", and no hard-prompt sampling (a data trick for SA-1B).
0 (its minimum) when student == teacher. ``relation_module=true`` adds InfoSAM's relation module and terms
(:class:`~infosam_core.distill.infosam.WithRelationModule`; the paper's "TinySAM w RM").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from infosam_core.distill.base import DistillInputs, DistillLoss, ModelDims, loss_dtype
from infosam_core.distill.infosam import WithRelationModule
from infosam_core.options import Options, bounds


def hard_mask_weight(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """TinySAM's H per sample, (B,): ``sigmoid(IoU_t / (IoU_s + eps) - 1)`` with logits (B, 1, h, w) > 0 and
    ground truth ``masks`` (B, 1, H, W) resized to (h, w) (area, > 0.5)."""
    with torch.no_grad():
        gt = F.interpolate(masks.float(), teacher_logits.shape[-2:], mode="area") > 0.5

        def iou(logits: torch.Tensor) -> torch.Tensor:
            pred = logits > 0
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            return inter / union.clamp_min(1)

        return torch.sigmoid(iou(teacher_logits) / (iou(student_logits) + eps) - 1)


@dataclass
class TinysamConfig(Options):
    """Weights of the three L1 terms; ``relation_module``: add InfoSAM's relation-module terms, weighted
    ``rm_alpha`` (L_r) and ``rm_beta`` (L_d)."""

    w_embedding: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    w_token: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    w_output: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    relation_module: bool = False
    rm_alpha: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    rm_beta: float = field(default=0.5, metadata=bounds(0.0, 1e6))


class TinysamDistiller(WithRelationModule):
    name = "tinysam"
    config_cls = TinysamConfig
    description = (
        "TinySAM: L1 on embeddings, tokens and hard-weighted mask logits (relation_module=true adds InfoSAM's RM)"
    )
    own_terms = ("embedding", "token", "output")

    def __init__(self, config: TinysamConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config, dims, generator)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        c = self.config
        z_s, z_t = loss_dtype(inputs.student_logits), loss_dtype(inputs.teacher_logits())
        embedding = F.l1_loss(loss_dtype(inputs.student_embeddings), loss_dtype(inputs.teacher_embeddings))
        token = F.l1_loss(loss_dtype(inputs.student_token), loss_dtype(inputs.teacher_token()))
        weight = hard_mask_weight(z_t, z_s, inputs.masks)
        output = (weight * (z_s - z_t).abs().flatten(1).mean(1)).mean()
        total = c.w_embedding * embedding + c.w_token * token + c.w_output * output
        own = DistillLoss(total, {"embedding": embedding, "token": token, "output": output})
        return self.add_relation_terms(inputs, own)
