"""What propagation through a stack takes and gives, shared by its two engines (projection in
:mod:`infosam_core.inference.propagation`, SAM2's memory in :mod:`infosam_core.inference.propagation_sam2`):
the prompt on one slice, the options, the result, and the plane source it reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from infosam_core.options import OptionError

FORWARD, BACKWARD = "forward", "backward"
DIRECTIONS = (FORWARD, BACKWARD)


class PlaneSource(Protocol):
    """What propagation reads: a :class:`infosam_core.io.stacks.Stack` or anything with these members."""

    @property
    def n_planes(self) -> int: ...

    @property
    def plane_shape(self) -> tuple[int, int]: ...

    def rgb(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class SlicePrompt:
    """Prompts on one slice, in pixels: points (N, 2) as (x, y) with labels (N,) (1 object, 0 background) and /
    or a box (x0, y0, x1, y1)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.points is None and self.box is None:
            raise ValueError("a slice prompt needs points and / or a box")
        if self.points is not None:
            points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
            labels = np.ones(len(points), np.int64) if self.labels is None else np.asarray(self.labels, np.int64)
            if labels.shape != (len(points),):
                raise ValueError(f"{len(points)} points need {len(points)} labels, got shape {labels.shape}")
            object.__setattr__(self, "points", points)
            object.__setattr__(self, "labels", labels)
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"a box is (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0, got {self.box}")
            object.__setattr__(self, "box", box)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.points is not None and self.labels is not None:
            out["points"] = [[float(x), float(y)] for x, y in self.points]
            out["labels"] = [int(v) for v in self.labels]
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> SlicePrompt:
        points = data.get("points")
        box = data.get("box")
        return cls(
            np.asarray(points, np.float64) if points else None,
            np.asarray(data.get("labels"), np.int64) if points else None,
            np.asarray(box, np.float64) if box is not None else None,
        )


@dataclass(frozen=True)
class PropagationConfig:
    """How projection propagates (SAM2 uses its own memory and ignores all but ``directions``/``max_planes``).

    ``iou_threshold``: stop when the model's predicted IoU of a slice's mask falls below it.
    ``overlap_threshold``: stop when a slice's mask overlaps the previous one by less (IoU).
    ``box_extension``: the previous mask's box grown by this fraction of its size on each side.
    ``use_box`` / ``use_points`` / ``use_mask``: which prompts the previous slice gives the next.
    ``max_planes``: at most this many slices in each direction (None: to the stack's end).
    """

    iou_threshold: float = 0.7
    overlap_threshold: float = 0.3
    box_extension: float = 0.1
    use_box: bool = True
    use_points: bool = True
    use_mask: bool = False
    min_area: int = 4
    directions: tuple[str, ...] = DIRECTIONS
    max_planes: int | None = None

    def __post_init__(self) -> None:
        for name in ("iou_threshold", "overlap_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OptionError(name, f"must be within [0, 1], got {value}")
        if not 0.0 <= self.box_extension <= 1.0:
            raise OptionError("box_extension", f"must be within [0, 1], got {self.box_extension}")
        if not (self.use_box or self.use_points or self.use_mask):
            raise OptionError(None, "propagation needs at least one of use_box, use_points, use_mask")
        if self.min_area < 1:
            raise OptionError("min_area", f"must be >= 1, got {self.min_area}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise OptionError("directions", f"{self.directions}: choose from {DIRECTIONS}")
        if self.max_planes is not None and self.max_planes < 0:
            raise OptionError("max_planes", f"must be >= 0, got {self.max_planes}")


@dataclass
class PropagationResult:
    """``masks`` (N, Y, X) bool; ``scores`` per segmented slice (predicted IoU, or SAM2's object score as a
    probability); ``stopped``: direction -> why it ended; ``seconds``: wall time of the whole propagation."""

    masks: np.ndarray
    start: int
    scores: dict[int, float] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "projection"

    @property
    def slices(self) -> list[int]:
        """The slices where the object has pixels, in order."""
        return [int(i) for i in np.flatnonzero(self.masks.reshape(len(self.masks), -1).any(axis=1))]

    @property
    def seconds_per_slice(self) -> float:
        return self.seconds / max(1, len(self.scores))


ProgressFn = Callable[[int, int], None]  # (slices done, slices at most)
StopFn = Callable[[], bool]
