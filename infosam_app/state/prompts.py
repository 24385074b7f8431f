"""The prompts of the object being drawn: history (undo), point/box mode, next label, SAM's candidate masks.

:class:`PromptState` is what :class:`infosam_app.prompting.PromptController` keeps between two key presses; the
controller only moves prompts between it and the napari layers, runs the predictor and emits signals.

Candidates. One point alone is ambiguous: SAM's three multimask outputs are computed and the best-scoring
one shown (:data:`BEST_CANDIDATE` until the scores are known); with more prompts, the single-mask output
(``None``) is shown first. :meth:`PromptState.next_candidate` cycles through all of them; the choice is saved
with the object (``ObjectPrompts.candidate``: None = single output, k = multimask k).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from infosam_core.annotation.records import ObjectPrompts

PromptMode = Literal["points", "box"]
OutputKind = Literal["single", "multi"]
PROMPT_MODES: tuple[PromptMode, ...] = ("points", "box")
BEST_CANDIDATE = -1  # "the best-scoring multimask output", resolved once the scores are known
POSITIVE, NEGATIVE = 1, 0  # point labels


def prompts_from_layers(
    points_rc: np.ndarray,
    labels: np.ndarray | None,
    box_rc: np.ndarray | None,
    shape: tuple[int, int] | None,
    candidate: int | None = None,
) -> ObjectPrompts:
    """Prompts in SAM's (x, y) pixel convention from napari's (row, col) layer data.

    ``points_rc`` is (N, >=2) (the last two columns are row, col), ``labels`` one 0/1 label per point (None:
    all positive), ``box_rc`` the vertices of the box shape (None: no box). With the image ``shape`` known,
    points outside it are dropped and the box is clipped to it; a box with no area is dropped.
    """
    points: list[list[float]] = []
    pts = np.asarray(points_rc, dtype=float).reshape(len(points_rc), -1) if len(points_rc) else np.empty((0, 2))
    labs = np.ones(len(pts), int) if labels is None else np.asarray(labels)
    for (r, c), lab in zip(pts[:, -2:], labs):
        if shape is not None and not (0 <= r < shape[0] and 0 <= c < shape[1]):
            continue
        points.append([float(c), float(r), int(lab)])
    box = None
    if box_rc is not None:
        v = np.asarray(box_rc, dtype=float)[:, -2:]
        (r0, c0), (r1, c1) = v.min(axis=0), v.max(axis=0)
        if shape is not None:
            r0, r1 = np.clip([r0, r1], 0, shape[0] - 1)
            c0, c1 = np.clip([c0, c1], 0, shape[1] - 1)
        if r1 > r0 and c1 > c0:
            box = [float(c0), float(r0), float(c1), float(r1)]
    return ObjectPrompts(points=points, box=box, candidate=candidate)


def same_prompts(a: ObjectPrompts, b: ObjectPrompts) -> bool:
    """The same points and box (the candidate choice aside)."""
    return a.points == b.points and a.box == b.box


def default_candidate(prompts: ObjectPrompts) -> int | None:
    """The candidate shown first: the best multimask output for one point alone, else the single output."""
    return BEST_CANDIDATE if (len(prompts.points) == 1 and prompts.box is None) else None


def candidate_order(prompts: ObjectPrompts) -> list[int | None]:
    """The candidates :meth:`PromptState.next_candidate` cycles through (single output first when prompts are
    several)."""
    return [0, 1, 2] if default_candidate(prompts) == BEST_CANDIDATE else [None, 0, 1, 2]


def candidate_text(candidate: int | None) -> str:
    """How the status line names a candidate."""
    return "single output" if candidate is None else str(candidate + 1)


@dataclass(frozen=True)
class PendingAccept:
    """What accepting the preview needs: the mask, its prompts, and the object it replaces (refine) if any."""

    mask: np.ndarray
    prompts: ObjectPrompts
    replace_id: int | None


class PromptState:
    """Prompt history, mode, next label, candidate choice and cached decoder outputs of the shown image."""

    def __init__(self) -> None:
        self.mode: PromptMode = "points"
        self.next_label = POSITIVE
        self.candidate: int | None = None
        self.auto_candidate = True  # False once the user picked a candidate or refines a saved one
        self.refine_id: int | None = None  # the accepted object an accept replaces
        self.mask: np.ndarray | None = None  # the preview shown (bool H x W)
        self.history: list[ObjectPrompts] = []  # prompt states after each change (undo restores the previous)
        self._outputs: dict[OutputKind, tuple[np.ndarray, np.ndarray]] = {}  # kind -> (masks, scores)
        self._outputs_tag: Hashable | None = None  # what the outputs were computed with (model, embedding)

    # ------------------------------------------------------------------------------------------ mode and label
    def set_mode(self, mode: str) -> None:
        if mode not in PROMPT_MODES:
            raise ValueError(mode)
        self.mode = mode  # narrowed to PromptMode by the check above

    def toggle_mode(self) -> PromptMode:
        self.mode = "box" if self.mode == "points" else "points"
        return self.mode

    def toggle_label(self) -> int:
        """Flip the label of the next point; returns it."""
        self.next_label = NEGATIVE if self.next_label else POSITIVE
        return self.next_label

    # ------------------------------------------------------------------------------------------ history
    def prompts_changed(self, prompts: ObjectPrompts, record: bool = True, keep_candidate: bool = False) -> None:
        """The prompts are now ``prompts``: remember them (unless unchanged or ``record`` is False), forget the
        decoder outputs, and show the default candidate -- or ``prompts.candidate`` with ``keep_candidate``
        (saved prompts brought back)."""
        if record and (not self.history or not same_prompts(self.history[-1], prompts)):
            self.history.append(prompts)
        self._outputs.clear()
        self.auto_candidate = not keep_candidate
        self.candidate = prompts.candidate if keep_candidate else default_candidate(prompts)

    def undo(self) -> ObjectPrompts | None:
        """Drop the last prompt change; returns the prompts to show now (None: there was no prompt to undo)."""
        if not self.history:
            return None
        self.history.pop()
        self._outputs.clear()
        self.auto_candidate = True
        return self.history[-1] if self.history else ObjectPrompts()

    def clear(self) -> None:
        """Forget every prompt, the outputs and the candidate; leave refine mode (the preview is the caller's)."""
        self.refine_id = None
        self.history.clear()
        self._outputs.clear()
        self.candidate = None

    def reset_for_image(self) -> None:
        """Another image is shown: as :meth:`clear`, and no preview."""
        self.clear()
        self.mask = None

    # ------------------------------------------------------------------------------------------ candidates
    def next_candidate(self, prompts: ObjectPrompts) -> bool:
        """Choose the next candidate (see :func:`candidate_order`); False when there is no prompt."""
        if prompts.empty:
            return False
        order = candidate_order(prompts)
        current = self.candidate if self.candidate in order else order[0]
        self.candidate = order[(order.index(current) + 1) % len(order)]
        self.auto_candidate = False
        return True

    def output_kind(self, prompts: ObjectPrompts) -> OutputKind:
        """The decoder output the current candidate needs (the default candidate is re-chosen first unless the
        user picked one: it is the best of *this* model's outputs, which matters after a model switch)."""
        if self.auto_candidate:
            self.candidate = default_candidate(prompts)
        return "multi" if self.candidate is not None else "single"

    def cached_output(self, kind: OutputKind, tag: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        """The (masks, scores) decoded for ``kind`` with ``tag`` (model and embedding), if still valid."""
        if tag != self._outputs_tag:  # another model or image since: the cached outputs are stale
            self._outputs.clear()
            self._outputs_tag = tag
        return self._outputs.get(kind)

    def store_output(self, kind: OutputKind, masks: np.ndarray, scores: np.ndarray) -> None:
        self._outputs[kind] = (masks, scores)

    def pick_mask(self, masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The current candidate's mask among the decoder's ``masks`` (the best-scoring one resolved now)."""
        if self.candidate is None:
            return masks[0]
        if self.candidate == BEST_CANDIDATE:
            self.candidate = int(np.argmax(scores))
        return masks[min(self.candidate, len(masks) - 1)]  # HQ-SAM gives one mask, not three

    # ------------------------------------------------------------------------------------------ accept
    def pending_accept(self, prompts: ObjectPrompts) -> PendingAccept | None:
        """What an accept would save now (None: no preview)."""
        if self.mask is None:
            return None
        return PendingAccept(self.mask, prompts, self.refine_id)
