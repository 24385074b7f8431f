"""Importing annotations into a project (label images, binary masks, COCO, arrays) and categories through the
project files and exports (no Qt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from infosam_core.annotation.export import (
    decode_rle,
    encode_rle,
    export_coco,
    export_label_images,
    read_label_image,
)
from infosam_core.annotation.importing import LabelImportError, import_label_array, import_labels
from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ObjectPrompts
from infosam_core.annotation.training_samples import build_samples, snapshot_objects
from infosam_core.cli import main

SHAPES = {"a": (40, 50), "b": (36, 36), "c": (30, 44)}


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, shape in SHAPES.items():
        iio.imwrite(folder / f"{stem}.png", rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    return folder


def _label_image(shape, seed: int) -> np.ndarray:
    """Non-consecutive ids, touching objects, one large id."""
    labels = np.zeros(shape, np.int32)
    labels[2:10, 3:15] = 7
    labels[10:20, 3:15] = 3  # touches 7
    labels[shape[0] - 8 : shape[0] - 2, 20:30] = 40000 + seed
    labels[12, 25] = 2  # a one-pixel object
    return labels


def _label_folder(folder: Path) -> dict[str, np.ndarray]:
    """a_labels.tif (int32), b.tif (uint16), c_masks.png (uint16): three naming forms of the rule."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (stem, shape) in enumerate(SHAPES.items()):
        labels = _label_image(shape, i)
        out[stem] = labels
    tifffile.imwrite(folder / "a_labels.tif", out["a"])
    tifffile.imwrite(folder / "b.tif", out["b"].astype(np.uint16))
    iio.imwrite(folder / "c_masks.png", out["c"].astype(np.uint16))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_label_images_import_and_export_pixel_identical(tmp_path):
    images = _images(tmp_path / "images")
    truth = _label_folder(tmp_path / "labels")
    project = Project.create(tmp_path / "p")
    summary = import_labels(project, images, tmp_path / "labels")
    assert (summary.images, summary.objects) == (3, 12)
    assert summary.per_category == {"object": 12}
    reopened = Project.open(tmp_path / "p")
    paths = export_label_images(reopened, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]
    for path in paths:
        np.testing.assert_array_equal(read_label_image(path), truth[path.name.split("_")[0]])
    # every object is a normal object: its box is its prompt, it has its area, Adapt can use it
    ann = reopened.annotations(reopened.images[0].key)
    obj = ann.objects[7]
    assert obj.prompts.box == [3.0, 2.0, 14.0, 9.0] and obj.bbox == [3, 2, 15, 10] and obj.area == 96
    assert obj.category == 1 and obj.model == "import"
    samples = build_samples(snapshot_objects(reopened))
    assert len(samples) == 12 and all(s.mask.any() for s in samples)
    # and editable: removing one works and is saved
    reopened.remove_object(reopened.images[0].key, 3)
    assert 3 not in Project.open(tmp_path / "p").annotations(reopened.images[0].key).objects


def test_import_into_annotated_image_numbers_after_and_never_paints_over(tmp_path):
    images = _images(tmp_path / "images")
    project = Project.create(tmp_path / "p")
    key = project.add_images([images / "a.png"])[0].key
    mine = np.zeros(SHAPES["a"], bool)
    mine[0:5, 0:5] = True
    project.add_object(key, mine, ObjectPrompts(points=[[2, 2, 1]]))
    labels = np.zeros(SHAPES["a"], np.uint8)
    labels[3:8, 3:8] = 5  # partly on object 1
    import_label_array(project, images / "a.png", labels, category="cell", source="layer")
    ann = Project.open(tmp_path / "p").annotations(key)
    assert sorted(ann.objects) == [1, 2]
    assert (ann.labels == 1).sum() == 25 and (ann.labels == 2).sum() == 25 - 4
    assert Project.open(tmp_path / "p").category(ann.objects[2].category).name == "cell"


