"""Closing the window while Adapt runs asks first and says what will be kept; "keep adapting" cancels the
close, "stop and close" stops the run, which saves its best adapter so far as the project's adapter."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from test_app_adapt_memory import _add_objects

from infosam_app.state.adapt_memory import AdaptMemory

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_close_during_adapt_asks_and_keeps_the_adapter(studio, qtbot):
    from qtpy.QtGui import QCloseEvent

    s, panel = studio.session, studio.adapt_panel
    _add_objects(s.project, n_per_image=1)
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("decoder"))
    panel.distill_combo.setCurrentIndex(panel.distill_combo.findData("none"))
    panel.epochs_spin.setValue(1000)
    steps = []
    panel.controller.progress.connect(lambda p: steps.append(p.step))
    assert panel.start()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=120_000)

    asked = []
    panel.ask = lambda title, text: asked.append(text) or False  # "Keep adapting"
    window = studio._main_window
    event = QCloseEvent()
    assert studio.eventFilter(window, event)  # handled: the close does not happen
    assert not event.isAccepted() and panel.controller.running
    text = asked[0]
    assert "Adapting is running (step" in text and "best adapter so far" in text
    assert f"adapters/{panel.controller.run_dir.name}/" in text and "reopening the project brings it back" in text

    panel.ask = lambda title, text: True  # "Stop adapting and close"
    task = panel.controller.task
    event = QCloseEvent()
    assert not studio.eventFilter(window, event)  # passed on: the window closes
    assert task.wait(0)  # the run's thread has ended (its adapter saved) before the window goes
    memory = AdaptMemory.load(s.project.root)
    adapter = memory.adapter_path(s.project.root)
    assert adapter is not None and adapter.parent == panel.controller.run_dir  # the project's adapter on reopen
    assert memory.settings["method"] == "decoder" and memory.history["seg"]


def test_no_question_when_nothing_runs(studio):
    from qtpy.QtGui import QCloseEvent

    studio.adapt_panel.ask = lambda title, text: pytest.fail("asked although no run goes on")
    assert not studio.eventFilter(studio._main_window, QCloseEvent())
