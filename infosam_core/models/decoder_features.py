"""What a mask decoder needs from the image encoder besides the image embedding.

A decoder may declare ``encoder_blocks``: indices of encoder blocks whose outputs it reads (HQ-SAM's
decoder, :mod:`.hq_decoder`, reads the first global-attention block). Whoever runs the encoder captures
those outputs and hands them to the decoder as ``encoder_features``, channels first (B, D, h, w):
prediction (:class:`~infosam_core.inference.backends.SamBackend`, cached with the embedding),
training (:class:`~infosam_core.training.encoder_cache.EncoderCache`) and
:func:`encode_with_blocks` for one-off passes. Stock decoders declare nothing and get nothing.
"""

from __future__ import annotations

import torch
from torch import nn


def decoder_encoder_blocks(decoder: nn.Module) -> tuple[int, ...]:
    """The encoder blocks ``decoder`` reads (empty for SAM's stock decoder)."""
    return tuple(getattr(decoder, "encoder_blocks", ()))


def encode_with_blocks(
    encoder: nn.Module, x: torch.Tensor, blocks: tuple[int, ...]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``encoder(x)`` and the outputs of ``encoder.blocks[i]`` for ``i`` in ``blocks``, channels first
    ((B, h, w, D) block outputs -> (B, D, h, w)), captured by forward hooks removed before returning."""
    if not blocks:
        return encoder(x), ()
    captured: dict[int, torch.Tensor] = {}
    handles = [
        encoder.blocks[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, out)) for i in blocks
    ]
    try:
        embedding = encoder(x)
    finally:
        for handle in handles:
            handle.remove()
    return embedding, tuple(captured[i].permute(0, 3, 1, 2) for i in blocks)
