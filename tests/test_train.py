"""Training: machinery on a micro SAM (fast), and a learning test on the bundled tiny SAM (slow)."""

from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from helpers import disc_samples, micro_sam, quick

import infosam_core.training.trainer as train_module
from infosam_core.data.datasets import SegmentationSample
from infosam_core.models.batched_decoder import decode, mask_token
from infosam_core.peft.state import trained_state
from infosam_core.training.batches import make_batch, prepare_samples
from infosam_core.training.config import TrainConfig
from infosam_core.training.encoder_cache import EncoderCache
from infosam_core.training.results import TrainingError, TrainProgress
from infosam_core.training.schedules import cosine_lr
from infosam_core.training.trainer import train


@pytest.fixture(scope="module")
def base():
    return micro_sam()


@pytest.fixture(scope="module")
def samples():
    return disc_samples(6)


def test_decode_matches_mask_decoder_per_image(base):
    emb = torch.randn(3, 32, 8, 8)
    boxes = torch.tensor([[5.0, 6, 40, 50], [0, 0, 63, 63], [10, 20, 30, 25]])
    with torch.no_grad():
        sparse, dense = base.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = base.prompt_encoder.get_dense_pe()
        masks, iou, token = decode(base.mask_decoder, emb, pe, sparse, dense)
        assert masks.shape == (3, 1, 32, 32) and iou.shape == (3, 1) and token.shape == (3, 32)
        for i in range(3):
            ref, ref_iou = base.mask_decoder(
                emb[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1], multimask_output=False
            )
            assert torch.allclose(masks[i : i + 1], ref, atol=1e-5) and torch.allclose(
                iou[i : i + 1], ref_iou, atol=1e-6
            )
        assert torch.equal(mask_token(base.mask_decoder, emb, pe, sparse, dense), token)  # the teacher's short cut


def test_infosam_refuses_batch_of_one(base, samples):
    with pytest.raises(ValueError, match="'infosam' needs batch_size >= 2"):
        train(quick(batch_size=1), base, samples)
    train(quick(batch_size=1, distill="none", max_steps=1), base, samples)  # fine without distillation


@pytest.mark.parametrize(
    "lr, min_lr", [(float("nan"), 0.0), (float("inf"), 0.0), (0.0, 0.0), (1e-4, 2e-4), (1e-4, -1.0)]
)
def test_unusable_learning_rates_are_refused(lr, min_lr):
    with pytest.raises(ValueError, match="need 0 <= min_lr <= lr and lr > 0"):
        TrainConfig(lr=lr, min_lr=min_lr).validate()


def test_cosine_schedule_matches_torch():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=2e-5)
    for step in range(10):
        assert cosine_lr(step, 10, 2e-4, 2e-5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


@pytest.mark.parametrize("method", ["adapter", "lora", "decoder"])
def test_encoder_cache_is_exact_and_teacher_runs_once(base, samples, method):
    from infosam_core.peft.registry import apply_peft

    student = copy.deepcopy(base)
    apply_peft(student, method)
    with torch.no_grad():  # make the student differ from the teacher
        for p in student.parameters():
            if p.requires_grad:
                p.add_(0.01)
    prepared = prepare_samples(samples, 64)
    cache = EncoderCache(base, student, need_teacher=True, enabled=True, max_bytes=1e9)
    rng = np.random.default_rng(0)
    for keys in ([(0, 0), (1, 1)], [(1, 1), (2, 0)], [(0, 0), (2, 0)]):
        batch = make_batch(student, prepared, keys, rng)
        f_t, f_s = cache.embeddings(batch)
        with torch.no_grad():
            assert torch.allclose(f_t, base.image_encoder(batch.images), atol=1e-5)
            assert torch.allclose(f_s, student.image_encoder(batch.images), atol=1e-5)
    assert cache.teacher_images == 3  # (0,0), (1,1), (2,0): once each
    assert cache.depth == {"adapter": 2, "lora": 0, "decoder": 0}[method]


def test_teacher_encoder_runs_once_per_image_and_flip(base, samples):
    result = train(quick(epochs=3, hflip=False, teacher_cache=True), base, samples[:4])
    assert result.steps == 6 and result.teacher_encoder_images == 4
    uncached = train(quick(epochs=3, hflip=False, teacher_cache=False), base, samples[:4])
    assert uncached.teacher_encoder_images == 12
    with_flips = train(quick(epochs=4, hflip=True, vflip=True), base, samples[:4])
    assert with_flips.teacher_encoder_images <= 16


def test_progress_every_step_and_deterministic(base, samples):
    seen: list[TrainProgress] = []
    rng_state = torch.random.get_rng_state()
    a = train(quick(epochs=2, lr=1e-3), base, samples, progress=seen.append)
    assert torch.equal(rng_state, torch.random.get_rng_state())  # no global RNG use
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6] and seen[-1].total_steps == 6
    assert [p.epoch for p in seen] == [1, 1, 1, 2, 2, 2]
    assert seen[0].lr == pytest.approx(1e-3) and seen[-1].eta_s == 0 and all(p.elapsed_s > 0 for p in seen)
    assert all(
        math.isfinite(p.loss) and p.loss == pytest.approx(p.seg_loss + p.terms["l_r"] + 0.5 * p.terms["l_d"], abs=1e-5)
        for p in seen
    )
    assert any(p.terms["l_r"] != 0 for p in seen) and any(p.terms["l_d"] != 0 for p in seen)
    assert [h["epoch"] for h in a.history] == [1, 2] and a.stop_reason == "completed" and not a.model.training
    b = train(quick(epochs=2, lr=1e-3), base, samples)
    sa, sb = trained_state(a.model), trained_state(b.model)
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(k.startswith("distiller.relation.") for k in sa)
    assert not torch.equal(sa["mask_decoder.iou_token.weight"], base.state_dict()["mask_decoder.iou_token.weight"])


