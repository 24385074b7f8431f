"""HQ-SAM on MobileSAM's TinyViT (``vit_t``; sam-hq's ``vit_tiny``, "Light HQ-SAM"): sizes and keys against the
reference package ``segment-anything-hq``, its ``sam_hq_vit_tiny.pth`` loading, prediction parity with its
``SamPredictor`` on the same random weights, a training step, ``infosam info``. A TinyViT pass at 1024 px takes
seconds here: the module embeds one image per model once and trains one step on two images."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import torch
from helpers import hq_package, square_samples

pytest.importorskip("timm")
pytest.importorskip("mobile_sam")

from infosam_core.cli import main
from infosam_core.inference.predictor import Predictor
from infosam_core.models.checkpoints import CheckpointError
from infosam_core.models.hq_decoder import HQ_PARTS, HqMaskDecoder
from infosam_core.models.mobile_sam import FAMILY, build_mobile_sam
from infosam_core.models.registry import load_sam
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import parameter_parts
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import train


@pytest.fixture(scope="module")
def reference_and_ours(tmp_path_factory):
    """sam-hq's ``vit_tiny`` model (random weights, perturbed so nothing is at its init value) saved as sam-hq
    saves ``sam_hq_vit_tiny.pth`` (a plain state dict), and our model loaded from that file."""
    hq = hq_package()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = hq.sam_model_registry["vit_tiny"](checkpoint=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    reference.eval()  # refreshes TinyViT's cached attention biases after the change
    path = tmp_path_factory.mktemp("hq_tiny") / "sam_hq_vit_tiny.pth"
    torch.save(reference.state_dict(), path)
    return hq, reference, load_sam("vit_t", path), path


@pytest.fixture(scope="module")
def embedded(reference_and_ours):
    """One image embedded once by each model: (image, sam-hq's predictor, ours)."""
    hq, reference, ours, _ = reference_and_ours
    image = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ref_predictor = hq.SamPredictor(reference)
    with torch.no_grad():
        ref_predictor.set_image(image)
    predictor = Predictor(ours, cache_size=1)
    predictor.set_image(image)
    return image, ref_predictor, predictor


def test_added_parameters_and_keys_match_sam_hq_vit_tiny(reference_and_ours):
    _, reference, _, _ = reference_and_ours
    expected = sum(p.numel() for n, p in reference.mask_decoder.named_parameters() if n.split(".")[0] in HQ_PARTS)
    assert expected == 448_512  # the figure the docs state
    sam = build_mobile_sam()
    plain = set(sam.state_dict())
    report = apply_peft(sam, "hq_sam", base_fingerprint="x")
    parts = parameter_parts(sam)
    assert report.added == parts["mask decoder"].added == parts["mask decoder"].trainable == expected
    assert parts["image encoder"].trainable == parts["prompt encoder"].trainable == 0
    assert sam.mask_decoder.encoder_blocks == (1,)  # TinyViT's layers[1], as sam-hq's vit_tiny
    assert sam.mask_decoder.compress_vit_feat[0].in_channels == 160
    ours = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert plain <= set(ours)  # MobileSAM's weights keep their keys


def test_loads_sam_hq_vit_tiny_checkpoint(reference_and_ours):
    _, reference, ours, path = reference_and_ours
    assert isinstance(ours.mask_decoder, HqMaskDecoder) and ours.model_type == "vit_t"
    assert ours.checkpoint_path == str(path) and not ours.training
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)


