"""Training over several processes (torchrun / DDP on gloo, 2 CPU processes): gathered batch statistics keep
the full-batch gradient, and a 2-process run learns the same adapter as a 1-process run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import WORLD, adapter_tensors, ddp_train_args, free_port, torchrun

from infosam_core.distill.base import DistillInputs
from infosam_core.distill.infosam import InfosamConfig, InfosamDistiller
from infosam_core.training.batches import epoch_order, sample_rng
from infosam_core.training.distributed import DistributedContext

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


class _TinyStudent(torch.nn.Module):
    """A stand-in student: trainable maps to image embeddings and mask tokens, plus InfoSAM's distiller."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.features = torch.nn.Conv2d(dim, dim, 1)
        self.token = torch.nn.Linear(dim, dim)
        self.distiller = InfosamDistiller(InfosamConfig(alpha=1.0, beta=0.5), dim, g)
        with torch.no_grad():
            for p in (*self.features.parameters(), *self.token.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x, tok_in, f_t, tok_t, gather):
        f_s = self.features(x)
        tok_s = self.token(tok_in)
        seg = f_s.pow(2).flatten(1).mean(1).mean()  # a per-sample loss, mean over this process's rows
        inputs = DistillInputs(f_t, f_s, tok_s, f_s[:, :1], f_s[:, :1], lambda _: (None, tok_t), gather=gather)
        return seg + inputs_loss(self.distiller, inputs)


def inputs_loss(distiller, inputs):
    return distiller(inputs).total


def _batch(b: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, dim, 4, 4, generator=g), torch.randn(b, dim, generator=g)] + [
        torch.randn(b, dim, 4, 4, generator=g),
        torch.randn(b, dim, generator=g),
    ]


def _full_batch_grads() -> dict[str, torch.Tensor]:
    model = _TinyStudent()
    model(*_batch(), gather=lambda t: t).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _gram_gradient_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        context = DistributedContext.current(torch.device("cpu"))
        model = context.wrap(_TinyStudent())  # DDP: averages the gradients over the ranks
        rows = context.shard(list(range(4)))
        x, tok_in, f_t, tok_t = (t[rows] for t in _batch())
        model(x, tok_in, f_t, tok_t, gather=context.gather).backward()
        grads = {n.removeprefix("module."): p.grad for n, p in model.named_parameters()}
        # the decisions every rank must take together: stop (largest code wins), skip a non-finite step
        agreed = {
            "stop": torch.tensor(context.agree_max(2 if rank == 1 else 0)),
            "mean": context.mean(torch.tensor([1.0 + rank, float("nan") if rank == 1 else 0.0])),
        }
        torch.save({"grads": grads, "agreed": agreed}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_gram_loss_has_the_full_batch_gradient(tmp_path):
    """InfoSAM's Gram matrices over the gathered global batch, under DDP's gradient averaging, give every rank
    the one-process gradient of the full batch (the gather's backward sums, DDP averages: factor 1); the
    agreed decisions (stop, non-finite step) are the same on both ranks."""
    mp.spawn(_gram_gradient_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    expected = _full_batch_grads()
    assert set(expected) >= {"distiller.relation.query.weight", "features.weight", "token.weight"}
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        grads, agreed = saved["grads"], saved["agreed"]
        assert int(agreed["stop"]) == 2  # rank 1 asked to stop: both stop
        assert agreed["mean"][0] == 1.5 and torch.isnan(agreed["mean"][1])  # rank 1's NaN reaches rank 0
        for name, g in expected.items():
            assert g.abs().max() > 0, name
            torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-7, msg=f"rank {rank}: {name}")


def test_without_gather_the_gradient_differs():
    """The control: per-process Gram matrices (no gather) are a different loss, so the check above can fail."""
    model = _TinyStudent()
    x, tok_in, f_t, tok_t = _batch()
    halves = [model(x[r::2], tok_in[r::2], f_t[r::2], tok_t[r::2], gather=lambda t: t) for r in range(2)]
    (sum(halves) / 2).backward()
    expected = _full_batch_grads()
    assert not torch.allclose(model.distiller.relation.query.weight.grad, expected["distiller.relation.query.weight"])


def test_prompts_and_flips_do_not_depend_on_the_split():
    """Each sample's generator is a function of (seed, epoch, index) only; epochs and seeds differ."""
    draws = [sample_rng(42, 1, i).random() for i in range(6)]
    assert [sample_rng(42, 1, i).random() for i in reversed(range(6))] == draws[::-1]
    assert sample_rng(42, 2, 0).random() != draws[0] and sample_rng(7, 1, 0).random() != draws[0]
    np.testing.assert_array_equal(epoch_order(42, 1, 10), epoch_order(42, 1, 10))
    assert not np.array_equal(epoch_order(42, 1, 10), epoch_order(42, 2, 10))
    context = DistributedContext(rank=1, world_size=2)
    assert context.shard([5, 2, 7, 1]) == [7, 1]


#: centring a relation vector over the locations removes what shifts all its locations by one value: the
#: image-feature LayerNorm's bias and the key bias (both add a per-sample constant); their gradient is zero in
#: theory and float noise in practice, which Adam turns into steps of about lr
ZERO_GRADIENT_WHEN_CENTRED = ("distiller.relation.norm_features.bias", "distiller.relation.key.bias")


@pytest.mark.slow
def test_torchrun_two_processes_learn_the_one_process_adapter(ellipse_dataset, tmp_path):
    """`torchrun --nproc-per-node 2 infosam train ... --batch-size 4` on gloo == the same command in one process.

    The decoder stays frozen here (train_decoder=false): the attention key biases have an exactly zero
    gradient in theory, and Adam's first steps turn their float-rounding noise into updates of ~lr, which
    would hide the comparison (with the decoder trained they differ by up to lr per step, every other
    tensor matches as here). InfoSAM's centred relation vectors (the tiny model's default) make two relation
    parameters such biases too (:data:`ZERO_GRADIENT_WHEN_CENTRED`): they are held to that lr-per-step bound."""
    from safetensors.torch import load_file

    from infosam_core.cli import main

    assert main(ddp_train_args(tmp_path / "one", ellipse_dataset)) == 0  # one process: this one
    two = torchrun(ddp_train_args(tmp_path / "two", ellipse_dataset))
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("adapter -> ") == 1  # only rank 0 saves and prints
    assert "over 2 processes" in two.stdout
    a, b = (load_file(adapter_tensors(tmp_path / run)) for run in ("one", "two"))
    assert a.keys() == b.keys() and any(k.startswith("distiller.") for k in a)
    for key in a:
        if key in ZERO_GRADIENT_WHEN_CENTRED:
            assert (b[key] - a[key]).abs().max() <= 2 * 2.0e-4 * 2, key  # two runs, lr 2e-4, 2 steps
        else:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("one", "two")]
    assert history[1]["processes"] == WORLD and history[1]["steps"] == history[0]["steps"] == 2
    for name in ("loss", "seg_loss", "l_r", "l_d"):  # reduced over the ranks: the global batch's values
        assert history[1]["history"][0][name] == pytest.approx(history[0]["history"][0][name], abs=1e-4)


