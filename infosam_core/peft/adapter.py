"""Series adapters in the image encoder (the InfoSAM paper's main setup).

In every block from ``first_block`` on (ViT-B: blocks 2..11), two adapters, each ``x + up(GELU(down(x)))``
with hidden size ``dim * mlp_ratio`` (768 -> 192 -> 768 at ViT-B):

    x = x + adapter_attn(attn(norm1(x)))          # on the attention output, before the residual add
    x = x + adapter_mlp(mlp(norm2(x)))

On MobileSAM's TinyViT and SAM2's Hiera (no ViT ``Block``) the same two adapters act on the outputs of the
block's ``attn`` and ``mlp`` modules through forward hooks, sized per block (Hiera: 96/192/384/768 channels
per stage at tiny, so 24/48/96/192 hidden); ``first_block`` indexes the encoder's attention blocks in order
and the trained norms are every LayerNorm of an adapted block.

The up projections are zero-initialised (the reference code used the default init, so its step 0 was
not the pre-trained model), so each adapter is the identity at step 0. The adapted blocks' ``norm1`` /
``norm2`` train too (``train_norms``).

Counts at ViT-B (this is what 5,917,440 is): adapters alone = 10 blocks x 2 x (768*192 + 192 + 192*768
+ 768) = 5,917,440; the norms add 10 x 2 x 2 x 768 = 30,720 (image_encoder part of the report); the mask
decoder adds 4,058,340.
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
class AdapterConfig(PeftConfig):
    # hidden = dim * mlp_ratio: up to 8x the block width (ViT-H: 10,240), never the 65 TB of mlp_ratio=1e9
    mlp_ratio: float = field(default=0.25, metadata=bounds(1e-3, 8.0))
    first_block: int = field(default=2, metadata=bounds(0, 1000))
    train_norms: bool = True


class SeriesAdapter(Bottleneck):
    """``x + up(GELU(down(x)))``: (..., dim) -> (..., dim); the identity at initialisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class AdapterBlock(WrappedBlock):
    """A ViT block with the two series adapters; base weights keep their keys (``norm1``, ``attn``, ...)."""

    def __init__(self, block: Block, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__(block)
        dim = block.norm1.normalized_shape[0]
        device, dtype = block_device_dtype(block)
        self.adapter_attn = SeriesAdapter(dim, hidden, nn.GELU, generator, device, dtype)
        self.adapter_mlp = SeriesAdapter(dim, hidden, nn.GELU, generator, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self.adapter_attn(attention_branch(self, x))
        return x + self.adapter_mlp(self.mlp(self.norm2(x)))


def inject(sam: SamLike, config: AdapterConfig, generator: torch.Generator | None = None) -> None:
    family = family_of(sam)
    blocks = family.encoder_blocks(sam.image_encoder)
    if not 0 <= config.first_block < len(blocks):
        raise ValueError(f"first_block must be in [0, {len(blocks) - 1}] for this {len(blocks)}-block encoder")
    for i in range(config.first_block, len(blocks)):
        block = blocks[i]
        if family.is_vit_block(block):
            dim = block.norm1.normalized_shape[0]
            block = AdapterBlock(block, max(1, int(dim * config.mlp_ratio)), generator)
            family.replace_encoder_block(sam.image_encoder, i, block)
        else:  # TinyViT / Hiera: adapters on the attention and MLP outputs, sized per block (per Hiera stage)
            device, dtype = block_device_dtype(block)
            for name, branch in (("adapter_attn", block.attn), ("adapter_mlp", block.mlp)):
                dim = output_dim(branch)
                adapter = SeriesAdapter(dim, max(1, int(dim * config.mlp_ratio)), nn.GELU, generator, device, dtype)
                add_output_hook(branch, block, name, adapter, use_input=False)
        if config.train_norms:
            for module in block.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)


METHOD = PeftMethod("adapter", AdapterConfig, inject, "series adapters in blocks[2:] + norms + decoder", "Adapter")
