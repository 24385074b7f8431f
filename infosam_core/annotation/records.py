"""What is recorded per annotated object and image: the prompts a user gave, the object, the image entry."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ProjectError(ValueError):
    """A project folder that cannot be opened or changed; the message says why and what to do."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------- records
@dataclass
class ObjectPrompts:
    """The prompts that produced one object. ``points``: ``[[x, y, label], ...]``, label 1 = positive,
    0 = negative; ``box``: ``[x0, y0, x1, y1]`` or None; ``candidate``: which multimask output was chosen
    (None = single-mask output)."""

    points: list[list[float]] = field(default_factory=list)
    box: list[float] | None = None
    candidate: int | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    def point_coords(self) -> np.ndarray | None:
        """(N, 2) float array of x, y (SAM's ``point_coords``) or None."""
        return np.asarray([p[:2] for p in self.points], dtype=np.float32) if self.points else None

    def point_labels(self) -> np.ndarray | None:
        return np.asarray([int(p[2]) for p in self.points], dtype=np.int64) if self.points else None

    def box_array(self) -> np.ndarray | None:
        return np.asarray(self.box, dtype=np.float32) if self.box is not None else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectPrompts:
        return cls(
            points=[[float(p[0]), float(p[1]), int(p[2])] for p in d.get("points", [])],
            box=[float(v) for v in d["box"]] if d.get("box") is not None else None,
            candidate=d.get("candidate"),
        )


@dataclass
class AnnotatedObject:
    """One accepted object: its id in the label image, the prompts that made it, and facts about it."""

    id: int
    prompts: ObjectPrompts
    area: int
    bbox: list[int]  # [x0, y0, x1, y1], inclusive-exclusive, in pixels
    model: str = ""
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"] = asdict(self.prompts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnotatedObject:
        return cls(
            id=int(d["id"]),
            prompts=ObjectPrompts.from_dict(d.get("prompts", {})),
            area=int(d.get("area", 0)),
            bbox=[int(v) for v in d.get("bbox", [0, 0, 0, 0])],
            model=str(d.get("model", "")),
            created=str(d.get("created", "")),
        )


@dataclass
class ImageEntry:
    """One image of the project. ``key`` names its annotation folder and is stable across sessions."""

    key: str
    path: str  # absolute path when added
    relpath: str | None  # relative to the project root (lets a project and its images move together)
    sha256: str
    name: str
    shape: list[int] | None = None  # (H, W) once known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageEntry:
        return cls(
            key=str(d["key"]),
            path=str(d["path"]),
            relpath=d.get("relpath"),
            sha256=str(d["sha256"]),
            name=str(d.get("name") or Path(d["path"]).name),
            shape=[int(v) for v in d["shape"]] if d.get("shape") else None,
        )


@dataclass
class ImageAnnotations:
    """The accepted objects of one image: the label image and each object's record, kept in step."""

    entry: ImageEntry
    labels: np.ndarray | None  # (H, W) uint16/uint32; None until the image's shape is known
    objects: dict[int, AnnotatedObject] = field(default_factory=dict)
    revision: int = 0

    def next_id(self) -> int:
        return max(self.objects, default=0) + 1

    def ensure_labels(self, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(v) for v in shape[:2])
        if self.labels is None:
            self.labels = np.zeros(shape, dtype=np.uint16)
        elif self.labels.shape != shape:
            raise ProjectError(
                f"{self.entry.name}: the saved label image is {self.labels.shape[1]}x{self.labels.shape[0]} px "
                f"but the image is {shape[1]}x{shape[0]} px: the image file changed since it was annotated."
            )
        return self.labels
