"""Nothing lost, nothing escapes: shared projects, all-or-nothing saves, paths from files kept inside their
folder, limits and clear errors for bad input (issue 17)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from infosam_core.annotation import project as project_module
from infosam_core.annotation.export import ExportError, export_coco, export_label_images
from infosam_core.annotation.project import Project, ProjectBusyError, ProjectError
from infosam_core.annotation.records import ObjectPrompts
from infosam_core.io import atomic
from infosam_core.io.images import ImageError, read_image
from infosam_core.io.paths import UnsafePathError, resolve_inside

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _image(path: Path, shape=(32, 32), value=0) -> Path:
    iio.imwrite(path, np.full(shape, value, np.uint8))
    return path


def _bomb(path: Path, dtype=np.uint8, side: int = 20000) -> Path:
    """A small zlib TIFF that decodes to side x side pixels (written tile by tile, never held in memory)."""
    import tifffile

    tile = np.zeros((1024, 1024), dtype)
    n = (-(-side // 1024)) ** 2
    tifffile.imwrite(
        path, (tile for _ in range(n)), shape=(side, side), dtype=dtype, tile=(1024, 1024), compression="zlib"
    )
    return path


def _pixel(shape, y, x) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y, x] = True
    return m


# ----------------------------------------------------------------------------------------------- paths
def test_resolve_inside_refuses_every_way_out(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    root = tmp_path / "root"
    assert resolve_inside(root, "a/b.txt") == (root / "a" / "b.txt").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd", "link/x", "", "a\x00b"):
        with pytest.raises(UnsafePathError):
            resolve_inside(root, bad)
    assert resolve_inside(root, "link/x", follow_links=False) == root.absolute() / "link" / "x"
    with pytest.raises(UnsafePathError):
        resolve_inside(root, "../x", follow_links=False)


# ----------------------------------------------------------------------------------------------- sharing
def test_two_project_objects_used_in_turn_lose_nothing(tmp_path):
    image = _image(tmp_path / "im.png")
    first = Project.create(tmp_path / "p")
    key = first.add_images([image])[0].key
    second = Project.open(tmp_path / "p")
    ids = []
    for i in range(4):
        writer = (first, second)[i % 2]
        ids.append(writer.add_object(key, _pixel((32, 32), i, i), ObjectPrompts(points=[[i, i, 1]])).id)
    assert len(set(ids)) == 4
    fresh = Project.open(tmp_path / "p").annotations(key)
    assert sorted(fresh.objects) == sorted(ids)
    assert all(fresh.labels[i, i] == ids[i] for i in range(4))
    # images added through either object all reach the manifest
    first.add_images([_image(tmp_path / "b.png", value=1)])
    second.add_images([_image(tmp_path / "c.png", value=2)])
    assert len(Project.open(tmp_path / "p").images) == 3


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, imageio.v3 as iio
    from pathlib import Path
    from infosam_core.annotation.project import Project
    from infosam_core.annotation.records import ObjectPrompts
    root, key, row, folder = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    project = Project.open(root)
    for i in range(int(sys.argv[5])):
        mask = np.zeros((32, 32), bool); mask[row, i] = True
        obj = project.add_object(key, mask, ObjectPrompts(points=[[i, row, 1]]))
        print("saved", obj.id, row, i, flush=True)
    paths = []
    for i in range(3):
        p = folder / f"w{row}-{i}.png"
        iio.imwrite(p, np.full((8, 8), row * 10 + i + 1, np.uint8))
        paths.append(p)
    for e in project.add_images(paths):
        print("added", e.key, flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_writing_one_project_lose_nothing(tmp_path):
    image = _image(tmp_path / "im.png")
    key = Project.create(tmp_path / "p").add_images([image])[0].key
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "p"), key, str(row), str(tmp_path), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for row in (3, 7)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outputs]
    saved = [line.split() for out, _ in outputs for line in out.splitlines() if line.startswith("saved")]
    added = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("added")]
    assert len(saved) == 12 and len(added) == 6
    project = Project.open(tmp_path / "p")
    ann = project.annotations(key)
    for _, oid, row, col in saved:
        assert int(oid) in ann.objects and ann.labels[int(row), int(col)] == int(oid)
    assert len(ann.objects) == 12
    assert {e.key for e in project.images} >= set(added) and len(project.images) == 7


@pytest.mark.slow
def test_a_lock_held_too_long_is_refused_with_the_holder(tmp_path, monkeypatch):
    image = _image(tmp_path / "im.png")
    project = Project.create(tmp_path / "p")
    key = project.add_images([image])[0].key
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from infosam_core.annotation.project import Project\n"
            "p = Project.open(sys.argv[1])\n"
            "with p._locked():\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path / "p"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(project_module, "LOCK_TIMEOUT_S", 0.3)
        with pytest.raises(ProjectBusyError, match=rf"pid {holder.pid} on .*since"):
            project.add_object(key, _pixel((32, 32), 1, 1), ObjectPrompts())
        # reads do not fail: the known state is shown
        assert project.annotations(key).objects == {}
        # a holder killed with -9 leaves no stale lock: the OS releases it
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert project.add_object(key, _pixel((32, 32), 1, 1), ObjectPrompts()).id == 1
    finally:
        holder.kill()


def test_read_only_mode_writes_nothing(tmp_path):
    image = _image(tmp_path / "im.png")
    writable = Project.create(tmp_path / "p")
    key = writable.add_images([image])[0].key
    writable.add_object(key, _pixel((32, 32), 2, 2), ObjectPrompts())
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "p").rglob("*")}
    ro = Project.open(tmp_path / "p", read_only=True)
    assert list(ro.annotations(key).objects) == [1]
    for change in (
        lambda: ro.add_object(key, _pixel((32, 32), 3, 3), ObjectPrompts()),
        lambda: ro.remove_object(key, 1),
        lambda: ro.add_images([_image(tmp_path / "b.png", value=9)]),
    ):
        with pytest.raises(ProjectError, match="read-only"):
            change()
    ro.save_ui_state(current=key)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "p").rglob("*")} == before


# ----------------------------------------------------------------------------------------------- crashes
class _Crash(BaseException):
    """Stands for the process dying at that instant (BaseException: no clean-up code catches it)."""


def _crash_at(monkeypatch, n: int, names=("replace",)) -> dict[str, int]:
    """Make the n-th call of os.replace/os.unlink (in any module) die, as a kill -9 would."""
    calls = {"n": 0}
    real = {name: getattr(os, name) for name in names}

    def make(name):
        def fake(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise _Crash(name)
            return real[name](*args, **kwargs)

        return fake

    for name in names:
        monkeypatch.setattr(os, name, make(name))
    return calls


def test_a_crash_at_any_rename_of_a_project_save_keeps_old_or_new(tmp_path, monkeypatch):
    image = _image(tmp_path / "im.png")
    project = Project.create(tmp_path / "p")
    key = project.add_images([image])[0].key
    project.add_object(key, _pixel((32, 32), 0, 0), ObjectPrompts())
    n = 1
    while True:
        with monkeypatch.context() as m:
            calls = _crash_at(m, n, ("replace", "unlink"))
            try:
                Project.open(tmp_path / "p").add_object(key, _pixel((32, 32), 5, n), ObjectPrompts())
                crashed = False
            except _Crash:
                crashed = True
        ann = Project.open(tmp_path / "p").annotations(key)
        ids = sorted(ann.objects)
        assert ids in ([1], [1, 2]), ids
        assert all((ann.labels == i).sum() == 1 for i in ids) and set(np.unique(ann.labels)) == {0, *ids}
        if len(ids) == 2:
            project = Project.open(tmp_path / "p")
            project.remove_object(key, 2)
        if not crashed:
            break
        n += 1
    assert calls["n"] >= 2  # the save renamed at least the label file and objects.json


def _adapted(sam, value: float):
    import copy

    from infosam_core.peft.registry import apply_peft
    from infosam_core.peft.state import trained_state

    model = copy.deepcopy(sam)
    apply_peft(model, "lora", rank=2, train_decoder=False)
    with torch.no_grad():
        for t in trained_state(model).values():
            t.fill_(value)
    return model


def _version(base, path) -> float:
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
    from infosam_core.peft.state import trained_state

    values = {float(v) for t in trained_state(load_peft_checkpoint(base, path)).values() for v in t.unique()}
    assert len(values) == 1, values
    return values.pop()


def test_a_crash_at_any_step_of_an_adapter_save_keeps_old_or_new(random_tiny_sam, tmp_path, monkeypatch):
    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint

    path = tmp_path / "out" / "adapter"
    save_peft_checkpoint(_adapted(random_tiny_sam, 1.0), path)
    new = _adapted(random_tiny_sam, 2.0)
    outcomes = []
    n = 1
    while True:
        with monkeypatch.context() as m:
            _crash_at(m, n, ("replace", "unlink"))
            try:
                save_peft_checkpoint(new, path)
                crashed = False
            except _Crash:
                crashed = True
        outcomes.append(_version(random_tiny_sam, path))
        save_peft_checkpoint(_adapted(random_tiny_sam, 1.0), path)  # back to the old one for the next crash
        if not crashed:
            break
        n += 1
    assert set(outcomes) <= {1.0, 2.0} and outcomes[0] == 1.0 and outcomes[-1] == 2.0
    assert len(list((tmp_path / "out").glob("adapter.*.safetensors"))) == 1  # superseded tensors removed


def test_old_adapter_layout_still_loads_and_either_file_names_it(random_tiny_sam, tmp_path):
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint

    tensors, meta_path = save_peft_checkpoint(_adapted(random_tiny_sam, 3.0), tmp_path / "a")
    assert _version(random_tiny_sam, tensors) == 3.0  # the hashed tensors file names its adapter too
    old = tmp_path / "a.safetensors"  # the layout before hashed names
    tensors.rename(old)
    meta = json.loads(meta_path.read_text())
    meta["tensors_file"] = old.name
    meta_path.write_text(json.dumps(meta))
    assert _version(random_tiny_sam, old) == 3.0 and _version(random_tiny_sam, meta_path) == 3.0
    meta["tensors_file"] = "../a.safetensors"
    meta_path.write_text(json.dumps(meta))
    from infosam_core.adapter_files.checkpoint import PeftCheckpointError

    with pytest.raises(PeftCheckpointError, match="tensors_file"):
        load_peft_checkpoint(random_tiny_sam, meta_path)


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".objects.json.{dead.pid}.abcd1234.tmp.json"
    mine = tmp_path / f".objects.json.{os.getpid()}.abcd1234.tmp.json"
    young = tmp_path / f".x.json.{dead.pid}.zz.tmp.json"
    for p in (stale, mine, young):
        p.write_text("{}")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(mine, (old, old))
    assert atomic.remove_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and mine.exists() and young.exists()


# ----------------------------------------------------------------------------------------------- traversal
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("evil", ["../../outside", "/tmp/infosam-evil-abs", "../outside/../../x"])
def test_a_crafted_project_touches_nothing_outside(tmp_path, evil):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "labels-000001.tif").write_bytes(b"precious")
    (outside / "objects.json").write_text('{"precious": true}')
    image = _image(tmp_path / "im.png")
    project = Project.create(tmp_path / "a" / "p")
    key = project.add_images([image])[0].key
    project.add_object(key, _pixel((32, 32), 1, 1), ObjectPrompts())
    before = _snapshot(outside)
    root = tmp_path / "a" / "p"
    manifest_path = root / "project.json"
    objects_path = tmp_path / "a" / "p" / "annotations" / key / "objects.json"
    manifest, objects = json.loads(manifest_path.read_text()), json.loads(objects_path.read_text())
    crafted = []
    m = json.loads(json.dumps(manifest))
    m["images"][0]["key"] = evil
    crafted.append((m, objects))
    m = json.loads(json.dumps(manifest))
    m["images"][0]["name"] = evil + ".png"
    crafted.append((m, objects))
    o = json.loads(json.dumps(objects))
    o["labels_file"] = evil + "/labels-000001.tif"
    crafted.append((manifest, o))
    for m, o in crafted:
        manifest_path.write_text(json.dumps(m))
        objects_path.write_text(json.dumps(o))
        key_in_file = m["images"][0]["key"]
        for action in (
            lambda: Project.open(root),
            lambda k=key_in_file: Project.open(root).annotations(k),
            lambda k=key_in_file: Project.open(root).add_object(k, _pixel((32, 32), 2, 2), ObjectPrompts()),
            lambda: Project.open(root).add_images([_image(tmp_path / "n.png", value=5)]),
            lambda: export_label_images(Project.open(root), tmp_path / "a" / "exports"),
            lambda: export_coco(Project.open(root), tmp_path / "a" / "exports" / "c.json"),
        ):
            with contextlib.suppress(ProjectError, ExportError):
                action()
        assert _snapshot(outside) == before
        assert {p.parent for p in (tmp_path / "a" / "exports").rglob("*") if p.is_file()} <= {
            tmp_path / "a" / "exports"
        }
    assert not Path("/tmp/infosam-evil-abs").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("images", "not a list", r"project\.json: field 'images' must be a list"),
        ("images.0.key", None, r"project\.json: field 'images\[0\]\.key' must be a string"),
        ("images.0.sha256", "__delete__", r"project\.json: field 'images\[0\]\.sha256' is missing"),
        ("images.0.shape", [10, 10, 3], r"project\.json: field 'images\[0\]\.shape' must hold 2 values"),
        ("images.0.shape", [100000, 100000], r"megapixels"),
        ("objects.0.id", "one", r"objects\.json: field 'objects\[0\]\.id' must be an integer"),
        ("objects.0.prompts.box", [1, 2], r"objects\.json: field 'objects\[0\]\.prompts\.box' must hold 4"),
        ("objects.0.prompts.points", [[1, 2]], r"objects\.json: field 'objects\[0\]\.prompts\.points\[0\]'"),
        ("revision", "x", r"objects\.json: field 'revision' must be an integer"),
    ],
)
def test_malformed_project_files_name_the_file_and_field(tmp_path, field, value, message):
    image = _image(tmp_path / "im.png")
    project = Project.create(tmp_path / "p")
    key = project.add_images([image])[0].key
    project.add_object(key, _pixel((32, 32), 1, 1), ObjectPrompts(box=[0, 0, 3, 3]))
    path = tmp_path / "p" / ("project.json" if field.startswith("images") else f"annotations/{key}/objects.json")
    data = json.loads(path.read_text())
    *parents, last = field.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value == "__delete__":
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ProjectError, match=message):
        Project.open(tmp_path / "p").annotations(key)


def test_a_3d_label_file_and_a_3d_mask_are_project_errors(tmp_path):
    import tifffile

    image = _image(tmp_path / "im.png")
    project = Project.create(tmp_path / "p")
    key = project.add_images([image])[0].key
    with pytest.raises(ProjectError, match="2-D"):
        project.add_object(key, np.ones((32, 32, 3), bool), ObjectPrompts())
    project.add_object(key, _pixel((32, 32), 1, 1), ObjectPrompts())
    labels = next((tmp_path / "p" / "annotations" / key).glob("labels-*.tif"))
    tifffile.imwrite(labels, np.zeros((2, 32, 32), np.uint16))
    with pytest.raises(ProjectError, match=r"labels-\d+\.tif: a label image must be 2-D"):
        Project.open(tmp_path / "p").annotations(key)


# ----------------------------------------------------------------------------------------------- limits
def test_decompression_bomb_tiff_is_refused_from_its_header(tmp_path, monkeypatch):
    bomb = _bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 2_000_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"20000 x 20000 \(400 megapixels\).*INFOSAM_MAX_PIXELS"):
        read_image(bomb)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded
    small = tmp_path / "small.png"
    iio.imwrite(small, np.zeros((20, 20), np.uint8))
    monkeypatch.setenv("INFOSAM_MAX_PIXELS", "300")
    with pytest.raises(ImageError, match="INFOSAM_MAX_PIXELS=400"):
        read_image(small)
    monkeypatch.setenv("INFOSAM_MAX_PIXELS", "400")
    assert read_image(small).shape == (20, 20)


def test_non_finite_weights_are_refused_naming_the_tensor(random_tiny_sam, tmp_path):
    from safetensors.torch import load_file, save_file

    from infosam_core.adapter_files.checkpoint import PeftCheckpointError, load_peft_checkpoint, save_peft_checkpoint
    from infosam_core.models.checkpoints import CheckpointError, load_state_dict_file, save_sam_weights

    path = save_sam_weights(random_tiny_sam, tmp_path / "w.safetensors", half=False)
    state = load_file(path)
    name = sorted(state)[3]
    state[name].view(-1)[0] = float("nan")
    save_file(state, path)
    with pytest.raises(CheckpointError, match=rf"w\.safetensors: tensor '{name}' holds NaN"):
        load_state_dict_file(path)
    torch.save({k: v for k, v in state.items()}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="holds NaN"):
        load_state_dict_file(tmp_path / "w.pth")
    tensors, meta_path = save_peft_checkpoint(_adapted(random_tiny_sam, 1.0), tmp_path / "a")
    adapter = load_file(tensors)
    bad = sorted(adapter)[0]
    adapter[bad].view(-1)[0] = float("inf")
    save_file(adapter, tensors)
    meta = json.loads(meta_path.read_text())
    from infosam_core.io.hashing import file_sha256

    meta["tensors_sha256"] = file_sha256(tensors)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PeftCheckpointError, match=rf"tensor '{bad}' holds NaN or infinite"):
        load_peft_checkpoint(random_tiny_sam, meta_path)


def test_thin_images_predict_and_prepare(random_tiny_sam):
    from infosam_core.data.datasets import SegmentationSample
    from infosam_core.inference.predictor import Predictor
    from infosam_core.training.batches import prepare_samples

    predictor = Predictor(random_tiny_sam, cache_size=0)
    for shape in ((1, 700), (3, 2000), (900, 2)):
        predictor.set_image(np.zeros((*shape, 3), np.uint8))
        masks, scores, _ = predictor.predict(box=np.array([0, 0, shape[1] - 1, shape[0] - 1]), multimask_output=False)
        assert masks.shape == (1, *shape) and np.isfinite(scores).all()
    mask = np.zeros((3, 2000), bool)
    mask[:, 100:300] = True
    prepared = prepare_samples([SegmentationSample(np.zeros((3, 2000, 3), np.uint8), mask, "thin")], 256)
    assert prepared[0].image.shape[:2] == (1, 256)


def test_predictor_refuses_prompts_outside_the_image(random_tiny_sam):
    from infosam_core.inference.predictor import Predictor

    predictor = Predictor(random_tiny_sam, cache_size=0)
    predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"point \(1e\+06, 1e\+06\) lies outside the 64x64 image"):
        predictor.predict(np.array([[1e6, 1e6]]), np.array([1]))
    with pytest.raises(ValueError, match="outside the 64x64 image"):
        predictor.predict(box=np.array([100, 100, 200, 200]))
    # issue 32: a box far beyond the image that overlaps it is refused too, by the CLI's rule
    for box in ([0, 0, 1e6, 1e6], [-5, 0, 10, 10], [0, 0, 64.5, 64]):
        with pytest.raises(ValueError, match=r"reaches outside the 64x64 image \(0\.\.64, 0\.\.64\)"):
            predictor.predict(box=np.array(box))
    predictor.predict(box=np.array([0, 0, 64, 64]))  # the whole image
    predictor.predict(np.array([[64, 0]]), np.array([1]))  # the far edge is inside


def test_non_utf8_and_escaping_csv_name_the_file(tmp_path):
    from infosam_core.data.datasets import DatasetError, load_folder_dataset

    csv = tmp_path / "data.csv"
    csv.write_bytes("image,label\nim\xe9.png,m.png\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"data\.csv: not UTF-8"):
        load_folder_dataset(csv)
    csv.write_text("image,label\n../secret.png,m.png\n")
    with pytest.raises(DatasetError, match=r"data\.csv, line 2: .*leads outside"):
        load_folder_dataset(csv)


# ----------------------------------------------------------------------------------------------- CLI
def _cli(args, capsys) -> tuple[int, str]:
    from infosam_core.cli import main

    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for i in range(2):
        iio.imwrite(root / "images" / f"{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        iio.imwrite(root / "masks" / f"{i}.png", mask)
    return root


def test_bad_cli_inputs_end_in_one_line_before_work(tmp_path, capsys, tiny_dataset, monkeypatch):
    import infosam_core.data.datasets as datasets

    def no_loading(*a, **k):
        raise AssertionError("data loaded before the settings were checked")

    monkeypatch.setattr(datasets, "load_folder_dataset", no_loading)
    (tmp_path / "file").write_text("x")
    train = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "o")]
    cases = [
        (train + ["--max-steps", "0"], "--max-steps must be >= 1"),
        (train + ["--max-steps", "-3"], "--max-steps must be >= 1"),
        (train + ["--time-budget", "-1"], "--time-budget must be"),
        (train + ["--time-budget", "nan"], "--time-budget must be"),
        (train + ["--lam", "nan"], "--lam"),
        (train + ["--alpha", "inf"], "finite"),
        (train + ["--beta", "nan"], "finite"),
        (train + ["--peft-option", "mlp_ratio=1e9"], "mlp_ratio must be in"),
        (train + ["--peft", "lora", "--peft-option", "rank=abc"], "rank must be an integer"),
        (train + ["--peft", "lora", "--peft-option", "rank=100000"], "rank must be in"),
        (train + ["--peft", "adaptformer", "--peft-option", "bottleneck=-1"], "bottleneck must be in"),
        (["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "file")], "is a file"),
        (["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "file" / "sub")], "cannot write there"),
        (train + ["--device", "tpu"], "--device 'tpu'"),
    ]
    if not torch.cuda.is_available():
        cases.append((train + ["--device", "cuda"], "no CUDA GPU"))
    for args, expected in cases:
        rc, err = _cli(args, capsys)
        assert rc == 2 and expected in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_bad_files_on_the_cli_end_in_one_line(tmp_path, capsys, tiny_dataset, monkeypatch):
    """A tiled TIFF is read by region (issue 26: the guard counts what a read decodes), so the TIFF bomb here
    is one whose single strip is above the limit: any read would decode all of it."""
    import tifffile

    monkeypatch.setenv("INFOSAM_MAX_PIXELS", "1000000")  # a 2000 x 2000 strip stands for a 20000 x 20000 one
    bomb = tmp_path / "bomb.tif"
    tifffile.imwrite(bomb, np.zeros((2000, 2000), np.uint16), rowsperstrip=2000, compression="zlib")
    adapter = tmp_path / "bad.json"
    adapter.write_text(json.dumps({"format": "infosam-adapter", "format_version": "2"}))
    csv = tmp_path / "latin.csv"
    csv.write_bytes("image,label\n\xe9.png,m.png\n".encode("latin-1"))
    cases = [
        (["predict", str(bomb), "--point", "1,1", "--out", str(tmp_path / "m.png")], "decodes a whole chunk"),
        (["train", "--data", str(csv), "--out", str(tmp_path / "o")], "latin.csv: not UTF-8"),
        (
            ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "o"), "--init-adapter", str(adapter)],
            "format_version",
        ),
        (
            ["eval", "--data", str(tiny_dataset), "--adapter", str(adapter), "--out", str(tmp_path / "e")],
            "format_version",
        ),
    ]
    for args, expected in cases:
        rc, err = _cli(args, capsys)
        assert rc == 2 and expected in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_thin_image_predicts_on_the_cli(tmp_path, capsys):
    thin = _image(tmp_path / "thin.png", shape=(1, 3000))
    rc, err = _cli(["predict", str(thin), "--box", "0,0,2999,1", "--out", str(tmp_path / "m.png")], capsys)
    assert rc == 0, err
    assert iio.imread(tmp_path / "m.png").shape == (1, 3000)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the soak forks its writers")
def test_kill9_soak_short_form(tmp_path):
    """scripts/soak_kill9.py with few kills: a project writer and an adapter writer SIGKILLed at random
    instants; every change reported saved survives, every adapter loads (the long form is in the README)."""
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "soak_kill9.py"), "--kills", "6", "--adapter-kills", "3"]
        + ["--max-delay-ms", "300", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    figures = json.loads(run.stdout)
    assert figures["project"]["kills"] == 6 and figures["adapter"]["kills"] == 3
    assert figures["project"]["losses"] == 0 and figures["adapter"]["losses"] == 0
    assert figures["project"]["changes_reported"] > 0 and figures["adapter"]["adapters_verified"] == 3
    assert figures["project"]["temp_files_left"] == 0 and figures["adapter"]["tensor_files_left"] == 1
