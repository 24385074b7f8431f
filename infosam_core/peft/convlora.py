"""ConvLoRA (Zhong et al., ICLR 2024, "Convolution Meets LoRA: Parameter Efficient Finetuning for Segment
Anything Model"), in the form InfoSAM compares with: LoRA on every block's ``attn.qkv`` whose low-rank
bottleneck holds a mixture of convolutional experts.

For a block input x (B, H, W, C) (or (B, N, C) token windows with N a square, as in TinyViT; SAM2's Hiera
feeds ``qkv`` (B * windows, ws, ws, C) in windowed blocks and (B, H, W, C) in global ones, before any query
pooling, so the experts see each window's grid as on SAM's windowed ViT blocks):

    a = A x                                   (B, H, W, r), r = rank
    g = top1(softmax-free noisy gate(mean_hw a))   one expert per image (window), weight 1
    a = a + E_g(a)                            E_s: resize x s (bilinear), 3x3 conv r -> r, GELU, resize back
    qkv(x) + (alpha / r) * B a

with experts at scales s = 1..8, the gate ``a_mean @ W_gate + N(0, 1) * softplus(a_mean @ W_noise)`` in
training (noisy top-1 gating, Shazeer et al. 2017; no noise at evaluation), and the mixture's
load-balancing loss ``cv^2(importance) + cv^2(load)`` over the batch's images/windows, weighted by
``balance_weight`` and reported to the trainer through :meth:`ConvLoraLinear.auxiliary_loss`.

B is zero-initialised, so step 0 is the base model. Counts at ViT-B, rank 4, 8 experts: LoRA 12 x (4 x 768 +
2304 x 4) = 147,456; experts 12 x 8 x (4 x 4 x 9 + 4) = 14,208; gates 12 x 2 x 4 x 8 = 768; encoder part
162,432. The gate's noise is drawn from torch's global generator (training only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infosam_core.models.initialization import seeded_init_
from infosam_core.models.protocols import SamLike
from infosam_core.options import bounds
from infosam_core.peft.common import PeftConfig, encoder_blocks
from infosam_core.peft.lora import LoraLinear
from infosam_core.peft.method import PeftMethod


@dataclass
class ConvLoraConfig(PeftConfig):
    rank: int = field(default=4, metadata=bounds(1, 1024))
    alpha: float = field(default=4.0, metadata=bounds(0.0, 1e4))
    # expert e works at scale e + 1 (its input is upsampled that much): 16 keeps the largest map modest
    experts: int = field(default=8, metadata=bounds(1, 16))
    balance_weight: float = field(default=0.01, metadata=bounds(0.0, 1e4))  # the mixture's load-balancing loss


class ConvExpert(nn.Module):
    """Resize by ``scale`` (bilinear), 3x3 conv (r -> r), GELU, resize back: (n, r, h, w) -> (n, r, h, w)."""

    def __init__(self, rank: int, scale: int, generator: torch.Generator | None, device, dtype) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.utils.skip_init(nn.Conv2d, rank, rank, 3, padding=1, device=device, dtype=dtype)
        seeded_init_(self.conv.weight, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
        bound = 1 / math.sqrt(rank * 9)
        seeded_init_(self.conv.bias, nn.init.uniform_, generator, a=-bound, b=bound)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        if self.scale != 1:
            a = F.interpolate(a, scale_factor=self.scale, mode="bilinear", align_corners=False)
        a = F.gelu(self.conv(a))
        if self.scale != 1:
            a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        return a


def _cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation (0 for a single value)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.float().var() / (x.float().mean() ** 2 + 1e-10)


class ConvLoraLinear(LoraLinear):
    """LoRA whose bottleneck goes through a noisy top-1 mixture of :class:`ConvExpert` (see the module docstring)."""

    def __init__(self, base: nn.Linear, config: ConvLoraConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(base, config.rank, config.alpha, generator)
        kw: dict[str, Any] = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.experts = nn.ModuleList(ConvExpert(config.rank, e + 1, generator, **kw) for e in range(config.experts))
        self.w_gate = nn.Parameter(torch.zeros(config.rank, config.experts, **kw))
        self.w_noise = nn.Parameter(torch.zeros(config.rank, config.experts, **kw))
        self.balance_weight = config.balance_weight
        self._balance_loss: torch.Tensor | None = None

    def _gates(self, pooled: torch.Tensor) -> torch.Tensor:
        """(n, r) pooled bottleneck -> (n, experts) gates: one expert per row, weight 1 (noisy top-1)."""
        logits = pooled @ self.w_gate
        if self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(pooled @ self.w_noise) + 1e-2)
        top = logits.argmax(dim=1)
        # straight-through weight 1 that still passes a gradient to the gate: softmax(top) / detached value
        prob = torch.softmax(logits, dim=1).gather(1, top[:, None])
        weight = prob / prob.detach()
        return torch.zeros_like(logits).scatter(1, top[:, None], weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        a = F.linear(x, self.lora_A)
        shape = a.shape
        if a.dim() == 3:  # (n, N, r) token windows: N must be a square
            side = math.isqrt(shape[1])
            if side * side != shape[1]:
                raise ValueError(f"ConvLoRA needs a square token grid, got {shape[1]} tokens")
            a = a.reshape(shape[0], side, side, shape[2])
        a_map = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)  # (n, r, h, w)
        gates = self._gates(a_map.mean(dim=(2, 3)))
        mixed = torch.zeros_like(a_map)
        for e, expert in enumerate(self.experts):
            rows = torch.nonzero(gates[:, e] > 0).flatten()
            if rows.numel():
                mixed = mixed.index_add(0, rows, expert(a_map[rows]) * gates[rows, e, None, None, None])
        a_map = a_map + mixed
        if self.training:
            importance, load = gates.sum(0), (gates > 0).sum(0)
            self._balance_loss = self.balance_weight * (_cv_squared(importance) + _cv_squared(load))
        low_rank = a_map.permute(0, 2, 3, 1).reshape(shape)
        return out + F.linear(low_rank, self.lora_B) * self.scaling

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of the last training forward (weighted by ``balance_weight``), once."""
        loss, self._balance_loss = self._balance_loss, None
        return loss


def inject(sam: SamLike, config: ConvLoraConfig, generator: torch.Generator | None = None) -> None:
    for block in encoder_blocks(sam):
        block.attn.qkv = ConvLoraLinear(block.attn.qkv, config, generator)


METHOD = PeftMethod(
    "convlora", ConvLoraConfig, inject, "LoRA with a mixture of conv experts (ConvLoRA) + decoder", "ConvLoRA"
)
