"""Segment all: proposals from the model in use, reviewed in their own layer, accepted as objects.

* :meth:`ProposalController.segment_all` runs :func:`infosam_core.inference.automatic.segment_all` on the
  shown image in the background (on a fork of the active predictor, from its embedding cache) and shows
  the proposals in the "proposals" layer (one label per proposal).
* :meth:`accept_all` saves every proposal still shown as an object (through :class:`ObjectEditor`:
  autosaved, one undo step, proposals overlapping accepted objects are clipped or skipped by the
  editor's rules); :meth:`reject` / a click on the proposals layer drops one; :meth:`refine` turns one
  into prompts (its grid point) for the prompt controller, so more clicks and Enter make it an object.
* "Propose on open": when the shown image has no objects and its embedding is ready, propose at once.
* :meth:`suggest_next` ranks the images without objects by the model's uncertainty on them
  (:attr:`AutomaticResult.uncertainty`, from a coarser grid) so the user annotates where it is weakest.

Accepted proposals are objects like any other, so "Adapt" learns from them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from qtpy.QtCore import QObject, Signal

from infosam_app.prompting import PromptController
from infosam_app.session import Session
from infosam_app.state.images import read_image_pair
from infosam_core.annotation.records import ObjectPrompts
from infosam_core.inference.automatic import AutomaticConfig, Proposal, segment_all

SUGGEST_POINTS_PER_SIDE = 8  # ranking images needs the uncertainty only: a coarse grid is enough


class ProposalController(QObject):
    """Proposals of the shown image and the image ranking; signals are emitted on the GUI thread."""

    proposals_changed = Signal()  # computed, accepted, rejected or cleared
    running_changed = Signal(bool)
    suggestions_changed = Signal()

    def __init__(self, session: Session, prompts: PromptController, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.prompts = prompts
        self.objects = prompts.objects
        self.proposals: list[Proposal] = []
        self.key: str | None = None  # the image the proposals belong to
        self.uncertainty: dict[str, float] = {}  # image key -> uncertainty (higher: annotate first)
        self.propose_on_open = False
        self.task = None
        self.suggest_task = None
        self.layer = None
        session.image_changed.connect(self._on_image_changed)
        session.embedding_changed.connect(self._on_embedding_changed)

    # ------------------------------------------------------------------------------------------ config
    def config(self) -> AutomaticConfig:
        sam = self.session.sams.get(self.session.active)
        return AutomaticConfig.for_model(getattr(sam, "model_type", "tiny"))

    @property
    def running(self) -> bool:
        return self.task is not None

    # ------------------------------------------------------------------------------------------ segment all
    def segment_all(self) -> bool:
        """Propose every object of the shown image (background task); False when it cannot start."""
        s = self.session
        predictor, key, rgb = s.predictor, s.key, s.rgb
        if predictor is None or key is None or rgb is None:
            s.tell("Segment all: open an image and load a model first.")
            return False
        if self.task is not None:
            return False
        config = self.config()
        fork = predictor.fork()

        def work(should_stop, report):
            return segment_all(fork, rgb, config, progress=lambda d, t: report((d, t)), should_stop=should_stop)

        def done(result):
            self._finish()
            if s.key != key:
                return
            self.key = key
            self.uncertainty[key] = result.uncertainty
            self.set_proposals(result.proposals)
            s.tell(
                f"{len(result.proposals)} proposals (uncertainty {result.uncertainty:.2f}): Accept all, click one "
                "on the 'proposals' layer to reject it, or Refine it."
            )
            self.suggestions_changed.emit()

        def failed(exc):
            self._finish()
            s.fail(f"Segment all failed: {exc}")

        def progress(value):
            s.tell(f"Segment all: {value[0]} / {value[1]} prompts ...")

        self.running_changed.emit(True)
        s.tell("Segment all: proposing objects ...")
        self.task = s.tasks.run(work, name="segment all", on_result=done, on_error=failed, on_progress=progress)
        return True

    def _finish(self) -> None:
        self.task = None
        self.running_changed.emit(False)

    # ------------------------------------------------------------------------------------------ the layer
    def set_proposals(self, proposals: list[Proposal]) -> None:
        self.proposals = list(proposals)
        self._show()
        self.proposals_changed.emit()

    def _show(self) -> None:
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else None
        if shape is None:
            return
        labels = np.zeros(shape, np.uint16)
        order = sorted(range(len(self.proposals)), key=lambda i: self.proposals[i].predicted_iou)
        for i in order:  # the better-scored proposal on top where two overlap
            labels[self.proposals[i].mask] = i + 1
        self.layer = self.session.layers.set_proposals(labels)
        if self.layer is not None and self._on_click not in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.append(self._on_click)

    def clear(self) -> None:
        self.proposals = []
        self.key = None
        self._show()
        self.proposals_changed.emit()

    def index_at(self, x: float, y: float) -> int | None:
        """The proposal shown at pixel (x, y), if any."""
        if self.layer is None:
            return None
        row, col = int(round(y)), int(round(x))
        data = self.layer.data
        if not (0 <= row < data.shape[0] and 0 <= col < data.shape[1]):
            return None
        value = int(data[row, col])
        return value - 1 if value else None

    def _on_click(self, layer, event) -> None:
        row, col = layer.world_to_data(event.position)[-2:]
        index = self.index_at(col, row)
        if index is not None:
            self.reject(index)

    # ------------------------------------------------------------------------------------------ review
    def reject(self, index: int) -> bool:
        if not 0 <= index < len(self.proposals):
            return False
        del self.proposals[index]
        self._show()
        self.proposals_changed.emit()
        self.session.tell(f"Proposal rejected; {len(self.proposals)} left.")
        return True

    def accept_all(self) -> list:
        """Save every proposal shown as an object (best-scored first; one undo step); returns the objects."""
        if not self.proposals or self.session.key != self.key:
            self.session.tell("No proposals to accept: use Segment all first.")
            return []
        items = [(p.mask, _prompts(p)) for p in self.proposals]
        objects = self.objects.accept_many(items)
        skipped = len(items) - len(objects)
        self.clear()
        self.session.tell(
            f"Accepted {len(objects)} proposals as objects; saved"
            + (f" ({skipped} overlapping accepted objects skipped)" if skipped else "")
            + ". U undoes them all."
        )
        return objects

    def refine(self, index: int) -> bool:
        """Take proposal ``index`` off the layer and into the prompt controller (its grid point as the
        prompt): add points, then Enter accepts it as an object."""
        if not 0 <= index < len(self.proposals):
            return False
        proposal = self.proposals.pop(index)
        self._show()
        self.proposals_changed.emit()
        self.prompts.clear()
        self.prompts.set_prompts(_prompts(proposal))
        self.session.tell("Refining a proposal: add points (right-click: background), Enter accepts it.")
        return True

    # ------------------------------------------------------------------------------------------ suggest next
    def suggest_next(self) -> bool:
        """Rank the images without objects by uncertainty (background task; the image list shows it)."""
        s = self.session
        predictor, project = s.predictor, s.project
        if predictor is None or project is None:
            s.tell("Suggest next: open images and load a model first.")
            return False
        if self.suggest_task is not None:
            return False
        counts = project.object_counts()
        todo = []
        for entry in project.images:
            if counts.get(entry.key, 0):
                continue
            try:
                todo.append((entry.key, project.image_path(entry)))
            except Exception:  # noqa: BLE001 - a missing file is simply not ranked
                continue
        config = replace(self.config(), points_per_side=SUGGEST_POINTS_PER_SIDE)
        fork = predictor.fork()

        def work(should_stop, report):
            scores = {}
            for done, (key, path) in enumerate(todo, start=1):
                if should_stop():
                    break
                rgb = read_image_pair(path)[1]
                scores[key] = segment_all(fork, rgb, config).uncertainty
                report((done, len(todo)))
            return scores

        def finished(scores):
            self.suggest_task = None
            self.uncertainty = {k: v for k, v in self.uncertainty.items() if not counts.get(k, 0)}
            self.uncertainty.update(scores)
            self.suggestions_changed.emit()
            best = self.suggested()
            s.tell(f"Suggested next: {best[0][0] if best else 'none'} (the model is least sure there).")

        def failed(exc):
            self.suggest_task = None
            s.fail(f"Suggest next failed: {exc}")

        s.tell(f"Ranking {len(todo)} images without objects ...")
        self.suggest_task = s.tasks.run(
            work,
            name="suggest next",
            on_result=finished,
            on_error=failed,
            on_progress=lambda v: s.tell(f"Ranking images: {v[0]} / {v[1]} ..."),
        )
        return True

    def suggested(self) -> list[tuple[str, float]]:
        """(image name, uncertainty) of the images without objects, most uncertain first."""
        project = self.session.project
        if project is None:
            return []
        counts = project.object_counts()
        ranked = [(e, self.uncertainty[e.key]) for e in project.images if e.key in self.uncertainty]
        ranked = [(e.name, u) for e, u in ranked if not counts.get(e.key, 0)]
        return sorted(ranked, key=lambda item: -item[1])

    def rank_of(self, key: str) -> int | None:
        """1 for the most uncertain image without objects (None: not ranked or annotated)."""
        project = self.session.project
        names = [name for name, _ in self.suggested()]
        entry = next((e for e in project.images if e.key == key), None) if project else None
        return names.index(entry.name) + 1 if entry is not None and entry.name in names else None

    def show_suggested(self) -> bool:
        project, best = self.session.project, self.suggested()
        if not best:
            self.session.tell("No suggestion yet: use Suggest next.")
            return False
        index = next(i for i, e in enumerate(project.images) if e.name == best[0][0])
        self.session.show_image(index)
        return True

    # ------------------------------------------------------------------------------------------ events
    def _on_image_changed(self, _index: int) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.proposals or self.key is not None:
            self.proposals, self.key = [], None
            self._show()
            self.proposals_changed.emit()

    def _on_embedding_changed(self, state: str) -> None:
        s = self.session
        if (
            state == "ready"
            and self.propose_on_open
            and self.task is None
            and s.key is not None
            and self.key != s.key
            and s.project is not None
            and not s.project.object_count(s.key)
        ):
            self.segment_all()


def _prompts(proposal: Proposal) -> ObjectPrompts:
    x, y = proposal.point
    return ObjectPrompts(points=[[float(x), float(y), 1]])