def test_base_model_is_left_untouched(base, samples):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    flags = [p.requires_grad for p in base.parameters()]
    train(quick(max_steps=2, lr=1e-2), base, samples)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert flags == [p.requires_grad for p in base.parameters()] and not hasattr(base, "peft_state")


def test_cancel_returns_weights_so_far(base, samples):
    result = train(quick(epochs=5), base, samples, should_stop=lambda: len(calls) >= 2, progress=(calls := []).append)
    assert result.cancelled and result.stop_reason == "cancelled" and result.steps == 2
    assert not result.model.training


def test_nan_loss_stops_with_last_good_weights(base, samples, monkeypatch):
    reference = train(quick(max_steps=1), base, samples)
    calls = {"n": 0}
    real = train_module.structure_loss

    def flaky(logits, target, **kw):
        calls["n"] += 1
        loss = real(logits, target, **kw)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_module, "structure_loss", flaky)
    with pytest.raises(TrainingError, match=r"step 2 .*loss is not finite.*Lower the learning rate") as info:
        train(quick(max_steps=5), base, samples)
    result = info.value.result
    assert result.steps == 1 and result.stop_reason == "error"
    got, want = trained_state(result.model), trained_state(reference.model)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_validation_keeps_best_and_time_budget(base, samples):
    seen = []
    result = train(quick(epochs=2), base, samples[:4], val_samples=samples[4:], progress=seen.append)
    assert all("val_miou" in h for h in result.history) and result.best_epoch in (1, 2)
    assert result.best_val_miou == max(h["val_miou"] for h in result.history)
    assert [p.val_miou is not None for p in seen] == [False, False, True, False, False, True]
    timed = train(quick(epochs=50, time_budget_s=0.0), base, samples)
    assert timed.stop_reason == "time_budget" and timed.steps == 0 and not timed.cancelled


def test_continue_from_model_and_adapter(base, samples, tmp_path):
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint

    first = train(quick(max_steps=2), base, samples)
    again = train(quick(max_steps=1, lr=1e-9, min_lr=0), base, samples, init_model=first.model)
    a, b = trained_state(first.model), trained_state(again.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # continued from the same weights
    save_peft_checkpoint(first.model, tmp_path / "ad")
    resumed = train(
        quick(max_steps=1, lr=1e-9, min_lr=0), base, samples, init_model=load_peft_checkpoint(base, tmp_path / "ad")
    )
    c = trained_state(resumed.model)
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="uses PEFT 'adapter'.*asks for 'lora'"):
        train(quick(peft="lora", max_steps=1), base, samples, init_model=first.model)


def test_runs_in_a_worker_thread(base, samples):
    box: dict = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", train(quick(max_steps=2, peft="lora"), base, samples)))
    worker.start()
    worker.join(timeout=120)
    assert box["r"].steps == 2


def test_too_few_samples(base, samples):
    with pytest.raises(ValueError, match="at least batch_size=4"):
        train(quick(batch_size=4), base, samples[:3])


def test_objects_of_one_image_share_its_cached_embedding(base, samples):
    shared = [SegmentationSample(samples[0].image, s.mask, f"obj{i}") for i, s in enumerate(samples[:4])]
    result = train(quick(epochs=2, hflip=False), base, shared)
    assert result.teacher_encoder_images == 1


