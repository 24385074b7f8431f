"""Tiled segment-all on Dask: a LocalCluster of 2 worker processes gives exactly the single-process labels."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from infosam_core.annotation.export import read_label_image
from infosam_core.cli import main
from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.inference.tiling_dask import ModelSpec, worker_predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_worker_loads_each_model_once():
    spec = ModelSpec("tiny", device="cpu")
    assert worker_predictor(spec) is worker_predictor(ModelSpec("tiny", device="cpu"))


def test_a_bad_worker_count_is_refused_before_any_work(tmp_path, capsys):
    image, _ = nuclei_scene(NucleiSceneConfig(size=(300, 300), n_objects=10), seed=1)
    tifffile.imwrite(tmp_path / "scene.tif", image)
    args = ["segment", str(tmp_path / "scene.tif"), "--out", str(tmp_path / "o"), "--workers", "0"]
    assert main([*args, "--scheduler", "local"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_local_cluster_gives_the_single_process_labels(tmp_path, monkeypatch):
    from dask.distributed import LocalCluster

    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))  # workers import this tree
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    image, _ = nuclei_scene(NucleiSceneConfig(size=(320, 360), n_objects=40), seed=8)
    tifffile.imwrite(tmp_path / "scene.tif", image)
    common = ["segment", str(tmp_path / "scene.tif"), "--tile-shape", "128", "--halo", "32", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main([*common, "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "dask")]) == 0
    single = read_label_image(tmp_path / "single" / "scene_labels.tif")
    distributed = read_label_image(tmp_path / "dask" / "scene_labels.tif")
    assert single.max() >= 20
    assert np.array_equal(single, distributed)
