"""Which project is open and which of its images is shown."""

from __future__ import annotations

import numpy as np

from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ImageEntry


class Navigation:
    """The open project, the index of the image shown and its pixels.

    Reading an image takes time; the user may move on meanwhile. :meth:`go_to` returns a generation number
    that :meth:`is_current` checks when the read finishes, so a late result for an image the user has left is
    dropped instead of shown.
    """

    def __init__(self) -> None:
        self.project: Project | None = None
        self.index = -1
        self.raw: np.ndarray | None = None
        self.rgb: np.ndarray | None = None
        self._generation = 0

    def open(self, project: Project) -> None:
        self.project = project
        self.index = -1

    def clear_image(self) -> None:
        self.raw = self.rgb = None

    @property
    def count(self) -> int:
        return len(self.project.images) if self.project is not None else 0

    @property
    def entry(self) -> ImageEntry | None:
        if self.project is None or not (0 <= self.index < len(self.project.images)):
            return None
        return self.project.images[self.index]

    @property
    def key(self) -> str | None:
        entry = self.entry
        return entry.key if entry is not None else None

    def go_to(self, index: int) -> int:
        """Make ``index`` (clamped to the images) the shown one; returns the new generation number."""
        if self.count == 0:
            raise IndexError("the project has no images")
        self.index = max(0, min(index, self.count - 1))
        self._generation += 1
        return self._generation

    def is_current(self, generation: int) -> bool:
        return generation == self._generation

    def step(self, step: int = 1) -> int | None:
        """The index ``step`` images away from the shown one (wrapping around), or None without images."""
        if self.count == 0:
            return None
        return (self.index + step) % self.count

    def restore_index(self) -> int:
        """The index to show on opening the project: the image shown last time (saved UI state), else 0."""
        if self.project is None or not self.project.images:
            return -1
        current = self.project.ui_state().get("current")
        keys = [e.key for e in self.project.images]
        return keys.index(current) if current in keys else 0
