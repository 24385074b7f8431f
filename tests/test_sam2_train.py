"""Training on SAM2 (``Sam2Model``) through the same Trainer as SAM: the SAM2 training backbone's batched decode
equals SAM2's own decoder pass (logits and the token ``hs[:, 2]``), PEFT + InfoSAM steps stay finite and change
only trainable parameters, the teacher's features (with the high-resolution ones) are cached and counted,
adapters round-trip, every PEFT method runs on Hiera (SU-SAM parallel at the stage transitions included), VID
and ReviewKD distil Hiera's stage outputs, and IBD / SemCKD (one width and grid for every level) are refused
clearly.

Speed: SAM2.1-tiny is built at a 256 px input (``build_sam2_base(..., image_size=256)``: same weights' shapes,
a 16 x 16 embedding grid) -- ~0.3 s per encoder pass on one thread instead of 3-6 s at 1024."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint
from infosam_core.data.datasets import SegmentationSample
from infosam_core.distill import ModelDims, make_distiller
from infosam_core.evaluation.prompted import evaluate
from infosam_core.evaluation.relation_maps import relation_maps
from infosam_core.models.registry import family_of
from infosam_core.models.sam2 import SINGLE_MASK_TOKEN_INDEX, Sam2Model, Sam2TrainingBackbone, build_sam2_base
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import trained_state
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import Trainer, train

SIZE = 256


@pytest.fixture(scope="module")
def sam2_small():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = build_sam2_base("sam2.1_hiera_tiny", image_size=SIZE)
    return Sam2Model(base, "sam2.1_hiera_tiny").eval()


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        image = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        mask = np.zeros((60, 80), bool)
        mask[10 + 5 * i : 40, 20 : 50 + 5 * i] = True
        image[mask] //= 3  # a darker object
        out.append(SegmentationSample(image, mask, f"s{i}"))
    return out


def quick(**kw) -> TrainConfig:
    defaults = dict(epochs=2, batch_size=2, lr=1e-3, hflip=False, vflip=False, seed=0, device="cpu")
    defaults.update(kw)
    return TrainConfig(**defaults)


def test_batched_decode_equals_sam2_decoder_pass(sam2_small):
    """Mixed batch (a box and a point): logits equal ``mask_decoder(..., multimask_output=False)`` with dynamic
    multimask off, image by image; the token equals ``hs[:, 2]`` of the decoder's transformer (forward hook)."""
    model = sam2_small
    backbone = family_of(model).training_backbone(model)
    assert isinstance(backbone, Sam2TrainingBackbone) and backbone.input_size == SIZE
    torch.manual_seed(1)
    with torch.no_grad():
        features = backbone.encode(torch.randn(3, 3, SIZE, SIZE))
    assert [tuple(e.shape) for e in features.extra] == [(3, 32, 64, 64), (3, 64, 32, 32)]
    prompts = SimpleNamespace(
        boxes=torch.tensor([[30.0, 40, 150, 200], [0, 0, 0, 0], [10, 100, 90, 250]]),
        points=torch.tensor([[[0.0, 0]], [[120.0, 60]], [[0.0, 0]]]),
        labels=torch.tensor([[1], [1], [1]]),
        is_box=torch.tensor([True, False, True]),
    )
    with torch.no_grad():
        logits, iou, token = backbone.decode(features, prompts)
        token_only = backbone.mask_token(features, prompts)
    assert logits.shape == (3, 1, 64, 64) and iou.shape == (3, 1) and token.shape == (3, 256)
    torch.testing.assert_close(token_only, token, rtol=0, atol=1e-5)

    decoder = model.mask_decoder
    seen = []
    hook = decoder.transformer.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    dynamic = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False
    try:
        for i in range(3):
            if prompts.is_box[i]:
                points = (prompts.boxes[i].reshape(1, 2, 2), torch.tensor([[2, 3]], dtype=torch.int))
            else:
                points = (prompts.points[i : i + 1], prompts.labels[i : i + 1].int())
            with torch.no_grad():
                sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
                ref_logits, ref_iou, _, _ = decoder(
                    image_embeddings=features.embed[i : i + 1],
                    image_pe=model.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                    repeat_image=False,
                    high_res_features=[e[i : i + 1] for e in features.extra],
                )
            torch.testing.assert_close(logits[i : i + 1], ref_logits, rtol=0, atol=1e-4)
            torch.testing.assert_close(iou[i : i + 1], ref_iou, rtol=0, atol=1e-5)
            torch.testing.assert_close(token[i], seen[-1][0, SINGLE_MASK_TOKEN_INDEX], rtol=0, atol=1e-5)
    finally:
        decoder.dynamic_multimask_via_stability = dynamic
        hook.remove()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adapter", "lora"])
