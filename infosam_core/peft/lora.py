"""LoRA on every ``attn.qkv`` of the image encoder: ``qkv(x) + (alpha / rank) * B A x``.

Every supported encoder has one ``attn.qkv`` Linear per transformer block: SAM ViT (all blocks), MobileSAM's
TinyViT (10 attention blocks) and SAM2's Hiera (every Hiera block's ``attn.qkv``; (B, H, W, C) inputs,
which ``nn.Linear`` handles as they are).

A is (rank, in) kaiming-uniform(a=sqrt 5), B is (out, rank) zeros, so step 0 equals the base model.
At ViT-B, rank 4: 12 blocks x (4 x 768 + 2304 x 4) = 147,456 parameters.

Why not Hugging Face ``peft``: it is not installed and would pull in transformers and accelerate (several
hundred MB) for ~40 lines of code; its LoRA wraps the base layer under ``base_layer.*`` keys, which would
rename SAM's weights. Here :class:`LoraLinear` *is* an ``nn.Linear`` that reuses the base layer's own
``weight``/``bias`` Parameters, so every base key is unchanged and the adapter file holds only
``...qkv.lora_A`` / ``...qkv.lora_B`` (plus the decoder when it trains).
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
from infosam_core.peft.method import PeftMethod


@dataclass
class LoraConfig(PeftConfig):
    rank: int = field(default=4, metadata=bounds(1, 1024))
    alpha: float = field(default=4.0, metadata=bounds(0.0, 1e4))


class LoraLinear(nn.Linear):
    """An ``nn.Linear`` (sharing ``base``'s parameters) plus a low-rank update: (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        kw: dict[str, Any] = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))
        seeded_init_(self.lora_A, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def inject(sam: SamLike, config: LoraConfig, generator: torch.Generator | None = None) -> None:
    for block in encoder_blocks(sam):
        block.attn.qkv = LoraLinear(block.attn.qkv, config.rank, config.alpha, generator)


METHOD = PeftMethod("lora", LoraConfig, inject, "LoRA on every attn.qkv + decoder", "LoRA")
