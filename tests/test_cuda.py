"""The CUDA paths: prediction, bf16-autocast training (every PEFT method, every distiller, SAM2), adapters
moved between GPU and CPU, and DDP on NCCL (the app's adaptation on the GPU is in tests/test_app_adapt.py).

Marked ``cuda``; every test skips on a machine without a CUDA GPU (CI), and the NCCL test also without two.
Run them where a GPU is lent with ``pytest -m cuda`` (``scripts/gpu_checks.sh`` runs them with the GPU
benchmarks and keeps their output).
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from helpers import adapter_tensors, ddp_train_args, disc_samples, torchrun

from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint
from infosam_core.distill.registry import distiller_names
from infosam_core.evaluation.prompted import evaluate
from infosam_core.inference.predictor import Predictor
from infosam_core.peft.registry import PEFT_METHODS
from infosam_core.peft.state import trained_state
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import Trainer, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def samples():
    return disc_samples(8, size=96)


def gpu_config(**kw) -> TrainConfig:
    defaults = dict(epochs=1, batch_size=4, max_steps=2, lr=1e-3, seed=0, device="cuda", bf16=True)
    defaults.update(kw)
    return TrainConfig(**defaults)


def _finite_history(result) -> bool:
    return all(math.isfinite(v) for record in result.history for k, v in record.items() if k.endswith("loss"))


def test_predictor_on_the_gpu_predicts_what_the_cpu_predicts(tiny_sam, samples):
    image = samples[0].image
    h, w = image.shape[:2]
    box = np.array([4, 4, w - 5, h - 5])
    out = {}
    for device in ("cpu", "cuda"):
        predictor = Predictor(copy.deepcopy(tiny_sam).to(device))
        predictor.set_image(image)
        masks, scores, logits = predictor.predict(box=box, multimask_output=True)
        out[device] = (masks, scores, logits)
    masks_cpu, scores_cpu, logits_cpu = out["cpu"]
    masks_gpu, scores_gpu, logits_gpu = out["cuda"]
    # TF32 convolutions on the GPU: logits agree to ~1e-2, masks almost everywhere
    np.testing.assert_allclose(logits_gpu, logits_cpu, atol=5e-2, rtol=0)
    np.testing.assert_allclose(scores_gpu, scores_cpu, atol=1e-2)
    assert (masks_gpu != masks_cpu).mean() < 1e-3


def test_bf16_training_on_the_gpu_tracks_float32(tiny_sam, samples):
    """Adapter + InfoSAM, 2 steps: bf16 autocast is on, the losses are finite and close to a float32 run's,
    only trainable weights move, and the student lives on the GPU."""
    losses = {}
    for bf16 in (True, False):
        seen = []
        trainer = Trainer(gpu_config(peft="adapter", distill="infosam", bf16=bf16), tiny_sam, samples, seen.append)
        assert trainer.use_bf16 is bf16
        result = trainer.run()
        assert result.steps == 2 and _finite_history(result)
        losses[bf16] = [p.loss for p in seen]
        assert all(p.is_cuda for p in result.model.parameters())
    assert losses[True][0] == pytest.approx(losses[False][0], rel=0.05)  # the first step: same weights, same batch
    assert all(p.device.type == "cpu" for p in tiny_sam.parameters())  # the base model stays where it was


@pytest.mark.parametrize("method", list(PEFT_METHODS))
def test_every_peft_method_trains_in_bf16_on_the_gpu(tiny_sam, samples, method):
    before = {k: v.clone() for k, v in tiny_sam.state_dict().items()}
    result = train(gpu_config(peft=method, distill="none"), tiny_sam, samples)
    assert result.steps == 2 and _finite_history(result)
    moved = [k for k, v in trained_state(result.model).items() if k in before and not torch.equal(v.cpu(), before[k])]
    new = [k for k in trained_state(result.model) if k not in before]
    assert moved or new, method


@pytest.mark.parametrize("distiller", distiller_names())
def test_every_distiller_trains_in_bf16_on_the_gpu(tiny_sam, samples, distiller):
    result = train(gpu_config(peft="adapter", distill=distiller), tiny_sam, samples)
    assert result.steps == 2 and _finite_history(result), result.history


def test_sam2_trains_in_bf16_on_the_gpu(samples):
    from infosam_core.models.sam2 import Sam2Model, build_sam2_base

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam2 = Sam2Model(build_sam2_base("sam2.1_hiera_tiny", image_size=256), "sam2.1_hiera_tiny").eval()
    trainer = Trainer(gpu_config(peft="adapter", distill="infosam"), sam2, samples)
    assert trainer.use_bf16
    result = trainer.run()
    assert result.steps == 2 and _finite_history(result)
    assert all(p.is_cuda for p in result.model.parameters())


def test_an_adapter_trained_on_the_gpu_predicts_the_same_on_the_cpu(tiny_sam, samples, tmp_path):
    result = train(gpu_config(peft="lora", distill="infosam"), tiny_sam, samples)
    path = tmp_path / "gpu_adapter"
    save_peft_checkpoint(result.model, path)
    loaded = load_peft_checkpoint(tiny_sam, path)  # onto the CPU base
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    on_gpu = evaluate(result.model, samples, "box", seed=0, metrics=("iou",))
    on_cpu = evaluate(loaded, samples, "box", seed=0, metrics=("iou",))
    assert [r["iou"] for r in on_cpu.rows] == pytest.approx([r["iou"] for r in on_gpu.rows], abs=2e-2)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per process: needs 2 GPUs")
def test_torchrun_on_nccl_trains_like_one_process(tmp_path, ellipse_dataset):
    """`torchrun --nproc-per-node 2 infosam train --device cuda` (NCCL) ends with the adapter of the same
    command in one process (the gloo test's command and data, tests/test_distributed.py, on the GPU)."""
    from safetensors.torch import load_file

    from infosam_core.cli import main

    assert main(ddp_train_args(tmp_path / "one", ellipse_dataset, "cuda")) == 0
    two = torchrun(ddp_train_args(tmp_path / "two", ellipse_dataset, "cuda"), timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "over 2 processes" in two.stdout
    a, b = (load_file(adapter_tensors(tmp_path / run)) for run in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
