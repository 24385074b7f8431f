"""Instance F1 at IoU 0.5 (evaluation/instances.py)."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_core.evaluation.instances import (
    InstanceScore,
    dataset_f1,
    instances_from_mask,
    iou_matrix,
    match_instances,
)


def _square(labels, label, y, x, size):
    labels[y : y + size, x : x + size] = label


def test_counts_matches_misses_and_extras():
    truth = np.zeros((40, 40), int)
    _square(truth, 1, 0, 0, 10)
    _square(truth, 2, 20, 20, 10)
    _square(truth, 3, 0, 30, 6)  # missed
    pred = np.zeros((40, 40), int)
    _square(pred, 7, 0, 0, 10)  # exact
    _square(pred, 8, 22, 22, 10)  # IoU 64 / 136 = 0.47: below 0.5, a miss and an extra
    _square(pred, 9, 33, 0, 5)  # extra
    score = match_instances(pred, truth)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 2, 2)
    assert score.f1 == pytest.approx(2 / (2 + 2 + 2))
    shifted = np.zeros((40, 40), int)
    _square(shifted, 1, 21, 21, 10)  # IoU 81 / 119 = 0.68
    assert match_instances(shifted, truth).true_positives == 1
    assert match_instances(shifted, truth).mean_matched_iou == pytest.approx(81 / 119)


def test_one_to_one_and_empty_cases():
    truth = np.zeros((10, 10), int)
    truth[:, :5] = 1
    pred = np.zeros((10, 10), int)
    pred[:, :5] = 1
    pred[:, 5:] = 2
    ious, pred_ids, true_ids = iou_matrix(pred, truth)
    assert ious.shape == (2, 1) and list(pred_ids) == [1, 2] and list(true_ids) == [1]
    assert match_instances(pred, truth).to_dict()["true_positives"] == 1
    empty = np.zeros((10, 10), int)
    assert match_instances(empty, empty).f1 == 1.0
    assert match_instances(pred, empty).f1 == 0.0
    with pytest.raises(ValueError, match="shape"):
        match_instances(pred, np.zeros((5, 5), int))


def test_connected_components_and_pooling():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True
    mask[3:5, 3:5] = True  # touches diagonally: one object with 8-connectivity, two with 4
    assert instances_from_mask(mask).max() == 1
    assert instances_from_mask(mask, connectivity=1).max() == 2
    labels = instances_from_mask(mask, connectivity=1)
    total = dataset_f1([(labels, labels), (np.zeros_like(labels), labels)])
    assert total == InstanceScore(2, 0, 2, 2.0)
    assert total.f1 == pytest.approx(4 / 6)
