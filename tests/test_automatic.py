"""Automatic mask generation (inference/automatic.py): parity with segment-anything's generator, labels."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamAutomaticMaskGenerator

from infosam_core.inference.automatic import (
    AutomaticConfig,
    Proposal,
    _remove_small_regions,
    point_grid,
    proposals_to_labels,
    segment_all,
)
from infosam_core.inference.predictor import Predictor
from infosam_core.io.images import load_rgb
from infosam_core.resources import SAMPLES_DIR


@pytest.fixture(scope="module")
def nuclei_image():
    image = load_rgb(SAMPLES_DIR / "nuclei_stained_rgb.png")
    return np.ascontiguousarray(image[:96, :128])  # small: 8 x 8 prompts on a 96 x 128 crop


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_parity_with_sam_automatic_mask_generator(tiny_sam, nuclei_image):
    settings = dict(points_per_side=8, pred_iou_thresh=0.6, stability_score_thresh=0.7, box_nms_thresh=0.7)
    reference = SamAutomaticMaskGenerator(tiny_sam, points_per_batch=16, **settings).generate(nuclei_image)
    ours = segment_all(Predictor(tiny_sam), nuclei_image, AutomaticConfig(points_per_batch=16, **settings))
    assert len(reference) >= 3, "the test needs a few masks to compare"
    # same masks (the interactive decoder agrees with SAM's to float32 rounding: allow one borderline mask)
    assert abs(len(ours.proposals) - len(reference)) <= 1
    matched = 0
    for ref in reference:
        best = max(ours.proposals, key=lambda p: _mask_iou(p.mask, ref["segmentation"]))
        if _mask_iou(best.mask, ref["segmentation"]) > 0.99:
            matched += 1
            assert best.predicted_iou == pytest.approx(ref["predicted_iou"], abs=1e-4)
            assert best.stability == pytest.approx(ref["stability_score"], abs=2e-3)
    assert matched >= len(reference) - 1
    # highest predicted IoU first, as the NMS returns them
    scores = [p.predicted_iou for p in ours.proposals]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 <= ours.uncertainty <= 1.0


def test_filters_and_labels(tiny_sam, nuclei_image):
    predictor = Predictor(tiny_sam)
    loose = segment_all(
        predictor, nuclei_image, AutomaticConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    )
    strict = segment_all(
        predictor, None, AutomaticConfig(points_per_side=6, pred_iou_thresh=0.8, stability_score_thresh=0.9)
    )
    assert len(strict.proposals) < len(loose.proposals)
    assert all(p.predicted_iou > 0.8 and p.stability >= 0.9 for p in strict.proposals)
    small = segment_all(
        predictor,
        None,
        AutomaticConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_mask_fraction=0.05),
    )
    assert all(p.area <= 0.05 * 96 * 128 for p in small.proposals)
    labels = loose.labels()
    assert labels.shape == (96, 128) and labels.max() >= 1
    assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))  # consecutive


def test_labels_resolve_overlaps_by_predicted_iou():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = np.zeros((10, 10), bool)
    b[5:10, 5:10] = True
    hidden = np.zeros((10, 10), bool)
    hidden[6:8, 6:8] = True  # covered entirely by b, which scores higher: it gets no label
    proposals = [
        Proposal(a, 0.7, 0.9, (4, 4), (2, 2, 7, 7)),
        Proposal(b, 0.9, 0.9, (7, 7), (5, 5, 9, 9)),
        Proposal(hidden, 0.5, 0.9, (6, 6), (6, 6, 7, 7)),
    ]
    labels = proposals_to_labels(proposals, (10, 10))
    assert labels.max() == 2
    assert labels[6, 6] == labels[9, 9] != labels[2, 2] != 0


def test_small_regions_and_grid():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a 1-pixel hole
    mask[18, 18] = True  # a 1-pixel island
    cleaned = _remove_small_regions(mask, min_area=4)
    assert cleaned[5, 5] and not cleaned[18, 18] and cleaned[2:12, 2:12].all()
    grid = point_grid(2, (100, 200))
    np.testing.assert_allclose(grid, [[50, 25], [150, 25], [50, 75], [150, 75]])


def test_config_checks_and_tiny_defaults():
    with pytest.raises(ValueError, match="points_per_side"):
        AutomaticConfig(points_per_side=0)
    with pytest.raises(ValueError, match="pred_iou_thresh"):
        AutomaticConfig(pred_iou_thresh=1.5)
    assert AutomaticConfig.for_model("vit_b") == AutomaticConfig()
    tiny = AutomaticConfig.for_model("tiny", points_per_side=8)
    assert tiny.points_per_side == 8 and tiny.pred_iou_thresh < AutomaticConfig().pred_iou_thresh


def test_fork_predicts_on_its_own_image(tiny_sam, nuclei_image):
    predictor = Predictor(tiny_sam)
    other = np.ascontiguousarray(nuclei_image[::-1])
    predictor.set_image(nuclei_image)
    before = predictor.predict(np.array([[40.0, 30.0]]), np.array([1]))[0]
    fork = predictor.fork()
    assert not fork.is_image_set
    fork.set_image(other)  # the fork's image: the original keeps its own
    after = predictor.predict(np.array([[40.0, 30.0]]), np.array([1]))[0]
    np.testing.assert_array_equal(before, after)
    assert predictor.original_size == (96, 128) and fork.embedding.image is not predictor.embedding.image
