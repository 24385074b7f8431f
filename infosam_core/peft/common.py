"""Pieces shared by the PEFT methods: the bottleneck adapter layer, seeded initialisation, the attention
branch of segment-anything's ViT ``Block`` (so wrapped blocks stay numerically identical), and the
transformer blocks of a model's image encoder (:func:`encoder_blocks`).

Which blocks those are is the model's backbone family's answer
(:meth:`~infosam_core.models.family.BackboneFamily.encoder_blocks`): segment-anything's ViT blocks, the
attention blocks of MobileSAM's TinyViT (its first stage is convolutional) and SAM2's Hiera blocks. Every such
block has an ``attn`` module with a ``qkv`` and a ``proj`` Linear and an ``mlp`` module; segment-anything ViT
blocks are wrapped (:class:`WrappedBlock`, put in place by the family), the others get their added modules
through forward hooks on ``attn`` / ``mlp`` (:func:`add_output_hook`), so that no base weight is renamed
either way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from torch import nn

from infosam_core.models.initialization import init_linear_
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of
from infosam_core.options import Options


class HookedBranch(nn.Module):
    """A module usable with :func:`add_output_hook`."""

    def output_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self(output)

    def parallel_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(args[0])


class Bottleneck(HookedBranch):
    """``up(act(down(x)))``: Linear(dim -> hidden) - activation - Linear(hidden -> out_dim), (..., dim) ->
    (..., out_dim); ``out_dim`` defaults to ``dim``.

    The up projection is zero-initialised, so the branch outputs exactly 0 at step 0.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: type[nn.Module] = nn.GELU,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.down = nn.utils.skip_init(nn.Linear, dim, hidden, device=device, dtype=dtype)
        self.act = act()
        self.up = nn.utils.skip_init(nn.Linear, hidden, out_dim or dim, device=device, dtype=dtype)
        init_linear_(self.down, generator)
        with torch.no_grad():
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def attention_branch(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``attn(norm1(x))`` of a segment-anything ViT block, with its window partitioning: (B, H, W, C) -> same."""
    x = block.norm1(x)
    if block.window_size > 0:
        H, W = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, block.window_size)
    x = block.attn(x)
    if block.window_size > 0:
        x = window_unpartition(x, block.window_size, pad_hw, (H, W))
    return x


class WrappedBlock(nn.Module):
    """Base for blocks that replace a segment-anything ViT ``Block`` in its encoder.

    It holds the original block's sub-modules under the *same names* (``norm1``, ``attn``, ``norm2``,
    ``mlp``), so every base weight keeps its state-dict key; only the added modules bring new keys.
    """

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.norm1 = block.norm1
        self.attn = block.attn
        self.norm2 = block.norm2
        self.mlp = block.mlp
        self.window_size = block.window_size


def encoder_blocks(sam: SamLike) -> list[Any]:
    """The transformer blocks of ``sam``'s image encoder that PEFT adapts, input to output (its family's). Typed
    ``Any``: they are the backbones' own classes (segment-anything's, MobileSAM's, Meta's Hiera), untyped, and
    methods read their ``attn`` / ``mlp`` / ``norm1`` parts."""
    return family_of(sam).encoder_blocks(sam.image_encoder)


def output_dim(module: nn.Module) -> int:
    """Channels of ``module``'s output: ``out_features`` of its last ``nn.Linear`` (attention ``proj``, MLP fc2)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no Linear layer")
    return linears[-1].out_features


def add_output_hook(target: nn.Module, owner: nn.Module, name: str, branch: HookedBranch, use_input: bool) -> None:
    """Register ``branch`` as ``owner.<name>`` (so its weights are saved as ``...<name>.*``) and change
    ``target``'s output y to ``branch(y)`` (``use_input=False``) or ``y + branch(x)`` with x the input of
    ``target`` (``use_input=True``). The hook is a bound method of ``branch``, so ``copy.deepcopy`` of the
    model keeps it pointing at the copied branch."""
    setattr(owner, name, branch)
    target.register_forward_hook(branch.output_hook if not use_input else branch.parallel_hook)


def auxiliary_loss(model: SamLike | nn.Module) -> torch.Tensor | None:
    """The sum of the training losses that injected modules report (e.g. ConvLoRA's load balancing) through an
    ``auxiliary_loss()`` method, for the last forward pass; None when no module reports one. The trainer adds it
    to the step's loss without knowing which method produced it."""
    losses = [
        loss
        for m in model.modules()
        if (report := getattr(m, "auxiliary_loss", None)) is not None and (loss := report()) is not None
    ]
    return torch.stack([loss.float() for loss in losses]).sum() if losses else None


def block_device_dtype(block: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where new modules for ``block`` should live, so injection works on a model already on CUDA."""
    p = next(block.parameters())
    return p.device, p.dtype


@dataclass
class PeftConfig(Options):
    """Options every method has (the base of each method's options dataclass, an
    :class:`~infosam_core.options.Options`: types, finite numbers and each field's bounds are checked when a
    config is made, so that no option can ask for absurd sizes).

    ``train_decoder``: the whole mask decoder is trainable (the paper's setup for every method).
    """

    train_decoder: bool = True
