"""IBD: information-bottleneck distillation (Kuang et al., NeurIPS 2023, "Improving adversarial robustness
via information bottleneck distillation"; code SkyKuang/IBD), without its adversarial inner loop.

IBD trains the student with soft labels from the teacher (the "low-entropy prior") and an attention-based
feature distillation that picks, for each teacher layer, the student layers most related to it (the module
of Ji et al., AAAI 2021, "Show, attend and distill"). Without PGD the natural and adversarial soft-label
terms coincide, so ``(1 - a) KL_nat + a KL_adv`` is one KL:

    L_ibd = w_kd * KL_1(z_t || z_s) + w_feat * L_att
    KL_1: :func:`~infosam_core.distill.logit.binary_kd_loss` at T = 1 on the low-res mask logits
    q_t  = BN(Linear_t(GAP(F_t)))  (B, T, d)      k_s = ReLU(BN(Linear_s(GAP(F_s))))  (B, S, d)
    bk   = BN(Linear(k_s)) -> (B, S, T, d)          ("bilinear" key per teacher layer)
    a_bt = softmax_s((bk_bst . q_bt + p_t . p_s) / sqrt(d))          (B, T, S), p_t / p_s learned positions
    v(F) = L2-normalise over positions of mean_c F^2                   (spatial energy map)
    L_att = sum_t mean_b sum_s a_bts * mean_hw (v(F_s) - v(F_t))^2

d = 128 (``qk_dim``); the reference's a = b = 0.8 give w_kd = 1 (the two KL terms) and w_feat = 0.8.
Applied to SAM (choices): teacher and student layers are the encoder blocks ``blocks`` (default "global":
ViT-B 2, 5, 8, 11; tiny 1, 3), all at the embedding grid (the reference pools the student's energy map to
each teacher layer's size; here they are equal). The attention parts (linear layers, batch norms,
positions) are IBD's own and train with the PEFT parameters in the one optimiser (the reference gives them
a separate SGD). BatchNorm needs ``batch_size >= 2``.
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
from infosam_core.models.initialization import seeded_init_, seeded_module
from infosam_core.options import Options, bounds, check


def energy_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w): the channel mean of the squared features, L2-normalised over positions."""
    return F.normalize(loss_dtype(features).pow(2).mean(1).flatten(1), dim=1)


class AttentionFeatureLoss(nn.Module):
    """Show-attend-distill's attention over student layers for each teacher layer (see the module docstring).
    :meth:`forward` takes lists of (B, C_s, h, w) student and (B, C_t, h, w) teacher maps."""

    def __init__(
        self, n_student: int, n_teacher: int, c_student: int, c_teacher: int, qk_dim: int, generator=None
    ) -> None:
        super().__init__()
        self.qk_dim, self.n_teacher = qk_dim, n_teacher

        def parts() -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    "query": nn.ModuleList(
                        [nn.Sequential(nn.Linear(c_teacher, qk_dim), nn.BatchNorm1d(qk_dim)) for _ in range(n_teacher)]
                    ),
                    "key": nn.ModuleList(
                        [
                            nn.Sequential(nn.Linear(c_student, qk_dim), nn.BatchNorm1d(qk_dim), nn.ReLU())
                            for _ in range(n_student)
                        ]
                    ),
                    "bilinear": nn.Sequential(
                        nn.Linear(qk_dim, qk_dim * n_teacher), nn.BatchNorm1d(qk_dim * n_teacher)
                    ),
                }
            )

        built = seeded_module(parts, generator)
        self.query, self.key = cast(nn.ModuleList, built["query"]), cast(nn.ModuleList, built["key"])
        self.bilinear = built["bilinear"]
        self.p_t = nn.Parameter(torch.empty(n_teacher, qk_dim))
        self.p_s = nn.Parameter(torch.empty(n_student, qk_dim))
        seeded_init_(self.p_t, nn.init.xavier_normal_, generator)
        seeded_init_(self.p_s, nn.init.xavier_normal_, generator)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        with torch.autocast(student[0].device.type, enabled=False):
            b = student[0].shape[0]
            q = torch.stack([lin(loss_dtype(f).mean((2, 3))) for lin, f in zip(self.query, teacher)], 1)  # (B, T, d)
            k = torch.stack([lin(loss_dtype(f).mean((2, 3))) for lin, f in zip(self.key, student)], 1)  # (B, S, d)
            bk = self.bilinear(k.flatten(0, 1)).view(b, len(student), self.n_teacher, self.qk_dim)  # (B, S, T, d)
            logits = torch.einsum("bstd,btd->bts", bk, q) + self.p_t @ self.p_s.T
            attention = torch.softmax(logits / self.qk_dim**0.5, dim=2)  # (B, T, S)
            v_t = torch.stack([energy_map(f) for f in teacher], 1)  # (B, T, hw)
            size = (teacher[0].shape[-2], teacher[0].shape[-1])
            v_s = torch.stack([energy_map(F.adaptive_avg_pool2d(f, size)) for f in student], 1)  # (B, S, hw)
            diff = (v_s[:, None] - v_t[:, :, None]).pow(2).mean(-1)  # (B, T, S)
            return (attention * diff).sum(2).mean(0).sum()


@dataclass
class IbdConfig(Options):
    """``blocks``: encoder blocks used as teacher and student layers; ``w_kd`` / ``w_feat``: weights of the
    soft-label KL and the attention feature loss (reference 1 and 0.8); ``qk_dim``: attention width (128)."""

    blocks: Any = field(default="global", metadata=check(check_blocks_option))
    w_kd: float = field(default=1.0, metadata=bounds(0.0, 1e6))
    w_feat: float = field(default=0.8, metadata=bounds(0.0, 1e6))
    qk_dim: int = field(default=128, metadata=bounds(1, 4096))


class IbdDistiller(Distiller):
    name = "ibd"
    config_cls = IbdConfig
    description = "information-bottleneck distillation: soft labels + attention features"
    reads_encoder_blocks = True
    uniform_blocks_only = True  # one width and grid for every level (ViT blocks)
    term_names = ("kd", "feat")
    min_batch_size = 2  # batch norm over the batch

    @classmethod
    def batch_size_problem(cls, config: IbdConfig, batch_size: int) -> str | None:
        if batch_size < 2:
            return "distiller 'ibd' needs batch_size >= 2: its attention module batch-normalises over the batch."
        return None

    def __init__(self, config: IbdConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)
        self.encoder_blocks = dims.block_indices(config.blocks)
        n, d = len(self.encoder_blocks), dims.encoder_dim
        self.attention = AttentionFeatureLoss(n, n, d, d, config.qk_dim, generator)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        kd = binary_kd_loss(inputs.student_logits, inputs.teacher_logits(), 1.0)
        feat = self.attention(  # batch norms over the batch: the global batch with several processes
            [inputs.gather(inputs.student_features[i]) for i in self.encoder_blocks],
            [inputs.gather(inputs.teacher_features[i].detach()) for i in self.encoder_blocks],
        )
        return DistillLoss(self.config.w_kd * kd + self.config.w_feat * feat, {"kd": kd, "feat": feat})
