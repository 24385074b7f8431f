"""Attention through :func:`torch.nn.functional.scaled_dot_product_attention` (one fused kernel) in the modules the
backbone packages write as explicit ``softmax(q @ k.T) @ v``: segment-anything's ViT ``Attention`` (with its
decomposed relative-position bias passed as the additive ``attn_mask``), MobileSAM's TinyViT ``Attention`` (its
learned attention biases as ``attn_mask``) and segment-anything's decoder ``Attention`` (the two-way transformer,
HQ-SAM's too). SAM2's Hiera and its decoder already call ``scaled_dot_product_attention`` in Meta's code.

:func:`use_fused_attention` switches every such module of a model to a subclass that only overrides ``forward``:
the parameters, their state-dict keys, PEFT's replaced ``qkv`` layers and forward hooks are untouched, and the
results equal the reference's to float32 rounding (``tests/test_fused_attention.py``). The fused kernel never
holds a softmax copy of the (heads x N x N) attention map: on a 2-core CPU a ViT-B global-attention block runs
about 4x faster than the reference's three operations. The model loaders apply it to every model they build;
:func:`use_reference_attention` switches back (e.g. to compare with the packages' own code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as VitAttention
from segment_anything.modeling.image_encoder import get_rel_pos
from segment_anything.modeling.transformer import Attention as DecoderAttention
from torch import nn


class FusedVitAttention(VitAttention):
    """segment-anything's ViT attention (window or global, with relative positions) as one fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, d)
        mask = None
        if self.use_rel_pos:
            mask = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out)


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """segment-anything's ``add_decomposed_rel_pos`` as an additive mask: (B, heads, q_h*q_w, k_h*k_w) for
    queries ``q`` (B, heads, q_h*q_w, d) -- the bias it adds to the (unscaled-query) attention logits."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype)
    batch, heads, _, dim = q.shape
    r_q = q.reshape(batch, heads, q_h, q_w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, heads, q_h * q_w, k_h * k_w)


class FusedTinyVitAttention(nn.Module):
    """MobileSAM's TinyViT attention (learned per-offset biases) as one fused kernel. Used as a mixin with
    MobileSAM's own class (:func:`use_fused_attention` makes the subclass), so its ``train`` keeps caching the
    biases (``ab``) in eval mode."""

    num_heads: int
    key_dim: int
    d: int
    dh: int
    scale: float
    norm: nn.Module
    qkv: nn.Module
    proj: nn.Module
    attention_biases: torch.Tensor
    attention_bias_idxs: torch.Tensor
    ab: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x))
        q, k, v = qkv.view(batch, tokens, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.dh))


class FusedDecoderAttention(DecoderAttention):
    """segment-anything's decoder attention (two-way transformer) as one fused kernel."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d): segment-anything's
        return self.out_proj(self._recombine_heads(out))


_FUSED_TINY_VIT: dict[type, type] = {}  # MobileSAM's Attention class -> its fused subclass


def _tiny_vit_attention_class() -> type | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm's deprecated import paths
            from mobile_sam.modeling.tiny_vit_sam import Attention
    except ImportError:
        return None
    return Attention


def _fused_class(module: nn.Module) -> type | None:
    """The fused class for ``module`` (None when it is not an attention module we fuse, or already fused)."""
    cls = type(module)
    if cls is VitAttention:
        return FusedVitAttention
    if cls is DecoderAttention:
        return FusedDecoderAttention
    tiny = _tiny_vit_attention_class() if "tiny_vit" in cls.__module__ else None
    if tiny is not None and cls is tiny:
        if tiny not in _FUSED_TINY_VIT:
            _FUSED_TINY_VIT[tiny] = type("FusedTinyVitAttention", (FusedTinyVitAttention, tiny), {})
        return _FUSED_TINY_VIT[tiny]
    return None


def use_fused_attention(model: nn.Module) -> int:
    """Switch every reference attention module of ``model`` to its fused subclass (in place); returns how many."""
    count = 0
    for module in model.modules():
        fused = _fused_class(module)
        if fused is not None:
            module.__class__ = fused
            count += 1
    return count


def use_reference_attention(model: nn.Module) -> int:
    """Undo :func:`use_fused_attention`: every fused attention module back to the package's own class."""
    count = 0
    for module in model.modules():
        cls = type(module)
        if cls in (FusedVitAttention, FusedDecoderAttention) or issubclass(cls, FusedTinyVitAttention):
            module.__class__ = next(base for base in cls.__mro__[1:] if base.__module__ != __name__)
            count += 1
    return count


def fused_attention_count(model: nn.Module) -> int:
    """How many attention modules of ``model`` run fused."""
    return sum(
        isinstance(m, FusedVitAttention | FusedDecoderAttention | FusedTinyVitAttention) for m in model.modules()
    )
