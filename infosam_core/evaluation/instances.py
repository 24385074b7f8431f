"""Instance segmentation scores: F1 of predicted objects matched one-to-one to ground-truth objects.

A predicted instance and a ground-truth instance match when their IoU is at least ``iou_threshold``
(0.5 by default: with IoU > 0.5 a match is unique, so greedy and optimal matching agree there). The
one-to-one matching maximises the summed IoU (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``) among pairs above the threshold. Then
``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)`` (the
DSB 2018 / StarDist convention; F1 is 1 when both sides are empty).

Ground truth given as a binary mask is split into instances by its connected components
(:func:`instances_from_mask`, 8-connectivity by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class InstanceScore:
    """Counts of one comparison (or a sum of several); ``mean_matched_iou`` over the true positives."""

    true_positives: int
    false_positives: int
    false_negatives: int
    matched_iou_sum: float = 0.0

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0

    @property
    def mean_matched_iou(self) -> float:
        return self.matched_iou_sum / self.true_positives if self.true_positives else 0.0

    def __add__(self, other: InstanceScore) -> InstanceScore:
        return InstanceScore(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
            self.matched_iou_sum + other.matched_iou_sum,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "mean_matched_iou": self.mean_matched_iou,
        }


def instances_from_mask(mask: np.ndarray, connectivity: int = 2) -> np.ndarray:
    """Label image of a binary mask's connected components (``connectivity`` 1: 4-, 2: 8-neighbours)."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, _ = ndimage.label(mask, structure=structure)
    return labels


def load_instances(path: str | Path) -> np.ndarray:
    """Ground-truth instances from a file: a label image as is, a binary mask (two values, or an RGB
    mask) split into connected components."""
    from infosam_core.io.images import read_image

    array = np.asarray(read_image(path))
    if array.ndim == 3:
        array = array[..., :3].max(axis=-1)
    if len(np.unique(array)) <= 2:
        return instances_from_mask(array > 0)
    return array.astype(np.int64)


def iou_matrix(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every predicted instance with every true one: ``(ious (P, T), predicted ids, true ids)``."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"label images differ in shape: predicted {predicted.shape}, truth {truth.shape}")
    pred_ids, pred_inv = np.unique(predicted, return_inverse=True)
    true_ids, true_inv = np.unique(truth, return_inverse=True)
    pred_inv, true_inv = pred_inv.ravel(), true_inv.ravel()
    overlap = np.bincount(pred_inv * len(true_ids) + true_inv, minlength=len(pred_ids) * len(true_ids))
    overlap = overlap.reshape(len(pred_ids), len(true_ids)).astype(np.float64)
    pred_sizes, true_sizes = overlap.sum(1), overlap.sum(0)
    pred_rows, true_cols = pred_ids != 0, true_ids != 0
    overlap = overlap[pred_rows][:, true_cols]
    union = pred_sizes[pred_rows][:, None] + true_sizes[true_cols][None, :] - overlap
    ious = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return ious, pred_ids[pred_rows], true_ids[true_cols]


def match_instances(predicted: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> InstanceScore:
    """Score the label image ``predicted`` against the label image ``truth`` (0 = background in both)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    ious, pred_ids, true_ids = iou_matrix(predicted, truth)
    n_pred, n_true = len(pred_ids), len(true_ids)
    if n_pred == 0 or n_true == 0:
        return InstanceScore(0, n_pred, n_true)
    eligible = np.where(ious >= iou_threshold, ious, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    matched = eligible[rows, cols] >= iou_threshold
    tp = int(matched.sum())
    return InstanceScore(tp, n_pred - tp, n_true - tp, float(eligible[rows, cols][matched].sum()))


def dataset_f1(pairs: Iterable[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.5) -> InstanceScore:
    """Summed counts over ``(predicted labels, true labels)`` pairs (F1 pooled over the set)."""
    total = InstanceScore(0, 0, 0)
    for predicted, truth in pairs:
        total = total + match_instances(predicted, truth, iou_threshold)
    return total
