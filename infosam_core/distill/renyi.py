"""Matrix-based Renyi entropy (alpha = 2) of batch Gram matrices, and the two InfoSAM losses.

For a batch of B samples each term is built from B x B Gram matrices of per-sample L2-normalised,
flattened vectors (unit diagonal): ``A = K / tr(K)``, ``S_2(A) = -log2(sum(A**2))`` (in [0, log2 B]);
a joint entropy is ``S_2`` of the Hadamard product. A batch of 1 (a 1 x 1 Gram matrix, no signal) gives
exactly 0, loss and gradient: the entropy of a 1 x 1 Gram matrix is a zero that stays in the graph
(through autograd the formula would give rounding-sized gradients, ~1e-15, instead).

Everything is computed in float32 with autocast disabled, whatever the inputs' dtype (float64 stays float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infosam_core.distill.base import loss_dtype


def gram(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B): cosine similarities between the flattened samples (unit diagonal)."""
    with torch.autocast(x.device.type, enabled=False):
        z = F.normalize(loss_dtype(x).reshape(x.shape[0], -1), dim=1)
        return z @ z.T


def renyi_entropy(K: torch.Tensor) -> torch.Tensor:
    """S_2 of a (B, B) Gram matrix: ``A = K / tr(K)``, ``-log2(sum(A**2))`` (a scalar)."""
    with torch.autocast(K.device.type, enabled=False):
        K = loss_dtype(K)
        if K.shape[0] < 2:  # S_2 of [[1]] is 0: returned connected to K, with exact zero gradients
            return (K * 0).sum()
        A = K / torch.trace(K)
        return -torch.log2((A * A).sum())


def joint_entropy(*grams: torch.Tensor) -> torch.Tensor:
    """S_2 of the Hadamard product of Gram matrices (the joint entropy of the variables)."""
    product = grams[0]
    for g in grams[1:]:
        product = product * g
    return renyi_entropy(product)


def relation_compression_loss(z_img: torch.Tensor, z_tok: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
    """L_r = S(G_r) - S(G_i o G_m o G_r) (teacher image features, teacher mask token, teacher relation).

    Minimising it compresses the relation: the relation keeps little that the (features, token) pair
    does not explain. Pass detached teacher tensors so only the relation module gets this gradient.
    Shapes: (B, ...) each; returns a scalar.
    """
    g_r = gram(relation)
    return renyi_entropy(g_r) - joint_entropy(gram(z_img), gram(z_tok), g_r)


def relation_distillation_loss(rel_teacher: torch.Tensor, rel_student: torch.Tensor) -> torch.Tensor:
    """L_d = -S(G_rT) - S(G_rS) + S(G_rT o G_rS) = -I(R_T; R_S): (B, HW) each -> scalar."""
    g_t, g_s = gram(rel_teacher), gram(rel_student)
    return -renyi_entropy(g_t) - renyi_entropy(g_s) + joint_entropy(g_t, g_s)
