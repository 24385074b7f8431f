"""The studio, headless: import labels (folder, COCO, a napari Labels layer), switch category, export COCO with
categories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")

from infosam_app.shortcuts import SHORTCUTS
from infosam_app.testing import prompt_until_mask
from infosam_core.annotation.export import decode_rle, encode_rle
from infosam_core.annotation.project import Project

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_import_labels_switch_category_export_coco(studio, qtbot, tmp_path):
    s, panel, c = studio.session, studio.image_panel, studio.prompts
    names = [e.name for e in s.project.images]
    assert names == ["deep16.tif", "gray.png", "rgb.png"]
    assert studio.category_panel.combo.currentText() == "object"

    # a folder of label images: gray.png's labels (96 x 128)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    gray = np.zeros((96, 128), np.int32)
    gray[5:20, 5:30] = 4
    gray[40:60, 70:100] = 9
    tifffile.imwrite(labels_dir / "gray_labels.tif", gray)
    summary = panel.import_labels(labels_dir)
    assert summary is not None and summary.objects == 2
    key_gray = s.project.images[1].key
    np.testing.assert_array_equal(s.project.annotations(key_gray).labels, gray)
    assert panel.count_text(1).endswith("2 objects")

    # a COCO file with two categories for rgb.png (100 x 120)
    a = np.zeros((100, 120), bool)
    a[10:30, 10:40] = True
    b = np.zeros((100, 120), bool)
    b[50:90, 60:110] = True
    coco = {
        "images": [{"id": 1, "file_name": "rgb.png", "height": 100, "width": 120}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": encode_rle(a)},
            {"id": 2, "image_id": 1, "category_id": 6, "segmentation": encode_rle(b)},
        ],
        "categories": [{"id": 5, "name": "cell"}, {"id": 6, "name": "nucleus"}],
    }
    (tmp_path / "in.json").write_text(json.dumps(coco))
    assert panel.import_labels(tmp_path / "in.json").per_category == {"cell": 1, "nucleus": 1}
    combo = studio.category_panel.combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["object", "cell", "nucleus"]

    # a refused import: one message, nothing written
    tifffile.imwrite(labels_dir / "nowhere.tif", gray)
    before = s.project.total_objects()
    assert panel.import_labels(labels_dir) is None
    assert "nowhere.tif" in s.last_error and "matches no image" in s.last_error
    assert Project.open(s.project.root).total_objects() == before

    # switch category with K (bound on the viewer) and accept a new object: it takes the category
    assert SHORTCUTS["next_category"][0] == ("K",)
    c._actions()["next_category"]()
    assert combo.currentText() == "cell"
    s.show_image(0)
    qtbot.waitUntil(lambda: s.index == 0 and s.embedding_ready, timeout=30_000)
    assert prompt_until_mask(c) is not None
    obj = c.accept()
    assert obj is not None and s.project.category(obj.category).name == "cell"

    # the shown image's labels from a napari Labels layer, in the current category
    combo.setCurrentIndex(2)
    assert s.category_id == s.project.category_named("nucleus").id
    layer_data = np.zeros((80, 100), np.uint8)
    layer_data[70:78, 2:12] = 3
    layer = s.viewer.add_labels(layer_data, name="mine")
    assert panel.import_labels_layer(layer).per_category == {"nucleus": 1}
    assert (s.layers.objects.data == 2).sum() == 80  # shown at once

    # Shift+K gives an existing object the current category (saved at once); U undoes it
    assert SHORTCUTS["set_category"][0] == ("Shift-K",)
    assert c.set_object_category(obj.id)
    nucleus = s.project.category_named("nucleus").id
    assert Project.open(s.project.root).annotations(s.key).objects[obj.id].category == nucleus
    assert "now 'nucleus'" in str(s.viewer.status)
    assert not c.set_object_category(obj.id)  # already nucleus: nothing recorded
    c.undo()
    assert Project.open(s.project.root).annotations(s.key).objects[obj.id].category == obj.category

    # colour by category
    from napari.utils.colormaps import DirectLabelColormap

    studio.category_panel.color_check.setChecked(True)
    assert isinstance(s.layers.objects.colormap, DirectLabelColormap)

    # export COCO: every object with its category
    out = json.loads(studio.export_panel.export_coco(tmp_path / "out.json").read_text())
    cat_names = {cat["id"]: cat["name"] for cat in out["categories"]}
    assert sorted(cat_names.values()) == ["cell", "nucleus", "object"]
    got = sorted(cat_names[ann["category_id"]] for ann in out["annotations"])
    assert got == ["cell", "cell", "nucleus", "nucleus", "object", "object"]
    by_file = {im["id"]: im["file_name"] for im in out["images"]}
    rgb_masks = {
        cat_names[ann["category_id"]]: decode_rle(ann["segmentation"])
        for ann in out["annotations"]
        if by_file[ann["image_id"]] == "rgb.png"
    }
    np.testing.assert_array_equal(rgb_masks["cell"], a)
    np.testing.assert_array_equal(rgb_masks["nucleus"], b)
    # and the label images per category
    paths = studio.export_panel.export_masks(tmp_path / "per", fmt="tif", layout="semantic")
    assert len(paths) == 3
