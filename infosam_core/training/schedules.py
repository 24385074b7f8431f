"""Learning-rate schedules."""

from __future__ import annotations

import math


def cosine_anneal(progress: float, lr: float, min_lr: float) -> float:
    """The rate at ``progress`` (a fraction of the run, clamped to [0, 1]) of a cosine from ``lr`` to ``min_lr``."""
    t = min(max(progress, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def cosine_lr(step: int, total: int, lr: float, min_lr: float) -> float:
    """CosineAnnealingLR(T_max=total, eta_min=min_lr) at 0-based ``step`` (0 <= step <= total)."""
    return cosine_anneal(step / max(total, 1), lr, min_lr)
