"""The 'Adapt to my data' panel: method, InfoSAM on/off, epochs / time budget, progress + ETA, live losses,
Cancel / Continue, and loading an adapter trained before. The work is in :mod:`infosam_app.training`."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from infosam_app.loss_plot import TERM_LABELS, LossPlot
from infosam_app.relation_overlay import RelationOverlay
from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS
from infosam_app.state.adapt_memory import AdaptMemory, held_out_split
from infosam_app.state.method_choices import default_distiller, distill_choices, distill_term_names, method_choices
from infosam_app.state.models import ModelInfo, device_name
from infosam_app.state.wording import adapter_name, plural
from infosam_app.training import MIN_OBJECTS, RunSettings, TrainingController

# shown on the loss plot while the distillation has stopped carrying information (infosam_core.training.collapse)
COLLAPSE_FLAG = "distillation collapsed: L_d carries no signal"


def format_seconds(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "–"
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _load_adapter_job(base_sam, path: str):
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint

    return load_peft_checkpoint(base_sam, path)


class AdaptPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.controller = TrainingController(session, self)
        self.max_steps: int | None = None  # tests and demos: a hard step limit
        self._last_val: float | None = None
        self._pending_adapter: Path | None = None
        self._last_progress = (
            None  # the run's latest TrainProgress  # the project's adapter, loaded once a base model is there
        )
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self._settings_form())
        self._add_run_controls(lay)
        self._connect_signals()
        self._sync_buttons()
        self._sync_relation_check()

    def _settings_form(self) -> QFormLayout:
        """Method, InfoSAM, low memory, epochs, time budget."""
        form = QFormLayout()
        self.method_combo = QComboBox()
        self.distill_combo = QComboBox()  # InfoSAM (default), none, then the paper's baselines ("advanced")
        for combo, choices in ((self.method_combo, method_choices()), (self.distill_combo, distill_choices())):
            for choice in choices:  # from the core's registries: a newly registered method shows up here
                combo.addItem(choice.text, choice.name)
                combo.setItemData(combo.count() - 1, choice.tooltip, Qt.ItemDataRole.ToolTipRole)
        self.method_combo.setToolTip(TOOLTIPS["method"])
        self.distill_combo.setCurrentIndex(self.distill_combo.findData(default_distiller()))
        self._distill_chosen = False  # the user picked a distiller (or a remembered one was set): keep it
        self.distill_combo.setToolTip(TOOLTIPS["distill"])
        for combo in (self.method_combo, self.distill_combo):  # long entries must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
            combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0) + 24)  # the open list shows it all
        self.low_memory_check = QCheckBox("Low memory (slower)")
        self.low_memory_check.setToolTip(TOOLTIPS["low_memory"])
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(30)
        self.epochs_spin.setToolTip(TOOLTIPS["epochs"])
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(0, 24 * 60)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setSpecialValueText("no limit")
        self.budget_spin.setToolTip(TOOLTIPS["time_budget"])
        form.addRow("Method", self.method_combo)
        form.addRow("Distillation", self.distill_combo)
        form.addRow("", self.low_memory_check)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Time budget", self.budget_spin)
        return form

    def _add_run_controls(self, lay: QVBoxLayout) -> None:
        """Start / Cancel / Continue, progress bar, ETA, loss plot, messages, Load adapter."""
        row = QHBoxLayout()
        self.start_btn = QPushButton("Adapt to my data")
        self.start_btn.setToolTip(TOOLTIPS["start"])
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip(TOOLTIPS["cancel"])
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setToolTip(TOOLTIPS["continue"])
        for b in (self.start_btn, self.cancel_btn, self.continue_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        lay.addWidget(self.progress_bar)
        self.eta_label = QLabel("")
        self.eta_label.setWordWrap(True)
        lay.addWidget(self.eta_label)
        self.plot = LossPlot([["seg"], ["L_r", "L_d"]])
        lay.addWidget(self.plot)
        self.compare_label = QLabel("")  # base vs adapted on held-out objects, after a run (and on reopen)
        self.compare_label.setWordWrap(True)
        self.compare_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.compare_label)
        self.count_label = QLabel("")  # how many objects a run would use, always current
        self.count_label.setWordWrap(True)
        lay.addWidget(self.count_label)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        lay.addWidget(self.info_label)
        self.load_btn = QPushButton("Load adapter…")
        self.load_btn.setToolTip(TOOLTIPS["load_adapter"])
        lay.addWidget(self.load_btn)
        self.relation_overlay = RelationOverlay(self.session, self)
        self.relation_check = QCheckBox("Show relation map")
        self.relation_check.setToolTip(TOOLTIPS["relation_map"])
        lay.addWidget(self.relation_check)
        lay.addStretch(1)

    def _connect_signals(self) -> None:
        self.start_btn.clicked.connect(lambda: self.start())
        self.cancel_btn.clicked.connect(self.controller.cancel)
        self.continue_btn.clicked.connect(lambda: self.start(continue_run=True))
        self.load_btn.clicked.connect(lambda: self.load_peft_checkpoint())
        self.relation_check.toggled.connect(self.relation_overlay.set_visible)
        self.relation_overlay.changed.connect(self._sync_relation_check)
        self.session.model_changed.connect(self._sync_relation_check)
        self.session.model_changed.connect(self._follow_model_default)
        self.distill_combo.activated.connect(self._distill_picked)  # activated: the user's choices only
        c = self.controller
        c.started.connect(self._on_started)
        c.progress.connect(self._on_progress)
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.message.connect(self.info_label.setText)
        self.session.images_changed.connect(self._sync_buttons)
        self.session.model_changed.connect(self._sync_buttons)
        self.session.project_changed.connect(self.restore_from_project)
        self.session.model_changed.connect(self._load_pending_adapter)

    # ---- actions
    def settings(self) -> RunSettings:
        budget = self.budget_spin.value()
        return RunSettings(
            method=self.method_combo.currentData(),
            distill=self.distill_combo.currentData(),
            epochs=self.epochs_spin.value(),
            time_budget_s=budget * 60.0 if budget else None,
            max_steps=self.max_steps,
            low_memory=self.low_memory_check.isChecked(),
        )

    def start(self, continue_run: bool = False) -> bool:
        if not continue_run:
            self.plot.clear()
        return self.controller.start(self.settings(), continue_run=continue_run)

    def load_peft_checkpoint(self, path: str | None = None, remember: bool = True) -> None:
        """Load an adapter file onto the base model (background); it becomes the adapted model and, with
        ``remember``, the project's adapter (``adapt.json``: back on reopen)."""
        session = self.session
        if "base" not in session.sams:
            session.fail("Load a model first.")
            return
        if path is None:
            start = str(session.project.adapters_dir) if session.project else str(Path.home())
            path, _ = QFileDialog.getOpenFileName(
                self, "Load adapter", start, "Adapters (*.json *.safetensors);;All files (*)"
            )
            if not path:
                return
        session.tell(f"Loading adapter {Path(path).name} …")

        def ok(model):
            from infosam_core.peft.state import peft_state_of

            state = peft_state_of(model)
            method = state.method if state is not None else "adapter"
            info = ModelInfo(
                f"{adapter_name(method)} ({Path(path).parent.name}/{Path(path).name})",
                device_name(model),
                session.infos["base"].model_type,
                adapter_path=str(path),
            )
            session.set_adapted(model, info, activate=True)
            self.info_label.setText(f"Loaded {path}")
            if remember and session.project is not None and not session.project.read_only:
                memory = AdaptMemory.load(session.project.root)
                memory.set_adapter(session.project.root, path)
                memory.comparison = None  # measured for another adapter
                with contextlib.suppress(OSError):
                    memory.save(session.project.root)
                self.compare_label.setText("")

        session.tasks.run(
            _load_adapter_job,
            session.sams["base"],
            str(path),
            name="load adapter",
            on_result=ok,
            on_error=lambda exc: session.fail(f"Cannot load the adapter: {exc}"),
        )

    # ---- updates
    def _sync_buttons(self) -> None:
        running = self.controller.running
        n = self.controller.object_count()
        self.start_btn.setEnabled(not running)
        self.continue_btn.setEnabled(self.controller.can_continue())
        self.cancel_btn.setEnabled(running)
        for w in (
            self.method_combo,
            self.distill_combo,
            self.low_memory_check,
            self.epochs_spin,
            self.budget_spin,
            self.load_btn,
        ):
            w.setEnabled(not running)
        if n < MIN_OBJECTS:
            self.count_label.setText(f"Accept at least {MIN_OBJECTS} objects to adapt ({n} so far).")
        else:
            held = held_out_split(n)[1]
            self.count_label.setText(
                f"{plural(n, 'object')} in the project"
                + (f": {len(held)} held out to measure base vs adapted." if held else ".")
            )

    def _sync_relation_check(self) -> None:
        """Enabled only when the adapted model has InfoSAM's relation module; unchecked when the layer went."""
        available = self.relation_overlay.available
        self.relation_check.setEnabled(available)
        if self.relation_check.isChecked() != self.relation_overlay.wanted:
            self.relation_check.blockSignals(True)
            self.relation_check.setChecked(self.relation_overlay.wanted)
            self.relation_check.blockSignals(False)

    def _on_started(self) -> None:
        self._last_val = None
        self._last_progress = None
        settings = self.controller.last_settings
        terms = [TERM_LABELS.get(t, t) for t in distill_term_names(settings.distill)] if settings else []
        panels = [["seg"], terms] if terms else [["seg"]]
        if panels != self.plot.panels:  # another distiller's terms (continuing keeps the curves)
            self.plot.set_panels(panels)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("starting … %p%")
        self.eta_label.setText("Preparing the samples …")
        self.info_label.setText("")
        self._sync_buttons()

    def _on_progress(self, p) -> None:
        self._last_progress = p
        pct = int(100 * p.step / max(p.total_steps, 1))
        self.progress_bar.setValue(pct)
        self.progress_bar.setFormat(f"step {p.step}/{p.total_steps}  %p%")
        eta = p.eta_s
        budget = self.controller.last_settings.time_budget_s if self.controller.last_settings else None
        if budget:
            eta = min(eta, max(0.0, budget - p.elapsed_s))
        if p.val_miou is not None:
            self._last_val = p.val_miou
        extra = f"   validation IoU {self._last_val:.3f}" if self._last_val is not None else ""
        self.eta_label.setText(
            f"epoch {p.epoch}   elapsed {format_seconds(p.elapsed_s)}   ETA {format_seconds(eta)}{extra}"
        )
        if p.val_miou is None:  # the end-of-epoch report repeats the epoch's mean losses: not plotted
            self.plot.set_flag(COLLAPSE_FLAG if p.distill_collapsed else "")
            self.plot.add(p.step, {"seg": p.seg_loss, **{TERM_LABELS.get(k, k): v for k, v in p.terms.items()}})

    def _on_finished(self, result) -> None:
        self.progress_bar.setFormat(f"{result.stop_reason}: {result.steps} steps")
        if result.stop_reason in ("completed", "max_steps"):
            self.progress_bar.setValue(100)
        best = (
            f", best val IoU {result.best_val_miou:.3f} (epoch {result.best_epoch})"
            if result.best_val_miou is not None
            else ""
        )
        self.info_label.setText(
            f"{'Cancelled — the best adapter so far is kept' if result.cancelled else 'Done'}: {result.steps} steps in "
            f"{format_seconds(result.elapsed_s)}{best}. Saved to {self.controller.last_adapter_path}. "
            "Press C to compare Base / Adapted."
        )
        comparison = self.controller.last_comparison
        self.compare_label.setText(comparison.text() if comparison is not None else "")
        self._remember(comparison)
        self._sync_buttons()

    # ---- what the project remembers (adapt.json)
    def _remember(self, comparison) -> None:
        """Save the active adapter, the settings, the curves shown and the comparison in the project."""
        project = self.session.project
        path = self.controller.last_adapter_path
        if project is None or project.read_only or path is None:
            return
        settings = dataclasses.asdict(self.controller.last_settings or self.settings())
        settings["max_steps"] = None
        memory = AdaptMemory(
            settings=settings,
            history={k: [[x, y] for x, y in v] for k, v in self.plot.series.items() if v},
            comparison=comparison,
        )
        memory.set_adapter(project.root, path)
        with contextlib.suppress(OSError):
            memory.save(project.root)

    def restore_from_project(self) -> None:
        """Another project is open: its Adapt settings, curves, comparison and adapter (or none: base only)."""
        project = self.session.project
        if project is None or self.controller.running:
            return
        memory = AdaptMemory.load(project.root)
        self._distill_chosen = False  # this project's remembered choice, else the model's default
        self._apply_settings(memory.settings)
        self._follow_model_default()
        history = {k: [(x, y) for x, y in v] for k, v in memory.history.items()}
        panels = [["seg"], [k for k in history if k != "seg"]] if len(history) > 1 else [["seg"]]
        self.plot.set_panels(panels)
        for name, points in history.items():
            if name in self.plot.series:
                self.plot.series[name].extend(points)
        self.plot.update()
        self.compare_label.setText(memory.comparison.text() if memory.comparison is not None else "")
        self.controller.forget_run()
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        self.eta_label.setText("")
        self.info_label.setText("")
        adapter = memory.adapter_path(project.root)
        self._pending_adapter = None
        if adapter is None:
            self.session.drop_adapted()  # the previous project's adapter must not stay in use
        elif "base" in self.session.sams:
            self.session.drop_adapted()
            self.load_peft_checkpoint(str(adapter), remember=False)
        else:
            self._pending_adapter = adapter
        self._sync_buttons()

    def _load_pending_adapter(self) -> None:
        if self._pending_adapter is not None and "base" in self.session.sams and not self.session.has_adapted:
            path, self._pending_adapter = self._pending_adapter, None
            self.load_peft_checkpoint(str(path), remember=False)

    def _distill_picked(self, _index: int) -> None:
        self._distill_chosen = True

    def _follow_model_default(self) -> None:
        """Mark the distiller measured best for the base model ``(recommended)`` and select it, unless the user
        chose one (issue 31: on the bundled tiny model that is none, plain PEFT)."""
        base = self.session.infos.get("base")
        model_type = base.model_type if base is not None else None
        for choice in distill_choices(model_type):
            index = self.distill_combo.findData(choice.name)
            if index >= 0:
                self.distill_combo.setItemText(index, choice.text)
        if not self._distill_chosen:
            index = self.distill_combo.findData(default_distiller(model_type))
            if index >= 0:
                self.distill_combo.setCurrentIndex(index)

    def _apply_settings(self, values: dict) -> None:
        """Set the controls from remembered settings (unknown or bad values keep the control as it is)."""
        for combo, key in ((self.method_combo, "method"), (self.distill_combo, "distill")):
            index = combo.findData(values.get(key))
            if index >= 0:
                combo.setCurrentIndex(index)
                if combo is self.distill_combo:
                    self._distill_chosen = True
        epochs = values.get("epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool):
            self.epochs_spin.setValue(epochs)
        budget = values.get("time_budget_s")
        if budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool)):
            self.budget_spin.setValue(int(round((budget or 0) / 60)))
        low = values.get("low_memory")
        if isinstance(low, bool):
            self.low_memory_check.setChecked(low)

    # ---- closing while a run goes on
    def close_question(self) -> str:
        """What closing now does to the run, in words (the close dialog's text)."""
        c = self.controller
        run = c.run_dir.name if c.run_dir is not None else "the run"
        last = self._last_progress
        step = f"step {last.step} of {last.total_steps}" if last is not None else "preparing the samples"
        return (
            f"Adapting is running ({step}). If you close now, the run stops after the current step and keeps the "
            f"best adapter so far in adapters/{run}/ of the project; reopening the project brings it back as the "
            "adapted model. The base-vs-adapted comparison is not measured for this run.\n\nStop adapting and close?"
        )

    def confirm_close(self) -> bool:
        """Ask before closing during a run (True: close). Tests replace :meth:`ask`."""
        return self.ask("Close during Adapt", self.close_question())

    def ask(self, title: str, text: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        stop = box.addButton("Stop adapting and close", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep adapting", QMessageBox.ButtonRole.RejectRole)
        box.exec()
        return box.clickedButton() is stop

    def stop_for_close(self, timeout_ms: int = 120_000) -> bool:
        """Cancel the run and wait until it has saved its adapter (True when it ended in time)."""
        task = self.controller.task
        self.controller.cancel()
        return task.wait(timeout_ms) if task is not None else True

    def _on_failed(self, message: str) -> None:
        self.info_label.setText(message)
        self.progress_bar.setFormat("stopped")
        self._sync_buttons()
