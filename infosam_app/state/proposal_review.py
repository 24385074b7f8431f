"""The review of "Segment all" proposals on one image: which are still shown, rejected, taken to refine.

:class:`ProposalReview` holds the proposals of one image (its key) in the order the model gave them;
:class:`infosam_app.proposals.ProposalController` shows them as a labels layer (:meth:`ProposalReview.label_image`)
and accepts them through :class:`infosam_app.objects.ObjectEditor`.
"""

from __future__ import annotations

import numpy as np

from infosam_core.annotation.records import ObjectPrompts
from infosam_core.inference.automatic import Proposal


def proposal_prompts(proposal: Proposal) -> ObjectPrompts:
    """The prompts a proposal came from: its grid point, positive."""
    x, y = proposal.point
    return ObjectPrompts(points=[[float(x), float(y), 1]])


def label_at(labels: np.ndarray, x: float, y: float) -> int | None:
    """The proposal index shown at pixel (x, y) of a :meth:`ProposalReview.label_image` (None: none there)."""
    row, col = int(round(y)), int(round(x))
    if not (0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]):
        return None
    value = int(labels[row, col])
    return value - 1 if value else None


class ProposalReview:
    """The proposals still shown for image ``key`` (None: no proposals computed for the shown image)."""

    def __init__(self) -> None:
        self.proposals: list[Proposal] = []
        self.key: str | None = None
        # each proposal's label value, fixed when it is proposed: rejecting one does not recolour the others
        self.label_values: list[int] = []

    def set(self, proposals: list[Proposal], key: str | None = None) -> None:
        """New proposals (for image ``key`` when given)."""
        if key is not None:
            self.key = key
        self.proposals = list(proposals)
        self.label_values = list(range(1, len(self.proposals) + 1))

    def clear(self) -> None:
        self.proposals = []
        self.label_values = []
        self.key = None

    @property
    def empty(self) -> bool:
        return not self.proposals and self.key is None

    def reject(self, index: int) -> bool:
        """Drop proposal ``index``; False when there is none."""
        if not 0 <= index < len(self.proposals):
            return False
        del self.proposals[index]
        del self.label_values[index]
        return True

    def take(self, index: int) -> Proposal | None:
        """Remove proposal ``index`` and return it (to refine it); None when there is none."""
        if not 0 <= index < len(self.proposals):
            return None
        del self.label_values[index]
        return self.proposals.pop(index)

    def acceptable_for(self, key: str | None) -> bool:
        """Whether there are proposals of image ``key`` to accept."""
        return bool(self.proposals) and key == self.key

    def items(self) -> list[tuple[np.ndarray, ObjectPrompts]]:
        """(mask, prompts) of every proposal shown, in order (what "Accept all" saves)."""
        return [(p.mask, proposal_prompts(p)) for p in self.proposals]

    def label_image(self, shape: tuple[int, int]) -> np.ndarray:
        """One label per proposal (its :attr:`label_values` entry, so its colour stays when others are rejected;
        0: none), the better-scored proposal on top where two overlap."""
        labels = np.zeros(shape, np.uint16)
        order = sorted(range(len(self.proposals)), key=lambda i: self.proposals[i].predicted_iou)
        for i in order:
            labels[self.proposals[i].mask] = self.label_values[i]
        return labels

    def index_at(self, labels: np.ndarray, x: float, y: float) -> int | None:
        """The index (in :attr:`proposals`) of the proposal shown at pixel (x, y) of :meth:`label_image`."""
        shown = label_at(labels, x, y)
        if shown is None or shown + 1 not in self.label_values:
            return None
        return self.label_values.index(shown + 1)
