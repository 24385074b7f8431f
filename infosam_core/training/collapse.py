"""Detecting, while training, that a relation distiller's term has stopped carrying information.

On the tiny model the student's mask token drifts in a few steps, its InfoSAM relation vectors become one
constant vector (mean cosine between the samples of a batch about 0.996, the teacher's about 0.38) and
L_d = -I(R^T; R^S) stays near 0 (docs/results/README.md): the distillation term is then noise. A step counts
as *collapsed* when the distiller reports

* ``rel_cos_s`` (the student's relation vectors' mean cosine across the batch) >= ``cos_threshold``, or
* ``l_d`` with ``|l_d| <= ld_threshold``;

the run is flagged (``distill_collapsed``) once ``patience`` steps in a row were collapsed, and stays flagged
until a step is not. :class:`CollapseMonitor` keeps that state; the trainer records, per epoch, the number
of collapsed steps (``collapsed_steps``) and whether the flag was raised in the epoch (``distill_collapsed``)
in the history, and the current flag in every :class:`~infosam_core.training.results.TrainProgress`.
A distiller that reports neither value is never flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Measured per step on the tiny model, nuclei, seed 1, 32 steps (docs/results/README.md): the paper's formula
# starts at cosine 0.40 (the student is the teacher) and has 0.88-0.99 from step 2 to 23 with |L_d| 0.003-0.3;
# centred relation vectors stay at cosine -0.05..0.09 with |L_d| 1.6-2.0 (at most log2(batch) = 2 at batch 4).
COS_THRESHOLD = 0.9
LD_THRESHOLD = 0.1
PATIENCE = 8  # steps in a row (the nuclei runs: 8 steps per epoch); that run was flagged from step 18 to 23


@dataclass
class CollapseMonitor:
    """Counts collapsed steps (see the module docstring). :meth:`update` per step; :meth:`end_epoch` per epoch."""

    cos_threshold: float = COS_THRESHOLD
    ld_threshold: float = LD_THRESHOLD
    patience: int = PATIENCE
    streak: int = 0  # collapsed steps in a row, up to now
    epoch_steps: int = 0  # collapsed steps in the current epoch
    epoch_flagged: bool = False  # the flag was raised during the current epoch
    first_step: int | None = None  # the step (1-based) at which the flag was first raised in the run
    _seen: bool = field(default=False, repr=False)

    @staticmethod
    def step_collapsed(values: dict[str, float], cos_threshold: float, ld_threshold: float) -> bool | None:
        """Whether one step's reported values show a collapse; None when they hold no indicator."""
        cos, l_d = values.get("rel_cos_s"), values.get("l_d")
        if cos is None and l_d is None:
            return None
        return bool(
            (cos is not None and math.isfinite(cos) and cos >= cos_threshold)
            or (l_d is not None and math.isfinite(l_d) and abs(l_d) <= ld_threshold)
        )

    @property
    def collapsed(self) -> bool:
        """The flag now: at least ``patience`` collapsed steps in a row, up to the last one."""
        return self.streak >= self.patience

    def update(self, values: dict[str, float], step: int) -> bool:
        """Take one step's terms and diagnostics (by name); returns the flag after it."""
        hit = self.step_collapsed(values, self.cos_threshold, self.ld_threshold)
        if hit is None:
            return False
        self._seen = True
        self.streak = self.streak + 1 if hit else 0
        self.epoch_steps += int(hit)
        if self.collapsed:
            self.epoch_flagged = True
            if self.first_step is None:
                self.first_step = step
        return self.collapsed

    def end_epoch(self) -> dict[str, int | bool]:
        """The epoch's history fields (empty when the distiller reports no indicator); resets the epoch counts."""
        record: dict[str, int | bool] = {}
        if self._seen:
            record = {"collapsed_steps": self.epoch_steps, "distill_collapsed": self.epoch_flagged}
        self.epoch_steps, self.epoch_flagged = 0, self.collapsed
        return record
