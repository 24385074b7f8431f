"""Encoder precision (``inference.precision`` and ``Predictor(precision=...)``): what ``auto`` resolves to, that
each precision keeps its own cache entries, and that the fast paths' masks match float32's on the bundled model
(mean IoU >= 0.995 over the coins' boxes and synthetic scenes' boxes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infosam_core.data.reference_sets import coins_instances, object_masks, synthetic_heldout
from infosam_core.inference import precision as precision_module
from infosam_core.inference.precision import CpuFeatures, quantized_copy, resolve_precision
from infosam_core.inference.predictor import Predictor


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (CpuFeatures(amx_bf16=True, avx512_bf16=True, vnni=True), "bfloat16"),
        (CpuFeatures(amx_bf16=False, avx512_bf16=True, vnni=True), "float32"),  # converts, no faster matmul
        (CpuFeatures(amx_bf16=False, avx512_bf16=False, vnni=False), "float32"),
    ],
)
def test_auto_is_bfloat16_only_where_the_cpu_multiplies_it_natively(monkeypatch, features, expected):
    monkeypatch.setattr(precision_module, "cpu_features", lambda: features)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("int8", "cpu") == "int8"


def test_the_effective_precision_is_described_with_autos_reason(monkeypatch):
    from infosam_core.inference.precision import describe_precision

    monkeypatch.setattr(precision_module, "cpu_features", lambda: CpuFeatures(False, True, True))
    assert describe_precision("auto", "cpu") == "float32 (auto: no AMX)"
    assert describe_precision("int8", "cpu") == "int8 (chosen)"
    monkeypatch.setattr(precision_module, "cpu_features", lambda: CpuFeatures(True, True, True))
    assert describe_precision("auto", "cpu") == "bfloat16 (auto: AMX)"
    with pytest.raises(ValueError, match="CPU only"):
        describe_precision("int8", "cuda")


def test_bad_precisions_are_refused_by_name():
    with pytest.raises(ValueError, match="auto, float32, bfloat16, int8"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda")


def test_this_machines_flags_are_read():
    cpuinfo = precision_module.Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
    features = precision_module.cpu_features()
    assert (features.amx_bf16, features.avx512_bf16) == ("amx_bf16" in flags, "avx512_bf16" in flags)


def test_int8_copy_quantizes_the_encoder_and_leaves_the_model(tiny_sam):
    copied = quantized_copy(tiny_sam)
    assert not any(type(m) is torch.nn.Linear for m in copied.image_encoder.modules())
    assert any(type(m) is torch.nn.Linear for m in tiny_sam.image_encoder.modules())
    assert copied.mask_decoder is not tiny_sam.mask_decoder


def test_each_precision_has_its_own_embeddings(tiny_sam):
    image = coins_instances().image
    predictor = Predictor(tiny_sam, precision="float32")
    predictor.set_image(image)
    reference = predictor.get_image_embedding().clone()
    fingerprint = predictor.model_fingerprint
    predictor.set_precision("bfloat16")
    assert predictor.resolved_precision == "bfloat16" and predictor.model_fingerprint == fingerprint + "_bf16"
    bf16 = predictor.get_image_embedding()
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, reference)
    assert float((bf16 - reference).norm() / reference.norm()) < 0.02
    predictor.set_precision("float32")  # back from the cache: the float32 entry was never overwritten
    assert torch.equal(predictor.get_image_embedding(), reference)


def _boxes(labels: np.ndarray, min_area: int) -> list[np.ndarray]:
    boxes = []
    for mask in object_masks(labels, min_area=min_area):
        ys, xs = np.nonzero(mask)
        boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64))
    return boxes


def _box_masks(predictor: Predictor, image: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
    predictor.set_image(image)
    return [predictor.predict(box=box, multimask_output=False)[0][0] for box in boxes]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def box_sets():
    """The 24 coins' boxes and the objects' boxes of two synthetic held-out scenes."""
    coins = coins_instances()
    sets = [(coins.image, _boxes(coins.labels, 100))]
    assert len(sets[0][1]) == 24
    return sets + [(scene.image, _boxes(scene.labels, 24)) for scene in synthetic_heldout(2)]


@pytest.fixture(scope="module")
def float32_masks(tiny_sam, box_sets):
    reference = Predictor(tiny_sam, precision="float32")
    return [_box_masks(reference, image, boxes) for image, boxes in box_sets]


@pytest.mark.parametrize("fast", ["auto", pytest.param("bfloat16", marks=pytest.mark.slow), "int8"])
def test_fast_paths_give_float32s_masks(tiny_sam, box_sets, float32_masks, fast):
    candidate = Predictor(tiny_sam, precision=fast)
    ious = [
        _iou(a, b)
        for (image, boxes), masks in zip(box_sets, float32_masks, strict=True)
        for a, b in zip(masks, _box_masks(candidate, image, boxes), strict=True)
    ]
    print(f"{fast}: mean IoU {np.mean(ious):.4f}, min {min(ious):.4f} over {len(ious)} boxes")
    assert np.mean(ious) >= 0.995, (fast, np.mean(ious), min(ious))
