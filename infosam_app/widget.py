"""The InfoSAM Studio dock widget: composes the panels around one :class:`Session` (one per viewer).

Usable as a napari plugin widget (``napari.yaml``) or from ``infosam app``. The panels hold no state of
their own beyond their controls: the session (project, images, models) and the prompt controller
(prompts, preview, undo) are the state, passed explicitly.
"""

from __future__ import annotations

import contextlib
import warnings
from html import escape

import napari
from qtpy.QtCore import QCoreApplication, Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from infosam_app.adapt_panel import AdaptPanel
from infosam_app.category_panel import CategoryPanel
from infosam_app.export_panel import ExportPanel
from infosam_app.getting_started import GettingStarted
from infosam_app.gl_safety import make_triton_unimportable
from infosam_app.image_panel import ImagePanel
from infosam_app.model_panel import ModelPanel
from infosam_app.prompting import PromptController
from infosam_app.proposals import ProposalController
from infosam_app.proposals_panel import ProposalsPanel
from infosam_app.session import Session
from infosam_app.shortcuts import MOUSE_HELP, TOOLTIPS, shortcut_rows
from infosam_app.state import gc_policy
from infosam_app.state.wording import plural
from infosam_app.tile_prefetch import TilePrefetcher


def _warn_bad_qt_binding() -> None:
    """As a napari plugin the window exists already: a known-bad Qt binding is only warned about."""
    from infosam_app.qt_safety import current_binding_problem

    problem = current_binding_problem()
    if problem is not None:
        import warnings

        from napari.utils.notifications import show_warning

        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        show_warning(problem)


def _guard_triton() -> None:
    """As a napari plugin the window may exist already: see :mod:`infosam_app.gl_safety`."""
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is not None:
        make_triton_unimportable()