def test_binary_masks_components_and_one_object_per_file(tmp_path):
    images = _images(tmp_path / "images")
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros(SHAPES["a"], np.uint8)
    m[1:5, 1:5] = 255
    m[5:9, 5:9] = 255  # touches diagonally: one 8-connected component
    m[20:30, 20:30] = 255
    iio.imwrite(masks / "a_mask.png", m)
    project = Project.create(tmp_path / "p")
    assert import_labels(project, images, masks).objects == 2
    per_file = tmp_path / "per_file"
    (per_file / "b").mkdir(parents=True)
    for i in range(3):
        one = np.zeros(SHAPES["b"], np.uint8)
        one[i * 10 : i * 10 + 5, 2:30] = 1
        iio.imwrite(per_file / "b" / f"cell{i}.png", one)
    assert import_labels(project, images, per_file, category="cell").per_category == {"cell": 3}


def _coco(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """Two images, two categories; compressed RLE, uncompressed RLE and a polygon."""
    from pycocotools import mask as mask_utils

    masks: dict[str, list[np.ndarray]] = {"a.png": [], "b.png": []}
    anns = []

    def add(image_id, file_name, mask, category_id, seg):
        masks[file_name].append(mask)
        anns.append(
            {"id": len(anns) + 1, "image_id": image_id, "category_id": category_id, "segmentation": seg, "iscrowd": 0}
        )

    h, w = SHAPES["a"]
    m = np.zeros((h, w), bool)
    m[2:12, 4:20] = True
    add(1, "a.png", m, 1, encode_rle(m))
    m2 = np.zeros((h, w), bool)
    m2[20:35, 10:40] = True
    m2[25:30, 20:25] = False  # a hole
    rle = mask_utils.encode(np.asfortranarray(m2.astype(np.uint8)))
    counts = []  # uncompressed: runs over the column-major pixels
    flat = m2.flatten(order="F").astype(np.uint8)
    value, run = 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    assert decode_rle({"size": [h, w], "counts": rle["counts"].decode()}).sum() == m2.sum()
    add(1, "a.png", m2, 2, {"size": [h, w], "counts": counts})
    poly = [5.0, 5.0, 25.0, 5.0, 25.0, 25.0, 5.0, 25.0]
    hb, wb = SHAPES["b"]
    pm = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], hb, wb))).astype(bool)
    add(2, "b.png", pm, 2, [poly])
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": h, "width": w},
            {"id": 2, "file_name": "some/dir/b.png", "height": hb, "width": wb},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    return path, masks


def test_coco_two_categories_round_trip(tmp_path):
    images = _images(tmp_path / "images")
    coco_path, masks = _coco(tmp_path)
    project = Project.create(tmp_path / "p")
    summary = import_labels(project, images, coco_path)
    assert summary.per_category == {"cell": 1, "nucleus": 2}
    assert [c.name for c in Project.open(tmp_path / "p").categories] == ["object", "cell", "nucleus"]
    out = json.loads(export_coco(Project.open(tmp_path / "p"), tmp_path / "out.json").read_text())
    names = {c["id"]: c["name"] for c in out["categories"]}
    assert set(names.values()) == {"object", "cell", "nucleus"}
    by_image = {im["id"]: im["file_name"] for im in out["images"]}
    exported: dict[str, list[tuple[str, np.ndarray]]] = {}
    for ann in out["annotations"]:
        exported.setdefault(by_image[ann["image_id"]], []).append(
            (names[ann["category_id"]], decode_rle(ann["segmentation"]))
        )
    assert len(out["annotations"]) == 3
    expected = {
        "a.png": [("cell", masks["a.png"][0]), ("nucleus", masks["a.png"][1])],
        "b.png": [("nucleus", masks["b.png"][0])],
    }
    for name, items in expected.items():
        assert len(exported[name]) == len(items)
        for (cat, mask), (cat_out, mask_out) in zip(items, exported[name]):
            assert cat == cat_out
            np.testing.assert_array_equal(mask, mask_out)
    # re-importing our own export into a fresh project keeps ids, categories and masks
    project2 = Project.create(tmp_path / "p2")
    import_labels(project2, images, tmp_path / "out.json")
    for e1, e2 in zip(Project.open(tmp_path / "p").images, project2.images):
        np.testing.assert_array_equal(
            Project.open(tmp_path / "p").annotations(e1.key).labels, project2.annotations(e2.key).labels
        )


