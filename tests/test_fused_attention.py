"""Fused attention (``models.fused_attention``): each fused module equals the package's own class on the same
weights and inputs to float32 rounding, in eval and training mode (gradients too), and every loader fuses."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as VitAttention
from segment_anything.modeling.transformer import Attention as DecoderAttention

from infosam_core.models.fused_attention import (
    FusedDecoderAttention,
    FusedVitAttention,
    fused_attention_count,
    use_fused_attention,
    use_reference_attention,
)
from infosam_core.models.sam import build_sam


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # relative-position tables start at zero: give them values
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return module


def _fused_copy(reference: torch.nn.Module) -> torch.nn.Module:
    fused = copy.deepcopy(reference)
    assert use_fused_attention(fused) == 1
    return fused


@pytest.mark.parametrize(("grid", "window"), [((14, 14), 4), ((9, 11), 1)])
def test_vit_attention_equals_segment_anythings(grid, window):
    reference = _perturbed(VitAttention(64, num_heads=4, use_rel_pos=True, input_size=(14, 14)), 0)
    fused = _fused_copy(reference)
    assert isinstance(fused, FusedVitAttention)
    x = torch.randn(window, *grid, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    expected = reference(x)
    got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (grad_ref,) = torch.autograd.grad(expected.square().sum(), x)
    (grad_fused,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(grad_fused, grad_ref, rtol=1e-4, atol=1e-4)


def test_decoder_attention_equals_segment_anythings():
    reference = _perturbed(DecoderAttention(64, num_heads=8, downsample_rate=2), 2)
    fused = _fused_copy(reference)
    assert isinstance(fused, FusedDecoderAttention)
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(3, 7, 64, generator=generator), torch.randn(3, 50, 64, generator=generator)
    torch.testing.assert_close(fused(q=q, k=k, v=k), reference(q=q, k=k, v=k), rtol=1e-5, atol=1e-5)


def test_tiny_vit_attention_equals_mobile_sams():
    pytest.importorskip("timm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam.modeling.tiny_vit_sam import Attention
    reference = _perturbed(Attention(64, key_dim=16, num_heads=4, attn_ratio=2, resolution=(7, 7)), 4)
    fused = _fused_copy(reference)
    assert isinstance(fused, Attention) and type(fused) is not Attention
    x = torch.randn(5, 49, 64, generator=torch.Generator().manual_seed(5))
    for train in (False, True):  # eval mode reads the cached biases (ab), training mode indexes them
        reference.train(train)
        fused.train(train)
        torch.testing.assert_close(fused(x), reference(x), rtol=1e-5, atol=1e-5)
    assert use_reference_attention(fused) == 1 and type(fused) is Attention


def test_loaders_fuse_every_attention_and_switch_back():
    sam = build_sam("tiny")  # 4 encoder blocks, 2 x 3 + 1 decoder attentions
    assert fused_attention_count(sam) == 4 + 7
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        fused = sam.image_encoder(x)
        assert use_reference_attention(sam) == 11 and fused_attention_count(sam) == 0
        reference = sam.image_encoder(x)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_sam2_hiera_already_runs_the_fused_kernel(monkeypatch):
    """Meta's Hiera calls F.scaled_dot_product_attention itself: nothing to replace there."""
    pytest.importorskip("sam2")
    from sam2.modeling.backbones import hieradet

    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hieradet.F, "scaled_dot_product_attention", counting)
    block = hieradet.MultiScaleBlock(dim=32, dim_out=32, num_heads=2, window_size=4)
    with torch.inference_mode():
        block(torch.randn(1, 8, 8, 32))
    assert calls