def test_peft_infosam_steps_on_sam2(sam2_small, samples, tmp_path, method):
    """2 epochs x 1 step: finite losses, only trainable parameters move, the teacher encoder runs once per image,
    validation runs on the SAM2 student, relation maps work, and the saved adapter predicts the same after
    loading."""
    before = {k: v.clone() for k, v in sam2_small.state_dict().items()}
    trainer = Trainer(quick(peft=method, distill="infosam"), sam2_small, samples[:2], val_samples=samples[2:])
    result = trainer.run()
    assert result.steps == 2 and result.stop_reason == "completed"
    for record in result.history:
        assert all(np.isfinite(record[k]) for k in ("loss", "seg_loss", "l_r", "l_d", "val_miou"))
    assert result.teacher_encoder_images == 2  # epoch 2 takes both teacher entries from the cache
    per_image = 4 * (256 * 16 * 16 + 32 * 64 * 64 + 64 * 32 * 32)  # embedding + high-res features, float32
    assert trainer.cache.bytes == 2 * per_image
    assert all(torch.equal(v, sam2_small.state_dict()[k]) for k, v in before.items())  # the base is untouched

    student, trainable = result.model, set(result.model.peft_state.trainable)
    changed = set()
    for name, p in student.named_parameters():
        if name in before and not torch.equal(p.detach(), before[name]):
            changed.add(name)
            assert name in trainable, name
    assert changed and any(k.startswith("image_encoder.") for k in trained_state(student)), "encoder trains"

    maps = relation_maps(sam2_small, student, samples[0])  # the epoch-end figure's computation
    assert maps.teacher.shape == maps.student.shape == (16, 16)  # no padding on SAM2: every cell
    assert np.isfinite(maps.teacher).all() and np.isfinite(maps.student).all()

    path = tmp_path / "sam2_adapter"
    save_peft_checkpoint(student, path)
    loaded = load_peft_checkpoint(sam2_small, path)
    assert isinstance(loaded, Sam2Model) and loaded.distiller is not None
    a = evaluate(student, samples, metrics=("iou",))
    b = evaluate(loaded, samples, metrics=("iou",))
    assert [r["iou"] for r in a.rows] == pytest.approx([r["iou"] for r in b.rows], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, options",
    [
        ("adapter", {}),
        ("lora", {}),
        ("bitfit", {}),
        ("adaptformer", {}),
        ("convlora", {}),
        ("decoder", {}),
        ("su_sam", {"variant": "series"}),
        ("su_sam", {"variant": "parallel"}),
        ("su_sam", {"variant": "mixed"}),
    ],
)
def test_every_peft_method_runs_on_hiera(sam2_small, method, options):
    """Identity at step 0, a training-mode forward and backward reach the method's parameters, and a changed
    parameter changes the output (SU-SAM parallel beside the pooling stage-transition attentions too)."""
    student = copy.deepcopy(sam2_small)
    apply_peft(student, method, generator=torch.Generator().manual_seed(0), **options)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = sam2_small.image_encoder(x)
        out = student.image_encoder(x)
    torch.testing.assert_close(out.image_embed, ref.image_embed, rtol=0, atol=1e-5)
    encoder_params = [(n, p) for n, p in student.image_encoder.named_parameters() if p.requires_grad]
    if method == "decoder":
        assert not encoder_params
        return
    student.train()
    feats = student.image_encoder(x)
    loss = feats.image_embed.square().mean() + sum(f.square().mean() for f in feats.high_res_feats)
    loss.backward()
    gated = ("experts.", "w_noise", "w_gate")  # ConvLoRA: only the chosen expert (top-1 gating) gets a gradient
    assert encoder_params and all(p.grad is not None for n, p in encoder_params if not any(g in n for g in gated))
    if method == "su_sam" and options["variant"] == "parallel":
        transitions = [i for i, b in enumerate(student.image_encoder.trunk.blocks) if b.dim != b.dim_out]
        assert transitions == [1, 3, 10]
        block = student.image_encoder.trunk.blocks[1]
        assert (block.su_attn.down.in_features, block.su_attn.up.out_features) == (96, 192)
        with torch.no_grad():
            block.su_attn.up.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
        student.eval()
        with torch.no_grad():
            assert not torch.allclose(student.image_encoder(x).image_embed, ref.image_embed, atol=1e-4)


@pytest.mark.parametrize("distiller", ["semckd", "ibd"])
def test_uniform_block_distillers_are_refused_on_sam2(sam2_small, samples, distiller):
    options = {"batch_size": 2} if distiller == "semckd" else {}
    with pytest.raises(
        ValueError,
        match=f"distiller '{distiller}' needs encoder blocks of one width and one grid.*SAM2's Hiera.*"
        "Distillers that apply to it: infosam, logit, pkd, pkt, vid, reviewkd, tinysam, mobilesam",
    ):
        train(quick(peft="lora", distill=distiller, distill_options=options), sam2_small, samples[:2])


