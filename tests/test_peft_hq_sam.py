"""HQ-SAM (``hq_sam``): sizes and key names against the reference package ``segment-anything-hq``, prediction
parity with its ``SamPredictor`` on the same weights, the batched (training) decode, training, adapters."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import hq_package, square_samples
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint
from infosam_core.cli import main
from infosam_core.inference.predictor import Predictor
from infosam_core.models.batched_decoder import decode, mask_token
from infosam_core.models.hq_decoder import HQ_PARTS, HqMaskDecoder
from infosam_core.models.registry import load_sam
from infosam_core.models.sam import (
    ARCHITECTURES,
    FAMILY,
    PIXEL_MEAN,
    PIXEL_STD,
    build_sam,
    first_global_block,
    vit_encoder_args,
)
from infosam_core.peft import hq_sam
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import parameter_parts
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import train

HQ_COUNTS = {"vit_b": 1_071_104, "vit_l": 1_333_248, "vit_h": 1_595_392}  # sam-hq's, see the module docstring


def _hq_on_meta(model_type: str):
    with torch.device("meta"):
        sam = build_sam(model_type)
    apply_peft(sam, "hq_sam", base_fingerprint="meta")
    return sam


@pytest.mark.parametrize("model_type", list(HQ_COUNTS))
def test_added_parameters_and_keys_match_sam_hq(model_type):
    hq = hq_package()
    sam = _hq_on_meta(model_type)
    parts = parameter_parts(sam)
    assert parts["mask decoder"].added == parts["mask decoder"].trainable == HQ_COUNTS[model_type]
    assert parts["image encoder"].trainable == parts["prompt encoder"].trainable == 0
    assert sam.mask_decoder.encoder_blocks == (ARCHITECTURES[model_type].encoder_global_attn_indexes[0],)
    # the reference decoder of the same size: same keys and shapes, SAM's and the HQ parts'
    vit_dim = ARCHITECTURES[model_type].encoder_embed_dim
    with torch.device("meta"):
        ref = _reference_decoder(hq, vit_dim)
    ours = {k: tuple(v.shape) for k, v in sam.mask_decoder.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    # base weights keep their keys: the model's keys are SAM's plus the HQ parts'
    with torch.device("meta"):
        plain = set(build_sam(model_type).state_dict())
    added = set(sam.state_dict()) - plain
    assert plain <= set(sam.state_dict())
    assert {k.split(".")[1] for k in added} == set(HQ_PARTS) and len(added) == 25


def test_first_global_block_comes_from_the_encoder(random_tiny_sam):
    assert first_global_block(random_tiny_sam.image_encoder) == 1  # tiny: global attention at (1, 3)
    model = copy.deepcopy(random_tiny_sam)
    model.image_encoder.blocks[1].window_size = 8
    assert first_global_block(model.image_encoder) == 3


def test_refuses_encoders_without_vit_global_blocks(random_tiny_sam):
    model = copy.deepcopy(random_tiny_sam)
    model.image_encoder = torch.nn.Sequential()
    model.image_encoder.img_size = 256
    with pytest.raises(ValueError, match="hq_sam is not available.*segment-anything ViT"):
        apply_peft(model, "hq_sam", base_fingerprint="x")


def _reference_decoder(hq, vit_dim: int):
    """sam-hq's ``MaskDecoderHQ`` as its builder makes it, for an encoder of width ``vit_dim``."""
    return hq.modeling.MaskDecoderHQ(
        num_multimask_outputs=3,
        transformer=hq.modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        vit_dim=vit_dim,
    )


def _reference_tiny(hq, generator: torch.Generator):
    """sam-hq's classes at the bundled tiny model's sizes, every weight random."""
    a = ARCHITECTURES["tiny"]
    m = hq.modeling
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(**vit_encoder_args(a)),
        prompt_encoder=m.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(a.image_embedding_size, a.image_embedding_size),
            input_image_size=(a.image_size, a.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=a.decoder_mlp_dim, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            vit_dim=a.encoder_embed_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    ).eval()
    with torch.no_grad():
        for p in sam.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return sam


