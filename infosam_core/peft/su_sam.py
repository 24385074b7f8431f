"""SU-SAM (Song et al. 2024, arXiv 2401.17803, "SU-SAM: A Simple Unified Framework for Adapting Segment
Anything Model in Underperformed Scenes"): simplified adapters in every encoder block, in one of three
arrangements (``variant``):

* ``series``   -- after the attention and after the MLP: ``y = y + s * up(ReLU(down(y)))`` on each branch's
  output y;
* ``parallel`` -- beside the attention and beside the MLP: each branch's output gets
  ``+ s * up(ReLU(down(x)))`` of the branch's input x;
* ``mixed``    -- series after the attention, parallel beside the MLP.

``down``: dim -> dim * ``mlp_ratio``, ``up`` zero-initialised (the identity at step 0), ``s`` = ``scale``.
The adapters act on the blocks' ``attn`` / ``mlp`` modules through forward hooks, so the same code serves
SAM's ViT, MobileSAM's TinyViT and SAM2's Hiera (sized per block), and base weights keep their keys
(added keys: ``...blocks.i.su_attn.*``, ``...blocks.i.su_mlp.*``). At ViT-B with the defaults (ratio 0.25):
12 x 2 x (768 x 192 + 192 + 192 x 768 + 768) = 7,100,928 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from torch import nn

from infosam_core.peft.common import (
    Bottleneck,
    PeftConfig,
    add_output_hook,
    block_device_dtype,
    encoder_blocks,
    output_dim,
)

VARIANTS = ("series", "parallel", "mixed")


@dataclass
class SuSamConfig(PeftConfig):
    variant: str = "mixed"
    mlp_ratio: float = 0.25
    scale: float = 1.0


class ScaledAdapter(Bottleneck):
    """``s * up(ReLU(down(x)))`` for a parallel hook, ``x + s * up(ReLU(down(x)))`` for a series one."""

    def __init__(self, dim: int, hidden: int, scale: float, series: bool, generator, device, dtype) -> None:
        super().__init__(dim, hidden, nn.ReLU, generator, device, dtype)
        self.scale, self.series = scale, series

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.scale * super().forward(x)
        return x + branch if self.series else branch


def inject(sam: Sam, config: SuSamConfig, generator: torch.Generator | None = None) -> None:
    if config.variant not in VARIANTS:
        raise ValueError(f"SU-SAM variant must be one of {', '.join(VARIANTS)}, got {config.variant!r}")
    if config.mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {config.mlp_ratio}")
    series_attn = config.variant in ("series", "mixed")
    series_mlp = config.variant == "series"
    for block in encoder_blocks(sam.image_encoder):
        device, dtype = block_device_dtype(block)
        for name, target, series in (("su_attn", block.attn, series_attn), ("su_mlp", block.mlp, series_mlp)):
            dim = output_dim(target)
            in_dim = dim if series else _input_dim(target)
            if in_dim != dim:  # a parallel branch must map the input's width to the output's
                raise ValueError(f"SU-SAM parallel adapters need equal in/out widths; {name} maps {in_dim} -> {dim}")
            adapter = ScaledAdapter(
                dim, max(1, int(dim * config.mlp_ratio)), config.scale, series, generator, device, dtype
            )
            add_output_hook(target, block, name, adapter, use_input=not series)


def _input_dim(module: nn.Module) -> int:
    first = next(m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)))
    return first.in_features if isinstance(first, nn.Linear) else first.normalized_shape[0]