def test_category_layouts_of_label_export(tmp_path):
    images = _images(tmp_path / "images")
    coco_path, masks = _coco(tmp_path)
    project = Project.create(tmp_path / "p")
    import_labels(project, images, coco_path)
    per = export_label_images(project, tmp_path / "per", layout="per_category")
    names = sorted(p.name for p in per)
    assert "a_cell_labels.tif" in names and "a_nucleus_labels.tif" in names and "b_object_labels.tif" in names
    cell = read_label_image(tmp_path / "per" / "a_cell_labels.tif")
    np.testing.assert_array_equal(cell != 0, masks["a.png"][0])
    semantic = export_label_images(project, tmp_path / "sem", layout="semantic")
    sem = read_label_image(next(p for p in semantic if p.name == "a_semantic.tif"))
    assert set(np.unique(sem)) == {0, 2, 3}
    np.testing.assert_array_equal(sem == 3, masks["a.png"][1])


# ----------------------------------------------------------------------------------------------- refusals
def _bad_size(tmp_path, images):
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "a.tif", np.ones((10, 10), np.uint16))
    return tmp_path / "labels", "a.tif", "10x10 px but the image a.png is 50x40"


def _unknown_name(tmp_path, images):
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "b.tif", np.ones(SHAPES["b"], np.uint16))
    tifffile.imwrite(tmp_path / "labels" / "zebra_labels.tif", np.ones((5, 5), np.uint16))
    return tmp_path / "labels", "zebra_labels.tif", "matches no image"


def _empty_mask(tmp_path, images):
    (tmp_path / "m" / "a").mkdir(parents=True)
    iio.imwrite(tmp_path / "m" / "a" / "one.png", np.full(SHAPES["a"], 255, np.uint8))
    iio.imwrite(tmp_path / "m" / "a" / "two.png", np.zeros(SHAPES["a"], np.uint8))
    return tmp_path / "m", "two.png", "empty"


def _coco_variant(change):
    def make(tmp_path, images):
        path, _ = _coco(tmp_path)
        coco = json.loads(path.read_text())
        needle = change(coco)
        path.write_text(json.dumps(coco) if coco is not None else "{ not json")
        return path, "coco.json", needle

    return make


def _overlap(coco):
    coco["annotations"][1]["segmentation"] = coco["annotations"][0]["segmentation"]
    return "overlaps annotation id 1"


def _unknown_coco_image(coco):
    coco["images"][1]["file_name"] = "nowhere.png"
    return "'nowhere.png', which is not among the images"


def _coco_empty(coco):
    coco["annotations"][2]["segmentation"] = [[1, 1, 1, 1, 1, 1]]
    return "empty"


def _coco_category(coco):
    coco["annotations"][0]["category_id"] = 9
    return "category_id 9"


def _coco_size(coco):
    coco["images"][0]["height"] = 41
    return "50x41 px but the image a.png is 50x40"


def _coco_garbage(coco):
    coco["annotations"][0]["segmentation"] = {"size": [40, 50], "counts": "!!!"}
    return "malformed"


