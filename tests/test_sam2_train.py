"""Training on SAM2 (``Sam2Model``) through the same Trainer as SAM: the SAM2 training backbone's batched decode
equals SAM2's own decoder pass (logits and the token ``hs[:, 2]``), PEFT + InfoSAM steps stay finite and change
only trainable parameters, the teacher's features (with the high-resolution ones) are cached and counted,
adapters round-trip, every PEFT method runs on Hiera (SU-SAM parallel at the stage transitions included), and
the distillers that read ViT blocks are refused clearly.

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

from infosam_core.data.datasets import SegmentationSample
from infosam_core.evaluation.prompted import evaluate
from infosam_core.evaluation.relation_maps import relation_maps
from infosam_core.models.sam2 import SINGLE_MASK_TOKEN_INDEX, Sam2Model, build_sam2_base
from infosam_core.models.training_backbone import Sam2TrainingBackbone, training_backbone_for
from infosam_core.peft.checkpoint import load_peft_checkpoint, save_peft_checkpoint
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
    backbone = training_backbone_for(model)
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


@pytest.mark.parametrize("distiller", ["semckd", "reviewkd", "ibd", "vid"])
def test_block_distillers_are_refused_on_sam2(sam2_small, samples, distiller):
    options = {"batch_size": 2} if distiller == "semckd" else {}
    with pytest.raises(ValueError, match=f"distiller '{distiller}' distils the outputs of the image encoder's ViT"):
        train(quick(peft="lora", distill=distiller, distill_options=options), sam2_small, samples[:2])
