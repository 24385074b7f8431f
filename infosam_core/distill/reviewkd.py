"""ReviewKD: distilling knowledge via knowledge review (Chen et al., CVPR 2021; code
dvlab-research/ReviewKD, also mdistiller): the student's levels are fused from the deepest to the
shallowest by attention-based fusion (ABF) and each fused level is compared with the teacher's level
by the hierarchical context loss (HCL).

    ABF_k(x, r): y = BN(conv1x1(x)); with r (the residual from the deeper level, resized):
                 [a, b] = sigmoid(conv1x1([y, r])); y = a * y + b * r;  out = BN(conv3x3(y)), residual y
    (the deepest level has no fusion)
    HCL(s, t) = (mse(s, t) + sum_{l in 4, 2, 1; l < h} 2^-k mse(pool_l(s), pool_l(t))) / (1 + sum 2^-k)
                (k = 1, 2, 3: weights 1, 0.5, 0.25, 0.125; pool_l = adaptive average pool to l x l)
    L_reviewkd = weight * sum over levels HCL(out_k, F_k^T)

conv1x1 / conv3x3 have no bias and kaiming-uniform (a = 1) weights; one mid width for every level,
min(512, widest level) (reference: ``mid_channel`` shared by the ABFs, so residuals pass between levels).
Applied to SAM (choices): levels = the encoder blocks ``blocks`` (default "global": ViT-B 2, 5, 8, 11; tiny
1, 3; SAM2's Hiera: its stage ends, tiny 0, 2, 9, 11), student block k fused and compared with teacher
block k. On a ViT every level has the same channels and grid (the detection version's layout); on Hiera
level k's ABF maps its own width to itself (96, 192, 384, 768 at tiny) and the residual from the deeper,
coarser level is resized to level k's grid (nearest), as in the reference for CNN stages.
``weight`` 1.0 (detection / ImageNet; the CIFAR scripts use 5.0).
Warm-up: the reference (mdistiller) multiplies the weight by min(epoch / warmup_epochs, 1), epochs counted from
1, with 20 warm-up epochs of a 240-epoch CIFAR schedule; ``warmup_epochs`` does the same and is 0 (no warm-up)
by default, since 20 epochs would outlast the protocol's 10-epoch runs (``warmup_epochs=2``: half the weight
in epoch 1, full from epoch 2).
The ABF modules train with the PEFT parameters (ViT-B: about 3.9 M parameters per level; SAM2.1 Hiera-tiny
stage ends: 7.39 M in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from infosam_core.distill.base import (
    Distiller,
    DistillInputs,
    DistillLoss,
    ModelDims,
    check_blocks_option,
    loss_dtype,
)
from infosam_core.models.initialization import seeded_init_, seeded_module
from infosam_core.options import Options, bounds, check


class AttentionFusion(nn.Module):
    """ReviewKD's ABF: :meth:`forward` ``(x (B, C_in, h, w), residual or None) -> (output (B, C_out, h, w),
    residual (B, C_mid, h, w))``."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, fuse: bool, generator=None) -> None:
        super().__init__()

        def parts() -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    "conv1": nn.Sequential(nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid)),
                    "conv2": nn.Sequential(nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)),
                    **({"att_conv": nn.Sequential(nn.Conv2d(2 * c_mid, 2, 1), nn.Sigmoid())} if fuse else {}),
                }
            )

        built = seeded_module(parts, generator)
        self.conv1, self.conv2 = cast(nn.Sequential, built["conv1"]), cast(nn.Sequential, built["conv2"])
        self.att_conv = built["att_conv"] if fuse else None
        for conv in (cast(nn.Conv2d, self.conv1[0]), cast(nn.Conv2d, self.conv2[0])):
            seeded_init_(conv.weight, nn.init.kaiming_uniform_, generator, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv1(x)
        if self.att_conv is not None and residual is not None:
            residual = F.interpolate(residual, y.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([y, residual], 1))
            y = y * z[:, :1] + residual * z[:, 1:2]
        return self.conv2(y), y


def hcl_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """ReviewKD's hierarchical context loss for one level (see the module docstring)."""
    loss, weight, total = F.mse_loss(student, teacher), 1.0, 1.0
    for size in (4, 2, 1):
        if size >= student.shape[-1]:
            continue
        weight /= 2
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
        total += weight
    return loss / total


@dataclass
class ReviewkdConfig(Options):
    """``blocks``: encoder blocks (levels); ``weight``: of the summed HCL (1.0; CIFAR scripts 5.0);
    ``warmup_epochs``: the weight ramps as min(epoch / warmup_epochs, 1) (0: full weight from the start)."""

    blocks: Any = field(default="global", metadata=check(check_blocks_option))
    weight: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    warmup_epochs: int = field(default=0, metadata=bounds(0, 100_000))

    def ramp(self, epoch: int) -> float:
        """The warm-up factor of the weight in ``epoch`` (1-based)."""
        return min(epoch / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0


class ReviewkdDistiller(Distiller):
    name = "reviewkd"
    config_cls = ReviewkdConfig
    description = "knowledge review: fused levels, hierarchical context loss"
    reads_encoder_blocks = True
    term_names = ("hcl",)

    def __init__(self, config: ReviewkdConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        self.encoder_blocks = dims.block_indices(config.blocks)
        mid = min(512, max(dims.width(i) for i in self.encoder_blocks))  # shared: residuals pass between levels
        deepest = self.encoder_blocks[-1]
        # ordered deepest first, as they run
        self.fusions = nn.ModuleList(
            [
                AttentionFusion(dims.width(i), mid, dims.width(i), fuse=i != deepest, generator=generator)
                for i in reversed(self.encoder_blocks)
            ]
        )

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        residual = None
        losses = []
        with torch.autocast(inputs.student_embeddings.device.type, enabled=False):
            for fusion, i in zip(self.fusions, reversed(self.encoder_blocks)):
                out, residual = fusion(loss_dtype(inputs.student_features[i]), residual)
                losses.append(hcl_loss(out, loss_dtype(inputs.teacher_features[i]).detach()))
        loss = torch.stack(losses).sum()
        return DistillLoss(self.config.weight * self.config.ramp(inputs.epoch) * loss, {"hcl": loss})
