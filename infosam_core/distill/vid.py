"""VID: variational information distillation (Ahn et al., CVPR 2019, "Variational information distillation
for knowledge transfer"), in the form of the authors' code as kept in RepDistiller / mdistiller.

Per distilled level, a regressor mu(.) of three 1x1 convolutions (C_s -> C_t -> C_t -> C_t, ReLU between, no
bias) maps the student's feature map to the teacher's, and a learned per-channel variance
sigma_c^2 = softplus(a_c) + eps (initialised to 5.0, eps = 1e-5) gives the Gaussian negative log-likelihood
of the teacher's features (constant 0.5 log 2 pi dropped):

    L_vid = sum over levels of mean over b, c, h, w of  0.5 * ((t - mu(s))^2 / sigma_c^2 + log sigma_c^2)

It can be negative (the log-variance term) and is not 0 when student == teacher (the regressor starts
random); it lower-bounds -I(t; s) up to constants. Applied to SAM (choices; the paper only calls VID a
multiple-layer paired method): the levels are the outputs of the image-encoder blocks ``blocks`` (default
"global": ViT-B 2, 5, 8, 11; tiny 1, 3; SAM2's Hiera: its stage ends, tiny 0, 2, 9, 11), student block k
paired with teacher block k (same channels, same grid), plus the image embedding (256 channels) with
``embedding=true``. Each level's regressor is sized to its block's width (ViT: D everywhere; Hiera-tiny
96, 192, 384, 768 on grids S/4 .. S/32). A block inside the student's frozen
prefix (blocks 0-1 with ``adapter``) gives a target the student cannot move, but its regressor still trains.
The regressors and variances train with the PEFT parameters (ViT-B: 1.77 M parameters per block level;
SAM2.1 Hiera-tiny stage ends: 2.35 M in all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
from infosam_core.models.initialization import seeded_module
from infosam_core.options import Options, bounds, check


class VidLevel(nn.Module):
    """One level's regressor and variance: :meth:`forward` ``(student (B, C_s, h, w), teacher (B, C_t, h', w'))``
    -> the mean Gaussian negative log-likelihood (the larger map is average-pooled to the smaller, as in the
    reference)."""

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        init_var: float = 5.0,
        eps: float = 1e-5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        c_s, c_t = student_channels, teacher_channels
        self.regressor = seeded_module(
            lambda: nn.Sequential(
                nn.Conv2d(c_s, c_t, 1, bias=False),
                nn.ReLU(),
                nn.Conv2d(c_t, c_t, 1, bias=False),
                nn.ReLU(),
                nn.Conv2d(c_t, c_t, 1, bias=False),
            ),
            generator,
        )
        self.eps = eps
        self.log_scale = nn.Parameter(torch.full((c_t,), math.log(math.exp(init_var - eps) - 1.0)))

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, t = loss_dtype(student), loss_dtype(teacher).detach()
        if s.shape[-1] > t.shape[-1]:
            s = F.adaptive_avg_pool2d(s, (t.shape[-2], t.shape[-1]))
        elif s.shape[-1] < t.shape[-1]:
            t = F.adaptive_avg_pool2d(t, (s.shape[-2], s.shape[-1]))
        with torch.autocast(s.device.type, enabled=False):
            mu = self.regressor(s)
            var = self.variance().view(1, -1, 1, 1)
            return (0.5 * ((mu - t) ** 2 / var + var.log())).mean()


@dataclass
class VidConfig(Options):
    """``blocks``: encoder blocks distilled ("global", "all", or indices such as "2,5,8,11");
    ``embedding``: also distil the image embedding; ``init_var``: initial variance (reference 5.0)."""

    blocks: Any = field(default="global", metadata=check(check_blocks_option))
    embedding: bool = False
    init_var: float = field(default=5.0, metadata=bounds(0.0, 1e6, low_open=True))


class VidDistiller(Distiller):
    name = "vid"
    config_cls = VidConfig
    description = "variational information distillation on encoder blocks"
    reads_encoder_blocks = True
    term_names = ("vid",)

    def __init__(self, config: VidConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        self.encoder_blocks = dims.block_indices(config.blocks)
        self.levels = nn.ModuleDict(
            {
                str(i): VidLevel(dims.width(i), dims.width(i), config.init_var, generator=generator)
                for i in self.encoder_blocks
            }
        )
        if config.embedding:
            self.levels["embedding"] = VidLevel(dims.embed_dim, dims.embed_dim, config.init_var, generator=generator)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        terms = [
            self.levels[str(i)](inputs.student_features[i], inputs.teacher_features[i]) for i in self.encoder_blocks
        ]
        if "embedding" in self.levels:
            terms.append(self.levels["embedding"](inputs.student_embeddings, inputs.teacher_embeddings))
        loss = torch.stack(terms).sum()
        return DistillLoss(loss, {"vid": loss})