# Distillers that compare samples across the batch (they gather). Checked in float64, where the 2-process and
# the 1-process gradients agree to ~1e-12; in float32 SemCKD's weight (400) and its BN regressors leave
# rounding differences of ~1e-4 relative on small bias gradients, which hid nothing but looked like a mismatch.
BATCH_STATISTIC_DISTILLERS = {
    "pkt": {},
    "pkd": {},
    "ibd": {"qk_dim": 8},
    "semckd": {"batch_size": 4, "mid_channels": 8},
}


class _BlockStudent(torch.nn.Module):
    """A stand-in student with two encoder blocks, an embedding, a token and logits, plus one distiller."""

    def __init__(self, name: str, dim: int = 8) -> None:
        super().__init__()
        from infosam_core.distill.base import ModelDims
        from infosam_core.distill.registry import make_distiller

        g = torch.Generator().manual_seed(0)
        self.blocks = torch.nn.ModuleList([torch.nn.Conv2d(dim, dim, 1) for _ in range(2)])
        self.token = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        dims = ModelDims(embed_dim=dim, encoder_dim=dim, encoder_depth=2, global_blocks=(0, 1))
        self.distiller = make_distiller(name, BATCH_STATISTIC_DISTILLERS[name], dims, g)

    def forward(self, x, tok_in, f_t, tok_t, gather):
        h0 = self.blocks[0](x)
        h1 = self.blocks[1](h0)
        inputs = DistillInputs(
            f_t,
            h1,
            self.token(tok_in),
            h1[:, :1],
            f_t[:, :1],
            lambda _: (f_t[:, 1:2], tok_t),
            gather=gather,
            teacher_features={0: f_t * 0.5, 1: f_t},
            student_features={0: h0, 1: h1},
        )
        return self.distiller(inputs).total


def _distillers_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        context = DistributedContext.current(torch.device("cpu"))
        rows = context.shard(list(range(4)))
        out = {}
        for name in BATCH_STATISTIC_DISTILLERS:
            model = context.wrap(_BlockStudent(name).double())
            x, tok_in, f_t, tok_t = (t[rows].double() for t in _batch())
            model(x, tok_in, f_t, tok_t, gather=context.gather).backward()
            out.update({f"{name}:{n.removeprefix('module.')}": p.grad for n, p in model.named_parameters()})
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_batch_statistic_distillers_have_the_full_batch_gradient(tmp_path):
    """PKT, PKD, IBD (batch norms) and SemCKD (B x B attention, BN regressors) over 2 processes: the
    one-process gradient of the full batch, for the student's and the distiller's own parameters (float64)."""
    mp.spawn(_distillers_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in BATCH_STATISTIC_DISTILLERS:
            model = _BlockStudent(name).double()
            model(*(t.double() for t in _batch()), gather=lambda t: t).backward()
            for n, p in model.named_parameters():
                got = grads[f"{name}:{n}"]
                if p.grad is None:  # not used by this distiller (e.g. the token for PKD)
                    assert got is None or not got.any(), f"{name}:{n}"
                    continue
                torch.testing.assert_close(got, p.grad, rtol=1e-9, atol=1e-12, msg=f"{name}:{n}")


@pytest.mark.parametrize("center", [True, False])
def test_centred_relation_vectors_give_the_listed_biases_no_gradient(center):
    """Why the torchrun comparison holds :data:`ZERO_GRADIENT_WHEN_CENTRED` to a looser bound: with centring
    their gradient is zero up to float rounding; without it, it is not."""
    torch.manual_seed(0)
    distiller = InfosamDistiller(InfosamConfig(center=center), 8)
    with torch.no_grad():  # non-trivial LayerNorm and key parameters
        for p in distiller.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rel = distiller.relation_vectors(torch.randn(4, 8, 3, 5), torch.randn(4, 8))
    ((rel @ rel.T) ** 2).sum().add(rel[:, :4].sum()).backward()
    params = dict(distiller.named_parameters())
    for name in ZERO_GRADIENT_WHEN_CENTRED:
        grad = params[name.removeprefix("distiller.")].grad
        assert grad is not None
        assert (grad.abs().max() < 1e-6) == center, (name, grad)
    assert params["relation.query.weight"].grad.abs().max() > 1e-3
