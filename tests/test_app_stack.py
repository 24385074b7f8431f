"""The stack dock headless (issue 27): open a stack, prompt a slice, propagate, accept, correct one slice,
undo, export."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from infosam_core.annotation.project import Project
from infosam_core.data.synthetic_stacks import ellipsoid_stack, iou_3d
from infosam_core.io.stacks import read_label_stack

pytestmark = pytest.mark.gui


@pytest.mark.slow
def test_open_prompt_propagate_accept_correct_undo_export(make_napari_viewer, qtbot, tmp_path, tiny_sam):
    from infosam_app.stack_panel import BOX_NAME, OBJECTS_NAME, POINTS_NAME, STACK_NAME, StackPanel
    from infosam_core.inference.predictor import Predictor

    data = ellipsoid_stack(seed=77, shape=(12, 128, 128), n_objects=1)
    tifffile.imwrite(tmp_path / "vol.tif", data.image, metadata={"axes": "ZYX"})
    viewer = make_napari_viewer()
    predictor = Predictor(tiny_sam)
    panel = StackPanel(viewer, Project.create(tmp_path / "proj"), lambda: predictor)
    panel.open_stack(tmp_path / "vol.tif")
    assert viewer.layers[STACK_NAME].data.shape == (12, 128, 128, 3) and viewer.dims.nsteps[0] == 12

    viewer.dims.set_current_step(0, 6)
    x0, y0, x1, y1 = data.box(1, 6)
    viewer.layers[BOX_NAME].add_rectangles(np.array([[6, y0, x0], [6, y0, x1], [6, y1, x1], [6, y1, x0]]))
    assert panel.propagate()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    truth = data.labels == 1
    assert iou_3d(panel.state.pending.result.masks, truth) >= 0.75
    assert panel.accept()
    saved = viewer.layers[OBJECTS_NAME].data
    assert iou_3d(saved == 1, truth) >= 0.75 and not viewer.layers[BOX_NAME].data

    # correct a later slice: a point inside the object there, re-propagated forward from it
    z = 7
    viewer.dims.set_current_step(0, z)
    rows, cols = np.nonzero(saved[z] == 1)
    viewer.layers[POINTS_NAME].add([z, rows.mean(), cols.mean()])
    panel.direction.setCurrentText("forward")
    assert panel.propagate(correct=True)
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.state.pending.corrects == 1
    assert panel.accept()
    objects = Project.open(tmp_path / "proj")
    from infosam_core.annotation.stack_objects import StackObjects

    stored = StackObjects(objects).annotations(panel.state.entry.key)
    assert set(stored.objects[1].prompts) == {6, z}
    np.testing.assert_array_equal(stored.labels[:z], saved[:z])  # slices before the correction kept

    assert panel.undo() == "correct object 1"
    assert set(StackObjects(objects).annotations(panel.state.entry.key).objects[1].prompts) == {6}
    out = panel.export(tmp_path / "labels.tif")
    exported = read_label_stack(out)
    assert exported.shape == (12, 128, 128)
    np.testing.assert_array_equal(exported, saved)


@pytest.mark.slow
def test_the_dock_uses_the_studios_project_and_model(studio, tmp_path):
    from infosam_app.stack_panel import stack_widget

    panel = stack_widget(studio.viewer)
    assert panel.state.objects.project is studio.session.project
    assert panel.predictor() is studio.session.predictor
