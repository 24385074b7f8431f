"""The stack view's state (no Qt): the stack shown, the object being propagated, and the edits of its 3D objects.

:class:`StackSession` holds one opened stack of the project (``infosam_core.annotation.stack_objects``), the
prompts of the slice the user works on, the last propagation (a preview, not yet saved), and the
:class:`~infosam_core.annotation.stack_objects.StackEdits` (accept, correct from a slice, delete, undo). Every
computation is a call into the core: :func:`infosam_core.inference.propagation.propagate` with the predictor
the caller gives (base or adapted model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infosam_core.annotation.project import Project
from infosam_core.annotation.stack_objects import BOTH, StackEdits, StackEntry, StackObject, StackObjects
from infosam_core.inference.propagation import (
    BACKWARD,
    FORWARD,
    PropagationConfig,
    PropagationResult,
    SlicePrompt,
    propagate,
)
from infosam_core.io.stacks import Stack


@dataclass
class PendingPropagation:
    """A propagation shown as a preview: where it started, its prompt, its result, and the object it corrects
    (None: a new object)."""

    start: int
    prompt: SlicePrompt
    result: PropagationResult
    direction: str = BOTH
    corrects: int | None = None


class StackSession:
    """One stack of a project being annotated in 3D (see the module docstring)."""

    def __init__(self, project: Project) -> None:
        self.objects = StackObjects(project)
        self.entry: StackEntry | None = None
        self.stack: Stack | None = None
        self.edits: StackEdits | None = None
        self.pending: PendingPropagation | None = None

    def open(self, path: str | Path, axes: str | None = None) -> Stack:
        """Add the stack to the project (once) and make it the one shown."""
        self.entry = self.objects.add_stack(path, axes)
        self.stack = self.objects.open_stack(self.entry.key)
        self.edits = StackEdits(self.objects, self.entry.key)
        self.pending = None
        return self.stack

    def _require(self) -> tuple[StackEntry, Stack, StackEdits]:
        if self.entry is None or self.stack is None or self.edits is None:
            raise RuntimeError("open a stack first")
        return self.entry, self.stack, self.edits

    def labels(self) -> np.ndarray:
        """The accepted objects' label volume (N, Y, X)."""
        entry, _, _ = self._require()
        return self.objects.annotations(entry.key).labels

    def propagate(
        self,
        predictor: object,
        start: int,
        prompt: SlicePrompt,
        direction: str = BOTH,
        corrects: int | None = None,
        config: PropagationConfig | None = None,
        should_stop=None,
    ) -> PendingPropagation:
        """Propagate ``prompt`` on slice ``start`` (the preview; nothing is saved). Safe to run in a worker thread
        with a forked predictor."""
        _, stack, _ = self._require()
        directions = (FORWARD, BACKWARD) if direction == BOTH else (direction,)
        config = config or PropagationConfig(directions=directions)
        result = propagate(predictor, stack, start, prompt, config, should_stop=should_stop)
        return PendingPropagation(start, prompt, result, direction, corrects)

    def show_pending(self, pending: PendingPropagation) -> None:
        self.pending = pending

    def accept(self, model: str = "", category: int = 1) -> StackObject:
        """Save the preview: a new 3D object, or the correction of the object it was made for."""
        _, _, edits = self._require()
        if self.pending is None:
            raise RuntimeError("nothing to accept: propagate first")
        pending, self.pending = self.pending, None
        prompt = pending.prompt.to_json()
        if pending.corrects is None:
            return edits.accept(pending.result.masks, {pending.start: prompt}, model, category)
        return edits.correct(pending.corrects, pending.start, pending.result.masks, prompt, pending.direction)

    def object_at(self, index: int, row: int, col: int) -> int | None:
        """The accepted object under a voxel (None for background)."""
        value = int(self.labels()[index, row, col])
        return value or None

    def undo(self) -> str | None:
        """Drop the preview if there is one, else undo the last saved change."""
        if self.pending is not None:
            self.pending = None
            return "preview"
        _, _, edits = self._require()
        return edits.undo()

    def export(self, path: str | Path) -> Path:
        entry, _, _ = self._require()
        return self.objects.export_labels(entry.key, path)
