"""What a project remembers of Adapt (adapt.json): the adapter, the settings, the curves and base vs adapted on
held-out objects, brought back on reopen; another project without an adapter predicts with the base model.
Plus the held-out split and the comparison's words (no Qt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infosam_app.state.adapt_memory import ADAPT_STATE_NAME, AdaptMemory, Comparison, held_out_split

pytest.importorskip("napari")


def test_held_out_split_and_comparison_words(tmp_path):
    assert held_out_split(4) == ([0, 1, 2, 3], [])
    train, held = held_out_split(10)
    assert len(held) == 2 and not set(train) & set(held) and sorted(train + held) == list(range(10))
    assert held_out_split(10) == (train, held)  # seeded
    assert Comparison(0.60, 0.72, 4, True).text().startswith("Adapting helped. IoU base 0.600 → adapted 0.720")
    assert "4 held-out objects (not trained on)" in Comparison(0.60, 0.72, 4, True).text()
    worse = Comparison(0.70, 0.55, 4, True).text()
    assert worse.startswith("Adapting did not help") and "keep predicting with Base" in worse
    assert Comparison(0.70, 0.705, 2, False).text().startswith("Adapting made no clear difference")
    assert "too few to hold some out" in Comparison(0.70, 0.705, 2, False).text()
    # damaged or hostile files: nothing remembered, never an error; no path outside the project
    assert AdaptMemory.load(tmp_path) == AdaptMemory()
    (tmp_path / ADAPT_STATE_NAME).write_text("{not json")
    assert AdaptMemory.load(tmp_path) == AdaptMemory()
    (tmp_path / ADAPT_STATE_NAME).write_text(
        json.dumps({"adapter": "../../etc/passwd", "history": {"seg": [[1, "x"]]}})
    )
    memory = AdaptMemory.load(tmp_path)
    assert memory.adapter_path(tmp_path) is None and memory.history == {"seg": []}


def _add_objects(project, n_per_image=2):
    """Two disks per synthetic image (its bright blobs), saved directly."""
    from infosam_core.annotation.records import ObjectPrompts

    for entry in project.images:
        h, w = entry.shape
        yy, xx = np.mgrid[:h, :w]
        for cy, cx, r in ((h * 0.3, w * 0.3, 12), (h * 0.65, w * 0.7, 15))[:n_per_image]:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            project.add_object(entry.key, mask, ObjectPrompts(points=[[float(cx), float(cy), 1]]))


@pytest.mark.gui
@pytest.mark.slow
def test_reopen_restores_adapter_settings_curves_and_base_vs_adapted(studio, qtbot, tmp_path):
    s, panel = studio.session, studio.adapt_panel
    project_root = s.project.root
    _add_objects(s.project)  # 6 objects: one (a fifth) is held out
    s.images_changed.emit()
    assert "6 objects in the project: 1 held out" in panel.count_label.text()
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("decoder"))
    panel.epochs_spin.setValue(7)
    panel.max_steps = 2
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.controller.running, timeout=240_000)
    qtbot.waitUntil(lambda: s.active == "adapted", timeout=60_000)
    comparison = panel.controller.last_comparison
    assert comparison is not None and comparison.held_out and comparison.n_objects == 1
    shown = panel.compare_label.text()
    assert "IoU base" in shown and "→ adapted" in shown and "held-out" in shown
    memory = AdaptMemory.load(project_root)
    adapter = memory.adapter_path(project_root)
    assert adapter == panel.controller.last_adapter_path
    assert memory.settings["method"] == "decoder" and memory.settings["epochs"] == 7
    assert memory.comparison == comparison and memory.history["seg"]
    curve_points = panel.plot.point_count()

    # another project, without an adapter: the previous project's adapted model is not kept
    s.open_project(tmp_path / "other")
    qtbot.waitUntil(lambda: not s.has_adapted and s.active == "base", timeout=10_000)
    assert panel.compare_label.text() == "" and panel.plot.point_count() == 0
    assert not panel.continue_btn.isEnabled()
    panel.epochs_spin.setValue(3)

    # reopening the first project brings back its adapter, settings, curves and comparison
    s.open_project(project_root, create=False)
    qtbot.waitUntil(lambda: s.has_adapted and s.active == "adapted", timeout=60_000)
    assert s.infos["adapted"].adapter_path == str(adapter)
    assert panel.epochs_spin.value() == 7 and panel.method_combo.currentData() == "decoder"
    assert panel.plot.point_count() == curve_points
    assert panel.compare_label.text() == shown
    # the adapter file was not rewritten by the reopen
    assert json.loads((project_root / ADAPT_STATE_NAME).read_text())["adapter"] == memory.adapter
