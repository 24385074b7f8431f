"""Segment every object of a stack: "segment all" on each slice, then objects linked between slices by overlap.

:func:`link_slices` gives one id per object through its slices (a z-stack's 3D object, a time series' track):
slice by slice, each object of slice ``i`` takes the id of the object of slice ``i - 1`` it overlaps most
(IoU at least ``link_iou``; each id once per slice, best pairs first), otherwise a new id.
:func:`segment_stack` runs :func:`~infosam_core.inference.automatic.segment_all` with the predictor's model (base or
adapted) on every slice and links the results into a (N, Y, X) label volume.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infosam_core.inference.automatic import AutomaticConfig, segment_all
from infosam_core.inference.predictor import Predictor
from infosam_core.inference.propagation_records import PlaneSource

DEFAULT_LINK_IOU = 0.3


def _pair_ious(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous ids, current ids, IoU matrix) of the labelled objects of two slices."""
    prev_ids = np.unique(previous[previous > 0])
    cur_ids = np.unique(current[current > 0])
    ious = np.zeros((len(prev_ids), len(cur_ids)))
    if not len(prev_ids) or not len(cur_ids):
        return prev_ids, cur_ids, ious
    both = (previous > 0) & (current > 0)
    pairs, counts = np.unique(np.stack([previous[both], current[both]]), axis=1, return_counts=True)
    prev_area = {int(i): int(a) for i, a in zip(*np.unique(previous[previous > 0], return_counts=True), strict=True)}
    cur_area = {int(i): int(a) for i, a in zip(*np.unique(current[current > 0], return_counts=True), strict=True)}
    prev_index = {int(v): k for k, v in enumerate(prev_ids)}
    cur_index = {int(v): k for k, v in enumerate(cur_ids)}
    for (p, c), inter in zip(pairs.T, counts, strict=True):
        union = prev_area[int(p)] + cur_area[int(c)] - int(inter)
        ious[prev_index[int(p)], cur_index[int(c)]] = inter / union
    return prev_ids, cur_ids, ious


def link_slices(slices: list[np.ndarray] | np.ndarray, link_iou: float = DEFAULT_LINK_IOU) -> np.ndarray:
    """(N, Y, X) uint32 volume from per-slice label images (ids local to each slice): linked ids, 1..K."""
    if not 0.0 < link_iou <= 1.0:
        raise ValueError(f"link_iou must be within (0, 1], got {link_iou}")
    volume = np.zeros((len(slices), *np.asarray(slices[0]).shape), dtype=np.uint32)
    next_id = 1
    for index, local in enumerate(slices):
        local = np.asarray(local)
        assigned: dict[int, int] = {}
        if index > 0:
            prev_ids, cur_ids, ious = _pair_ious(volume[index - 1], local)
            order = np.argsort(-ious, axis=None)
            used: set[int] = set()
            for flat in order:
                p, c = np.unravel_index(int(flat), ious.shape)
                if ious[p, c] < link_iou:
                    break
                if int(cur_ids[c]) in assigned or int(prev_ids[p]) in used:
                    continue
                assigned[int(cur_ids[c])] = int(prev_ids[p])
                used.add(int(prev_ids[p]))
        for local_id in np.unique(local[local > 0]):
            global_id = assigned.get(int(local_id))
            if global_id is None:
                global_id, next_id = next_id, next_id + 1
            volume[index][local == local_id] = global_id
    return volume


def segment_stack(
    predictor: Predictor,
    stack: PlaneSource,
    config: AutomaticConfig | None = None,
    link_iou: float = DEFAULT_LINK_IOU,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Every object of every slice, linked through the stack: a (N, Y, X) uint32 label volume."""
    config = config or AutomaticConfig()
    per_slice: list[np.ndarray] = []
    for index in range(stack.n_planes):
        if should_stop is not None and should_stop():
            break
        per_slice.append(segment_all(predictor, stack.rgb(index), config).labels())
        if progress is not None:
            progress(index + 1, stack.n_planes)
    while len(per_slice) < stack.n_planes:  # cancelled: the slices not reached stay empty
        per_slice.append(np.zeros(stack.plane_shape, np.int32))
    return link_slices(per_slice, link_iou)
