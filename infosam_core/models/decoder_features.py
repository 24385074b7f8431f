"""What a mask decoder needs from the image encoder besides the image embedding.

A decoder may declare ``encoder_blocks``: indices into the encoder's *feature blocks*, the block list its
backbone family names (:meth:`~infosam_core.models.family.BackboneFamily.feature_blocks`: a segment-anything
ViT's blocks -- HQ-SAM's decoder, :mod:`.hq_decoder`, reads the first global-attention block -- or MobileSAM's
TinyViT stages, of which sam-hq's ``vit_tiny`` reads the second). Whoever runs the encoder captures those
outputs and hands them to the decoder as ``encoder_features``, channels first (B, D, h, w): prediction (the
family's prediction backend, cached with the embedding), training (the family's training backbone and
:class:`~infosam_core.training.encoder_cache.EncoderCache`) and :func:`encode_with_blocks` for one-off passes.
Stock decoders declare nothing and get nothing.

The same capture hands multi-level distillers their block outputs in training, SAM2's Hiera blocks included
(channels last (B, h, w, D) with D and h, w per stage).

Output layouts: a ViT block (and a Hiera block) gives (B, h, w, D); a TinyViT stage gives tokens (B, h*w, D)
in row-major order (after its patch-merging downsample), put on their square grid (B, h, w, D) here -- what
sam-hq's TinyViT does with ``x.view(B, 64, 64, -1)`` -- so every captured output is channels last,
(B, h, w, D), before the decoder's channels-first view. The functions here take the feature-block list, so
they know no family.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def decoder_encoder_blocks(decoder: nn.Module) -> tuple[int, ...]:
    """The encoder blocks ``decoder`` reads (empty for SAM's stock decoder)."""
    return tuple(getattr(decoder, "encoder_blocks", ()))


def as_grid(output: torch.Tensor) -> torch.Tensor:
    """A block's output channels last on its grid: (B, h, w, D) as is; TinyViT tokens (B, s*s, D) -> (B, s, s, D)."""
    if output.ndim == 4:
        return output
    b, n, d = output.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"encoder block output of {n} tokens is not a square grid")
    return output.reshape(b, side, side, d)


def encoder_block_outputs(
    encoder: nn.Module, feature_blocks: Sequence[nn.Module], x: torch.Tensor, blocks: tuple[int, ...]
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``encoder(x)`` and the outputs of ``feature_blocks[i]`` for ``i`` in ``blocks`` (the encoder's feature
    blocks), channels last on their grid (B, h, w, D) (:func:`as_grid`), captured by forward hooks removed
    before returning."""
    with captured_block_outputs(feature_blocks, blocks) as captured:
        embedding = encoder(x)
    return embedding, captured


@contextmanager
def captured_block_outputs(
    feature_blocks: Sequence[nn.Module], blocks: tuple[int, ...]
) -> Iterator[dict[int, torch.Tensor]]:
    """While open, every forward through ``feature_blocks[i]`` (``i`` in ``blocks``) puts that block's
    output, channels last on its grid (B, h, w, D) (:func:`as_grid`), in the dict it yields -- whatever runs the
    encoder (its own forward, or a training backbone's ``encode``). No hooks when ``blocks`` is empty; the
    captured outputs keep their autograd graph."""
    captured: dict[int, torch.Tensor] = {}
    if not blocks:
        yield captured
        return
    handles = [
        feature_blocks[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, as_grid(out)))
        for i in blocks
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def encode_with_blocks(
    encoder: nn.Module, feature_blocks: Sequence[nn.Module], x: torch.Tensor, blocks: tuple[int, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``encoder(x)`` and the outputs of the feature blocks ``blocks`` (:func:`encoder_block_outputs`),
    channels first (B, D, h, w), in the order of ``blocks``."""
    embedding, captured = encoder_block_outputs(encoder, feature_blocks, x, blocks)
    return embedding, tuple(captured[i].permute(0, 3, 1, 2) for i in blocks)
