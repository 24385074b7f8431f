"""Objects in 3D in a project (issue 27): one id through the slices, prompts kept, all-or-nothing saves,
undo, correction from one slice, export with the stack's shape, and Adapt's training samples from slices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ProjectError
from infosam_core.annotation.stack_objects import StackEdits, StackObjects, corrected_mask
from infosam_core.annotation.training_samples import build_samples, snapshot_objects
from infosam_core.data.synthetic_stacks import ellipsoid_stack
from infosam_core.io.stacks import read_label_stack


@pytest.fixture
def project_with_stack(tmp_path):
    data = ellipsoid_stack(seed=3, shape=(6, 128, 128), n_objects=1)
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, data.image, metadata={"axes": "ZYX"})
    project = Project.create(tmp_path / "proj")
    stacks = StackObjects(project)
    entry = stacks.add_stack(path)
    return project, stacks, entry, data


def test_stack_is_registered_once_and_reopened(project_with_stack, tmp_path):
    project, stacks, entry, data = project_with_stack
    assert stacks.add_stack(tmp_path / "vol.tif") == entry
    assert (entry.axes, entry.shape) == ("ZYX", [6, 128, 128])
    again = StackObjects(Project.open(project.root))
    assert [e.key for e in again.entries()] == [entry.key]
    np.testing.assert_array_equal(again.open_stack(entry.key).plane(2), data.image[2])


def test_accept_correct_undo_delete_export(project_with_stack, tmp_path):
    project, stacks, entry, data = project_with_stack
    edits = StackEdits(stacks, entry.key)
    mask = data.labels == 1
    obj = edits.accept(mask, {3: {"box": data.box(1, 3).tolist()}}, model="tiny")
    ann = stacks.annotations(entry.key)
    assert obj.id == 1 and ann.objects[1].slices == [
        int(np.flatnonzero(mask.any((1, 2)))[0]),
        int(np.flatnonzero(mask.any((1, 2)))[-1]),
    ]
    np.testing.assert_array_equal(ann.labels == 1, mask)
    # reopened from disk: same labels and prompts
    reread = StackObjects(Project.open(project.root)).annotations(entry.key)
    assert reread.objects[1].prompts == {3: {"box": data.box(1, 3).tolist()}}
    np.testing.assert_array_equal(reread.labels, ann.labels)

    # correct slice 4 forward: slices >= 4 replaced, the rest kept
    new = np.zeros_like(mask)
    new[4:, 10:20, 10:20] = True
    edits.correct(1, 4, new, {"points": [[15, 15]], "labels": [1]}, direction="forward")
    ann = stacks.annotations(entry.key)
    np.testing.assert_array_equal(ann.labels[:4] == 1, mask[:4])
    np.testing.assert_array_equal(ann.labels[4:] == 1, new[4:])
    assert set(ann.objects[1].prompts) == {3, 4}
    assert edits.undo() == "correct object 1"
    np.testing.assert_array_equal(stacks.annotations(entry.key).labels == 1, mask)
    assert set(stacks.annotations(entry.key).objects[1].prompts) == {3}

    edits.delete(1)
    assert not stacks.annotations(entry.key).objects
    assert edits.undo() == "delete object 1"
    np.testing.assert_array_equal(stacks.annotations(entry.key).labels == 1, mask)

    out = stacks.export_labels(entry.key, tmp_path / "export.zarr")
    assert read_label_stack(out).shape == (6, 128, 128)
    assert edits.undo() == "accept object 1" and not stacks.annotations(entry.key).objects
    assert edits.undo() is None
    folder = stacks.folder(entry.key)
    assert len([p for p in folder.iterdir() if p.name.startswith("labels-")]) == 1  # older volumes removed


def test_a_second_object_keeps_the_first_ones_voxels(project_with_stack):
    _, stacks, entry, data = project_with_stack
    mask = data.labels == 1
    stacks.add_object(entry.key, mask, {})
    with pytest.raises(ProjectError, match="lies on objects already accepted"):
        stacks.add_object(entry.key, mask, {})
    with pytest.raises(ProjectError, match="is \\(6, 128, 128\\), got"):
        stacks.add_object(entry.key, mask[:3], {})
    grown = np.zeros_like(mask)
    grown[:, :5, :5] = True
    second = stacks.add_object(entry.key, grown | mask, {})
    labels = stacks.annotations(entry.key).labels
    assert second.id == 2 and (labels[mask] == 1).all() and (labels[grown & ~mask] == 2).all()


def test_a_failed_save_leaves_the_previous_state(project_with_stack, monkeypatch):
    _, stacks, entry, data = project_with_stack
    stacks.add_object(entry.key, data.labels == 1, {})
    import infosam_core.annotation.stack_objects as module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "write_json_atomic", broken)
    with pytest.raises(OSError):
        stacks.remove_object(entry.key, 1)
    monkeypatch.undo()
    assert 1 in stacks.annotations(entry.key).objects  # objects.json still names the old volume


def test_damaged_files_are_refused_with_their_name(project_with_stack):
    project, stacks, entry, data = project_with_stack
    stacks.add_object(entry.key, data.labels == 1, {})
    meta_path = stacks.folder(entry.key) / "objects.json"
    meta = json.loads(meta_path.read_text())
    meta["labels_file"] = "../../evil.tif"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProjectError, match="labels_file"):
        stacks.annotations(entry.key)
    manifest = project.root / "stacks.json"
    manifest.write_text(json.dumps({"stacks": [{**entry.to_dict(), "key": "../x"}]}))
    with pytest.raises(ProjectError, match="plain folder name"):
        stacks.entries()


def test_corrected_mask_sides():
    old = np.ones((5, 2, 2), bool)
    new = np.zeros((5, 2, 2), bool)
    assert corrected_mask(old, new, 2, "backward").reshape(5, -1).any(1).tolist() == [False, False, False, True, True]
    assert not corrected_mask(old, new, 2).any()
    with pytest.raises(ValueError, match="direction"):
        corrected_mask(old, new, 2, "up")


def test_adapt_learns_from_the_objects_slices(project_with_stack):
    project, stacks, entry, data = project_with_stack
    mask = data.labels == 1
    stacks.add_object(entry.key, mask, {})
    sources = snapshot_objects(project)
    planes = np.flatnonzero(mask.any((1, 2)))
    assert [s.plane for s in sources] == planes.tolist()
    samples = build_samples(sources)
    assert len(samples) == len(planes)
    for sample, z in zip(samples, planes, strict=True):
        assert sample.image.shape == (128, 128, 3)
        np.testing.assert_array_equal(sample.mask, mask[z])
        np.testing.assert_array_equal(sample.image[..., 0], data.image[z])


def test_infosam_export_writes_each_stacks_label_volume(project_with_stack, tmp_path, capsys):
    from infosam_core.cli import main

    project, stacks, entry, data = project_with_stack
    stacks.add_object(entry.key, data.labels == 1, {})
    assert main(["export", str(project.root), "--out", str(tmp_path / "out")]) == 0
    volume = read_label_stack(tmp_path / "out" / "vol_labels.tif")
    np.testing.assert_array_equal(volume > 0, data.labels == 1)
    assert "1 3D label volume (stacks)" in capsys.readouterr().out
