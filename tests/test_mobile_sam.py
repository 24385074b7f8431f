"""MobileSAM (``vit_t``): MobileSAM's own checkpoint format loads, predictions equal MobileSAM's SamPredictor,
PEFT and InfoSAM training work on its TinyViT encoder. A TinyViT pass at 1024 px takes ~3 s here: few of them."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("timm")
mobile_sam = pytest.importorskip("mobile_sam")

from infosam_core.data.datasets import SegmentationSample  # noqa: E402
from infosam_core.inference.predictor import Predictor  # noqa: E402
from infosam_core.models.checkpoints import CheckpointError  # noqa: E402
from infosam_core.models.registry import MODEL_TYPES, load_sam, model_choices  # noqa: E402
from infosam_core.peft.registry import apply_peft  # noqa: E402
from infosam_core.training.config import TrainConfig  # noqa: E402
from infosam_core.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def mobile_checkpoint(tmp_path_factory):
    """MobileSAM's own model (random weights, perturbed so nothing is at its init value), saved as MobileSAM
    saves ``mobile_sam.pt``: a plain state dict."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = mobile_sam.sam_model_registry["vit_t"](checkpoint=None)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("mobile") / "mobile_sam.pt"
    torch.save(reference.state_dict(), path)
    reference.eval()  # refreshes TinyViT's cached attention biases after the change (as MobileSAM's README does)
    return path, reference


@pytest.fixture(scope="module")
def mobile(mobile_checkpoint):
    return load_sam("vit_t", mobile_checkpoint[0])


@pytest.fixture(scope="module")
def encoder_input_output(mobile):
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, mobile.image_encoder(x)


def test_listed_everywhere():
    assert "vit_t" in MODEL_TYPES
    assert ("MobileSAM (TinyViT)", "vit_t") in model_choices()


@pytest.mark.slow
def test_predictions_equal_mobile_sams_predictor(mobile_checkpoint, mobile):
    _, reference = mobile_checkpoint
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    box = np.array([10, 20, 80, 70])
    ours = Predictor(mobile)
    ours.set_image(image)
    theirs = mobile_sam.SamPredictor(reference)
    theirs.set_image(image)
    torch.testing.assert_close(ours.features, theirs.features, rtol=0, atol=1e-5)
    for kwargs in ({"box": box}, {"point_coords": np.array([[40.0, 50.0]]), "point_labels": np.array([1])}):
        masks, scores, low = ours.predict(multimask_output=False, **kwargs)
        ref_masks, ref_scores, ref_low = theirs.predict(multimask_output=False, **kwargs)
        np.testing.assert_allclose(low, ref_low, atol=1e-4)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        assert (masks == ref_masks).mean() > 0.999


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="randomly initialised"):
        sam = load_sam("vit_t")
    assert sum(p.numel() for p in sam.image_encoder.parameters()) == 6_065_532


def test_wrong_files_are_refused_clearly(tmp_path, mobile_checkpoint):
    from infosam_core.models.sam import build_sam

    sam_file = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), sam_file)
    with pytest.raises(
        CheckpointError, match=r"sam_tiny.pth: this checkpoint holds a tiny model \(type tiny\), not vit_t"
    ):
        load_sam("vit_t", sam_file)
    state = torch.load(mobile_checkpoint[0], weights_only=True)
    del state["image_encoder.neck.0.weight"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(CheckpointError, match=r"partial.pt: does not match MobileSAM vit_t: 1 weights missing"):
        load_sam("vit_t", partial)


@pytest.mark.parametrize("method", ["adapter", "lora", "adaptformer", "bitfit"])
def test_peft_counts_and_identity_at_init(mobile, method, encoder_input_output):
    student = copy.deepcopy(mobile)
    report = apply_peft(student, method, generator=torch.Generator().manual_seed(0))
    expected_added = {
        # adapters on blocks 2..9 (dims 160 x6, 320 x2), hidden dim/4, on attn and mlp outputs
        "adapter": 2 * (6 * (2 * 160 * 40 + 40 + 160) + 2 * (2 * 320 * 80 + 80 + 320)),
        # LoRA r=4 on the 10 attn.qkv: (in + out) * 4
        "lora": 4 * (2 * (128 + 384) + 6 * (160 + 480) + 2 * (320 + 960)),
        "adaptformer": 2 * (2 * 128 * 64 + 64 + 128) + 6 * (2 * 160 * 64 + 64 + 160) + 2 * (2 * 320 * 64 + 64 + 320),
        "bitfit": 0,
    }[method]
    assert report.added == expected_added
    assert report.mask_decoder == 4_058_340
    if method == "bitfit":
        assert report.image_encoder > 0
    # every added module is the identity at step 0: the adapted encoder's output is the base encoder's
    if method in ("adapter", "adaptformer"):
        x, base_output = encoder_input_output
        with torch.no_grad():
            torch.testing.assert_close(student.image_encoder(x), base_output, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_infosam_training_step_on_mobile_sam(mobile):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(2):
        image = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), bool)
        mask[16:40, 20 + i : 44 + i] = True
        image[mask] += 100
        samples.append(SegmentationSample(image, mask, f"s{i}"))
    base_state = {k: v.clone() for k, v in mobile.state_dict().items()}
    config = TrainConfig(peft="lora", distill="infosam", epochs=1, batch_size=2, max_steps=1, lr=1e-3)
    result = train(config, mobile, samples)
    assert result.steps == 1
    history = result.history[0]
    assert np.isfinite([history["loss"], history["l_r"], history["l_d"]]).all()
    trained = result.model.state_dict()
    lora_b = [k for k in trained if k.endswith("qkv.lora_B")]
    assert len(lora_b) == 10 and any(trained[k].abs().sum() > 0 for k in lora_b)
    assert all(torch.equal(v, mobile.state_dict()[k]) for k, v in base_state.items())  # base untouched


@pytest.mark.parametrize("distiller", ["vid", "reviewkd", "ibd", "semckd"])
def test_block_distillers_are_refused_on_tinyvit(mobile, distiller):
    from infosam_core.distill import ModelDims, make_distiller

    dims = ModelDims.of(mobile)
    assert dims.encoder_depth == 0 and dims.encoder_name == "TinyViT"
    with pytest.raises(ValueError, match=f"distiller '{distiller}' distils the outputs.*TinyViT.*: infosam, logit"):
        make_distiller(distiller, {}, dims)