@pytest.mark.parametrize(
    "make",
    [
        _bad_size,
        _unknown_name,
        _empty_mask,
        _coco_variant(_overlap),
        _coco_variant(_unknown_coco_image),
        _coco_variant(_coco_empty),
        _coco_variant(_coco_category),
        _coco_variant(_coco_size),
        _coco_variant(_coco_garbage),
        _coco_variant(lambda coco: coco.clear() or "not a COCO file"),
    ],
    ids=[
        "size",
        "unknown-name",
        "empty-mask",
        "coco-overlap",
        "coco-unknown-image",
        "coco-empty",
        "coco-category",
        "coco-size",
        "coco-bad-rle",
        "coco-no-images",
    ],
)
def test_bad_labels_give_one_message_and_change_nothing(tmp_path, make, capsys):
    images = _images(tmp_path / "images")
    project = Project.create(tmp_path / "p")
    key = project.add_images([images / "b.png"])[0].key
    m = np.zeros(SHAPES["b"], bool)
    m[30:, 30:] = True
    project.add_object(key, m, ObjectPrompts(box=[30, 30, 35, 35]))
    before = _snapshot(tmp_path / "p")
    labels, file_name, needle = make(tmp_path, images)
    with pytest.raises(LabelImportError) as err:
        import_labels(Project.open(tmp_path / "p"), images, labels)
    message = str(err.value)
    assert file_name in message and needle in message, message
    assert "\n" not in message
    after = {k: v for k, v in _snapshot(tmp_path / "p").items() if not k.startswith(".infosam.lock")}
    assert after == {k: v for k, v in before.items() if not k.startswith(".infosam.lock")}
    # the command line says the same in one line, exit status 2
    rc = main(["import", str(tmp_path / "p"), "--images", str(images), "--labels", str(labels)])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err_lines) == 1 and needle in err_lines[0]


def test_cli_import_creates_the_project(tmp_path, capsys):
    images = _images(tmp_path / "images")
    _label_folder(tmp_path / "labels")
    rc = main(
        [
            "import",
            str(tmp_path / "new"),
            "--images",
            str(images),
            "--labels",
            str(tmp_path / "labels"),
            "--category",
            "cell",
        ]
    )
    assert rc == 0
    assert "imported 12 objects into 3 images (12 cell) (new project)" in capsys.readouterr().out
    project = Project.open(tmp_path / "new")
    assert [c.name for c in project.categories] == ["object", "cell"]
    assert project.total_objects() == 12