@pytest.fixture(scope="module")
def reference_and_ours(tmp_path_factory):
    """sam-hq's model (tiny sizes, random weights), saved as sam-hq's checkpoints are (a plain state dict
    in a .pth), and our model loaded from that file."""
    hq = hq_package()
    reference = _reference_tiny(hq, torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("hq") / "sam_hq_tiny.pth"
    torch.save(reference.state_dict(), path)
    ours = load_sam("tiny", path)
    return hq, reference, ours, path


def test_loads_sam_hq_checkpoint_and_predicts_like_sam_hq(reference_and_ours):
    hq, reference, ours, _ = reference_and_ours
    assert isinstance(ours.mask_decoder, HqMaskDecoder)
    image = np.random.default_rng(1).integers(0, 255, (180, 240, 3), dtype=np.uint8)
    ref_predictor = hq.SamPredictor(reference)
    ref_predictor.set_image(image)
    predictor = Predictor(ours)
    predictor.set_image(image)
    prompts = [
        {"box": np.array([30, 20, 150, 140])},
        {"point_coords": np.array([[60, 70], [100, 90]]), "point_labels": np.array([1, 0])},
    ]
    for hq_token_only in (False, True):
        ours.mask_decoder.hq_token_only = hq_token_only
        for kwargs in prompts:
            for multimask in (False, True):
                with torch.no_grad():
                    ref = ref_predictor.predict(
                        **kwargs, multimask_output=multimask, return_logits=True, hq_token_only=hq_token_only
                    )
                got = predictor.predict(**kwargs, multimask_output=multimask, return_logits=True)
                assert got[0].shape == ref[0].shape == (1, 180, 240)
                for a, b in zip(got, ref):  # logits of magnitude 1-10: float32 summation order (our fused
                    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)  # attention) moves some by ~1e-5
    ours.mask_decoder.hq_token_only = False
    # hq_token_only changes the output (the test above compares two different things)
    only_sam_plus_hq = predictor.predict(**prompts[0], multimask_output=False, return_logits=True)[0]
    ours.mask_decoder.hq_token_only = True
    assert not np.allclose(
        predictor.predict(**prompts[0], multimask_output=False, return_logits=True)[0], only_sam_plus_hq
    )
    ours.mask_decoder.hq_token_only = False


def test_decoder_parity_at_vit_b_size():
    """The decoder alone at ViT-B sizes (64x64 grid, D = 768) on the same weights and inputs as sam-hq's."""
    hq = hq_package()
    g = torch.Generator().manual_seed(0)
    ref = _reference_decoder(hq, 768).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    base = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    ours = HqMaskDecoder(base, 768, 2)
    ours.load_state_dict(ref.state_dict())
    emb = torch.randn(1, 256, 64, 64, generator=g)
    pe = torch.randn(1, 256, 64, 64, generator=g)
    vit = torch.randn(1, 64, 64, 768, generator=g)
    sparse = torch.randn(1, 3, 256, generator=g)
    dense = torch.randn(1, 256, 64, 64, generator=g)
    with torch.no_grad():
        for multimask in (False, True):
            for only in (False, True):
                r = ref(emb, pe, sparse, dense, multimask, only, [vit])
                o = ours(emb, pe, sparse, dense, multimask, [vit.permute(0, 3, 1, 2)], only)
                torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


