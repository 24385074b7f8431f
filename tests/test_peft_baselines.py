"""The paper's other PEFT baselines (ConvLoRA, SU-SAM): parameter counts, identity at step 0, gradients,
ConvLoRA's load-balancing loss reaching the trainer, and ``infosam info``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import square_samples

from infosam_core.cli import main
from infosam_core.peft.common import auxiliary_loss
from infosam_core.peft.convlora import ConvLoraLinear
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import parameter_parts
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import train

METHODS = [("convlora", {}), ("su_sam", {"variant": "series"}), ("su_sam", {"variant": "parallel"}), ("su_sam", {})]


@pytest.fixture(scope="module")
def vit_b():
    from infosam_core.models.sam import build_sam

    return build_sam("vit_b")


def test_counts_at_vit_b(vit_b):
    model = copy.deepcopy(vit_b)
    apply_peft(model, "convlora")
    parts = parameter_parts(model)
    assert parts["image encoder"].trainable == parts["image encoder"].added == 162_432  # the figure
    assert parts["mask decoder"].trainable == 4_058_340
    model = copy.deepcopy(vit_b)
    apply_peft(model, "su_sam")
    assert parameter_parts(model)["image encoder"].added == 12 * 2 * (2 * 768 * 192 + 192 + 768)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_identity_at_init_and_gradients(random_tiny_sam, method, options):
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = random_tiny_sam.image_encoder(x)
    model = copy.deepcopy(random_tiny_sam)
    apply_peft(model, method, generator=torch.Generator().manual_seed(0), **options)
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder(x), base, rtol=0, atol=1e-6)
    # after the zero-initialised projections move, the added modules change the output and all get gradients
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lora_B", "up.weight")):
                p.normal_(0, 0.02)
    model.train()
    out = model.image_encoder(x)
    aux = auxiliary_loss(model)
    assert (aux is not None) == (method == "convlora")
    (out.square().mean() + (aux if aux is not None else 0)).backward()
    added = set(model.peft_state.added)
    no_grad = [n for n, p in model.named_parameters() if n in added and (p.grad is None or not p.grad.any())]
    if method == "convlora":  # only the chosen expert of each block gets a gradient (top-1 routing)
        no_grad = [n for n in no_grad if ".experts." not in n]
    assert not no_grad, no_grad
    assert not torch.allclose(out.detach(), base, atol=1e-4)


def test_convlora_routes_each_window_to_one_expert_and_balances():
    base = torch.nn.Linear(8, 24)
    from infosam_core.peft.convlora import ConvLoraConfig

    layer = ConvLoraLinear(base, ConvLoraConfig(rank=4, experts=8), torch.Generator().manual_seed(0))
    layer.train()
    gates = layer._gates(torch.randn(64, 4))
    assert torch.equal((gates > 0).sum(1), torch.ones(64, dtype=torch.long))
    torch.testing.assert_close(gates.sum(1), torch.ones(64))
    layer(torch.randn(6, 5, 5, 8))
    loss = layer.auxiliary_loss()
    assert loss is not None and loss >= 0 and layer.auxiliary_loss() is None  # reported once per forward
    layer.eval()
    layer(torch.randn(2, 5, 5, 8))
    assert layer.auxiliary_loss() is None  # no balancing loss at evaluation
    with pytest.raises(ValueError, match="square token grid"):
        layer(torch.randn(2, 7, 8))


def test_su_sam_rejects_unknown_variant(random_tiny_sam):
    with pytest.raises(ValueError, match="variant must be one of series, parallel, mixed"):
        apply_peft(copy.deepcopy(random_tiny_sam), "su_sam", variant="zigzag")


@pytest.mark.parametrize(("method", "distill"), [("convlora", "infosam"), ("convlora", "none"), ("su_sam", "none")])
def test_training_steps(random_tiny_sam, method, distill, monkeypatch):
    samples = square_samples()
    reported = []
    real = auxiliary_loss

    def spy(model):
        loss = real(model)
        reported.append(loss)
        return loss

    monkeypatch.setattr("infosam_core.training.trainer.auxiliary_loss", spy)
    config = TrainConfig(peft=method, distill=distill, epochs=1, batch_size=2, max_steps=1, lr=1e-3)
    result = train(config, random_tiny_sam, samples)
    assert result.steps == 1 and np.isfinite(result.history[0]["loss"])
    assert (reported[0] is not None) == (method == "convlora")
    if reported[0] is not None and distill == "none":  # the balancing loss is in the total, not in the seg loss
        record = result.history[0]
        assert record["loss"] == pytest.approx(record["seg_loss"] + float(reported[0].detach()), rel=1e-4, abs=1e-6)


def test_info_command(capsys):
    assert main(["info", "--model", "vit_b", "--peft", "convlora", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parts"]["image encoder"]["trainable"] == 162_432
    assert info["parts"]["prompt encoder"]["trainable"] == 0
    assert len(info["fingerprint"]) == 16
    assert main(["info", "--model", "tiny", "--peft", "lora", "--distill", "infosam"]) == 0
    text = capsys.readouterr().out
    assert "relation module" in text and "fingerprint" in text and "total" in text
    assert main(["info", "--peft-option", "rank=2"]) == 2
