"""What a project remembers of "Adapt to my data": the active adapter, the Adapt settings, the loss curves and
the base-vs-adapted comparison, in ``adapt.json`` beside ``project.json``. Reopening the project brings them
back (:class:`infosam_app.adapt_panel.AdaptPanel`).

``adapt.json`` is UI state: written atomically, and a missing or damaged file only means "nothing
remembered" (never an error). The adapter is named by its path inside the project folder and is loaded, like
any adapter file, by the core's checked loader; a path leading outside the project is ignored.

Base vs adapted. :func:`held_out_split` keeps a fifth of the objects (from 5 objects on) out of training;
:class:`Comparison` holds the mean IoU of the base and of the adapted model on them, same box prompts, and says
in words whether adapting helped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.io.atomic import write_json_atomic
from infosam_core.io.paths import UnsafePathError, resolve_inside

ADAPT_STATE_NAME = "adapt.json"


HELD_OUT_FROM = 5  # from this many objects on, a fifth of them is held out of training to measure on


CLEAR_DIFFERENCE = 0.01  # IoU: a smaller change is "no clear difference"


def held_out_split(n: int, seed: int = 42) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of ``n`` samples: a seeded fifth held out from
    :data:`HELD_OUT_FROM` samples on, none below."""
    if n < HELD_OUT_FROM:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n)
    held = sorted(int(i) for i in order[: n // 5])
    kept = set(held)
    return [i for i in range(n) if i not in kept], held


@dataclass
class Comparison:
    """Mean IoU of the base and of the adapted model on the same objects (box prompts)."""

    base_iou: float
    adapted_iou: float
    n_objects: int
    held_out: bool  # measured on objects held out of training (else on the training objects themselves)

    @property
    def helped(self) -> bool | None:
        """True / False when the difference is clear, None when it is within :data:`CLEAR_DIFFERENCE`."""
        delta = self.adapted_iou - self.base_iou
        if abs(delta) < CLEAR_DIFFERENCE:
            return None
        return delta > 0

    def text(self) -> str:
        where = (
            f"{self.n_objects} held-out object{'s' if self.n_objects != 1 else ''} (not trained on)"
            if self.held_out
            else f"the {self.n_objects} training object{'s' if self.n_objects != 1 else ''} (too few to hold "
            f"some out: from {HELD_OUT_FROM} on, a fifth is held out)"
        )
        figures = f"IoU base {self.base_iou:.3f} → adapted {self.adapted_iou:.3f} on {where}"
        verdict = {
            True: "Adapting helped",
            False: "Adapting did not help (the adapted model is worse here): keep predicting with Base",
            None: "Adapting made no clear difference",
        }[self.helped]
        return f"{verdict}. {figures}."

    @classmethod
    def from_dict(cls, d: Any) -> Comparison | None:
        try:
            values = cls(float(d["base_iou"]), float(d["adapted_iou"]), int(d["n_objects"]), bool(d["held_out"]))
        except (KeyError, TypeError, ValueError):
            return None
        if not (math.isfinite(values.base_iou) and math.isfinite(values.adapted_iou)) or values.n_objects < 1:
            return None
        return values


@dataclass
class AdaptMemory:
    """``adapter``: the active adapter file, relative to the project folder (None: the base model);
    ``settings``: the Adapt panel's values; ``history``: loss series name -> [[step, value], ...]."""

    adapter: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[list[float]]] = field(default_factory=dict)
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = 1
        return d

    def save(self, root: str | Path) -> Path:
        return write_json_atomic(Path(root) / ADAPT_STATE_NAME, self.to_dict())

    def adapter_path(self, root: str | Path) -> Path | None:
        """The adapter file, if it is inside the project folder and exists."""
        if not self.adapter:
            return None
        try:
            path = resolve_inside(root, self.adapter)
        except UnsafePathError:
            return None
        return path if path.is_file() else None

    def set_adapter(self, root: str | Path, path: str | Path | None) -> None:
        """Remember ``path`` (inside the project folder; one outside is stored as None: it may move away)."""
        if path is None:
            self.adapter = None
            return
        try:
            self.adapter = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            self.adapter = None

    @classmethod
    def load(cls, root: str | Path) -> AdaptMemory:
        """The remembered state; empty when there is none or the file is damaged."""
        try:
            d = json.loads((Path(root) / ADAPT_STATE_NAME).read_text("utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(d, dict):
            return cls()
        adapter = d.get("adapter")
        settings = d.get("settings")
        history: dict[str, list[list[float]]] = {}
        raw_history = d.get("history")
        if isinstance(raw_history, dict):
            for name, points in raw_history.items():
                if not isinstance(name, str) or not isinstance(points, list):
                    continue
                good = []
                for p in points[:100_000]:
                    if (
                        isinstance(p, list)
                        and len(p) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
                        and all(math.isfinite(v) for v in p)
                    ):
                        good.append([float(p[0]), float(p[1])])
                history[name] = good
        return cls(
            adapter=adapter if isinstance(adapter, str) and adapter else None,
            settings=dict(settings) if isinstance(settings, dict) else {},
            history=history,
            comparison=Comparison.from_dict(d.get("comparison")) if d.get("comparison") is not None else None,
        )
