"""InteractiveDecoder computes segment-anything's MaskDecoder.forward, and never from stale caches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from infosam_core.inference.predictor import Predictor, _postprocess_masks
from infosam_core.models.interactive_decoder import InteractiveDecoder, supports
from infosam_core.models.sam import build_sam
from infosam_core.peft.lora import LoraLinear


def _sam_sized(seed: int = 0) -> SimpleNamespace:
    """SAM's own prompt encoder and mask decoder (ViT-B/L/H share them), random init, no image encoder."""
    torch.manual_seed(seed)
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    sam = SimpleNamespace(prompt_encoder=prompt_encoder.eval(), mask_decoder=decoder.eval())
    with torch.no_grad():  # random init leaves some parameters at 0 / 1; make every one matter
        for p in [*prompt_encoder.parameters(), *decoder.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    return sam


def _prompts(sam, n_prompts: int, kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = sam.prompt_encoder.input_image_size[0]
    points = boxes = masks = None
    if kind in ("points", "points+box", "mask"):
        coords = torch.rand(n_prompts, 3, 2, generator=g) * size
        labels = torch.randint(0, 2, (n_prompts, 3), generator=g)
        points = (coords, labels)
    if kind in ("box", "points+box"):
        xy = torch.sort(torch.rand(n_prompts, 2, 2, generator=g) * size, dim=1).values
        boxes = torch.stack([xy[:, 0, 0], xy[:, 0, 1], xy[:, 1, 0], xy[:, 1, 1]], dim=1)
    if kind == "mask":
        masks = torch.randn(n_prompts, 1, *sam.prompt_encoder.mask_input_size, generator=g) * 4
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
    return sparse, dense, masks is not None


def _reference(sam, embedding, sparse, dense, multimask):
    with torch.inference_mode():
        return sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask)


def _assert_same(got, want):
    (masks, iou), (want_masks, want_iou) = got, want
    assert masks.shape == want_masks.shape and iou.shape == want_iou.shape
    torch.testing.assert_close(masks, want_masks, rtol=0, atol=1e-4)
    torch.testing.assert_close(iou, want_iou, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["points", "box", "points+box", "mask"])
@pytest.mark.parametrize("n_prompts", [1, 3])
def test_matches_mask_decoder_at_sam_size(kind, n_prompts):
    sam = _sam_sized()
    embedding = torch.randn(1, 256, 64, 64)
    decoder = InteractiveDecoder(sam)
    sparse, dense, has_mask = _prompts(sam, n_prompts, kind)
    for multimask in (False, True):
        want = _reference(sam, embedding, sparse, dense, multimask)
        got = decoder(embedding, sparse, dense if has_mask else None, multimask)
        _assert_same(got, want)
        assert got[0].shape == (n_prompts, 3 if multimask else 1, 256, 256)


def test_matches_mask_decoder_on_the_tiny_model(random_tiny_sam):
    sam = random_tiny_sam
    embedding = torch.randn(1, 256, *sam.prompt_encoder.image_embedding_size)
    decoder = InteractiveDecoder(sam)
    for kind in ("points", "box", "mask"):
        sparse, dense, has_mask = _prompts(sam, 2, kind, seed=4)
        _assert_same(
            decoder(embedding, sparse, dense if has_mask else None, True),
            _reference(sam, embedding, sparse, dense, True),
        )


def test_weights_changed_in_place_are_used_at_once():
    """The per-image cache holds projections of the image tokens: changing the decoder must drop it."""
    sam = _sam_sized(seed=1)
    embedding = torch.randn(1, 256, 64, 64)
    decoder = InteractiveDecoder(sam)
    sparse, dense, _ = _prompts(sam, 1, "points")
    before = decoder(embedding, sparse, None, False)
    first = sam.mask_decoder.transformer.layers[0]
    changed = [
        first.cross_attn_token_to_image.k_proj.weight,
        first.cross_attn_token_to_image.v_proj.bias,
        first.cross_attn_image_to_token.q_proj.weight,
        sam.prompt_encoder.no_mask_embed.weight,
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,  # a buffer
    ]
    for tensor in changed:
        with torch.no_grad():
            tensor.add_(0.5)
        got = decoder(embedding, sparse, None, False)
        _assert_same(got, _reference(sam, embedding, sparse, dense, False))
        assert not torch.allclose(got[0], before[0], atol=1e-3), "output did not change with the weights"
        before = got


def test_a_new_embedding_is_not_answered_from_the_previous_image():
    sam = _sam_sized(seed=2)
    decoder = InteractiveDecoder(sam)
    sparse, dense, _ = _prompts(sam, 1, "box")
    for seed in range(3):
        embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))
        _assert_same(decoder(embedding, sparse, None, True), _reference(sam, embedding, sparse, dense, True))


def test_supports_only_the_stock_layout():
    assert supports(_sam_sized())

    class HQDecoder(MaskDecoder):  # a subclass may change forward: must not be taken for the stock one
        pass

    sam = _sam_sized()
    sam.mask_decoder.__class__ = HQDecoder
    assert not supports(sam)

    sam = _sam_sized()  # a LoRA-wrapped projection adds to the weight the decoder would read directly
    attn = sam.mask_decoder.transformer.layers[1].cross_attn_image_to_token
    attn.q_proj = LoraLinear(attn.q_proj, rank=4, alpha=4.0)
    assert not supports(sam)
    with pytest.raises(TypeError, match="stock MaskDecoder"):
        InteractiveDecoder(sam)

    sam = _sam_sized()
    sam.mask_decoder.output_upscaling[0] = nn.ConvTranspose2d(256, 64, kernel_size=4, stride=2, padding=1)
    assert not supports(sam)


def test_predictor_uses_it_and_falls_back_for_other_decoders(random_tiny_sam):
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    prompt = dict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]))
    fast = Predictor(random_tiny_sam)
    assert fast._decoder is not None
    fast.set_image(image)
    calls = []
    hook = random_tiny_sam.mask_decoder.register_forward_hook(lambda *a: calls.append(1))
    got = fast.predict(**prompt)
    assert calls == []  # the module's forward was not called
    fast.use_interactive_decoder = False
    want = fast.predict(**prompt)
    assert calls == [1]
    hook.remove()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[2], want[2], atol=1e-4, rtol=0)

    torch.manual_seed(3)
    other = build_sam("tiny")
    other.mask_decoder.output_upscaling[0] = nn.ConvTranspose2d(256, 64, kernel_size=4, stride=2, padding=1)
    fast.set_model(other)
    assert fast._decoder is None
    fast.use_interactive_decoder = True
    assert fast.predict(**prompt)[0].shape == (3, 90, 120)


@pytest.mark.parametrize("original_size", [(1024, 768), (1024, 1024), (520, 696)])
def test_postprocess_skips_only_an_identity_resize(original_size):
    sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=1024))  # all postprocess_masks reads
    sam.postprocess_masks = Sam.postprocess_masks.__get__(sam)
    scale = 1024 / max(original_size)
    input_size = tuple(int(s * scale + 0.5) for s in original_size)
    low_res = torch.randn(2, 3, 256, 256)
    want = Sam.postprocess_masks(sam, low_res, input_size, original_size)
    got = _postprocess_masks(sam, low_res, input_size, original_size)
    assert torch.equal(got, want)
