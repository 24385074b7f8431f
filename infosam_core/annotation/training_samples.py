"""A project's accepted objects as training samples: one :class:`SegmentationSample` per object (its image,
the binary mask of that object).

Two steps, so that a GUI can take the snapshot on its own thread and do the slow part elsewhere:
:func:`snapshot_objects` copies what is needed (label images, object ids, image paths) from the project, and
:func:`build_samples` reads the images and cuts the masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ProjectError
from infosam_core.data.datasets import SegmentationSample
from infosam_core.inference.tiling import TilingConfig
from infosam_core.inference.tiling_crops import object_crops
from infosam_core.io.images import load_rgb


@dataclass
class ObjectSource:
    """One annotated image's objects, copied out of the project: the image file, a copy of its label image and
    the ids of its objects."""

    path: Path
    name: str
    labels: np.ndarray
    object_ids: list[int]


def snapshot_objects(project: Project, on_missing: Callable[[str], None] | None = None) -> list[ObjectSource]:
    """Every image of ``project`` with accepted objects. An image whose file cannot be found is skipped and
    reported through ``on_missing(message)``."""
    sources = []
    for entry, ann in project.iter_objects():
        if ann.labels is None or not ann.objects:
            continue
        try:
            path = project.image_path(entry)
        except (ProjectError, OSError):
            if on_missing is not None:
                on_missing(f"{entry.name}: image not found, its objects are not used")
            continue
        sources.append(ObjectSource(path, entry.name, ann.labels.copy(), sorted(ann.objects)))
    return sources


def build_samples(sources: list[ObjectSource], tiling: TilingConfig | None = None) -> list[SegmentationSample]:
    """One sample per object (samples of one image share its RGB array, hence the training caches' entries).
    With ``tiling`` (e.g. ``TilingConfig.for_model(sam)``), the objects of an image larger than one tile are
    native-resolution crops around each (:func:`~infosam_core.inference.tiling_crops.object_crops`).
    Raises ValueError when an image no longer matches its labels, ImageError when it cannot be read."""
    samples = []
    for src in sources:
        rgb = load_rgb(src.path)
        if rgb.shape[:2] != src.labels.shape:
            raise ValueError(
                f"{src.name}: the image is {rgb.shape[1]}x{rgb.shape[0]} px but its labels are "
                f"{src.labels.shape[1]}x{src.labels.shape[0]}: the file changed since it was annotated."
            )
        for oid in src.object_ids:
            mask = src.labels == oid
            if mask.any():
                samples.append(SegmentationSample(rgb, mask, f"{src.name}#{oid}"))
    if tiling is not None:
        samples = object_crops(samples, tiling)
    return samples
