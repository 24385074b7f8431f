"""The annotation project store: persistence, reopening, and crash safety (no Qt)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from infosam_core.annotation.project import Project, ProjectError, default_projects_dir, find_images
from infosam_core.annotation.records import ImageAnnotations, ObjectPrompts
from infosam_core.io import atomic


def _write_images(folder, n=3, shape=(40, 50)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.tif"
        tifffile.imwrite(p, rng.integers(0, 65535, shape, dtype=np.uint16))
        paths.append(p)
    return paths


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_create_add_accept_reopen(tmp_path):
    imgs = _write_images(tmp_path / "data")
    project = Project.create(tmp_path / "proj", name="demo")
    entries = project.add_images([tmp_path / "data"])
    assert [e.name for e in entries] == ["img0.tif", "img1.tif", "img2.tif"]
    assert project.add_images([imgs[0]]) == [entries[0]]  # same content: not added twice
    assert len(project.images) == 3

    p1 = ObjectPrompts(points=[[10.0, 12.0, 1], [30.0, 5.0, 0]], box=None, candidate=2)
    o1 = project.add_object(entries[0].key, _disk((40, 50), 12, 10, 6), p1, model="tiny")
    p2 = ObjectPrompts(points=[], box=[25.0, 20.0, 45.0, 38.0])
    o2 = project.add_object(entries[0].key, _disk((40, 50), 30, 35, 5), p2)
    o3 = project.add_object(entries[2].key, _disk((40, 50), 20, 20, 8), p1)
    assert (o1.id, o2.id, o3.id) == (1, 2, 1)
    assert project.object_counts() == {entries[0].key: 2, entries[1].key: 0, entries[2].key: 1}

    again = Project.open(tmp_path / "proj")
    assert again.name == "demo"
    assert [e.key for e in again.images] == [e.key for e in entries]
    assert again.object_counts() == project.object_counts()
    ann = again.annotations(entries[0].key)
    np.testing.assert_array_equal(ann.labels, project.annotations(entries[0].key).labels)
    assert ann.objects[1].prompts == p1 and ann.objects[2].prompts == p2
    assert ann.objects[1].model == "tiny"
    assert ann.objects[2].bbox == o2.bbox
    meta = json.loads((again.annotation_dir(entries[0].key) / "objects.json").read_text())
    assert meta["image"]["sha256"] == entries[0].sha256 and meta["image"]["path"] == str(imgs[0].resolve())
    assert len(list(again.annotation_dir(entries[0].key).glob("labels-*.tif"))) == 1  # old revisions removed


def test_new_object_keeps_existing_pixels_and_refine_replaces(tmp_path):
    _write_images(tmp_path / "data", n=1)
    project = Project.create(tmp_path / "proj")
    (e,) = project.add_images([tmp_path / "data"])
    a = _disk((40, 50), 20, 20, 8)
    project.add_object(e.key, a, ObjectPrompts(points=[[20, 20, 1]]))
    b = _disk((40, 50), 20, 26, 8)
    ob = project.add_object(e.key, b, ObjectPrompts(points=[[26, 20, 1]]))
    labels = project.annotations(e.key).labels
    assert (labels[a] == 1).all() and ob.area == int((b & ~a).sum())
    # refine object 1 into a small disk: its old pixels go, the id stays, object 2 is untouched
    small = _disk((40, 50), 10, 10, 3)
    r = project.add_object(e.key, small, ObjectPrompts(points=[[10, 10, 1]]), replace_id=1)
    labels = project.annotations(e.key).labels
    assert r.id == 1 and (labels == 1).sum() == small.sum()
    assert ((labels == 2) == (b & ~a)).all()
    with pytest.raises(ProjectError, match="entirely on objects"):
        project.add_object(e.key, small, ObjectPrompts(points=[[10, 10, 1]]))
    removed = project.remove_object(e.key, 2)
    assert 2 not in project.annotations(e.key).objects and not (project.annotations(e.key).labels == 2).any()
    project.restore_object(e.key, removed, b & ~a)
    assert (Project.open(project.root).annotations(e.key).labels == 2).sum() == removed.area


def _project_with_one_object(tmp_path):
    """A project with one image and one accepted object: (project, image entry, label image)."""
    _write_images(tmp_path / "data", n=1)
    project = Project.create(tmp_path / "proj")
    (e,) = project.add_images([tmp_path / "data"])
    project.add_object(e.key, _disk((40, 50), 20, 20, 8), ObjectPrompts(points=[[20, 20, 1]]))
    return project, e, project.annotations(e.key).labels.copy()


def test_crash_while_writing_labels_keeps_previous_state(tmp_path, monkeypatch):
    project, e, before = _project_with_one_object(tmp_path)

    real_imwrite = tifffile.imwrite

    def crash_midway(path, data, **kw):  # half a file, then the process "dies"
        real_imwrite(path, data, **kw)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(tifffile, "imwrite", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        project.add_object(e.key, _disk((40, 50), 5, 40, 4), ObjectPrompts(points=[[40, 5, 1]]))
    monkeypatch.undo()
    # the in-memory state did not change, the files on disk are the previous ones, no temp file is left
    assert len(project.annotations(e.key).objects) == 1
    folder = project.annotation_dir(e.key)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    reopened = Project.open(project.root).annotations(e.key)
    assert list(reopened.objects) == [1]
    np.testing.assert_array_equal(reopened.labels, before)


def test_crash_between_labels_and_json_keeps_previous_state(tmp_path, monkeypatch):
    project, e, before = _project_with_one_object(tmp_path)
    real_replace = os.replace

    def die_on_json(src, dst):
        if str(dst).endswith("objects.json"):
            raise KeyboardInterrupt("killed before the commit")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", die_on_json)
    with pytest.raises(KeyboardInterrupt):
        project.add_object(e.key, _disk((40, 50), 5, 40, 4), ObjectPrompts(points=[[40, 5, 1]]))
    monkeypatch.undo()
    folder = project.annotation_dir(e.key)
    assert len(list(folder.glob("labels-*.tif"))) == 2  # the new, uncommitted one is an orphan
    reopened = Project.open(project.root).annotations(e.key)
    assert list(reopened.objects) == [1]
    np.testing.assert_array_equal(reopened.labels, before)
    assert len(list(folder.glob("labels-*.tif"))) == 1  # orphan cleaned on open


def test_errors_and_defaults(tmp_path):
    with pytest.raises(ProjectError, match="not a project folder"):
        Project.open(tmp_path)
    project = Project.open_or_create(tmp_path / "p")
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(tmp_path / "p")
    assert Project.open_or_create(tmp_path / "p").root == project.root
    with pytest.raises(ProjectError, match="no such file"):
        find_images([tmp_path / "missing.png"])
    d = default_projects_dir()
    assert d.is_absolute() and "infosam-studio" in str(d) and d != tmp_path
    _write_images(tmp_path / "data", n=1)
    (e,) = project.add_images([tmp_path / "data"])
    ann = project.annotations(e.key)
    assert isinstance(ann, ImageAnnotations) and ann.labels.shape == (40, 50)  # the size is known when added
    with pytest.raises(ProjectError, match="empty"):
        project.add_object(e.key, np.zeros((40, 50), bool), ObjectPrompts(points=[[1, 1, 1]]))
    with pytest.raises(ProjectError, match="changed since"):
        project.add_object(e.key, np.ones((10, 10), bool), ObjectPrompts(points=[[1, 1, 1]]))


def test_moved_project_finds_images_by_relative_path(tmp_path):
    root = tmp_path / "a"
    _write_images(root / "data", n=1)
    project = Project.create(root / "proj")
    (e,) = project.add_images([root / "data"])
    (tmp_path / "a").rename(tmp_path / "b")
    moved = Project.open(tmp_path / "b" / "proj")
    assert moved.image_path(e.key) == (tmp_path / "b" / "data" / "img0.tif").resolve()


_WRITER = r"""
import sys, numpy as np
from infosam_core.annotation.project import Project, ObjectPrompts
project = Project.open(sys.argv[1])
key = project.images[0].key
for i in range(10_000):
    mask = np.zeros((40, 50), bool)
    mask[i % 40, (i // 40) % 50] = True
    obj = project.add_object(key, mask, ObjectPrompts(points=[[float(i % 50), float(i % 40), 1]]))
    print(obj.id, flush=True)
"""


def test_killed_process_loses_no_accepted_object(tmp_path):
    """SIGKILL while objects are being accepted: every object whose accept returned is on disk."""
    import signal
    import subprocess
    import sys
    import time

    _write_images(tmp_path / "data", n=1)
    project = Project.create(tmp_path / "proj")
    project.add_images([tmp_path / "data"])
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(project.root)], stdout=subprocess.PIPE, text=True)
    reported = []
    deadline = time.monotonic() + 60
    while len(reported) < 15 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported.append(int(line))
    time.sleep(0.05)  # kill it somewhere in the middle of a later save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reported += [int(x) for x in proc.stdout.read().split()]
    assert len(reported) >= 15
    ann = Project.open(project.root).annotations(project.images[0].key)
    assert set(reported) <= set(ann.objects)  # nothing acknowledged is lost ...
    assert set(ann.objects) <= set(reported) | {max(reported) + 1}  # ... and at most the one in flight is extra
    for oid in ann.objects:  # the label image agrees with the records
        assert (ann.labels == oid).sum() == ann.objects[oid].area


def test_ui_state_is_optional_and_survives_garbage(tmp_path):
    project = Project.create(tmp_path / "p")
    assert project.ui_state() == {}
    project.save_ui_state(current="abc")
    assert Project.open(project.root).ui_state() == {"current": "abc"}
    project.ui_state_path.write_text("{not json")
    assert project.ui_state() == {}
    project.save_ui_state(current="def")
    assert project.ui_state() == {"current": "def"}


# ----------------------------------------------------------------------------------------------- issue 30
def _mixed_files(folder):
    """A good PNG, a text file named .jpg, a truncated JPEG, a PNG over a (lowered) pixel limit, a .txt."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    iio.imwrite(folder / "good.png", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    (folder / "fake.jpg").write_text("not an image\n")
    iio.imwrite(folder / "whole.jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    iio.imwrite(folder / "huge.png", np.zeros((200, 200), np.uint8))
    (folder / "notes.txt").write_text("notes\n")
    return folder


def test_add_images_refuses_unreadable_files_with_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOSAM_MAX_PIXELS", "10000")  # huge.png (40000 px) is over it, good.png (1200) is not
    folder = _mixed_files(tmp_path / "data")
    project = Project.create(tmp_path / "proj")
    names = ["good.png", "fake.jpg", "truncated.jpg", "huge.png", "notes.txt"]
    added = project.add_images([folder / n for n in names])
    assert [e.name for e in added] == ["good.png"]
    assert [e.name for e in project.images] == ["good.png"]
    assert project.images[0].shape == [30, 40]  # known from the check
    reasons = {r.path.name: r.reason for r in added.refused}
    assert set(reasons) == {"fake.jpg", "truncated.jpg", "huge.png", "notes.txt"}
    assert "not a readable image" in reasons["fake.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "megapixels" in reasons["huge.png"] and "INFOSAM_MAX_PIXELS" in reasons["huge.png"]
    assert "not a supported image file type" in reasons["notes.txt"]
    assert [e.name for e in Project.open(project.root).images] == ["good.png"]
    # a folder: only image suffixes are looked at, the bad ones are refused, nothing is added twice
    again = project.add_images([folder])
    assert [e.name for e in again] == ["good.png"] and len(project.images) == 1
    assert {r.path.name for r in again.refused} == {"fake.jpg", "truncated.jpg", "huge.png"}


def _project_with_objects_and_cache(tmp_path):
    import imageio.v3 as iio

    from infosam_core.annotation.project import rgb_pixels_hash
    from infosam_core.io.images import load_rgb

    tmp_path.joinpath("data").mkdir()
    rng = np.random.default_rng(2)
    paths = []
    for i in range(2):
        paths.append(tmp_path / "data" / f"im{i}.png")
        iio.imwrite(paths[-1], rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    project = Project.create(tmp_path / "proj")
    a, b = project.add_images(paths)
    for e in (a, b):
        project.add_object(e.key, _disk((40, 50), 20, 20, 6), ObjectPrompts(points=[[20, 20, 1]]))
    cache = project.root / "cache" / "embeddings"
    cache.mkdir(parents=True)
    files = {}
    for e, p in zip((a, b), paths):
        files[e.key] = cache / f"{rgb_pixels_hash(load_rgb(p))}-abcdef0123456789.safetensors"
        files[e.key].write_bytes(b"x")
    return project, a, b, files


def test_rgb_pixels_hash_is_the_embedding_cache_key():
    from infosam_core.annotation.project import rgb_pixels_hash
    from infosam_core.inference.embedding_cache import image_hash

    rgb = np.random.default_rng(3).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    assert rgb_pixels_hash(rgb) == image_hash(rgb)


def test_remove_image_takes_its_objects_and_cached_embeddings(tmp_path):
    project, a, b, files = _project_with_objects_and_cache(tmp_path)
    removed = project.remove_image(a.key)
    assert removed.key == a.key
    assert [e.key for e in project.images] == [b.key]
    assert not project.annotation_dir(a.key).exists() and not files[a.key].exists()
    assert files[b.key].exists() and project.object_count(b.key) == 1
    assert not (project.root / ".infosam-batch.json").exists()
    reopened = Project.open(project.root)
    assert [e.key for e in reopened.images] == [b.key] and reopened.total_objects() == 1
    with pytest.raises(KeyError):
        reopened.remove_image(a.key)
    # adding the image again starts clean: none of its old objects come back
    (again,) = reopened.add_images([tmp_path / "data" / "im0.png"])
    assert again.key == a.key and reopened.object_count(again.key) == 0


@pytest.mark.parametrize("die_at", ["before_journal", "after_journal"])
def test_crash_during_remove_image_leaves_old_or_new_state(tmp_path, monkeypatch, die_at):
    project, a, b, files = _project_with_objects_and_cache(tmp_path)
    real_replace = os.replace

    def die(src, dst):
        name = os.path.basename(str(dst))
        if die_at == "before_journal" and name == ".infosam-batch.json":
            raise KeyboardInterrupt("killed before the commit")
        if die_at == "after_journal" and name == "project.json" and str(src).endswith(".pending"):
            raise KeyboardInterrupt("killed after the commit")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        project.remove_image(a.key)
    monkeypatch.undo()
    reopened = Project.open(project.root)
    if die_at == "before_journal":  # the old state, whole
        assert [e.key for e in reopened.images] == [a.key, b.key]
        assert reopened.object_count(a.key) == 1 and files[a.key].exists()
        assert not (project.root / "project.json.pending").exists()
    else:  # the new state, finished by the open
        assert [e.key for e in reopened.images] == [b.key]
        assert not reopened.annotation_dir(a.key).exists() and not files[a.key].exists()
    assert reopened.object_count(b.key) == 1 and files[b.key].exists()
    assert not (project.root / ".infosam-batch.json").exists()


_REMOVER = r"""
import sys
from infosam_core.annotation.project import Project
project = Project.open(sys.argv[1])
for entry in list(project.images):
    project.remove_image(entry.key)
    print(entry.key, flush=True)
"""


def test_killed_process_during_remove_image_leaves_a_consistent_project(tmp_path):
    """SIGKILL while images with objects are being removed: each image is wholly there or wholly gone."""
    import signal
    import subprocess
    import sys
    import time

    paths = _write_images(tmp_path / "data", n=12)
    project = Project.create(tmp_path / "proj")
    entries = project.add_images(paths)
    for e in entries:
        project.add_object(e.key, _disk((40, 50), 20, 20, 5), ObjectPrompts(points=[[20, 20, 1]]))
    proc = subprocess.Popen([sys.executable, "-c", _REMOVER, str(project.root)], stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline().strip()
    time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reported = [first] + proc.stdout.read().split()
    reopened = Project.open(project.root)
    left = {e.key for e in reopened.images}
    assert not left & set(reported)  # every reported removal is done
    assert len(left) >= len(entries) - len(reported) - 1  # at most the one in flight besides
    for e in entries:
        folder = reopened.annotation_dir(e.key)
        if e.key in left:
            assert reopened.object_count(e.key) == 1 and (folder / "objects.json").is_file()
        else:
            assert not folder.exists()
    assert not (project.root / ".infosam-batch.json").exists()


def test_export_and_training_samples_skip_an_unreadable_image(tmp_path):
    from infosam_core.annotation.export import ExportError, export_label_images, project_to_coco
    from infosam_core.annotation.training_samples import build_samples, snapshot_objects

    project, a, b, _files = _project_with_objects_and_cache(tmp_path)
    (tmp_path / "data" / "im0.png").write_text("not an image any more\n")
    skipped: list[str] = []
    samples = build_samples(snapshot_objects(project), on_skip=skipped.append)
    assert len(samples) == 1 and len(skipped) == 1 and "im0.png" in skipped[0]
    with pytest.raises(ValueError):
        build_samples(snapshot_objects(project))
    # an image without objects and of unknown size that cannot be read: skipped by exports, named
    project.remove_object(a.key, 1)
    project.entry(a.key).shape = None
    project._annotations.pop(a.key)
    project.annotations(a.key).labels = None
    skipped = []
    written = export_label_images(project, tmp_path / "out", skipped=skipped)
    assert [p.name for p in written] == ["im1_labels.tif"] and "im0.png" in skipped[0]
    coco_skipped: list[str] = []
    coco = project_to_coco(project, only_annotated=False, skipped=coco_skipped)
    assert [im["file_name"] for im in coco["images"]] == ["im1.png"] and coco_skipped
    with pytest.raises(ExportError):
        export_label_images(project, tmp_path / "out2")
