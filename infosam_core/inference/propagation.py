"""Propagation of one object through a z-stack or time series, from prompts on one slice.

Two engines, picked by the model's family (:func:`propagate`):

* SAM, MobileSAM, the tiny model (and any adapted one): **projection** slice to slice, as micro-sam's 3D
  annotator does (``segment_mask_in_volume``). The start slice is segmented from the user's prompts; every next
  slice (forward, then backward) is prompted with what the previous slice's mask gives: its bounding box
  (grown by ``box_extension``), a positive point at its most interior pixel, and the previous slice's low-res
  logits as the mask prompt (each can be switched off in :class:`PropagationConfig`). A direction stops where
  the object ends: an empty mask, a predicted IoU below ``iou_threshold``, or an overlap (IoU) with the previous
  slice's mask below ``overlap_threshold`` -- that slice is left empty. The overlap rule is also what keeps a
  tracked object from jumping to a neighbour.
* SAM2 models: SAM2's own video propagation with its memory bank
  (:mod:`infosam_core.inference.propagation_sam2`), whose masks equal ``SAM2VideoPredictor``'s.

Either returns a :class:`PropagationResult`: a (N, Y, X) boolean mask, the slices it covers, a score per slice
and why each direction stopped. The model is used as given: base or adapted alike.
"""

from __future__ import annotations

import time

import numpy as np

from infosam_core.inference.propagation_records import (
    BACKWARD,
    DIRECTIONS,
    FORWARD,
    PlaneSource,
    ProgressFn,
    PropagationConfig,
    PropagationResult,
    SlicePrompt,
    StopFn,
)


# --------------------------------------------------------------------------------------- prompt geometry
def mask_box(mask: np.ndarray, extension: float = 0.0) -> np.ndarray | None:
    """(x0, y0, x1, y1) of a mask's pixels, grown by ``extension`` x its size on each side, clipped to the
    image (None for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    dx, dy = (x1 - x0 + 1) * extension, (y1 - y0 + 1) * extension
    height, width = mask.shape
    return np.array([max(0.0, x0 - dx), max(0.0, y0 - dy), min(width - 1.0, x1 + dx), min(height - 1.0, y1 + dy)])


def interior_point(mask: np.ndarray) -> np.ndarray | None:
    """(x, y) of the mask's pixel farthest from its border (the centre of a round object); None when empty."""
    if not mask.any():
        return None
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([float(x), float(y)])


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def prompt_from_mask(
    mask: np.ndarray, config: PropagationConfig
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(points (1, 2), labels (1,), box (4,)) that the previous slice's ``mask`` gives the next one."""
    points = labels = box = None
    if config.use_points:
        point = interior_point(mask)
        if point is not None:
            points, labels = point[None], np.ones(1, np.int64)
    if config.use_box:
        box = mask_box(mask, config.box_extension)
    return points, labels, box


# ---------------------------------------------------------------------------------------------- engines
def propagate(
    predictor: object,
    stack: PlaneSource,
    start: int,
    prompt: SlicePrompt,
    config: PropagationConfig | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> PropagationResult:
    """Propagate the object ``prompt`` marks on slice ``start`` through ``stack`` with ``predictor``'s model
    (a :class:`~infosam_core.inference.predictor.Predictor`): SAM2's video memory for a SAM2 model, projection
    for every other family."""
    from infosam_core.models.registry import find_family

    config = config or PropagationConfig()
    model = getattr(predictor, "model", None)
    family = find_family(model) if model is not None else None
    if family is not None and family.video_memory:
        from infosam_core.inference.propagation_sam2 import propagate_sam2

        return propagate_sam2(model, stack, start, prompt, config, progress=progress, should_stop=should_stop)  # type: ignore[arg-type]
    return propagate_projection(predictor, stack, start, prompt, config, progress, should_stop)


def _check_start(stack: PlaneSource, start: int) -> None:
    if not 0 <= start < stack.n_planes:
        raise ValueError(f"slice {start} is outside the stack's {stack.n_planes} planes (0..{stack.n_planes - 1})")


def propagate_projection(
    predictor: object,
    stack: PlaneSource,
    start: int,
    prompt: SlicePrompt,
    config: PropagationConfig | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> PropagationResult:
    """Projection slice to slice (see the module docstring) with a Predictor of any non-SAM2 family."""
    config = config or PropagationConfig()
    _check_start(stack, start)
    began = time.perf_counter()
    n = stack.n_planes
    masks = np.zeros((n, *stack.plane_shape), dtype=bool)
    result = PropagationResult(masks, start)
    predictor.set_image(stack.rgb(start))  # type: ignore[attr-defined]
    single_click = prompt.box is None and prompt.points is not None and len(prompt.points) == 1
    out, score, logits = predictor.predict(  # type: ignore[attr-defined]
        prompt.points, prompt.labels, prompt.box, multimask_output=single_click
    )
    best = int(np.argmax(score))
    masks[start] = out[best]
    result.scores[start] = float(score[best])
    budget = sum(_steps(start, n, d, config) for d in config.directions)
    done = 0
    if progress is not None:
        progress(done, budget)
    for direction in config.directions:
        previous, previous_logits = masks[start], logits[best : best + 1]
        if not previous.any():
            result.stopped[direction] = "the start slice's mask is empty"
            continue
        step = 1 if direction == FORWARD else -1
        index, taken = start + step, 0
        result.stopped[direction] = "end of the stack"
        while 0 <= index < n:
            if config.max_planes is not None and taken >= config.max_planes:
                result.stopped[direction] = f"max_planes={config.max_planes}"
                break
            if should_stop is not None and should_stop():
                result.stopped[direction] = "cancelled"
                break
            points, labels, box = prompt_from_mask(previous, config)
            predictor.set_image(stack.rgb(index))  # type: ignore[attr-defined]
            out, score, logits = predictor.predict(  # type: ignore[attr-defined]
                points, labels, box, mask_input=previous_logits if config.use_mask else None, multimask_output=False
            )
            mask, predicted = out[0], float(score[0])
            done += 1
            taken += 1
            if progress is not None:
                progress(done, budget)
            area = int(mask.sum())
            if area < config.min_area:
                result.stopped[direction] = f"slice {index}: empty mask"
                break
            if predicted < config.iou_threshold:
                result.stopped[direction] = f"slice {index}: predicted IoU {predicted:.2f} < {config.iou_threshold}"
                break
            overlap = mask_iou(mask, previous)
            if overlap < config.overlap_threshold:
                result.stopped[direction] = f"slice {index}: overlap {overlap:.2f} < {config.overlap_threshold}"
                break
            masks[index] = mask
            result.scores[index] = predicted
            previous, previous_logits = mask, logits[:1]
            index += step
        if result.stopped.get(direction) == "cancelled":
            break
    result.seconds = time.perf_counter() - began
    return result


def _steps(start: int, n: int, direction: str, config: PropagationConfig) -> int:
    steps = n - 1 - start if direction == FORWARD else start
    return steps if config.max_planes is None else min(steps, config.max_planes)


__all__ = [
    "BACKWARD",
    "DIRECTIONS",
    "FORWARD",
    "PlaneSource",
    "PropagationConfig",
    "PropagationResult",
    "SlicePrompt",
    "interior_point",
    "mask_box",
    "mask_iou",
    "propagate",
    "propagate_projection",
]
