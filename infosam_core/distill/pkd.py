"""PKD: Pearson-correlation knowledge distillation (Cao et al., NeurIPS 2022, "PKD: General distillation
framework for object detectors via Pearson correlation coefficient"), in the form of mmrazor's ``PKDLoss``.

Each channel of the student and teacher image embeddings (B, C, h, w) is standardised over the batch and the
positions (mean 0, unbiased std 1, eps 1e-6 added to the std; over the global batch, ``DistillInputs.gather``),
then

    L_pkd = MSE(norm(E_s), norm(E_t)) / 2     (= 1 - Pearson r per channel, averaged)

The paper puts PKD among the single-layer feature methods, so it is applied to the image embedding (the
neck output, 256 channels). The statistics are per channel over B*h*w: a batch statistic. Minimum 0 when
student == teacher (and whenever the student is a per-channel positive affine map of the teacher).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims, loss_dtype
from infosam_core.options import Options


def channel_standardize(features: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, C, h, w) -> each channel standardised over N*h*w (unbiased std, ``eps`` added to it)."""
    x = loss_dtype(features).transpose(0, 1).flatten(1)  # (C, N*h*w)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + eps)
    return x.view(features.shape[1], features.shape[0], *features.shape[2:]).transpose(0, 1)


def pkd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mmrazor's PKD loss for one level: ``MSE(norm(student), norm(teacher)) / 2`` (the student resized
    bilinearly to the teacher's size when they differ)."""
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, teacher.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(channel_standardize(student), channel_standardize(teacher.detach())) / 2


@dataclass
class PkdConfig(Options):
    """PKD has no option of its own (its weight is ``--lam``; mmrazor's class default is 1)."""


class PkdDistiller(Distiller):
    name = "pkd"
    config_cls = PkdConfig
    description = "Pearson-correlation KD on the image embeddings"
    term_names = ("pkd",)

    def __init__(self, config: PkdConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        loss = pkd_loss(inputs.gather(inputs.student_embeddings), inputs.gather(inputs.teacher_embeddings))
        return DistillLoss(loss, {"pkd": loss})
