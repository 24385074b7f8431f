"""Every loader, fuzzed: any input gives a result or that module's own error class, never another exception,
and never touches a file outside the folder it belongs to (issue 17).

Inputs are real, valid files with random bytes replaced or cut off, random bytes, and valid JSON files with
one value replaced by a random JSON value (including ``../..`` and absolute paths) or removed. Examples are
derandomised (the same on every run) and few, so the whole file takes well under a minute; for a longer,
random run: ``INFOSAM_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_loaders.py``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infosam_core.adapter_files.checkpoint import PeftCheckpointError, load_peft_checkpoint, save_peft_checkpoint
from infosam_core.annotation.export import ExportError, coco_to_label_images, export_coco, export_label_images
from infosam_core.annotation.project import Project, ProjectError
from infosam_core.annotation.records import ObjectPrompts
from infosam_core.data import datasets
from infosam_core.data.datasets import DatasetError, load_folder_dataset, load_mask
from infosam_core.io.images import ImageError, read_image
from infosam_core.models.checkpoints import CheckpointError, load_state_dict_file

_EXAMPLES = os.environ.get("INFOSAM_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES or 40),
    deadline=None,
    derandomize=not _EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
EVIL = ["../../outside", "../../outside/labels-000001.tif", "/etc/passwd", "/tmp", "..", ".", "", "a/../../..", "\x00"]
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(EVIL)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
_counter = itertools.count()


def _mutate_bytes(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[: max(1, cut % (len(out) + 1))] if cut is not None else out)


byte_edits = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6)
cuts = st.none() | st.integers(0, 2**20)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a value in a JSON tree."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_json(tree: Any, which: int, value: Any, delete: bool) -> Any:
    """``tree`` with the value at one path replaced by ``value`` (or removed)."""
    tree = json.loads(json.dumps(tree))
    paths = _paths(tree)
    path = paths[which % len(paths)]
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- images, masks
@pytest.fixture(scope="module")
def image_seeds(tmp_path_factory) -> dict[str, bytes]:
    import tifffile

    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    iio.imwrite(folder / "a.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    iio.imwrite(folder / "b.png", rng.integers(0, 2**16, (9, 7), dtype=np.uint16))
    iio.imwrite(folder / "c.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    iio.imwrite(folder / "d.bmp", rng.integers(0, 255, (8, 8), dtype=np.uint8))
    tifffile.imwrite(folder / "e.tif", rng.integers(0, 2**16, (10, 12), dtype=np.uint16), compression="zlib")
    tifffile.imwrite(folder / "f.tif", rng.random((3, 8, 8)).astype(np.float32))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@FUZZ
@given(
    seed=st.sampled_from(["a.png", "b.png", "c.jpg", "d.bmp", "e.tif", "f.tif", "random"]),
    suffix=st.sampled_from([".png", ".tif", ".jpg", ".bmp", ".tiff"]),
    edits=byte_edits,
    cut=cuts,
    noise=st.binary(max_size=200),
)
def test_fuzz_images_and_masks(image_seeds, tmp_path, seed, suffix, edits, cut, noise):
    data = (noise or b"\x00") if seed == "random" else _mutate_bytes(image_seeds[seed], edits, cut)
    path = tmp_path / f"{next(_counter)}{suffix}"
    path.write_bytes(data)
    with contextlib.suppress(ImageError):
        assert isinstance(read_image(path), np.ndarray)
    with contextlib.suppress(DatasetError):
        mask = load_mask(path)
        assert mask.dtype == bool and mask.ndim == 2


# ----------------------------------------------------------------------------------------------- CSV datasets
@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["im.png", "m.png", *EVIL, "sub/../im.png", "missing.png"]) | st.text(max_size=10),
            st.sampled_from(["m.png", "im.png", *EVIL]) | st.text(max_size=10),
        ),
        max_size=4,
    ),
    header=st.sampled_from(["image,label", "Image , Label", "image", "", "a,b,c"]),
    raw=st.none() | st.binary(max_size=120),
)
def test_fuzz_csv_datasets(tmp_path, monkeypatch, rows, header, raw):
    folder = tmp_path / f"d{next(_counter)}"
    folder.mkdir()
    iio.imwrite(folder / "im.png", np.zeros((8, 8, 3), np.uint8))
    iio.imwrite(folder / "m.png", np.full((8, 8), 255, np.uint8))
    csv = folder / "data.csv"
    if raw is not None:
        csv.write_bytes(raw)
    else:
        buf = io.StringIO()
        buf.write(header + "\n")
        for image, label in rows:
            buf.write(f"{image},{label}\n")
        csv.write_text(buf.getvalue(), "utf-8", errors="replace")
    opened: list[Path] = []
    real_read = datasets.read_image
    real_rgb = datasets.load_rgb

    def spy_read(path):
        opened.append(Path(path))
        return real_read(path)

    def spy_rgb(path):
        opened.append(Path(path))
        return real_rgb(path)

    with monkeypatch.context() as m:
        m.setattr(datasets, "read_image", spy_read)
        m.setattr(datasets, "load_rgb", spy_rgb)
        with contextlib.suppress(DatasetError):
            samples = load_folder_dataset(csv)
            assert samples and all(s.image.shape[:2] == s.mask.shape for s in samples)
    base = folder.resolve()
    assert all(p.resolve().is_relative_to(base) for p in opened), opened


# ----------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint_seeds(tmp_path_factory) -> dict[str, bytes]:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    state = {"a.weight": torch.linspace(-1, 1, 12).reshape(4, 3), "a.bias": torch.zeros(4), "n": torch.tensor([3])}
    save_file(state, folder / "w.safetensors")
    torch.save(state, folder / "w.pth")
    torch.save({"model": state, "epoch": 3}, folder / "wrapped.pth")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@FUZZ
@given(
    seed=st.sampled_from(["w.safetensors", "w.pth", "wrapped.pth"]),
    suffix=st.sampled_from([".safetensors", ".pth", ".pt", ".bin"]),
    edits=byte_edits,
    cut=cuts,
)
def test_fuzz_checkpoints(checkpoint_seeds, tmp_path, seed, suffix, edits, cut):
    path = tmp_path / f"{next(_counter)}{suffix}"
    path.write_bytes(_mutate_bytes(checkpoint_seeds[seed], edits, cut))
    with contextlib.suppress(CheckpointError):
        state = load_state_dict_file(path)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())


# ----------------------------------------------------------------------------------------------- adapters
@pytest.fixture(scope="module")
def adapter_seed(random_tiny_sam, tmp_path_factory) -> tuple[dict, bytes]:
    import copy

    from infosam_core.peft.registry import apply_peft

    model = copy.deepcopy(random_tiny_sam)
    apply_peft(model, "adapter", mlp_ratio=0.125, first_block=0, train_norms=False, train_decoder=False)
    tensors, meta = save_peft_checkpoint(model, tmp_path_factory.mktemp("adapter") / "a")
    return json.loads(meta.read_text()), tensors.read_bytes()


@FUZZ
@given(
    which=st.integers(0, 200),
    value=json_values,
    delete=st.booleans(),
    mutate_json=st.booleans(),
    edits=byte_edits,
    cut=cuts,
)
def test_fuzz_adapters(random_tiny_sam, adapter_seed, tmp_path, which, value, delete, mutate_json, edits, cut):
    from infosam_core.io.hashing import file_sha256

    meta, tensors = adapter_seed
    folder = tmp_path / f"a{next(_counter)}"
    folder.mkdir()
    (folder / meta["tensors_file"]).write_bytes(tensors if mutate_json else _mutate_bytes(tensors, edits, cut))
    if mutate_json:
        meta = _mutate_json(meta, which, value, delete)
    else:  # the hash matches the damaged tensors, so the safetensors parser and the shape checks are fuzzed
        meta = {**meta, "tensors_sha256": file_sha256(folder / adapter_seed[0]["tensors_file"])}
    (folder / "a.json").write_text(json.dumps(meta))
    with contextlib.suppress(PeftCheckpointError):
        model = load_peft_checkpoint(random_tiny_sam, folder / "a.json")
        assert model.peft_state is not None


# ----------------------------------------------------------------------------------------------- projects
@pytest.fixture(scope="module")
def project_template(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("template")
    iio.imwrite(base / "im.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(base / "im2.png", np.ones((16, 16), np.uint8))
    project = Project.create(base / "p")
    key = project.add_images([base / "im.png", base / "im2.png"])[0].key
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = True
    project.add_object(key, mask, ObjectPrompts(points=[[3, 3, 1]], box=[2, 2, 5, 5]))
    return base


@FUZZ
@given(which=st.integers(0, 400), value=json_values, delete=st.booleans(), manifest=st.booleans())
def test_fuzz_project_files(project_template, tmp_path, which, value, delete, manifest):
    case = tmp_path / f"c{next(_counter)}"
    outside = case / "outside"
    outside.mkdir(parents=True)
    (outside / "labels-000001.tif").write_bytes(b"precious")
    (outside / "objects.json").write_text("{}")
    shutil.copytree(project_template, case / "a")
    root = case / "a" / "p"
    target = root / "project.json" if manifest else next((root / "annotations").glob("*/objects.json"))
    target.write_text(json.dumps(_mutate_json(json.loads(target.read_text()), which, value, delete)))
    before = _snapshot(outside)
    exports = case / "a" / "exports"
    mask = np.zeros((16, 16), bool)
    mask[10:12, 10:12] = True
    actions = [
        lambda p: [p.annotations(e.key) for e in p.images],
        lambda p: p.total_objects(),
        lambda p: p.add_object(p.images[0].key, mask, ObjectPrompts()) if p.images else None,
        lambda p: p.remove_object(p.images[0].key, 1) if p.images else None,
        lambda p: p.add_images([case / "a" / "im2.png"]),
        lambda p: export_label_images(p, exports),
        lambda p: export_coco(p, exports / "coco.json"),
    ]
    for action in actions:
        with contextlib.suppress(ProjectError, ExportError):
            action(Project.open(root))
    assert _snapshot(outside) == before
    assert all(p.resolve().parent == exports.resolve() for p in exports.rglob("*") if p.is_file())
    assert not Path("/tmp/labels-000001.tif").exists()


# ----------------------------------------------------------------------------------------------- COCO
@pytest.fixture(scope="module")
def coco_seed() -> dict:
    from infosam_core.annotation.export import coco_from_label_images

    labels = np.zeros((12, 10), np.uint16)
    labels[1:4, 1:4] = 1
    labels[6:9, 2:8] = 2
    return coco_from_label_images([("a.png", labels, None)])


@FUZZ
@given(
    which=st.integers(0, 200),
    value=json_values | st.sampled_from(["0", "1a", "zz", "`", "PPP3", "\x7f"]),
    delete=st.booleans(),
)
def test_fuzz_coco(coco_seed, which, value, delete):
    with contextlib.suppress(ExportError):
        out = coco_to_label_images(_mutate_json(coco_seed, which, value, delete))
        assert all(isinstance(v, np.ndarray) and v.ndim == 2 for v in out.values())