def test_hiera_levels_are_the_stage_ends(sam2_small):
    """ModelDims on Hiera-tiny: per-block widths and strides; blocks="global" names the stage ends."""
    dims = ModelDims.of(sam2_small)
    assert dims.stage_ends == (0, 2, 9, 11) and dims.block_indices("global") == (0, 2, 9, 11)
    assert [dims.width(i) for i in dims.stage_ends] == [96, 192, 384, 768]
    assert [dims.block_strides[i] for i in dims.stage_ends] == [4, 8, 16, 32]
    assert not dims.uniform_blocks and dims.block_indices("1,3") == (1, 3)
    vid = make_distiller("vid", {}, dims)
    assert [level.log_scale.numel() for level in vid.levels.values()] == [96, 192, 384, 768]
    review = make_distiller("reviewkd", {}, dims)
    assert [f.conv2[0].out_channels for f in review.fusions] == [768, 384, 192, 96]  # deepest first
    assert {f.conv1[0].out_channels for f in review.fusions} == {512}  # one mid width: residuals pass on


@pytest.mark.slow
@pytest.mark.parametrize("distiller", ["vid", "reviewkd"])
def test_multi_level_distillers_train_on_hiera(sam2_small, samples, tmp_path, monkeypatch, distiller):
    """Adapter + VID / ReviewKD on SAM2-tiny, 2 epochs x 1 step: finite losses; the distiller's loss reaches
    its own parameters and the student's trainable encoder parameters; the captured stage outputs are what
    Hiera's trunk returns (its stage ends); the teacher's are cached (the teacher encoder runs once per image,
    float16 blocks counted in the cache's bytes); the adapter round-trips with the distiller's state."""
    from infosam_core.training import encoder_cache

    trainer = Trainer(quick(peft="adapter", distill=distiller), sam2_small, samples[:2])
    student, dist = trainer.student, trainer.distiller
    assert dist.encoder_blocks == (0, 2, 9, 11)
    # the adapter leaves blocks 0-1 frozen (first_block=2): stage 1's output is a fixed target there
    assert [any(p.requires_grad for p in b.parameters()) for b in student.image_encoder.trunk.blocks[:3]] == [
        False,
        False,
        True,
    ]
    encoder_params = [p for p in student.image_encoder.parameters() if p.requires_grad]
    seen, grads = [], []
    real_features = encoder_cache.EncoderCache.features

    def spy_features(self, batch):
        out = real_features(self, batch)
        if not seen:
            with torch.no_grad():
                direct_s = self.student.image_encoder.trunk(batch.images)  # channels first, one per stage
                direct_t = self.teacher.image_encoder.trunk(batch.images)
            seen.append((out, direct_s, direct_t))
        return out

    real_forward = type(dist).forward

    def spy_forward(self, inputs):
        out = real_forward(self, inputs)
        params = [*self.parameters(), *encoder_params]
        grads.append(torch.autograd.grad(out.total, params, retain_graph=True, allow_unused=True))
        return out

    monkeypatch.setattr(encoder_cache.EncoderCache, "features", spy_features)
    monkeypatch.setattr(type(dist), "forward", spy_forward)
    result = trainer.run()
    assert result.steps == 2
    for record in result.history:
        assert all(np.isfinite(record[k]) for k in ("loss", "seg_loss", *dist.term_names))

    out, direct_s, direct_t = seen[0]
    blocks = student.image_encoder.trunk.blocks
    for i, ref_s, ref_t in zip((0, 2, 9, 11), direct_s, direct_t):
        trains = any(p.requires_grad for block in blocks[: i + 1] for p in block.parameters())
        assert out.student_blocks[i].requires_grad == trains and not out.teacher_blocks[i].requires_grad
        torch.testing.assert_close(out.student_blocks[i].detach(), ref_s, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.teacher_blocks[i], ref_t, atol=2e-3, rtol=2e-3)  # cached in float16

    n_own = len(list(dist.parameters()))
    for step_grads in grads:
        assert all(g is not None and torch.isfinite(g).all() for g in step_grads)
        assert all(g.abs().sum() > 0 for g in step_grads[:n_own])
        assert any(g.abs().sum() > 0 for g in step_grads[n_own:])

    assert result.teacher_encoder_images == 2  # epoch 2 reads the teacher's features from the cache
    decoder_inputs = 4 * (256 * 16 * 16 + 32 * 64 * 64 + 64 * 32 * 32)  # float32
    stage_ends = 2 * (96 * 64 * 64 + 192 * 32 * 32 + 384 * 16 * 16 + 768 * 8 * 8)  # float16
    assert trainer.cache.bytes == 2 * (decoder_inputs + stage_ends)

    path = tmp_path / "adapter"
    save_peft_checkpoint(result.model, path)
    loaded = load_peft_checkpoint(sam2_small, path)
    saved_state, loaded_state = result.model.distiller.state_dict(), loaded.distiller.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    assert all(torch.equal(saved_state[k].cpu(), loaded_state[k]) for k in saved_state)
