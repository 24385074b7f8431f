"""Suggest next: the images without objects ranked by the model's uncertainty on them (most uncertain first).

:class:`UncertaintyRanking` keeps one uncertainty per image key (from "Segment all" or from
:func:`rank_images`, :attr:`~infosam_core.inference.automatic.AutomaticResult.uncertainty`) and answers which
image to annotate next and each image's ★ rank. Images with objects are never ranked.
:class:`infosam_app.proposals.ProposalController` runs :func:`rank_images` in a background task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infosam_app.state.images import read_image_pair
from infosam_core.annotation.project import Project
from infosam_core.inference.automatic import AutomaticConfig, segment_all
from infosam_core.inference.predictor import Predictor

SUGGEST_POINTS_PER_SIDE = 8  # ranking images needs the uncertainty only: a coarse grid is enough


def images_to_rank(project: Project, counts: dict[str, int]) -> list[tuple[str, Path]]:
    """(key, file) of the images without objects (``counts``: key -> object count); an image whose file is
    missing is simply not ranked."""
    todo = []
    for entry in project.images:
        if counts.get(entry.key, 0):
            continue
        try:
            todo.append((entry.key, project.image_path(entry)))
        except Exception:  # noqa: BLE001 - a missing file is simply not ranked
            continue
    return todo


def rank_images(
    predictor: Predictor,
    todo: list[tuple[str, Path]],
    config: AutomaticConfig,
    should_stop: Callable[[], bool] = lambda: False,
    report: Callable[[tuple[int, int]], object] = lambda _done_total: None,
    skipped: list[str] | None = None,
) -> dict[str, float]:
    """key -> the model's uncertainty on each image of ``todo`` (read and segmented in turn; ``report`` gets
    (done, total)). Stops early, with the scores so far, when ``should_stop()``. An image that cannot be read
    is not ranked; its name and the reason go to ``skipped``."""
    scores: dict[str, float] = {}
    for done, (key, path) in enumerate(todo, start=1):
        if should_stop():
            break
        try:
            rgb = read_image_pair(path)[1]
        except (ValueError, OSError) as exc:  # ImageError is a ValueError
            if skipped is not None:
                skipped.append(f"{path.name}: {str(exc).removeprefix(f'{path}: ')}")
            report((done, len(todo)))
            continue
        scores[key] = segment_all(predictor, rgb, config).uncertainty
        report((done, len(todo)))
    return scores


class UncertaintyRanking:
    """Image key -> the model's uncertainty there (higher: annotate first)."""

    def __init__(self) -> None:
        self.uncertainty: dict[str, float] = {}

    def record(self, key: str, uncertainty: float) -> None:
        """One image's uncertainty (e.g. from "Segment all" on it)."""
        self.uncertainty[key] = uncertainty

    def update(self, scores: dict[str, float], counts: dict[str, int]) -> None:
        """A ranking pass's ``scores``; images that have objects now (``counts``) are dropped."""
        self.uncertainty = {k: v for k, v in self.uncertainty.items() if not counts.get(k, 0)}
        self.uncertainty.update(scores)

    def suggested(self, project: Project | None) -> list[tuple[str, float]]:
        """(image name, uncertainty) of the images without objects, most uncertain first (ties: project order)."""
        if project is None:
            return []
        counts = project.object_counts()
        ranked = [(e, self.uncertainty[e.key]) for e in project.images if e.key in self.uncertainty]
        ranked_names = [(e.name, u) for e, u in ranked if not counts.get(e.key, 0)]
        return sorted(ranked_names, key=lambda item: -item[1])

    def rank_of(self, project: Project | None, key: str) -> int | None:
        """1 for the most uncertain image without objects (None: not ranked or annotated)."""
        names = [name for name, _ in self.suggested(project)]
        entry = next((e for e in project.images if e.key == key), None) if project else None
        return names.index(entry.name) + 1 if entry is not None and entry.name in names else None

    def best_index(self, project: Project | None) -> int | None:
        """The project index of the image to annotate next (None: nothing ranked)."""
        best = self.suggested(project)
        if not best or project is None:
            return None
        return next(i for i, e in enumerate(project.images) if e.name == best[0][0])
