"""Metrics: IoU/Dice/Jaccard by hand, S/E/weighted-F against pysodmetrics' own classes."""

from __future__ import annotations

import numpy as np
import py_sod_metrics
import pytest

from infosam_core.evaluation.metrics import (
    METRICS,
    MetricSummary,
    compute_metrics,
    dice,
    e_measure,
    iou,
    jaccard,
    s_measure,
    weighted_f_measure,
)


def test_iou_dice_jaccard_by_hand():
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((4, 5))
    pred[1:3, 2:5] = 0.9  # 6 pixels, 4 of them inside gt
    pred[0, 0] = 0.5  # exactly at the threshold: not foreground
    assert iou(pred, gt) == pytest.approx(4 / 8)
    assert jaccard(pred, gt) == iou(pred, gt)
    assert dice(pred, gt) == pytest.approx(2 * 4 / 12)
    assert iou(pred, gt, threshold=0.95) == 0.0
    empty = np.zeros((3, 3))
    assert iou(empty, empty.astype(bool)) == 1.0 and dice(empty, empty.astype(bool)) == 1.0
    assert iou(np.ones((3, 3)), np.zeros((3, 3), bool)) == 0.0


def _cases():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    for k in range(4):
        gt = (yy - 30 - k) ** 2 + (xx - 40) ** 2 < (12 + 3 * k) ** 2
        pred = np.clip(gt * 0.8 + rng.normal(0, 0.25, gt.shape), 0, 1)
        yield pred, gt
    yield rng.random((32, 32)), np.zeros((32, 32), bool)  # empty ground truth


@pytest.mark.parametrize("case", range(5))
def test_sod_metrics_match_pysodmetrics(case):
    pred, gt = list(_cases())[case]
    sm, em, wfm = (
        py_sod_metrics.Smeasure(alpha=0.5),
        py_sod_metrics.Emeasure(),
        py_sod_metrics.WeightedFmeasure(beta=0.3),
    )
    sm.step(pred, gt, normalize=False)
    em.step(pred, gt, normalize=False)
    wfm.step(pred, gt, normalize=False)
    assert s_measure(pred, gt) == pytest.approx(sm.get_results()["sm"], abs=1e-12)
    assert e_measure(pred, gt) == pytest.approx(em.get_results()["em"]["adp"], abs=1e-12)
    assert weighted_f_measure(pred, gt) == pytest.approx(wfm.get_results()["wfm"], abs=1e-12)


def test_weighted_f_uses_beta_squared_0_3():
    pred, gt = next(_cases())
    default = py_sod_metrics.WeightedFmeasure()  # beta = 1
    default.step(pred, gt, normalize=False)
    assert weighted_f_measure(pred, gt) != pytest.approx(default.get_results()["wfm"], abs=1e-6)


def test_perfect_prediction_scores_one():
    _, gt = next(_cases())
    scores = compute_metrics(gt.astype(float), gt)
    assert set(scores) == set(METRICS)
    assert all(v == pytest.approx(1.0, abs=1e-3) for v in scores.values())  # E-measure: 1.0002


def test_input_validation():
    gt = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="probabilities"):
        iou(np.full((4, 4), 2.0), gt)
    with pytest.raises(ValueError, match="same shape"):
        s_measure(np.zeros((4, 5)), gt)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(np.zeros((4, 4)), gt, ("nope",))


def test_summary_means_and_table():
    summary = MetricSummary(("iou", "dice"))
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    summary.add("a", gt.astype(float), gt)
    summary.add("b", np.zeros((4, 4)), gt)
    assert summary.mean == {"iou": 0.5, "dice": 0.5}
    assert [r["image"] for r in summary.rows] == ["a", "b"]
    assert "iou" in summary.table() and "2 images" in summary.table()