def test_cli_export_writes_the_imported_labels_back_pixel_identical(tmp_path, capsys):
    """`infosam import` then `infosam export` (issue 28: the project's labels from the command line)."""
    images = _images(tmp_path / "images")
    truth = _label_folder(tmp_path / "labels")
    assert main(["import", str(tmp_path / "p"), "--images", str(images), "--labels", str(tmp_path / "labels")]) == 0
    capsys.readouterr()
    rc = main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "out"), "--coco", str(tmp_path / "c.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "3 label images (instances)" in out and "12 objects in 1 categories" in out
    for name, labels in truth.items():
        np.testing.assert_array_equal(read_label_image(tmp_path / "out" / f"{name}_labels.tif"), labels)
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco["annotations"]) == 12 and [c["name"] for c in coco["categories"]] == ["object"]
    rc = main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "sem"), "--layout", "semantic"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "sem").iterdir())[0] == "a_semantic.tif"


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing to export"),
        (["--coco", "x.txt"], "give the path of a .json file"),
    ],
)
def test_cli_export_refuses_with_one_line(tmp_path, capsys, extra, message):
    Project.create(tmp_path / "p")
    assert main(["export", str(tmp_path / "p"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_export_of_a_missing_project_names_it(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere: not a project folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------- project files
def test_a_project_of_the_previous_format_loads_with_one_default_category(tmp_path):
    image = _images(tmp_path / "images") / "a.png"
    root = tmp_path / "old"
    (root / "annotations" / "k1").mkdir(parents=True)
    (root / "project.json").write_text(
        json.dumps(
            {
                "format": 1,
                "app": "infosam-studio",
                "name": "old",
                "created": "2025-01-01T00:00:00+00:00",
                "images": [
                    {
                        "key": "k1",
                        "path": str(image),
                        "relpath": None,
                        "sha256": "0" * 64,
                        "name": "a.png",
                        "shape": [40, 50],
                    }
                ],
                "settings": {},
            }
        )
    )
    labels = np.zeros(SHAPES["a"], np.uint16)
    labels[1:4, 1:4] = 1
    tifffile.imwrite(root / "annotations" / "k1" / "labels-000001.tif", labels)
    obj = {"id": 1, "prompts": {"points": [[2, 2, 1]], "box": None, "candidate": None}, "area": 9, "bbox": [1, 1, 4, 4]}
    (root / "annotations" / "k1" / "objects.json").write_text(
        json.dumps({"format": 1, "revision": 1, "labels_file": "labels-000001.tif", "objects": [obj]})
    )
    project = Project.open(root)
    assert [(c.id, c.name) for c in project.categories] == [(1, "object")]
    assert project.annotations("k1").objects[1].category == 1
    coco = json.loads(export_coco(project, tmp_path / "c.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["object"] and coco["annotations"][0]["category_id"] == 1
    # a new category is saved; the old objects keep theirs
    cell = project.add_category("cell")
    project.set_object_category("k1", 1, cell.id)
    again = Project.open(root)
    assert [c.name for c in again.categories] == ["object", "cell"] and again.annotations("k1").objects[1].category == 2
    with pytest.raises(Exception, match="no category with id 9"):
        again.add_object("k1", labels == 0, ObjectPrompts(), category=9)


# ----------------------------------------------------------------------------------------------- crash safety
class _Crash(BaseException):
    """Stands for the process dying at that instant."""


def _crash_at(monkeypatch, n: int) -> None:
    """Make the n-th call of os.replace / os.unlink die, as a kill -9 would."""
    calls = {"n": 0}
    real = {name: getattr(os, name) for name in ("replace", "unlink")}

    def make(name):
        def fake(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise _Crash(name)
            return real[name](*args, **kwargs)

        return fake

    for name in real:
        monkeypatch.setattr(os, name, make(name))


@pytest.mark.slow
def test_a_crash_at_any_rename_of_an_import_keeps_old_or_new(tmp_path, monkeypatch):
    images = _images(tmp_path / "images")
    _label_folder(tmp_path / "labels")
    Project.create(tmp_path / "p")
    n = 1
    while True:
        with monkeypatch.context() as m:
            _crash_at(m, n)
            try:
                import_labels(Project.open(tmp_path / "p"), images, tmp_path / "labels")
                crashed = False
            except _Crash:
                crashed = True
        project = Project.open(tmp_path / "p")
        total = project.total_objects()
        assert total in (0, 12), (n, total)
        assert len(project.images) in (0, 3)
        if total:
            assert len(project.images) == 3
            for e in project.images:
                assert sorted(project.annotations(e.key).objects) == sorted(
                    int(v) for v in np.unique(project.annotations(e.key).labels) if v
                )
            assert (
                not list((tmp_path / "p").rglob("*.pending")) and not (tmp_path / "p" / ".infosam-batch.json").exists()
            )
            # back to empty for the next crash point
            for e in project.images:
                for oid in list(project.annotations(e.key).objects):
                    project.remove_object(e.key, oid)
            project.images.clear()
            project.save_manifest()
        if not crashed:
            break
        n += 1
    assert n >= 5  # the import renamed label files, pending files, the journal and the commits


@pytest.mark.parametrize(
    "categories, message",
    [
        ("cells", "field 'categories' must be a list"),
        ([{"id": 1, "name": ""}], "categories[0].name"),
        ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "names the id 1 twice"),
        ([{"id": 1, "name": "a", "color": "red"}], "categories[0].color"),
        ([{"id": 0, "name": "a"}], "categories[0].id"),
    ],
)
def test_malformed_categories_name_the_file_and_field(tmp_path, categories, message):
    project = Project.create(tmp_path / "p")
    manifest = json.loads(project.manifest_path.read_text())
    manifest["categories"] = categories
    project.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="project.json") as err:
        Project.open(tmp_path / "p")
    assert message in str(err.value)
