"""AdaptFormer: a parallel bottleneck beside each block's MLP, scaled by ``scale`` (Chen et al. 2022):

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x)) + scale * up(ReLU(down(x)))

Bottleneck 64 and scale 0.1 as in AdaptFormer; the up projection is zero-initialised (step 0 = base model).
At ViT-B, all 12 blocks: 12 x (768*64 + 64 + 64*768 + 768) = 1,189,632 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Block
from torch import nn

from infosam_core.peft.common import Bottleneck, PeftConfig, WrappedBlock, attention_branch, block_device_dtype


@dataclass
class AdaptFormerConfig(PeftConfig):
    bottleneck: int = 64
    scale: float = 0.1
    first_block: int = 0

    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "bottleneck": (1, 8192),
        "scale": (-100.0, 100.0),
        "first_block": (0, 1000),
    }


class AdaptFormerBlock(WrappedBlock):
    """A ViT block with a parallel, scaled bottleneck on the MLP branch: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, block: Block, bottleneck: int, scale: float, generator: torch.Generator | None = None):
        super().__init__(block)
        dim = block.norm1.normalized_shape[0]
        device, dtype = block_device_dtype(block)
        self.adaptformer = Bottleneck(dim, bottleneck, nn.ReLU, generator, device, dtype)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + attention_branch(self, x)
        return x + self.mlp(self.norm2(x)) + self.scale * self.adaptformer(x)


def inject(sam: Sam, config: AdaptFormerConfig, generator: torch.Generator | None = None) -> None:
    blocks = sam.image_encoder.blocks
    if not 0 <= config.first_block < len(blocks):
        raise ValueError(f"first_block must be in [0, {len(blocks) - 1}] for this {len(blocks)}-block encoder")
    if config.bottleneck < 1:
        raise ValueError(f"bottleneck must be >= 1, got {config.bottleneck}")
    for i in range(config.first_block, len(blocks)):
        blocks[i] = AdaptFormerBlock(blocks[i], config.bottleneck, config.scale, generator)
