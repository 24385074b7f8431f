"""How a stitched (tiled) segmentation failed at seams: objects split between labels, and extra fragments.

* **split**: a true object two or more predicted labels each cover with at least ``min_fraction`` of its area
  (the same object labelled twice, typically on both sides of a tile seam);
* **fragments**: predicted labels matched to no true object at IoU 0.5 that lie mostly (over half their area)
  inside one true object: pieces of an object, not background found as an object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infosam_core.evaluation.instances import iou_matrix


@dataclass(frozen=True)
class SeamScore:
    """``split``: true objects covered by two or more labels; ``fragments``: unmatched labels inside a true
    object; ``true_objects`` / ``predicted_objects``: counts."""

    split: int
    fragments: int
    true_objects: int
    predicted_objects: int

    @property
    def split_fraction(self) -> float:
        return self.split / self.true_objects if self.true_objects else 0.0


def seam_score(predicted: np.ndarray, truth: np.ndarray, min_fraction: float = 0.1) -> SeamScore:
    """Split objects and fragments of ``predicted`` against ``truth`` (label images of one shape, 0 background)."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    ious, pred_ids, true_ids = iou_matrix(predicted, truth)
    if len(true_ids) == 0 or len(pred_ids) == 0:
        return SeamScore(0, 0, len(true_ids), len(pred_ids))
    pred_index = np.searchsorted(pred_ids, predicted.ravel())
    true_index = np.searchsorted(true_ids, truth.ravel())
    both = (predicted.ravel() != 0) & (truth.ravel() != 0)
    overlap = np.zeros((len(pred_ids), len(true_ids)), dtype=np.int64)
    np.add.at(overlap, (pred_index[both], true_index[both]), 1)
    true_area = np.bincount(true_index[truth.ravel() != 0], minlength=len(true_ids))
    pred_area = np.bincount(pred_index[predicted.ravel() != 0], minlength=len(pred_ids))
    covers = overlap >= min_fraction * np.maximum(true_area[None, :], 1)
    split = int((covers.sum(axis=0) >= 2).sum())
    matched = (ious >= 0.5).any(axis=1)
    inside = overlap.max(axis=1) > 0.5 * np.maximum(pred_area, 1)
    fragments = int((~matched & inside).sum())
    return SeamScore(split, fragments, len(true_ids), len(pred_ids))