def test_batched_decode_equals_single_prompt_decode(reference_and_ours):
    _, _, ours, _ = reference_and_ours
    d = ours.mask_decoder
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(3, 256, 32, 32, generator=g)
    vit = torch.randn(3, 128, 32, 32, generator=g)
    boxes = torch.tensor([[10.0, 20, 100, 120], [50, 40, 200, 180], [0, 0, 255, 255]])
    with torch.no_grad():
        sparse, dense = ours.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = ours.prompt_encoder.get_dense_pe()
        logits, iou, token = decode(d, emb, pe, sparse, dense, {1: vit})
        assert logits.shape == (3, 1, 128, 128) and iou.shape == (3, 1) and token.shape == (3, 256)
        torch.testing.assert_close(mask_token(d, emb, pe, sparse, dense, {1: vit}), token, atol=1e-5, rtol=1e-5)
        for b in range(3):
            single = d(emb[b : b + 1], pe, sparse[b : b + 1], dense[b : b + 1], False, [vit[b : b + 1]], True)
            # batched vs single matmuls round differently: ~1e-5 on logits of magnitude ~10
            torch.testing.assert_close(logits[b : b + 1], single[0], atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(iou[b : b + 1], single[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("distill", ["none", "infosam"])
def test_training_changes_only_hq_parts_and_round_trips(random_tiny_sam, distill, tmp_path):
    base_state = {k: v.clone() for k, v in random_tiny_sam.state_dict().items()}
    config = TrainConfig(peft="hq_sam", distill=distill, epochs=2, batch_size=2, lr=1e-3)
    result = train(config, random_tiny_sam, square_samples())
    assert result.steps == 2 and all(np.isfinite(r["loss"]) for r in result.history)
    model = result.model
    changed = {k for k, v in model.state_dict().items() if k not in base_state or not torch.equal(v, base_state[k])}
    allowed = {k for k in changed if k.startswith("distiller.") or k.split(".")[1] in HQ_PARTS}
    assert changed == allowed
    assert any(k.startswith("mask_decoder.hf_mlp") for k in changed)
    if distill == "infosam":
        assert any(k.startswith("distiller.") for k in changed)
    # the base model is untouched, and the adapter reloads onto it with identical predictions
    assert all(torch.equal(v, base_state[k]) for k, v in random_tiny_sam.state_dict().items())
    save_peft_checkpoint(model, tmp_path / "hq")
    loaded = load_peft_checkpoint(random_tiny_sam, tmp_path / "hq")
    image = np.random.default_rng(3).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    outputs = []
    for m in (model, loaded):
        p = Predictor(m)
        p.set_image(image)
        outputs.append(p.predict(box=np.array([10, 10, 80, 90]), multimask_output=False, return_logits=True)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_embedding_cache_keeps_block_features_apart_from_the_base_model(random_tiny_sam, tmp_path):
    """Same encoder, other decoder: an embedding cached for the base SAM (no block features) is never handed
    to the HQ decoder, in memory or on disk."""
    hq_model = copy.deepcopy(random_tiny_sam)
    apply_peft(hq_model, "hq_sam", generator=torch.Generator().manual_seed(0))
    image = np.random.default_rng(4).integers(0, 255, (90, 110, 3), dtype=np.uint8)
    predictor = Predictor(random_tiny_sam, cache_dir=tmp_path)
    predictor.set_image(image)
    assert predictor.embedding.extra_features == ()
    predictor.set_model(hq_model)
    (features,) = predictor.embedding.extra_features
    assert features.shape == (1, 128, 32, 32)
    fresh = Predictor(hq_model, cache_dir=tmp_path)  # from the disk cache
    fresh.set_image(image)
    torch.testing.assert_close(fresh.embedding.extra_features[0], features)
    box = np.array([5, 5, 60, 70])
    np.testing.assert_array_equal(
        fresh.predict(box=box, return_logits=True)[0], predictor.predict(box=box, return_logits=True)[0]
    )


def test_info_command_reports_added_parameters(capsys):
    assert main(["info", "--model", "vit_b", "--peft", "hq_sam", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parts"]["mask decoder"]["added"] == info["parts"]["mask decoder"]["trainable"] == 1_071_104
    assert info["parts"]["image encoder"]["trainable"] == 0
    assert main(["info", "--model", "vit_b", "--peft", "hq_sam"]) == 0
    assert "1,071,104" in capsys.readouterr().out


def test_refuses_sam2_with_one_message():
    """SAM2 stays refused (MobileSAM's vit_t is supported: tests/test_mobile_hq_sam.py)."""
    sam2_like = torch.nn.Module()  # SAM2's Sam2Model is not a segment-anything Sam
    sam2_like.model_type = "sam2.1_hiera_tiny"
    with pytest.raises(ValueError, match="hq_sam is not available for sam2.1_hiera_tiny.*SAM2"):
        hq_sam.inject(sam2_like, hq_sam.HqSamConfig())


def test_predict_command_with_a_sam_hq_checkpoint(reference_and_ours, tmp_path, capsys):
    import imageio.v3 as iio

    hq, reference, _, path = reference_and_ours
    image = np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "image.png", image)
    out = tmp_path / "mask.png"
    command = ["predict", str(tmp_path / "image.png"), "--box", "20,10,120,100", "--out", str(out)]
    ref_predictor = hq.SamPredictor(reference)
    ref_predictor.set_image(image)
    for only in (False, True):
        assert main([*command, "--checkpoint", str(path), *(["--hq-token-only"] if only else [])]) == 0
        with torch.no_grad():
            ref_masks, _, _ = ref_predictor.predict(
                box=np.array([20, 10, 120, 100]), multimask_output=False, hq_token_only=only
            )
        np.testing.assert_array_equal(iio.imread(out) > 0, ref_masks[0])
    assert main([*command, "--hq-token-only"]) == 2  # the bundled tiny model has SAM's plain decoder
    assert "needs an HQ-SAM model" in capsys.readouterr().err


def test_damaged_sam_hq_checkpoint_is_refused_with_the_file_named(reference_and_ours, tmp_path):
    from infosam_core.models.checkpoints import CheckpointError

    _, reference, _, _ = reference_and_ours
    state = dict(reference.state_dict())
    state["mask_decoder.compress_vit_feat.0.weight"] = torch.zeros(768, 256, 2, 2)  # made for ViT-B's D = 768
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong\.pth: shapes do not match HQ-SAM tiny"):
        load_sam("tiny", path)
    del state["mask_decoder.compress_vit_feat.0.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong\.pth: does not match HQ-SAM tiny: 1 weights missing"):
        load_sam("tiny", path)


def test_segment_all_runs_on_hq_sam_with_one_candidate_per_point(reference_and_ours):
    from infosam_core.inference.automatic import AutomaticConfig, segment_all

    _, _, ours, _ = reference_and_ours
    image = np.random.default_rng(6).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    config = AutomaticConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    result = segment_all(Predictor(ours), image, config)
    assert 0 < len(result.proposals) <= 16  # at most one proposal per grid point: sam-hq gives one mask
    assert result.proposals[0].mask.shape == (96, 128)


def test_training_from_a_sam_hq_checkpoint_starts_from_its_hq_parts(reference_and_ours):
    _, reference, ours, _ = reference_and_ours
    student = copy.deepcopy(ours)
    report = apply_peft(student, "hq_sam", generator=torch.Generator().manual_seed(0))
    assert report.added == 0 and set(student.peft_state.trainable) == {
        f"mask_decoder.{n}" for n, _ in student.mask_decoder.hq_parameters()
    }
    torch.testing.assert_close(student.mask_decoder.hf_token.weight, reference.mask_decoder.hf_token.weight)
    # with InfoSAM: the teacher is the HQ-SAM checkpoint itself (its decoder reads the encoder block too)
    config = TrainConfig(peft="hq_sam", distill="infosam", epochs=1, batch_size=2, lr=1e-3)
    result = train(config, ours, square_samples())
    assert result.steps == 1 and np.isfinite(result.history[0]["loss"])


def test_partial_sam_hq_vit_tiny_checkpoint_is_refused_clearly(tmp_path):
    """A MobileSAM file with only some of the HQ parts is checked as sam-hq's vit_tiny and refused, the file named."""
    from infosam_core.models.checkpoints import CheckpointError
    from infosam_core.models.mobile_sam import build_mobile_sam

    state = build_mobile_sam().state_dict()
    state["mask_decoder.hf_token.weight"] = torch.zeros(1, 256)
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError, match=r"sam_hq_vit_tiny\.pth: does not match HQ-SAM vit_t .*24 weights missing"
    ):
        load_sam("vit_t", path)


@pytest.mark.parametrize("distill", ["none", "infosam"])
def test_other_methods_train_a_sam_hq_model_with_its_trainable_encoder(reference_and_ours, distill, monkeypatch):
    """An HQ-SAM checkpoint adapted with another method (adapter: blocks 2.. of tiny train): the decoder's block
    (tiny: block 1) is then the student's own, captured in its forward, and matches a direct encoder pass."""
    from infosam_core.models.decoder_features import encode_with_blocks
    from infosam_core.training import encoder_cache

    _, _, ours, _ = reference_and_ours
    seen = []
    real = encoder_cache.EncoderCache.features

    def spy(self, batch):
        out = real(self, batch)
        seen.append((self, batch, out))
        return out

    monkeypatch.setattr(encoder_cache.EncoderCache, "features", spy)
    config = TrainConfig(peft="adapter", distill=distill, epochs=1, batch_size=2, lr=1e-3)
    result = train(config, ours, square_samples())
    assert result.steps == 1 and np.isfinite(result.history[0]["loss"])
    cache, batch, out = seen[0]
    assert cache.depth == 1 and cache.decoder_blocks_s == (1,)
    (block,) = out.student_extra
    with torch.no_grad():
        encoder = cache.student.image_encoder
        _, (direct,) = encode_with_blocks(encoder, FAMILY.feature_blocks(encoder), batch.images, (1,))
    torch.testing.assert_close(block.detach(), direct, atol=1e-5, rtol=1e-5)
    if distill == "infosam":  # the teacher (the checkpoint itself) reads its block from the cache
        torch.testing.assert_close(out.teacher_extra[0], direct, atol=1e-5, rtol=1e-5)
