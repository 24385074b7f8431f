"""Logit distillation: Hinton et al.'s KD on SAM's mask logits, per pixel, as binary distributions.

The InfoSAM paper's "Logit" baseline cites ONE (Lan, Zhu & Gong, NeurIPS 2018, "Knowledge distillation by
on-the-fly native ensemble"), whose distillation term is Hinton's temperature-softened KL (T = 3). A mask
logit z is a two-class distribution with class logits (0, z), i.e. p = sigmoid(z / T), so per pixel

    KL_T(z_t, z_s) = p_t log(p_t / p_s) + (1 - p_t) log((1 - p_t) / (1 - p_s)),  p = sigmoid(z / T)
    L_logit = T^2 * mean over batch and pixels of KL_T(z_t, z_s)

on the low-res single-mask logits (B, 1, 4h, 4w) -- what the official InfoSAM code hands its distillers
(``pred_masks``; 256 x 256 at ViT-B). Choices where the reference is silent: the pixel mean (ONE sums over
classes and averages over the batch; a sum over 65,536 pixels would swamp the segmentation loss) and the
low-res logits rather than the upsampled ones. 0 (its minimum) when student == teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims, loss_dtype
from infosam_core.options import Options, bounds


def binary_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean(KL(sigmoid(z_t/T) || sigmoid(z_s/T)))`` over every element (each a binary distribution).

    Computed as ``T^2 * mean(BCE(z_s/T, p_t) - H(p_t))`` with logsigmoid, so it is finite for any logits.
    """
    t = temperature
    zs, zt = loss_dtype(student_logits) / t, loss_dtype(teacher_logits).detach() / t
    p_t = torch.sigmoid(zt)
    cross = F.binary_cross_entropy_with_logits(zs, p_t, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(zt, p_t, reduction="none")
    return t * t * (cross - entropy).mean()


@dataclass
class LogitConfig(Options):
    """``temperature``: T of the softened distributions (ONE: 3; RepDistiller's default 4)."""

    temperature: float = field(default=3.0, metadata=bounds(0.0, 100.0, low_open=True))


class LogitDistiller(Distiller):
    name = "logit"
    config_cls = LogitConfig
    description = "Hinton KD on the mask logits (per-pixel binary KL, T=3)"
    term_names = ("kd",)

    def __init__(self, config: LogitConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        kd = binary_kd_loss(inputs.student_logits, inputs.teacher_logits(), self.config.temperature)
        return DistillLoss(kd, {"kd": kd})
