"""BitFit: only the bias terms of the image encoder's transformer blocks train (qkv, proj, MLP and
LayerNorm biases; on TinyViT and Hiera the same in their attention blocks), plus the mask decoder. Nothing is added, so the model is the base model at step 0."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infosam_core.models.protocols import SamLike
from infosam_core.peft.common import PeftConfig, encoder_blocks
from infosam_core.peft.method import PeftMethod


@dataclass
class BitFitConfig(PeftConfig):
    pass


def inject(sam: SamLike, config: BitFitConfig, generator: torch.Generator | None = None) -> None:
    for block in encoder_blocks(sam):
        for name, param in block.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)


METHOD = PeftMethod("bitfit", BitFitConfig, inject, "encoder-block biases + decoder", "BitFit")
