"""The InfoSAM relation module: how strongly each image-feature location relates to the mask token.

Shared by teacher and student (one instance, trained by L_r and L_d). ViT-B / tiny: dim 256,
2 x (256*256 + 256) + 2 x 2 x 256 = 132,608 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelationModule(nn.Module):
    """``scores = (LN(m) Wq)(LN(f) Wk)^T / sqrt(d) + LN(m) LN(f)^T``, flattened, L2-normalised per sample
    (computed with the key projection folded into the query: one (C x C) product per sample, not per location).

    Arguments to :meth:`forward`:
      features: image features, (B, HW, dim) or an embedding map (B, dim, h, w)
      token: the decoder's mask token, (B, 1, dim) or (B, dim)
    Returns: relation vectors (B, HW), each of unit L2 norm, in the module's dtype (float32) even under
    autocast.
    """

    def __init__(self, dim: int = 256, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.norm_features = nn.LayerNorm(dim)
        self.norm_token = nn.LayerNorm(dim)
        self.query = nn.utils.skip_init(nn.Linear, dim, dim)
        self.key = nn.utils.skip_init(nn.Linear, dim, dim)
        self.scale = dim**-0.5
        self.reset_parameters(generator)

    def forward(self, features: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:  # (B, C, h, w) -> (B, hw, C)
            features = features.flatten(2).transpose(1, 2)
        if token.dim() == 2:
            token = token.unsqueeze(1)
        dtype = self.query.weight.dtype
        with torch.autocast(features.device.type, enabled=False):  # small; kept in the module's precision
            f = self.norm_features(features.to(dtype))  # (B, HW, C)
            m = self.norm_token(token.to(dtype))  # (B, 1, C)
            # (LN(m) Wq^T + bq)(LN(f) Wk^T + bk)^T = ((LN(m) Wq^T + bq) Wk) LN(f)^T + (LN(m) Wq^T + bq) . bk:
            # the key projection is folded into the query (1 row per sample) instead of applied to all HW rows
            q = self.query(m)  # (B, 1, C)
            folded = (q @ self.key.weight) * self.scale + m  # (B, 1, C)
            bias = (q * self.key.bias).sum(-1, keepdim=True) * self.scale  # (B, 1, 1)
            scores = folded @ f.transpose(1, 2) + bias  # (B, 1, HW)
            return F.normalize(scores.flatten(1), dim=1)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default init, drawn from ``generator`` when given (then the global RNG is not touched)."""
        from infosam_core.models.initialization import init_linear_

        with torch.no_grad():
            init_linear_(self.query, generator)
            init_linear_(self.key, generator)
            self.norm_features.reset_parameters()
            self.norm_token.reset_parameters()
