"""InfoSAM relation maps: the maps' geometry, the per-epoch figures of `infosam train --relation-maps`, and the
relation-module warm-up option."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import draw

from infosam_core.cli import main
from infosam_core.data.datasets import SegmentationSample
from infosam_core.distill.base import DistillInputs
from infosam_core.distill.infosam import InfosamConfig, InfosamDistiller
from infosam_core.evaluation.relation_maps import (
    RelationMapError,
    has_relation_module,
    relation_maps,
    upsample_map,
    valid_cells,
)
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import train


def _sample(h=48, w=64, name="blob") -> SegmentationSample:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    rr, cc = draw.ellipse(h // 2, w // 2, h // 4, w // 4, shape=mask.shape)
    mask[rr, cc] = True
    image[mask] += 140
    return SegmentationSample(image, mask, name)


@pytest.mark.parametrize(
    ("shape", "expected"), [((256, 256), (32, 32)), ((48, 64), (24, 32)), ((64, 48), (32, 24)), ((10, 1000), (1, 32))]
)
def test_valid_cells_crop_the_padding(shape, expected):
    assert valid_cells(shape, 256, (32, 32)) == expected


def test_maps_of_a_wide_image_and_untrained_model(tiny_sam):
    samples = [_sample(name=f"s{i}") for i in range(2)]
    result = train(
        TrainConfig(peft="decoder", distill="infosam", epochs=1, batch_size=2, max_steps=1), tiny_sam, samples
    )
    assert has_relation_module(result.model) and not has_relation_module(tiny_sam)
    pair = relation_maps(tiny_sam, result.model, samples[0])
    assert pair.teacher.shape == pair.student.shape == (24, 32)  # 48 x 64 -> 192 x 256 of 256 x 256: 24 x 32 cells
    assert np.isfinite(pair.teacher).all() and pair.teacher.std() > 0
    # decoder-only: same encoder, so teacher and student differ only through the trained decoder's token
    assert upsample_map(pair.student, (48, 64)).shape == (48, 64)
    assert result.model.training is False and tiny_sam.training is False
    with pytest.raises(RelationMapError, match="InfoSAM"):
        relation_maps(tiny_sam, tiny_sam, samples[0])


@pytest.mark.slow
def test_train_relation_maps_2_over_2_epochs_gives_two_non_blank_figures(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(4):
        s = _sample(h=40 + 4 * i, name=f"im{i}")
        for kind, array in (("images", s.image), ("masks", s.mask.astype(np.uint8) * 255)):
            (data / kind).mkdir(parents=True, exist_ok=True)
            iio.imwrite(data / kind / f"im{i}.png", array)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--peft", "decoder", "--batch-size", "2", "--epochs", "2"]
    assert main([*argv, "--relation-maps", "2", "--out", str(out)]) == 0, capsys.readouterr()
    figures = sorted((out / "relation_maps").glob("*.png"))
    assert [f.name for f in figures] == ["epoch_001.png", "epoch_002.png"]
    for f in figures:
        pixels = iio.imread(f)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 600
        assert pixels[..., :3].std() > 10  # drawn, not blank
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50
    assert main([*argv, "--distill", "none", "--relation-maps", "2", "--out", str(tmp_path / "x")]) == 2
    assert "relation module" in capsys.readouterr().err


def test_relation_module_warm_up_keeps_l_d_off_the_student_for_n_steps():
    torch.manual_seed(0)
    distiller = InfosamDistiller(InfosamConfig(alpha=0.0, beta=1.0, warmup_steps=1), 8)
    distiller.train()
    f_t, tok_t = torch.randn(3, 8, 4, 4), torch.randn(3, 8)

    def grads(step):
        f_s = torch.randn(3, 8, 4, 4, requires_grad=True)
        tok_s = torch.randn(3, 8, requires_grad=True)
        inputs = DistillInputs(
            f_t, f_s, tok_s, torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 16, 16), lambda _: (None, tok_t), step=step
        )
        distiller(inputs).total.backward()
        return f_s.grad, distiller.relation.query.weight.grad

    f_grad, r_grad = grads(step=0)
    assert f_grad is None and r_grad is not None and r_grad.abs().sum() > 0  # step 1: only R learns from L_d
    distiller.zero_grad()
    f_grad, _ = grads(step=0)  # the step, not the number of calls, decides (a recomputed step stays warm)
    assert f_grad is None
    f_grad, _ = grads(step=1)
    assert f_grad is not None and f_grad.abs().sum() > 0  # step 2: L_d reaches the student


def test_centred_relation_vectors_have_zero_mean_and_unit_norm():
    torch.manual_seed(0)
    f, tok = torch.randn(3, 8, 4, 4) + 5.0, torch.randn(3, 8)
    plain = InfosamDistiller(InfosamConfig(), 8)
    centred = InfosamDistiller(InfosamConfig(center=True), 8)
    centred.load_state_dict(plain.state_dict())
    rel = centred.relation_vectors(f, tok)
    assert torch.allclose(rel.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(rel.norm(dim=1), torch.ones(3), atol=1e-5)
    raw = plain.relation_vectors(f, tok)
    expected = torch.nn.functional.normalize(raw - raw.mean(1, keepdim=True), dim=1)
    assert torch.allclose(rel, expected, atol=1e-6)
