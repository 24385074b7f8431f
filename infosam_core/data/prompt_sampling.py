"""Prompt sampling from ground-truth masks, shared by training and evaluation (the InfoSAM protocol).

* training: with probability 0.5 a jittered tight box, otherwise one random foreground point
  (:func:`training_prompt`);
* evaluation: one jittered box per image with a seeded generator (:func:`eval_prompt` ``"box"``), or
  5 random points, 2 foreground + 3 background, for thin structures such as roads (``"points5"``).

All results follow :class:`segment_anything.SamPredictor`'s conventions, in original-image pixels:
point coords (N, 2) float as (x, y), point labels (N,) int (1 foreground, 0 background), box (4,) float
XYXY where (x1, y1) is the last mask pixel (inclusive, as segment-anything's ``batched_mask_to_box``).
The prompt dicts can be passed straight to ``Predictor.predict(**prompt)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infosam_core.data.masks import mask_bounds

PROTOCOLS = ("box", "point", "points5")


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise ValueError("the mask is empty: no prompt can be sampled from it (skip this sample)")
    return mask


def box_from_mask(mask: np.ndarray, rng: np.random.Generator | int | None = None, jitter: int = 5) -> np.ndarray:
    """The tight XYXY box (4,) float of ``mask`` (H, W), optionally jittered.

    With ``rng``, each of the 4 sides moves by a random whole number of pixels in [-j, j], where
    j = floor(min(jitter, 0.5 * min(w, h))) and w = x1 - x0, h = y1 - y0, so the box never inverts;
    the result is clipped to the image. Without ``rng`` the tight box is returned.
    """
    mask = _as_mask(mask)
    bounds = mask_bounds(mask)
    assert bounds is not None  # _as_mask refuses an empty mask
    x0, y0, x1, y1 = bounds
    if rng is not None:
        rng = np.random.default_rng(rng)
        j = int(np.floor(min(jitter, 0.5 * min(x1 - x0, y1 - y0))))
        if j > 0:
            dx0, dy0, dx1, dy1 = (int(v) for v in rng.integers(-j, j + 1, size=4))
            height, width = mask.shape
            x0, x1 = max(0, x0 + dx0), min(width - 1, x1 + dx1)
            y0, y1 = max(0, y0 + dy0), min(height - 1, y1 + dy1)
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def _sample_pixels(where: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct (x, y) pixels where ``where`` is True (with repeats only if there are fewer)."""
    ys, xs = np.nonzero(where)
    idx = rng.choice(len(xs), size=n, replace=n > len(xs))
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float64)


def point_from_mask(mask: np.ndarray, rng: np.random.Generator | int) -> tuple[np.ndarray, np.ndarray]:
    """One uniformly random foreground pixel: coords (1, 2) float (x, y), labels (1,) int = [1]."""
    mask = _as_mask(mask)
    return _sample_pixels(mask, 1, np.random.default_rng(rng)), np.ones(1, dtype=np.int64)


def points_from_mask(
    mask: np.ndarray, rng: np.random.Generator | int, n_fg: int = 2, n_bg: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``n_fg`` foreground then ``n_bg`` background random pixels: coords (N, 2) float, labels (N,) int.

    Points within each group are distinct when the mask has enough pixels. When the mask covers the
    whole image there is no background, and only the foreground points are returned.
    """
    mask = _as_mask(mask)
    if n_fg < 1 or n_bg < 0:
        raise ValueError(f"need n_fg >= 1 and n_bg >= 0, got n_fg={n_fg}, n_bg={n_bg}")
    rng = np.random.default_rng(rng)
    coords = [_sample_pixels(mask, n_fg, rng)]
    labels = [np.ones(n_fg, dtype=np.int64)]
    if n_bg and not mask.all():
        coords.append(_sample_pixels(~mask, n_bg, rng))
        labels.append(np.zeros(n_bg, dtype=np.int64))
    return np.concatenate(coords), np.concatenate(labels)


def points5_from_mask(mask: np.ndarray, rng: np.random.Generator | int) -> tuple[np.ndarray, np.ndarray]:
    """The 'points5' evaluation prompt: 2 foreground + 3 background points."""
    return points_from_mask(mask, rng, n_fg=2, n_bg=3)


def training_prompt(mask: np.ndarray, rng: np.random.Generator, p_box: float = 0.5, jitter: int = 5) -> dict[str, Any]:
    """The paper's training prompt: with probability ``p_box`` a jittered box, else one foreground point.

    Returns keyword arguments for ``Predictor.predict``: ``{"box": (4,)}`` or
    ``{"point_coords": (1, 2), "point_labels": (1,)}``.
    """
    if rng.random() < p_box:
        return {"box": box_from_mask(mask, rng, jitter)}
    coords, labels = point_from_mask(mask, rng)
    return {"point_coords": coords, "point_labels": labels}


def eval_prompt(mask: np.ndarray, rng: np.random.Generator | int, protocol: str = "box") -> dict[str, Any]:
    """An evaluation prompt as ``Predictor.predict`` keyword arguments, for ``protocol`` in :data:`PROTOCOLS`.

    ``box``: one jittered box; ``point``: one foreground point; ``points5``: 2 foreground + 3 background.
    """
    rng = np.random.default_rng(rng)
    if protocol == "box":
        return {"box": box_from_mask(mask, rng)}
    if protocol == "point":
        coords, labels = point_from_mask(mask, rng)
    elif protocol == "points5":
        coords, labels = points5_from_mask(mask, rng)
    else:
        raise ValueError(f"unknown prompt protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return {"point_coords": coords, "point_labels": labels}
