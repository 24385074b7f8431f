"""Segmentation metrics of one prediction against one ground-truth mask, and a per-dataset summary.

Every metric takes ``(pred, gt)``: ``pred`` float in [0, 1] of shape (H, W) (a probability map, e.g.
``sigmoid(logits)``), ``gt`` bool (H, W).

* ``s_measure`` (alpha 0.5), ``e_measure`` (adaptive: threshold ``min(2 * mean(pred), 1)``) and
  ``weighted_f_measure`` (beta^2 = 0.3 in (1 + b) R P / (R + b P)) come from ``pysodmetrics``
  (``py_sod_metrics``), the paper's metric code, with ``normalize=False`` (pred is already in [0, 1]; its
  default would min-max stretch it) and ``beta=0.3`` (its default is 1).
* ``iou`` (= ``jaccard``, ISIC's name) and ``dice`` binarise ``pred`` at ``threshold`` (0.5). An empty
  prediction of an empty mask scores 1.

The paper fed ``clip(logits, 0, 1)`` to S/E/wF; :mod:`infosam_core.evaluation.prompted` feeds the sigmoid
probability, which is the same map up to a monotonic change away from the decision boundary.

``py_sod_metrics`` is imported by the three metrics that use it, when first called: it imports scikit-image,
scikit-learn, SciPy and pandas (about 4 CPU s on a 2-core VM), which a command that only reads a plan or
refuses a file should not wait for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

WFM_BETA = 0.3


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be (H, W) arrays of the same shape, got {pred.shape} and {gt.shape}")
    if pred.dtype == bool:
        pred = pred.astype(np.float64)
    pred = pred.astype(np.float64, copy=False)
    if pred.size and (pred.min() < 0 or pred.max() > 1 or not np.isfinite(pred).all()):
        raise ValueError("pred must hold probabilities in [0, 1] (apply a sigmoid to logits)")
    return pred, gt.astype(bool, copy=False)


def s_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Structure measure (alpha = 0.5)."""
    import py_sod_metrics

    pred, gt = _check(pred, gt)
    m = py_sod_metrics.Smeasure(alpha=0.5)
    m.step(pred, gt, normalize=False)
    return float(m.get_results()["sm"])


def e_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Adaptive enhanced-alignment measure."""
    import py_sod_metrics

    pred, gt = _check(pred, gt)
    m = py_sod_metrics.Emeasure()
    m.step(pred, gt, normalize=False)
    return float(m.get_results()["em"]["adp"])


def weighted_f_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Weighted F-measure with beta^2 = 0.3 (0 when gt is empty, as pysodmetrics defines it)."""
    import py_sod_metrics

    pred, gt = _check(pred, gt)
    m = py_sod_metrics.WeightedFmeasure(beta=WFM_BETA)
    m.step(pred, gt, normalize=False)
    return float(m.get_results()["wfm"])


def _counts(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[int, int, int]:
    pred, gt = _check(pred, gt)
    p = pred > threshold
    inter = int(np.count_nonzero(p & gt))
    return inter, int(np.count_nonzero(p)), int(np.count_nonzero(gt))


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """|P & G| / |P | G| with P = pred > threshold (1 when both are empty)."""
    inter, n_pred, n_gt = _counts(pred, gt, threshold)
    union = n_pred + n_gt - inter
    return inter / union if union else 1.0


def jaccard(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """The Jaccard index: the same number as :func:`iou` (ISIC's name for it)."""
    return iou(pred, gt, threshold)


def dice(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """2 |P & G| / (|P| + |G|) with P = pred > threshold (1 when both are empty)."""
    inter, n_pred, n_gt = _counts(pred, gt, threshold)
    total = n_pred + n_gt
    return 2 * inter / total if total else 1.0


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "iou": iou,
    "dice": dice,
    "s_measure": s_measure,
    "e_measure": e_measure,
    "weighted_f": weighted_f_measure,
}


def compute_metrics(pred: np.ndarray, gt: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The named metrics (all of :data:`METRICS` by default) of one prediction."""
    names = tuple(METRICS) if names is None else names
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    pred, gt = _check(pred, gt)
    return {name: METRICS[name](pred, gt) for name in names}


@dataclass
class MetricSummary:
    """Per-image metric rows and their means: ``add(name, pred, gt)`` per image, then ``mean``."""

    names: tuple[str, ...] = tuple(METRICS)
    rows: list[dict[str, float | str]] = field(default_factory=list)

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> dict[str, float | str]:
        row: dict[str, float | str] = {"image": name, **compute_metrics(pred, gt, self.names)}
        self.rows.append(row)
        return row

    @property
    def mean(self) -> dict[str, float]:
        if not self.rows:
            return {n: float("nan") for n in self.names}
        return {n: float(np.mean([float(r[n]) for r in self.rows])) for n in self.names}

    def table(self, digits: int = 4) -> str:
        """A plain-text table of the means (one line per metric)."""
        width = max(len(n) for n in self.names)
        lines = [f"{'metric':<{width}}  mean ({len(self.rows)} images)"]
        lines += [f"{n:<{width}}  {v:.{digits}f}" for n, v in self.mean.items()]
        return "\n".join(lines)
