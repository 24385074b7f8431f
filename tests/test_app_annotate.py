"""The studio widget, driven headless: open images, prompt, accept, undo, refine, reopen, export, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_app.testing import prompt_until_mask
from infosam_core.annotation.export import coco_to_label_images, read_label_image
from infosam_core.annotation.project import Project

pytestmark = pytest.mark.gui


def _show(qtbot, session, index):
    session.show_image(index)
    qtbot.waitUntil(lambda: session.index == index and session.embedding_ready, timeout=30_000)


def test_open_prompt_accept_and_reopen(studio, qtbot, tmp_path):
    s, c = studio.session, studio.prompts
    assert [e.name for e in s.project.images] == ["deep16.tif", "gray.png", "rgb.png"]
    assert studio.image_panel.list.count() == 3
    assert all(studio.image_panel.count_text(i).endswith("0 objects") for i in range(3))
    assert s.raw.dtype == np.uint16 and s.rgb.shape == (80, 100, 3)

    accepted = {}
    for i in range(3):
        _show(qtbot, s, i)
        assert s.layers.objects.data.shape == s.rgb.shape[:2]
        mask = prompt_until_mask(c)
        assert mask is not None, "the model gave no usable mask for any prompt"
        np.testing.assert_array_equal(s.layers.preview.data.astype(bool), mask)  # the preview is the mask
        prompts = c.current_prompts()
        obj = c.accept()
        assert obj is not None and obj.id == 1
        accepted[s.key] = (mask, prompts)
        assert (s.layers.objects.data == 1).sum() == mask.sum() == obj.area
        assert c.current_prompts().empty and not s.layers.preview.data.any()  # cleared after accept
        assert studio.image_panel.count_text(i).endswith("1 object")

    # everything is on disk already: a fresh Project object (as after a crash) finds it
    reopened = Project.open(tmp_path / "proj")
    assert reopened.object_counts() == {k: 1 for k in accepted}
    for key, (mask, prompts) in accepted.items():
        ann = reopened.annotations(key)
        np.testing.assert_array_equal(ann.labels == 1, mask)
        assert ann.objects[1].prompts.points == prompts.points and ann.objects[1].prompts.box == prompts.box
        assert ann.objects[1].model == "tiny (test)"

    # reopening in the app restores the list, the current image, objects and prompts
    s.open_project(tmp_path / "proj", create=False)
    qtbot.waitUntil(lambda: s.embedding_ready, timeout=30_000)
    assert studio.image_panel.list.count() == 3 and s.index == 2  # the last image shown
    assert all(studio.image_panel.count_text(i).endswith("1 object") for i in range(3))
    np.testing.assert_array_equal(s.layers.objects.data == 1, accepted[s.key][0])
    assert c.refine(1)
    assert c.current_prompts().points == accepted[s.key][1].points
    assert c.current_prompts().box == accepted[s.key][1].box


def test_prompts_candidates_undo_and_keys(studio, qtbot):
    s, c = studio.session, studio.prompts
    h, w = s.rgb.shape[:2]
    c.add_point(w * 0.3, h * 0.3)
    assert c.mask is not None and c.mask.shape == (h, w)
    assert c.candidate in (0, 1, 2)  # one point: the best of SAM's three candidates
    first = c.candidate
    c.next_candidate()
    assert c.candidate == (first + 1) % 3
    c.add_point(w * 0.8, h * 0.8, positive=False)
    assert c.candidate is None  # several prompts: the single-mask output first
    assert c.current_prompts().points[1][2] == 0
    c.set_box(5, 5, w * 0.6, h * 0.6)
    assert c.prompt_count == 3
    c.undo()
    assert c.prompt_count == 2 and c.current_prompts().box is None
    c.undo()
    assert c.prompt_count == 1
    c.clear()
    assert c.prompt_count == 0 and c.mask is None

    # the keyboard: shortcuts are bound on the viewer and win over our layers' own defaults
    handler = studio.viewer.window._qt_viewer._key_map_handler
    s.viewer.layers.selection.active = s.layers.points
    assert c.next_label == 1
    handler.press_key("T")
    handler.release_key("T")
    assert c.next_label == 0
    c.add_point(w * 0.5, h * 0.5)
    assert c.current_prompts().points[0][2] == 0  # a negative point
    handler.press_key("Escape")
    handler.release_key("Escape")
    assert c.prompt_count == 0
    handler.press_key("B")
    handler.release_key("B")
    assert c.mode == "box" and s.viewer.layers.selection.active is s.layers.box
    index = s.index
    handler.press_key("N")
    handler.release_key("N")
    qtbot.waitUntil(lambda: s.index == (index + 1) % 3 and s.embedding_ready, timeout=30_000)
    # a prompt layer the user deleted comes back with the next prompt
    s.viewer.layers.remove(s.layers.points)
    c.add_point(5, 5)
    assert s.layers.points in s.viewer.layers and c.prompt_count == 1 and c.mask is not None


def test_refine_delete_and_undo_objects(studio, qtbot, tmp_path):
    s, c = studio.session, studio.prompts
    mask = prompt_until_mask(c)
    prompts = c.current_prompts()
    obj = c.accept()
    assert obj.id == 1
    # the same mask again lies entirely on object 1: refused (no sliver objects), nothing saved
    c.set_prompts(prompts)
    assert c.accept() is None and "Not accepted" in s.last_error
    assert set(s.project.annotations(s.key).objects) == {1}
    # refine: the saved prompts come back; accepting replaces object 1 (same id)
    assert c.refine(1) and c.refine_id == 1
    h, w = s.rgb.shape[:2]
    c.clear()
    c.refine_id = 1
    new_mask = prompt_until_mask(
        c,
        attempts=[
            ("box", (w * 0.5, h * 0.4, w * 0.95, h * 0.95)),
            ("box", (0, 0, w - 1, h - 1)),
            ("point", (w * 0.7, h * 0.65)),
        ],
    )
    if new_mask is None:  # every prompt overlapped object 1 completely: refine with its own box then
        c.set_box(0, 0, w - 1, h - 1)
        new_mask = c.mask
    c.refine_id = 1
    replaced = c.accept()
    assert replaced.id == 1 and set(s.project.annotations(s.key).objects) == {1}
    np.testing.assert_array_equal(s.layers.objects.data == 1, new_mask)
    c.undo()  # undo the replacement: the old shape and prompts are back
    np.testing.assert_array_equal(s.layers.objects.data == 1, mask)
    assert c.delete_object(1)
    assert not s.layers.objects.data.any() and Project.open(tmp_path / "proj").object_count(s.key) == 0
    c.undo()
    np.testing.assert_array_equal(s.layers.objects.data == 1, mask)
    c.undo()  # undo the first accept
    assert s.project.object_count(s.key) == 0 and not s.layers.objects.data.any()


def test_export_masks_and_coco(studio, qtbot, tmp_path):
    s, c = studio.session, studio.prompts
    for i in range(2):
        _show(qtbot, s, i)
        assert prompt_until_mask(c) is not None
        c.accept()
    for fmt in ("tif", "png"):
        paths = studio.export_panel.export_masks(tmp_path / f"out_{fmt}", fmt=fmt)
        assert len(paths) == 3
        for entry, path in zip(s.project.images, paths):
            labels = read_label_image(path)
            ann = s.project.annotations(entry.key)
            if ann.labels is None:  # never shown: the export read the image to know its size
                from infosam_core.io.images import read_image

                expected = np.zeros(read_image(s.project.image_path(entry)).shape[:2], np.uint16)
            else:
                expected = ann.labels
            np.testing.assert_array_equal(labels, expected)
    coco_path = studio.export_panel.export_coco(tmp_path / "coco.json")
    coco = json.loads(coco_path.read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 2
    rebuilt = coco_to_label_images(coco)
    for entry in s.project.images[:2]:
        np.testing.assert_array_equal(rebuilt[entry.name], s.project.annotations(entry.key).labels)


def test_bad_checkpoint_is_reported_and_app_keeps_working(studio, qtbot, tmp_path):
    s, c = studio.session, studio.prompts
    bad = tmp_path / "not_a_model.pth"
    bad.write_bytes(b"this is not a checkpoint")
    results = []
    s.load_model("vit_b", str(bad), on_done=results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=30_000)
    assert results == [False]
    assert "Cannot load the model" in s.last_error and "not_a_model.pth" in s.last_error
    assert "Cannot load the model" in studio.model_panel.info_label.text()
    assert s.infos["base"].label == "tiny (test)"  # the previous model stays in use
    assert s.embedding_ready
    c.add_point(10, 10)
    assert c.mask is not None


def test_choosing_a_checkpoint_selects_its_model_type(studio, tmp_path):
    import torch

    from infosam_core.models.sam import build_sam

    panel = studio.model_panel
    panel.type_combo.setCurrentIndex(panel.type_combo.findData("vit_b"))
    torch.save({"model": build_sam("tiny").state_dict()}, tmp_path / "weights.pt")
    panel.use_checkpoint(str(tmp_path / "weights.pt"))
    assert panel.type_combo.currentData() == "tiny" and "(detected)" in panel.info_label.text()
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    panel.use_checkpoint(str(tmp_path / "other.pth"))
    assert panel.type_combo.currentData() == "tiny" and "not recognised" in panel.info_label.text()
    assert panel.checkpoint_edit.text().endswith("other.pth")


def test_cli_registers_app_command():
    from infosam_core.cli import build_parser

    args = build_parser().parse_args(["app", "--samples", "--model", "tiny", "a.png"])
    assert args.samples and args.model == "tiny" and [str(p) for p in args.images] == ["a.png"]
    from infosam_app.samples import sample_paths, samples_project_dir

    assert len(sample_paths()) >= 3
    assert "infosam-studio" in str(samples_project_dir())


def gc_frozen() -> bool:
    import gc

    return gc.get_freeze_count() > 0


def test_napari_plugin_widget_and_sample_data(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    from infosam_app.widget import StudioWidget

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("infosam-studio", "InfoSAM Studio")
    try:
        assert isinstance(widget, StudioWidget)
        qtbot.waitUntil(lambda: "base" in widget.session.predictors, timeout=60_000)  # the bundled tiny model
        assert widget.session.infos["base"].label == "tiny (bundled)"
        assert gc_frozen()  # GC pauses avoided from now on (see StudioWidget._freeze_gc_once)
        assert widget.session.infos["base"].device in ("CPU",) or widget.session.infos["base"].device.startswith("GPU")
        viewer.open_sample("infosam-studio", "infosam-samples")
        assert {"coins", "nuclei_stained_rgb"} <= {layer.name for layer in viewer.layers}
    finally:
        widget.cleanup()
        import gc

        gc.unfreeze()  # the widget froze the GC once its model loaded: let later tests collect this viewer


@pytest.mark.slow
def test_damaged_or_busy_project_is_reported_and_app_keeps_working(studio, qtbot, tmp_path, monkeypatch):
    from infosam_core.annotation import project as project_module

    s, c = studio.session, studio.prompts
    current = s.project
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "project.json").write_text(json.dumps({"format": 1, "images": [{"key": "../../x"}]}))
    assert s.open_project(damaged, create=False) is None
    assert "project.json: field 'images[0].key'" in s.last_error
    assert s.project is current  # the open project stays

    # another program holds the project's lock (a second Project object: its own OS lock)
    qtbot.waitUntil(lambda: s.embedding_ready, timeout=30_000)
    other = Project.open(s.project.root)
    monkeypatch.setattr(project_module, "LOCK_TIMEOUT_S", 0.2)
    with other._locked():
        assert prompt_until_mask(c) is not None
        assert c.accept() is None
        assert "busy" in s.last_error and "pid" in s.last_error
    obj = c.accept() if c.mask is not None else None
    if obj is None:
        assert prompt_until_mask(c) is not None
        obj = c.accept()
    assert obj is not None and obj.id in Project.open(s.project.root).annotations(s.key).objects
