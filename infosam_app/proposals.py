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

Accepted proposals are objects like any other, so "Adapt" learns from them. The bookkeeping is Qt-free:
:class:`~infosam_app.state.proposal_review.ProposalReview` (the proposals still shown) and
:class:`~infosam_app.state.ranking.UncertaintyRanking` (the ranking and its ★ ranks); this controller runs the
background tasks, draws the layer and tells the user.
"""

from __future__ import annotations

from dataclasses import replace

from qtpy.QtCore import QObject, Signal

from infosam_app.prompting import PromptController
from infosam_app.session import Session
from infosam_app.state.large_images import needs_tiling
from infosam_app.state.proposal_review import ProposalReview, proposal_prompts
from infosam_app.state.ranking import SUGGEST_POINTS_PER_SIDE, UncertaintyRanking, images_to_rank, rank_images
from infosam_app.state.wording import plural
from infosam_core.inference.automatic import AutomaticConfig, Proposal, segment_all
from infosam_core.inference.tiling_segment import segment_all_tiled


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
        self.review = ProposalReview()
        self.ranking = UncertaintyRanking()
        self.propose_on_open = False
        self.task = None
        self.suggest_task = None
        self.layer = None
        session.image_changed.connect(self._on_image_changed)
        session.embedding_changed.connect(self._on_embedding_changed)

    # ------------------------------------------------------------------------------------------ state views
    @property
    def proposals(self) -> list[Proposal]:
        """The proposals still shown (in the model's order)."""
        return self.review.proposals

    @property
    def key(self) -> str | None:
        """The image the proposals belong to."""
        return self.review.key

    @property
    def uncertainty(self) -> dict[str, float]:
        """Image key -> the model's uncertainty there (higher: annotate first)."""
        return self.ranking.uncertainty

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
        tiled = needs_tiling(predictor, rgb)  # a large image: tile by tile at native resolution, stitched
        unit = "tiles" if tiled else "prompts"

        def work(should_stop, report):
            run = segment_all_tiled if tiled else segment_all
            return run(fork, rgb, config, progress=lambda d, t: report((d, t)), should_stop=should_stop)

        def done(result):
            self._finish()
            if s.key != key:
                return
            self.ranking.record(key, result.uncertainty)
            self.set_proposals(result.as_proposals() if tiled else result.proposals, key)
            s.tell(
                f"{plural(len(result.proposals), 'proposal')} (uncertainty {result.uncertainty:.2f}): Accept all, click one "
                "on the 'proposals' layer to reject it, or Refine it."
            )
            self.suggestions_changed.emit()

        def failed(exc):
            self._finish()
            s.fail(f"Segment all failed: {exc}")

        def progress(value):
            s.tell(f"Segment all: {value[0]} / {value[1]} {unit} ...")

        self.running_changed.emit(True)
        s.tell("Segment all: proposing objects ...")
        self.task = s.tasks.run(work, name="segment all", on_result=done, on_error=failed, on_progress=progress)
        return True

    def _finish(self) -> None:
        self.task = None
        self.running_changed.emit(False)

    # ------------------------------------------------------------------------------------------ the layer
    def set_proposals(self, proposals: list[Proposal], key: str | None = None) -> None:
        """Show ``proposals`` (of image ``key`` when given)."""
        self.review.set(proposals, key)
        self._show()
        self.proposals_changed.emit()

    def _show(self) -> None:
        shape = self.session.rgb.shape[:2] if self.session.rgb is not None else None
        if shape is None:
            return
        self.layer = self.session.layers.set_proposals(self.review.label_image(shape))
        if self.layer is not None and self._on_click not in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.append(self._on_click)

    def clear(self) -> None:
        self.review.clear()
        self._show()
        self.proposals_changed.emit()

    def index_at(self, x: float, y: float) -> int | None:
        """The proposal shown at pixel (x, y), if any."""
        if self.layer is None:
            return None
        return self.review.index_at(self.layer.data, x, y)

    def _on_click(self, layer, event) -> None:
        row, col = layer.world_to_data(event.position)[-2:]
        index = self.index_at(col, row)
        if index is not None:
            self.reject(index)

    # ------------------------------------------------------------------------------------------ review
    def reject(self, index: int) -> bool:
        if not self.review.reject(index):
            return False
        self._show()
        self.proposals_changed.emit()
        self.session.tell(f"Proposal rejected; {len(self.proposals)} left.")
        return True

    def accept_all(self) -> list:
        """Save every proposal shown as an object (best-scored first; one undo step); returns the objects."""
        if not self.review.acceptable_for(self.session.key):
            self.session.tell("No proposals to accept: use Segment all first.")
            return []
        items = self.review.items()
        objects = self.objects.accept_many(items)
        skipped = len(items) - len(objects)
        self.clear()
        self.session.tell(
            f"Accepted {plural(len(objects), 'proposal')} as objects; saved"
            + (f" ({skipped} overlapping accepted objects skipped)" if skipped else "")
            + ". U undoes them all."
        )
        return objects

    def refine(self, index: int) -> bool:
        """Take proposal ``index`` off the layer and into the prompt controller (its grid point as the
        prompt): add points, then Enter accepts it as an object."""
        proposal = self.review.take(index)
        if proposal is None:
            return False
        self._show()
        self.proposals_changed.emit()
        self.prompts.clear()
        self.prompts.set_prompts(proposal_prompts(proposal))
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
        todo = images_to_rank(project, counts)
        config = replace(self.config(), points_per_side=SUGGEST_POINTS_PER_SIDE)
        fork = predictor.fork()
        skipped: list[str] = []

        def work(should_stop, report):
            return rank_images(fork, todo, config, should_stop=should_stop, report=report, skipped=skipped)

        def finished(scores):
            self.suggest_task = None
            self.ranking.update(scores, counts)
            self.suggestions_changed.emit()
            best = self.suggested()
            text = f"Suggested next: {best[0][0] if best else 'none'} (the model is least sure there)."
            if skipped:
                s.fail(
                    f"{text} Not ranked, unreadable ({plural(len(skipped), 'image')}; right-click → Remove from "
                    f"project): {'; '.join(skipped[:3])}"
                )
            else:
                s.tell(text)

        def failed(exc):
            self.suggest_task = None
            s.fail(f"Suggest next failed: {exc}")

        s.tell(f"Ranking {plural(len(todo), 'image')} without objects ...")
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
        return self.ranking.suggested(self.session.project)

    def rank_of(self, key: str) -> int | None:
        """1 for the most uncertain image without objects (None: not ranked or annotated)."""
        return self.ranking.rank_of(self.session.project, key)

    def show_suggested(self) -> bool:
        index = self.ranking.best_index(self.session.project)
        if index is None:
            self.session.tell("No suggestion yet: use Suggest next.")
            return False
        self.session.show_image(index)
        return True

    # ------------------------------------------------------------------------------------------ events
    def _on_image_changed(self, _index: int) -> None:
        if self.task is not None:
            self.task.cancel()
        if not self.review.empty:
            self.review.clear()
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
