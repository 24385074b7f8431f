"""SemCKD: cross-layer distillation with semantic calibration (Chen et al., AAAI 2021; code
DefangChen/SemCKD: ``SelfA``, ``AAEmbed``, ``MLPEmbed``, ``SemCKDLoss``).

Each student level attends over the teacher's levels, with attention computed from the levels' B x B
similarity (Gram) matrices, and is pulled towards each teacher level through a regressor per pair:

    G_i^S = F_i^S F_i^S^T,  G_j^T = F_j^T F_j^T^T     (B, B), features flattened per sample
    q_i = normalize(MLP_i^q(G_i^S)),  k_j = normalize(MLP_j^k(G_j^T))     (B, d), d = max(1, B // factor)
    a_bij = softmax_j(q_i,b . k_j,b)                                       (B, S, T)
    L_semckd = sum_{b,i,j} a_bij * mean_chw (R_ij(F_i^S)_b - F_j^T_b)^2 / (B * S)
    total = weight * L_semckd + w_kd * KL_T(z_t || z_s)    (reference script: weight 400, w_kd 1, T = 4)

R_ij (``AAEmbed``): conv1x1 C_s->m, BN, ReLU, conv3x3 m->m, BN, ReLU, conv1x1 m->C_t (no biases). MLP:
Linear(B, 2d), ReLU, Linear(2d, d). The MLPs read the batch dimension, so the distiller is built for one
``batch_size`` (the reference skips smaller batches; the trainer drops the last partial batch).

Applied to SAM (choices, recorded because they deviate from the reference): the levels are the encoder
blocks ``blocks`` for both sides (default "global": ViT-B 2, 5, 8, 11; tiny 1, 3; the paper: "knowledge
from multiple layers of the teacher"); the regressor's mid width m is ``mid_channels`` (default 256) instead
of 2 C_t (ViT-B: 1536, i.e. 23.6 M parameters per pair, 377 M for 4 x 4 pairs; at 256: 0.98 M per pair).
The vanilla-KD term on the mask logits follows the reference script (``w_kd`` 0 turns it off).
Caveat (as in the reference): at B = 4, factor 4 gives d = 1, so each normalised q and k is +-1 and the
attention can only take a few values.
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
from infosam_core.distill.logit import binary_kd_loss
from infosam_core.models.initialization import seeded_module
from infosam_core.options import Options, bounds, check


def pair_regressor(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """SemCKD's ``AAEmbed`` with mid width ``c_mid``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 1, bias=False),
        nn.BatchNorm2d(c_mid),
        nn.ReLU(),
        nn.Conv2d(c_mid, c_mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_mid),
        nn.ReLU(),
        nn.Conv2d(c_mid, c_out, 1, bias=False),
    )


def similarity_embedding(batch_size: int, dim: int) -> nn.Sequential:
    """SemCKD's ``MLPEmbed`` (the L2 normalisation is applied by the caller)."""
    return nn.Sequential(nn.Linear(batch_size, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))


@dataclass
class SemckdConfig(Options):
    """``blocks``: encoder blocks (student and teacher levels); ``batch_size``: the training batch size the
    attention MLPs are built for; ``factor``: d = batch_size // factor; ``mid_channels``: regressor width;
    ``weight``: of the feature loss (reference 400); ``w_kd`` / ``temperature``: vanilla KD on the logits."""

    blocks: Any = field(default="global", metadata=check(check_blocks_option))
    batch_size: int = field(default=4, metadata=bounds(1, 1024))
    factor: int = field(default=4, metadata=bounds(1, 1024))
    # levels^2 regressors, each a 3x3 conv of mid_channels^2: 1024 keeps 4 levels at ViT-B near 180 M parameters
    mid_channels: int = field(default=256, metadata=bounds(1, 1024))
    weight: float = field(default=400.0, metadata=bounds(0.0, 1e6))
    w_kd: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    temperature: float = field(default=4.0, metadata=bounds(0.0, 100.0, low_open=True))


class SemckdDistiller(Distiller):
    name = "semckd"
    config_cls = SemckdConfig
    description = "semantic calibration: student levels attend over teacher levels"
    reads_encoder_blocks = True
    uniform_blocks_only = True  # one width and grid for every level (ViT blocks)
    term_names = ("feat", "kd")

    @classmethod
    def batch_size_problem(cls, config: SemckdConfig, batch_size: int) -> str | None:
        if batch_size != config.batch_size:
            return (
                f"distiller 'semckd' is built for batches of {config.batch_size} (its attention reads the batch "
                f"dimension) but batch_size is {batch_size}: leave out --distill-option batch_size (it follows the "
                f"training batch size) or set it to {batch_size}."
            )
        return None

    def __init__(self, config: SemckdConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        self.encoder_blocks = dims.block_indices(config.blocks)
        n, c = len(self.encoder_blocks), dims.encoder_dim
        d = max(1, config.batch_size // config.factor)

        def parts() -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    "query": nn.ModuleList([similarity_embedding(config.batch_size, d) for _ in range(n)]),
                    "key": nn.ModuleList([similarity_embedding(config.batch_size, d) for _ in range(n)]),
                    "regressors": nn.ModuleList([pair_regressor(c, config.mid_channels, c) for _ in range(n * n)]),
                }
            )

        built = seeded_module(parts, generator)
        self.query, self.key, self.regressors = (cast(nn.ModuleList, built[k]) for k in ("query", "key", "regressors"))

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        c = self.config
        # the attention reads the batch dimension (B x B Gram matrices): over the global batch with several processes
        f_s = [inputs.gather(loss_dtype(inputs.student_features[i])) for i in self.encoder_blocks]
        f_t = [inputs.gather(loss_dtype(inputs.teacher_features[i]).detach()) for i in self.encoder_blocks]
        b, n = f_s[0].shape[0], len(f_s)
        with torch.autocast(f_s[0].device.type, enabled=False):
            gram = [f.flatten(1) @ f.flatten(1).T for f in (*f_s, *f_t)]
            query = torch.stack([F.normalize(mlp(g), dim=1) for mlp, g in zip(self.query, gram[:n])], 1)  # (B,S,d)
            key = torch.stack([F.normalize(mlp(g), dim=1) for mlp, g in zip(self.key, gram[n:])], 2)  # (B,d,T)
            attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, S, T)
            per_pair = torch.stack(
                [
                    (self.regressors[i * n + j](f_s[i]) - f_t[j]).pow(2).flatten(1).mean(1)
                    for i in range(n)
                    for j in range(n)
                ],
                1,
            ).view(b, n, n)  # (B, S, T)
            feat = (attention * per_pair).sum() / (b * n)
        kd = binary_kd_loss(inputs.student_logits, inputs.teacher_logits(), c.temperature) if c.w_kd else feat * 0
        return DistillLoss(c.weight * feat + c.w_kd * kd, {"feat": feat, "kd": kd})
