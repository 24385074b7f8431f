"""AdaptFormer: a parallel bottleneck beside each block's MLP, scaled by ``scale`` (Chen et al. 2022):

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x)) + scale * up(ReLU(down(x)))

On TinyViT (whose ``mlp`` holds its own pre-norm, so the branch sees the block's x as in AdaptFormer) and
Hiera (whose ``mlp`` input is ``norm2(x)``: the branch sees the normalised x there) the branch is a forward
hook on ``mlp`` that adds ``scale * up(ReLU(down(mlp input)))`` to its output.

Bottleneck 64 and scale 0.1 as in AdaptFormer; the up projection is zero-initialised (step 0 = base model).
At ViT-B, all 12 blocks: 12 x (768*64 + 64 + 64*768 + 768) = 1,189,632 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from segment_anything.modeling.image_encoder import Block
from torch import nn

from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of
from infosam_core.options import bounds
from infosam_core.peft.common import (
    Bottleneck,
    PeftConfig,
    WrappedBlock,
    add_output_hook,
    attention_branch,
    block_device_dtype,
    output_dim,
)
from infosam_core.peft.method import PeftMethod


@dataclass
class AdaptFormerConfig(PeftConfig):
    bottleneck: int = field(default=64, metadata=bounds(1, 8192))
    scale: float = field(default=0.1, metadata=bounds(-100.0, 100.0))
    first_block: int = field(default=0, metadata=bounds(0, 1000))


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


class ScaledBottleneck(Bottleneck):
    """``scale * up(ReLU(down(x)))``: the AdaptFormer branch as a hook on a block's ``mlp`` (input -> added to output)."""

    def __init__(self, dim: int, hidden: int, scale: float, generator, device, dtype) -> None:
        super().__init__(dim, hidden, nn.ReLU, generator, device, dtype)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * super().forward(x)


def inject(sam: SamLike, config: AdaptFormerConfig, generator: torch.Generator | None = None) -> None:
    family = family_of(sam)
    blocks = family.encoder_blocks(sam.image_encoder)
    if not 0 <= config.first_block < len(blocks):
        raise ValueError(f"first_block must be in [0, {len(blocks) - 1}] for this {len(blocks)}-block encoder")
    for i in range(config.first_block, len(blocks)):
        block = blocks[i]
        if family.is_vit_block(block):
            block = AdaptFormerBlock(block, config.bottleneck, config.scale, generator)
            family.replace_encoder_block(sam.image_encoder, i, block)
            continue
        device, dtype = block_device_dtype(block)
        dim = output_dim(block.mlp)
        branch = ScaledBottleneck(dim, config.bottleneck, config.scale, generator, device, dtype)
        add_output_hook(block.mlp, block, "adaptformer", branch, use_input=True)


METHOD = PeftMethod("adaptformer", AdaptFormerConfig, inject, "parallel MLP bottleneck + decoder", "AdaptFormer")
