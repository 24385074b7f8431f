"""PKT: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, "Learning deep representations with
probabilistic knowledge transfer"; the InfoSAM paper cites the TNNLS 2020 version, same loss).

With features flattened to one row per sample, f (B, D), L2-normalised:

    K_ij = (cos(f_i, f_j) + 1) / 2                 (cosine kernel, in [0, 1])
    P_ij = K_ij / sum_j K_ij                        (conditional probabilities, per row)
    L_pkt = mean over the B*B entries of P^T_ij log((P^T_ij + eps) / (P^S_ij + eps)),  eps = 1e-7

i.e. KL(teacher || student) of the batch's affinity distributions (the authors' code, as in RepDistiller and
mdistiller; the mean over B^2 entries is why their weight is 30000). A batch statistic, like InfoSAM's: one
function of (B, D) tensors, :func:`pkt_loss`, applied to the global batch (``DistillInputs.gather``).

Applied to SAM (choices; the paper only puts PKT among the single-layer feature methods): ``feature=
"embedding"`` (default) uses the flattened image embedding (B, 256*h*w); ``"token"`` the decoder's mask token
(B, 256). ``weight`` defaults to the reference's 30000. Minimum 0 when student == teacher; exactly 0 for
B = 1 (hence ``min_batch_size`` 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from infosam_core.distill.base import Distiller, DistillInputs, DistillLoss, ModelDims, loss_dtype
from infosam_core.options import Options, bounds


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """PKT's KL between the cosine-affinity distributions of (B, D) student and teacher features."""

    def probabilities(f: torch.Tensor) -> torch.Tensor:
        f = loss_dtype(f)
        f = f / (f.norm(dim=1, keepdim=True) + eps)
        k = (f @ f.T + 1) / 2
        return k / k.sum(1, keepdim=True)

    p_s, p_t = probabilities(student), probabilities(teacher.detach())
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@dataclass
class PktConfig(Options):
    """``feature``: "embedding" (flattened image embedding) or "token" (mask token); ``weight``: the
    reference's loss weight (30000)."""

    feature: Literal["embedding", "token"] = "embedding"
    weight: float = field(default=30000.0, metadata=bounds(0.0, 1e9))


class PktDistiller(Distiller):
    name = "pkt"
    config_cls = PktConfig
    description = "probabilistic knowledge transfer: batch cosine affinities, KL"
    term_names = ("pkt",)
    min_batch_size = 2

    def __init__(self, config: PktConfig, dims: ModelDims, generator: torch.Generator | None = None) -> None:
        super().__init__(config)

    def forward(self, inputs: DistillInputs) -> DistillLoss:
        if self.config.feature == "token":
            f_s, f_t = inputs.student_token, inputs.teacher_token()
        else:
            f_s, f_t = inputs.student_embeddings, inputs.teacher_embeddings
        loss = pkt_loss(inputs.gather(f_s.flatten(1)), inputs.gather(f_t.flatten(1)))  # the global batch
        return DistillLoss(self.config.weight * loss, {"pkt": loss})