def test_damaged_sam_hq_vit_tiny_checkpoint_is_refused_with_the_file_named(reference_and_ours, tmp_path):
    _, reference, _, _ = reference_and_ours
    state = dict(reference.state_dict())
    state["mask_decoder.compress_vit_feat.0.weight"] = torch.zeros(768, 256, 2, 2)  # made for ViT-B's D = 768
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"sam_hq_vit_tiny\.pth: shapes do not match HQ-SAM vit_t"):
        load_sam("vit_t", path)
    del state["mask_decoder.hf_mlp.layers.2.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"sam_hq_vit_tiny\.pth: does not match HQ-SAM vit_t .*1 weights missing"):
        load_sam("vit_t", path)


@pytest.mark.slow
def test_predicts_like_sam_hq_predictor(embedded):
    image, ref_predictor, predictor = embedded
    # the captured early feature is sam-hq's (TinyViT layers[1] on its 64 x 64 grid), cached with the embedding
    (extra,) = predictor.embedding.extra_features
    assert extra.shape == (1, 160, 64, 64)
    torch.testing.assert_close(extra, ref_predictor.interm_features[0].permute(0, 3, 1, 2), rtol=0, atol=1e-5)
    torch.testing.assert_close(predictor.features, ref_predictor.features, rtol=0, atol=1e-5)
    decoder = predictor.model.mask_decoder
    prompts = [
        {"box": np.array([30, 20, 150, 110])},
        {"point_coords": np.array([[60, 70], [100, 90]]), "point_labels": np.array([1, 0])},
    ]
    diffs = []
    try:
        for hq_token_only in (False, True):
            decoder.hq_token_only = hq_token_only
            for kwargs in prompts:
                for multimask in (False, True):
                    with torch.no_grad():
                        ref = ref_predictor.predict(
                            **kwargs, multimask_output=multimask, return_logits=True, hq_token_only=hq_token_only
                        )
                    got = predictor.predict(**kwargs, multimask_output=multimask, return_logits=True)
                    assert got[0].shape == ref[0].shape == (1, 120, 160)
                    for a, b in zip(got, ref):
                        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
                        diffs.append(float(np.abs(a - b).max()))
        # hq_token_only changes the output (the loop compared two different things)
        hq_only = predictor.predict(**prompts[0], multimask_output=False, return_logits=True)[0]
        decoder.hq_token_only = False
        assert not np.allclose(predictor.predict(**prompts[0], multimask_output=False, return_logits=True)[0], hq_only)
    finally:
        decoder.hq_token_only = False
    print(f"vit_t HQ-SAM parity: max |ours - sam-hq| = {max(diffs):.2e}")


@pytest.mark.slow
def test_infosam_training_step_on_mobile_sam_with_hq_sam(monkeypatch):
    """``--model vit_t --peft hq_sam --distill infosam``: one step on two images; only the HQ parts and the
    distiller change; the student's decoder reads TinyViT's layers[1] captured in the (cached) teacher pass."""
    from infosam_core.models.decoder_features import encode_with_blocks
    from infosam_core.training import encoder_cache

    with pytest.warns(UserWarning, match="randomly initialised"):
        base = load_sam("vit_t")
    seen = []
    real = encoder_cache.EncoderCache.features

    def spy(self, batch):
        out = real(self, batch)
        seen.append((self, batch, out))
        return out

    monkeypatch.setattr(encoder_cache.EncoderCache, "features", spy)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    config = TrainConfig(peft="hq_sam", distill="infosam", epochs=1, batch_size=2, max_steps=1, lr=1e-3)
    start = time.perf_counter()
    result = train(config, base, square_samples())
    print(f"vit_t hq_sam + infosam: 1 step on 2 images in {time.perf_counter() - start:.1f} s")
    assert result.steps == 1
    history = result.history[0]
    assert np.isfinite([history["loss"], history["l_r"], history["l_d"]]).all()
    changed = {
        k for k, v in result.model.state_dict().items() if k not in base_state or not torch.equal(v, base_state[k])
    }
    assert any(k.startswith("mask_decoder.hf_mlp") for k in changed) and any(
        k.startswith("distiller.") for k in changed
    )
    assert all(k.startswith("distiller.") or k.split(".")[1] in HQ_PARTS for k in changed)
    assert all(torch.equal(v, base_state[k]) for k, v in base.state_dict().items())  # base untouched
    cache, batch, out = seen[0]
    assert cache.student_frozen and cache.decoder_blocks_s == (1,) and cache.teacher_images == 2
    (layer,) = out.student_extra
    assert layer.shape == (2, 160, 64, 64) and out.teacher_extra == ()  # the teacher (base) has SAM's decoder
    with torch.no_grad():  # one image (a TinyViT pass takes seconds): the cached layer is a direct pass's
        encoder = base.image_encoder
        _, (direct,) = encode_with_blocks(encoder, FAMILY.feature_blocks(encoder), batch.images[:1], (1,))
    torch.testing.assert_close(layer[:1], direct, rtol=0, atol=1e-5)


def test_info_command_reports_added_parameters(capsys):
    assert main(["info", "--model", "vit_t", "--peft", "hq_sam", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parts"]["mask decoder"]["added"] == info["parts"]["mask decoder"]["trainable"] == 448_512
    assert info["parts"]["image encoder"]["trainable"] == 0
    assert main(["info", "--model", "vit_t", "--peft", "hq_sam"]) == 0
    assert "448,512" in capsys.readouterr().out
