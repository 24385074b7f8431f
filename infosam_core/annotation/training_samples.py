"""A project's accepted objects as training samples: one :class:`SegmentationSample` per object (its image,
the binary mask of that object); a 3D object of a stack gives one sample per slice it spans (the slice's plane,
the object's mask there).

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
from infosam_core.io.images import load_rgb
from infosam_core.io.stacks import Stack, read_stack


@dataclass
class ObjectSource:
    """One annotated image's objects, copied out of the project: the image file, a copy of its label image and
    the ids of its objects."""

    path: Path
    name: str
    labels: np.ndarray
    object_ids: list[int]
    plane: int | None = None  # a stack's slice (None: a 2-D image)
    axes: str | None = None  # the stack's axes where its file does not name them


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
    return sources + _stack_slice_sources(project, on_missing)


def _stack_slice_sources(project: Project, on_missing: Callable[[str], None] | None) -> list[ObjectSource]:
    """The slices of the project's 3D objects, one source per slice that holds any."""
    from infosam_core.annotation.stack_objects import stack_training_sources

    try:
        stacks = stack_training_sources(project)
    except ProjectError as exc:
        if on_missing is not None:
            on_missing(f"{exc}: its objects are not used")
        return []
    out = []
    for src in stacks:
        for plane, labels in src.planes.items():
            ids = [int(i) for i in np.unique(labels[labels > 0])]
            out.append(ObjectSource(src.path, f"{src.name}[{plane}]", labels, ids, plane, src.axes))
    return out


def build_samples(
    sources: list[ObjectSource], on_skip: Callable[[str], None] | None = None
) -> list[SegmentationSample]:
    """One sample per object (samples of one image share its RGB array, hence the training caches' entries).

    An image that cannot be read, or that no longer matches its labels, raises ValueError (ImageError is one);
    with ``on_skip`` it is skipped instead and reported through ``on_skip(message)``."""
    samples = []
    stacks: dict[tuple[Path, str | None], Stack] = {}
    for src in sources:
        try:
            if src.plane is None:
                rgb = load_rgb(src.path)
            else:
                if (src.path, src.axes) not in stacks:
                    stacks[(src.path, src.axes)] = read_stack(src.path, src.axes)
                rgb = stacks[(src.path, src.axes)].rgb(src.plane)
            if rgb.shape[:2] != src.labels.shape:
                raise ValueError(
                    f"{src.name}: the image is {rgb.shape[1]}x{rgb.shape[0]} px but its labels are "
                    f"{src.labels.shape[1]}x{src.labels.shape[0]}: the file changed since it was annotated."
                )
        except (ValueError, OSError) as exc:
            if on_skip is None:
                raise
            on_skip(f"{src.name}: skipped, its objects are not used ({exc})")
            continue
        for oid in src.object_ids:
            mask = src.labels == oid
            if mask.any():
                samples.append(SegmentationSample(rgb, mask, f"{src.name}#{oid}"))
    return samples
