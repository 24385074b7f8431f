"""The app's Qt-free state (infosam_app.state): image store, prefetch policy, navigation, model set.

No viewer, no Qt: these run in plain pytest, and the test at the end proves the package does not load a Qt
binding or napari.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from skimage.io import imsave

from infosam_app.state import ImageStore, ModelInfo, ModelSet, Navigation, PrefetchPolicy, read_image_pair
from infosam_app.state.models import device_name, origin_label
from infosam_core.annotation.project import Project


def _pair(value: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((2, 2), value, np.uint8), np.full((2, 2, 3), value, np.uint8)


def test_image_store_drops_the_least_recently_used():
    store = ImageStore(capacity=2)
    store.remember("a", _pair(1))
    store.remember("b", _pair(2))
    assert store.get("a")[0][0, 0] == 1  # "a" is now the most recent
    store.remember("c", _pair(3))
    assert "b" not in store and "a" in store and "c" in store and len(store) == 2
    assert store.keys() == ["a", "c"]
    store.clear()
    assert len(store) == 0 and store.get("a") is None
    with pytest.raises(ValueError, match="capacity"):
        ImageStore(capacity=0)


def test_read_image_pair_keeps_raw_and_gives_rgb(tmp_path):
    path = tmp_path / "deep.tif"
    raw = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800).astype(np.uint16)
    tifffile.imwrite(path, raw)
    got_raw, rgb = read_image_pair(path)
    assert got_raw.dtype == np.uint16 and np.array_equal(got_raw, raw)
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize(
    ("enabled", "seconds", "index", "count", "expected"),
    [
        (True, 0.5, 0, 3, 1),
        (True, 0.5, 2, 3, 0),  # wraps around
        (True, None, 0, 3, None),  # no embedding measured yet
        (True, 10.0, 0, 3, None),  # too slow to embed ahead
        (False, 0.5, 0, 3, None),
        (True, 0.5, 0, 1, None),  # nothing else to prefetch
        (True, 0.5, -1, 3, None),  # nothing shown
    ],
)
def test_prefetch_policy(enabled, seconds, index, count, expected):
    policy = PrefetchPolicy(enabled=enabled, max_embed_seconds=3.0, last_embed_seconds=seconds)
    assert policy.next_index(index, count) == expected


def _project(tmp_path, n: int) -> Project:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        imsave(folder / f"img{i}.png", np.full((4, 5), 40 * i, np.uint8), check_contrast=False)
    project = Project.create(tmp_path / "project")
    project.add_images([folder])
    return project


def test_navigation_clamps_wraps_and_drops_stale_reads(tmp_path):
    nav = Navigation()
    assert nav.entry is None and nav.key is None and nav.count == 0 and nav.step(1) is None
    with pytest.raises(IndexError):
        nav.go_to(0)
    project = _project(tmp_path, 3)
    nav.open(project)
    assert nav.index == -1 and nav.entry is None and nav.restore_index() == 0
    first = nav.go_to(99)
    assert nav.index == 2 and nav.key == project.images[2].key
    assert nav.step(1) == 0 and nav.step(-1) == 1
    second = nav.go_to(-5)
    assert nav.index == 0
    assert nav.is_current(second) and not nav.is_current(first)  # a late read of image 2 is dropped
    project.save_ui_state(current=project.images[1].key)
    assert nav.restore_index() == 1


class _FakePredictor:
    def __init__(self):
        self.cache_dir = None
        self.cleared = 0

    def clear_cache(self):
        self.cleared += 1


def _info(label: str) -> ModelInfo:
    return ModelInfo(label=label, device="CPU", model_type="tiny")


def test_model_set_base_adapted_and_active(tmp_path):
    models = ModelSet()
    assert models.predictor is None and not models.has_adapted and models.base_info is None
    base, adapted = _FakePredictor(), _FakePredictor()
    models.install_base("sam-base", base, _info("base"))
    assert models.predictor is base and models.active == "base" and models.base_info.label == "base"
    assert not models.activate("adapted")  # not there yet
    models.install_adapted("sam-adapted", adapted, _info("adapted"), activate=False)
    assert models.has_adapted and models.active == "base"
    assert models.activate("adapted") and models.predictor is adapted
    assert not models.activate("adapted")  # already active
    models.set_cache_dir(tmp_path)
    assert base.cache_dir == tmp_path and adapted.cache_dir == tmp_path
    models.install_base("sam-other", _FakePredictor(), _info("other"))  # a new base drops the adapted model
    assert not models.has_adapted and models.active == "base" and set(models.sams) == {"base"}


def test_model_set_embedding_bookkeeping():
    models = ModelSet()
    first = _FakePredictor()
    models.install_base("sam", first, _info("base"))
    assert not models.is_embedded("base", "k1") and not models.is_embedded("base", None)
    job = models.start_job("base", "k1")
    assert job is not None and models.start_job("base", "k1") is None  # never twice at once
    models.end_job(job)
    assert models.start_job("base", "k1") is not None
    models.mark_embedded("base", "k1", first)
    assert models.is_embedded("base", "k1") and not models.is_embedded("base", "k2")
    models.forget_embeddings(clear_caches=True)
    assert not models.is_embedded("base", "k1") and first.cleared == 1
    models.mark_embedded("base", "k1", first)
    second = _FakePredictor()
    models.install_base("sam2", second, _info("base"))  # a hot swap: the old predictor's embedding is stale
    assert not models.is_embedded("base", "k1") and not models.is_current("base", first)
    assert models.is_current("base", second)


def test_model_labels():
    assert origin_label("tiny", None) == "tiny (bundled)"
    assert origin_label("vit_b", "/x/sam_vit_b_01ec64.pth") == "vit_b (sam_vit_b_01ec64.pth)"
    assert origin_label("vit_b", None) == "vit_b (random weights)"
    assert device_name(torch.nn.Linear(2, 2)) == "CPU"
    assert device_name(torch.nn.Identity()) == "CPU"  # no parameters


def test_state_package_loads_no_qt_or_napari():
    code = (
        "import sys, infosam_app.state; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PySide6', 'PyQt5', 'PyQt6', 'napari')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tiled_predictors_one_per_predictor_only_for_images_larger_than_a_tile(random_tiny_sam):
    from infosam_app.state.large_images import TiledPredictors
    from infosam_core.inference.predictor import Predictor

    base, adapted = Predictor(random_tiny_sam), Predictor(random_tiny_sam)
    small, large = np.zeros((256, 256, 3), np.uint8), np.zeros((600, 500, 3), np.uint8)
    tiled = TiledPredictors()
    assert tiled.get(base, small) is None and tiled.get(base, None) is None  # one tile: today's path
    first = tiled.get(base, large)
    assert first is not None and first.predictor is base and first.original_size == (600, 500)
    assert tiled.get(base, large) is first  # kept while the image is shown
    assert tiled.get(adapted, large) is not first and tiled.get(adapted, large).predictor is adapted
    assert tiled.get(base, large.copy()) is not first  # another image: a new one