# -- learning test ----------------------------------------------------------------------------------------
def ring_samples(n: int, seed: int, size: int = 128) -> list[SegmentationSample]:
    """A shifted domain: thin bright ring outlines on dark noise, and the mask is one ring's *filled* disc.

    SAM's notion of an object here is the thin ring (or a box-shaped guess), so zero-shot IoU is low; the
    convention "the object is the whole disc" has to be learnt from the data.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        image = rng.normal(45, 20, (size, size, 3))
        discs: list[tuple[float, float, float]] = []
        while len(discs) < 3:
            r = rng.uniform(12, 26)
            cy, cx = rng.uniform(r + 2, size - r - 2, 2)
            if all(np.hypot(cy - y, cx - x) > r + s + 4 for y, x, s in discs):
                discs.append((cy, cx, r))
        for cy, cx, r in discs:
            d = np.hypot(yy - cy, xx - cx)
            ring = (d <= r) & (d > r - rng.uniform(2.5, 4))
            image[ring] = rng.normal(205, 20, (int(ring.sum()), 3))
        cy, cx, r = discs[0]
        out.append(
            SegmentationSample(
                np.clip(image, 0, 255).astype(np.uint8), np.hypot(yy - cy, xx - cx) <= r, f"ring{seed}-{i}"
            )
        )
    return out


@pytest.mark.slow
def test_adapting_to_a_shifted_domain_improves_held_out_miou(tiny_sam):
    """Adapter and Adapter + InfoSAM, the paper's optimiser settings, 32 steps of batch 4 on 16 images:
    held-out mIoU (box prompts) must beat the unadapted model by >= 0.05 absolute."""
    from safetensors import safe_open

    from infosam_core.evaluation.prompted import evaluate
    from infosam_core.resources import BUNDLED_TINY_CHECKPOINT

    with safe_open(str(BUNDLED_TINY_CHECKPOINT), "pt") as f:
        if "steps" not in (f.metadata() or {}):  # `infosam pretrain` records its step count
            pytest.skip("the bundled tiny weights are the random-init placeholder, not the pretrained model")
    train_set, test_set = ring_samples(16, seed=1), ring_samples(12, seed=2)
    before = evaluate(tiny_sam, test_set, "box", seed=0, metrics=("iou",)).miou
    for distill in ("none", "infosam"):
        config = TrainConfig(peft="adapter", distill=distill, batch_size=4, epochs=8, lr=2e-4, min_lr=2e-5, vflip=True)
        result = train(config, tiny_sam, train_set)
        after = evaluate(result.model, test_set, "box", seed=0, metrics=("iou",)).miou
        assert result.steps == 32
        assert after >= before + 0.05, f"adapter + {distill}: held-out mIoU {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("teacher_cache", [True, False])
def test_gradient_checkpointing_gives_the_same_training(base, samples, teacher_cache, monkeypatch):
    """Activation checkpointing changes memory, not results: same losses and weights after two steps."""
    import torch.utils.checkpoint as tuc

    real, calls = tuc.checkpoint, []
    monkeypatch.setattr(tuc, "checkpoint", lambda fn, *a, **kw: calls.append(fn) or real(fn, *a, **kw))
    runs = []
    for checkpoint in (False, True):
        seen = []
        config = quick(max_steps=2, grad_checkpoint=checkpoint, teacher_cache=teacher_cache)
        result = train(config, base, samples, progress=seen.append)
        assert bool(calls) == checkpoint  # blocks are checkpointed only when asked
        runs.append(([p.loss for p in seen], trained_state(result.model)))
    (loss_a, state_a), (loss_b, state_b) = runs
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-6)
    assert all(torch.allclose(state_a[k], state_b[k], atol=1e-6) for k in state_a)
    base_state = base.state_dict()
    encoder_trained = [k for k in state_a if k.startswith("image_encoder.")]
    assert encoder_trained and any(
        not torch.equal(state_a[k], base_state[k]) for k in encoder_trained if k in base_state
    )


def test_cpu_training_uses_bf16_only_where_it_is_native(base, samples, monkeypatch):
    """bf16 autocast on a CPU with native bf16 (AMX: forced here), float32 elsewhere and with bf16=False; the
    bf16 run's first loss is within 5% of float32's (same weights, same batch) and its history finite."""
    from infosam_core.inference.precision import native_bf16

    config = dict(peft="adapter", distill="infosam", epochs=2, batch_size=4, max_steps=2, lr=1e-3, seed=0)
    config.update(device="cpu")
    assert train_module.Trainer(TrainConfig(**config), base, samples, None).use_bf16 is native_bf16("cpu")
    monkeypatch.setattr(train_module, "native_bf16", lambda device: True)
    losses = {}
    for bf16 in (True, False):
        seen: list[TrainProgress] = []
        trainer = train_module.Trainer(TrainConfig(**config, bf16=bf16), base, samples, seen.append)
        assert trainer.use_bf16 is bf16
        result = trainer.run()
        assert result.steps == 2 and all(math.isfinite(p.loss) for p in seen)
        losses[bf16] = seen[0].loss
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    assert losses[True] != losses[False]  # autocast really ran in bf16
