"""Exports: label TIFF/PNG per image and COCO RLE JSON round-trip (no Qt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from infosam_core.annotation.export import (
    ExportError,
    coco_from_label_images,
    coco_to_label_images,
    export_coco,
    export_label_images,
    read_label_image,
    write_label_image,
)
from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ObjectPrompts


@pytest.fixture
def project(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        tifffile.imwrite(data / f"im{i}.tif", np.full((30, 40), i, np.uint8))
    project = Project.create(tmp_path / "proj")
    entries = project.add_images([data])
    m1 = np.zeros((30, 40), bool)
    m1[2:10, 3:15] = True
    m2 = np.zeros((30, 40), bool)
    m2[15:28, 20:39] = True
    project.add_object(entries[0].key, m1, ObjectPrompts(points=[[8, 5, 1]]))
    project.add_object(entries[0].key, m2, ObjectPrompts(box=[20, 15, 39, 28]))
    project.add_object(entries[1].key, m2, ObjectPrompts(points=[[30, 20, 1]]))
    project.set_shape(entries[2].key, (30, 40))
    return project


@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_label_images_round_trip(project, tmp_path, fmt):
    paths = export_label_images(project, tmp_path / "out", fmt=fmt)
    assert [p.name for p in paths] == [f"im{i}_labels.{fmt}" for i in range(3)]
    for entry, path in zip(project.images, paths):
        np.testing.assert_array_equal(read_label_image(path), project.annotations(entry.key).labels)
    only = export_label_images(project, tmp_path / "out2", fmt=fmt, only_annotated=True)
    assert len(only) == 2


def test_png_refuses_more_than_16_bits(tmp_path):
    with pytest.raises(ExportError, match="TIFF"):
        write_label_image(tmp_path / "x.png", np.full((4, 4), 70000, np.uint32))
    write_label_image(tmp_path / "x.tif", np.full((4, 4), 70000, np.uint32))
    assert read_label_image(tmp_path / "x.tif").max() == 70000
    with pytest.raises(ExportError, match="unknown label format"):
        export_label_images(Project.create(tmp_path / "p"), tmp_path / "o", fmt="bmp")


def test_coco_round_trip(project, tmp_path):
    path = export_coco(project, tmp_path / "coco.json")
    coco = json.loads(path.read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 3
    a = coco["annotations"][0]
    assert a["bbox"] == [3.0, 2.0, 12.0, 8.0] and a["area"] == 96 and a["iscrowd"] == 0
    assert a["attributes"]["prompts"]["points"] == [[8.0, 5.0, 1]]
    rebuilt = coco_to_label_images(path)
    for entry in project.images[:2]:
        np.testing.assert_array_equal(rebuilt[entry.name], project.annotations(entry.key).labels)
    # the pycocotools reader accepts the file
    from pycocotools.coco import COCO

    c = COCO(str(path))
    assert len(c.getAnnIds()) == 3
    assert c.annToMask(c.loadAnns([1])[0]).sum() == 96


def test_coco_from_arrays():
    labels = np.zeros((5, 6), np.uint16)
    labels[1:3, 1:4] = 7
    coco = coco_from_label_images([("a.png", labels, None)])
    assert coco["annotations"][0]["attributes"]["label"] == 7
    np.testing.assert_array_equal(coco_to_label_images(coco)["a.png"], labels)