class StudioWidget(QWidget):
    """Open images, prompt SAM, accept objects, adapt SAM to them, export. One per viewer."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        model_type: str = "tiny",
        checkpoint: str | None = None,
        load_model: bool = True,
        freeze_gc: bool = True,
    ):
        super().__init__()
        _guard_triton()
        _warn_bad_qt_binding()
        self.viewer = napari_viewer
        self.session = Session(napari_viewer, self)
        self.prompts = PromptController(self.session, self)
        self.proposals = ProposalController(self.session, self.prompts, self)
        self.tile_prefetch = TilePrefetcher(self.session, self)  # large images: tiles near the view, ahead
        self.setMinimumWidth(360)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addLayout(self._compare_row())
        self.tabs = QTabWidget()
        outer.addWidget(self.tabs, 1)
        self.status_label = QLabel("Welcome: open images (or run `infosam app --samples`).")
        self.status_label.setWordWrap(True)
        # a fixed height: a message that wraps to more lines must not move the buttons above it
        self.status_label.setFixedHeight(3 * self.status_label.fontMetrics().lineSpacing() + 4)
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status_label)

        self.image_panel = ImagePanel(self.session)
        self.image_panel.suggestion_mark = self._suggestion_mark
        self.proposals.suggestions_changed.connect(self.image_panel.refresh)
        self.model_panel = ModelPanel(self.session)
        self.adapt_panel = AdaptPanel(self.session)
        self.export_panel = ExportPanel(self.session, self.adapt_panel)
        self.tabs.addTab(self._scroll(self._annotate_tab()), "Annotate")
        self.tabs.addTab(self._scroll(self._boxed("Adapt SAM to my data", self.adapt_panel)), "Adapt")
        self.tabs.addTab(self._scroll(self._boxed("Export", self.export_panel)), "Export")

        s = self.session
        s.status.connect(self._show_status)
        s.model_changed.connect(self._sync_compare)
        s.embedding_changed.connect(self._on_embedding_state)
        self.prompts.state_changed.connect(self._sync_prompt_state)
        self._sync_compare()
        self._sync_prompt_state()
        if freeze_gc:
            s.model_changed.connect(self._freeze_gc_once)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cleanup)
        self._main_window = None  # closing it during Adapt asks first (eventFilter)
        with warnings.catch_warnings():  # napari deprecates plugins reaching its window; showEvent finds it too
            warnings.simplefilter("ignore", FutureWarning)
            self._watch_main_window(getattr(getattr(napari_viewer, "window", None), "_qt_window", None))
        if load_model:
            self.model_panel.set_choice(model_type, checkpoint)
            s.load_model(model_type, checkpoint)

    # ------------------------------------------------------------------------------------------ layout
    @staticmethod
    def _scroll(w: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # content follows the width
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        area.setWidget(w)
        return area

    @staticmethod
    def _boxed(title: str, inner: QWidget) -> QGroupBox:
        box = QGroupBox(title)
        lay = QVBoxLayout(box)
        lay.addWidget(inner)
        return box

    def _compare_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Predict with:"))
        self.base_radio = QRadioButton("Base")
        self.adapted_radio = QRadioButton("Adapted")
        self.compare_group = QButtonGroup(self)
        for b in (self.base_radio, self.adapted_radio):
            b.setToolTip(TOOLTIPS["compare"])
            self.compare_group.addButton(b)
            row.addWidget(b)
        self.base_radio.setChecked(True)
        self.base_radio.toggled.connect(lambda on: on and self.session.set_active("base"))
        self.adapted_radio.toggled.connect(lambda on: on and self.session.set_active("adapted"))
        row.addStretch(1)
        self.embedding_label = QLabel("")
        row.addWidget(self.embedding_label)
        return row

    def _annotate_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        self.getting_started = GettingStarted()
        lay.addWidget(self.getting_started)
        lay.addWidget(self._boxed("Images", self.image_panel))
        lay.addWidget(self._boxed("Model", self.model_panel))
        prompt = QWidget()
        pl = QVBoxLayout(prompt)
        pl.setContentsMargins(0, 0, 0, 0)
        modes = QHBoxLayout()
        self.points_btn = QPushButton("Points")
        self.box_btn = QPushButton("Box")
        self.label_btn = QPushButton("")
        for b in (self.points_btn, self.box_btn):
            b.setCheckable(True)
        self.points_btn.clicked.connect(lambda: self.prompts.set_mode("points"))
        self.box_btn.clicked.connect(lambda: self.prompts.set_mode("box"))
        self.label_btn.clicked.connect(self.prompts.toggle_label)
        self.label_btn.setToolTip("Label of the next point (T toggles)")
        for b in (self.points_btn, self.box_btn, self.label_btn):
            modes.addWidget(b)
        pl.addLayout(modes)
        self.category_panel = CategoryPanel(self.session)
        pl.addWidget(self.category_panel)
        actions = QHBoxLayout()
        for text, slot in (
            ("Accept ⏎", self.prompts.accept),
            ("Undo (U)", self.prompts.undo),
            ("Clear (Esc)", self.prompts.clear),
            ("Next mask (M)", self.prompts.next_candidate),
        ):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, f=slot: f())
            actions.addWidget(b)
        pl.addLayout(actions)
        self.prompt_state_label = QLabel("")
        self.prompt_state_label.setWordWrap(True)
        # two lines always reserved: the text appearing (first prompt, refining) must not shift Segment all's buttons
        self.prompt_state_label.setFixedHeight(2 * self.prompt_state_label.fontMetrics().lineSpacing() + 4)
        self.prompt_state_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        pl.addWidget(self.prompt_state_label)
        lay.addWidget(self._boxed("Prompt", prompt))
        self.proposals_panel = ProposalsPanel(self.proposals)
        lay.addWidget(self._boxed("Segment all", self.proposals_panel))
        keys = QLabel(self._shortcuts_html())
        keys.setWordWrap(True)
        keys.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self._boxed("Keyboard shortcuts (with the mouse over the image)", keys))
        lay.addStretch(1)
        return w

    def _suggestion_mark(self, key: str) -> str:
        rank = self.proposals.rank_of(key)
        return f"  ★{rank} (uncertainty {self.proposals.uncertainty[key]:.2f})" if rank is not None else ""

    @staticmethod
    def _shortcuts_html() -> str:
        rows = "".join(
            f"<tr><td><b>{escape(k)}</b>&nbsp;&nbsp;</td><td>{escape(t)}</td></tr>" for k, t in shortcut_rows()
        )
        return f"<small>{escape(MOUSE_HELP)}</small><table style='font-size:small'>{rows}</table>"

    # ------------------------------------------------------------------------------------------ updates
    def _sync_compare(self) -> None:
        s = self.session
        self.adapted_radio.setEnabled(s.has_adapted)
        target = self.adapted_radio if s.active == "adapted" else self.base_radio
        if not target.isChecked():
            target.blockSignals(True)
            target.setChecked(True)
            target.blockSignals(False)

    def _show_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip(text)  # the whole message when it is longer than the three lines shown

    def _on_embedding_state(self, state: str) -> None:
        text = {"computing": "⏳ embedding …", "ready": "✔ embedding ready", "error": "✖ embedding failed"}
        self.embedding_label.setText(text.get(state, state))

    def _sync_prompt_state(self) -> None:
        c = self.prompts
        self.points_btn.setChecked(c.mode == "points")
        self.box_btn.setChecked(c.mode == "box")
        if c.mode == "box":
            self.label_btn.setText("box: drag a rectangle")
        else:
            self.label_btn.setText("next point: positive" if c.next_label else "next point: negative")
        self.label_btn.setStyleSheet("color: #39ff14;" if c.next_label else "color: #ff5050;")
        self.label_btn.setEnabled(c.mode == "points")  # a box has no label
        parts = [plural(c.prompt_count, "prompt")]
        if c.candidate is not None and c.candidate >= 0:
            parts.append(f"candidate {c.candidate + 1}/3")
        elif c.prompt_count:
            parts.append("single-mask output")
        if c.refine_id is not None:
            parts.append(f"<b>refining object {c.refine_id}</b> (Enter replaces it)")
        self.prompt_state_label.setText(" · ".join(parts))

    def _freeze_gc_once(self) -> None:
        """Once the first model is in memory: move every object alive (napari, Qt wrappers, torch, the
        model) out of the garbage collector's reach. A full collection otherwise scans them all, ~0.4 s
        measured, holding the GIL: the GUI stalled whichever thread triggered it (e.g. during training); see
        :mod:`infosam_app.state.gc_policy`."""
        self.session.model_changed.disconnect(self._freeze_gc_once)
        gc_policy.freeze_all()

    # ------------------------------------------------------------------------------------------ lifecycle
    def _watch_main_window(self, window) -> None:
        """Filter the events of ``window`` (napari's main window) to catch its Close while Adapt runs."""
        from qtpy.QtWidgets import QMainWindow

        if not isinstance(window, QMainWindow) or window is self._main_window:
            return
        if self._main_window is not None:
            with contextlib.suppress(RuntimeError):
                self._main_window.removeEventFilter(self)
        self._main_window = window
        window.installEventFilter(self)

    def showEvent(self, event) -> None:
        self._watch_main_window(self.window())  # docked: the main window, without napari's private attribute
        super().showEvent(event)

    def eventFilter(self, obj, event) -> bool:
        """Closing the window while Adapt runs: say what is kept and ask; "keep adapting" cancels the close."""
        from qtpy.QtCore import QEvent

        if obj is self._main_window and event.type() == QEvent.Type.Close and self.adapt_panel.controller.running:
            if not self.adapt_panel.confirm_close():
                event.ignore()
                return True
            self.adapt_panel.stop_for_close()
        return super().eventFilter(obj, event)

    def cleanup(self) -> None:
        """Stop background work and remove key bindings (the viewer or the app is closing)."""
        if self._main_window is not None:
            with contextlib.suppress(RuntimeError):  # the window is already gone
                self._main_window.removeEventFilter(self)
            self._main_window = None
        self.adapt_panel.controller.cancel()
        self.tile_prefetch.close()
        self.prompts.unbind()
        self.session.shutdown()

    def closeEvent(self, event) -> None:
        self.cleanup()
        super().closeEvent(event)
