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

Hiera's stage-transition blocks (SAM2: the first block of stages 2-4, ``dim != dim_out``) change the width
and halve the grid inside the attention: its query is max-pooled (``attn.q_pool``, stride 2) and the skip
path is ``pool(proj(norm1(x)))``. A *parallel* adapter beside such an attention takes the same input as the
attention, pools it with a max-pool of the same kernel and stride (what the query and the skip path get,
so every output position sees the input positions it summarises), and maps ``dim -> dim_out``:
``attn(x) + s * up(ReLU(down(maxpool(x))))`` with ``down: dim -> h``, ``up: h -> dim_out``, ``h = dim_out *
mlp_ratio``; still zero at step 0. (Pooling before the bottleneck, not after, costs a quarter of the
tokens; both are faithful to "beside the attention".) A series adapter acts on the output only, so it needs
nothing special.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from infosam_core.models.protocols import SamLike
from infosam_core.options import bounds
from infosam_core.peft.common import (
    Bottleneck,
    PeftConfig,
    add_output_hook,
    block_device_dtype,
    encoder_blocks,
    output_dim,
)
from infosam_core.peft.method import PeftMethod

Variant = Literal["series", "parallel", "mixed"]
VARIANTS: tuple[str, ...] = get_args(Variant)


@dataclass
class SuSamConfig(PeftConfig):
    variant: Variant = "mixed"
    mlp_ratio: float = field(default=0.25, metadata=bounds(1e-3, 8.0))  # as the adapter's: hidden <= 8x the width
    scale: float = field(default=1.0, metadata=bounds(-100.0, 100.0))


class ScaledAdapter(Bottleneck):
    """``s * up(ReLU(down(x)))`` for a parallel hook, ``x + s * up(ReLU(down(x)))`` for a series one."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        scale: float,
        series: bool,
        generator,
        device,
        dtype,
        out_dim: int | None = None,
        pool: nn.MaxPool2d | None = None,
    ) -> None:
        super().__init__(dim, hidden, nn.ReLU, generator, device, dtype, out_dim)
        self.scale, self.series = scale, series
        # a parallel branch beside a pooling attention (Hiera's stage transitions): pool its input alike
        self.input_pool = None if pool is None else (pool.kernel_size, pool.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.scale * super().forward(x)
        return x + branch if self.series else branch

    def parallel_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if self.input_pool is not None:  # (n, H, W, C) -> (n, H / s, W / s, C), as Hiera's do_pool
            kernel, stride = self.input_pool
            x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel, stride).permute(0, 2, 3, 1)
        return output + self(x)


def inject(sam: SamLike, config: SuSamConfig, generator: torch.Generator | None = None) -> None:
    series_attn = config.variant in ("series", "mixed")
    series_mlp = config.variant == "series"
    for block in encoder_blocks(sam):
        device, dtype = block_device_dtype(block)
        for name, target, series in (("su_attn", block.attn, series_attn), ("su_mlp", block.mlp, series_mlp)):
            dim = output_dim(target)
            in_dim = dim if series else _input_dim(target)
            pool = None if series else getattr(target, "q_pool", None)  # Hiera's stage-transition attention
            if in_dim != dim and pool is None:
                raise ValueError(
                    f"SU-SAM parallel adapters need equal in/out widths or a pooling attention; {name} maps "
                    f"{in_dim} -> {dim}"
                )
            adapter = ScaledAdapter(
                in_dim,
                max(1, int(dim * config.mlp_ratio)),
                config.scale,
                series,
                generator,
                device,
                dtype,
                out_dim=dim,
                pool=pool,
            )
            add_output_hook(target, block, name, adapter, use_input=not series)


def _input_dim(module: nn.Module) -> int:
    first = next(m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)))
    return first.in_features if isinstance(first, nn.Linear) else first.normalized_shape[0]


METHOD = PeftMethod("su_sam", SuSamConfig, inject, "SU-SAM adapters (series / parallel / mixed) + decoder", "SU-SAM")
