"""`infosam predict` / `infosam segment` on large images: --tile-shape, --halo, automatic tiling."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from infosam_core.annotation.export import read_label_image
from infosam_core.cli import main
from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.evaluation.instances import match_instances
from infosam_core.evaluation.seams import seam_score


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    image, labels = nuclei_scene(NucleiSceneConfig(size=(600, 700), n_objects=120), seed=5)
    tifffile.imwrite(folder / "scene.tif", image)
    return folder / "scene.tif", labels


def _box_text(labels, index):
    ys, xs = np.nonzero(labels == index)
    return f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.slow
def test_predict_a_small_object_on_a_large_image_at_native_resolution(scene, tmp_path, capsys):
    path, labels = scene
    tiled_ious, whole_ious = [], []
    for index in (3, 40):
        box = _box_text(labels, index)
        out = tmp_path / f"tiled{index}.png"
        assert main(["predict", str(path), "--box", box, "--tile-shape", "256", "--halo", "32", "--out", str(out)]) == 0
        mask = iio.imread(out)
        assert mask.shape == (600, 700)
        tiled_ious.append(_iou(mask > 0, labels == index))
        whole = tmp_path / f"whole{index}.png"
        assert main(["predict", str(path), "--box", box, "--tile-shape", "0", "--out", str(whole)]) == 0
        whole_ious.append(_iou(iio.imread(whole) > 0, labels == index))
    assert np.mean(tiled_ious) >= 0.75
    assert np.mean(tiled_ious) > np.mean(whole_ious)


def test_tiling_is_automatic_above_the_models_input_side(scene, tmp_path):
    path, labels = scene
    box = _box_text(labels, 7)
    default, explicit = tmp_path / "auto.png", tmp_path / "explicit.png"
    assert main(["predict", str(path), "--box", box, "--out", str(default)]) == 0
    assert (
        main(["predict", str(path), "--box", box, "--tile-shape", "192", "--halo", "32", "--out", str(explicit)]) == 0
    )
    assert np.array_equal(iio.imread(default), iio.imread(explicit))  # tiny: 192 + 2 x 32 = its 256 px input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile-shape", "big"], "--tile-shape 'big': expected N or H,W"),
        (["--tile-shape", "8"], "at least 16 pixels"),
        (["--halo", "-3"], "--halo '-3': expected N or H,W"),
        (["--tile-shape", "0", "--halo", "16"], "--halo needs tiling"),
    ],
)
def test_bad_tiling_options_are_refused(scene, tmp_path, capsys, extra, message):
    path, _ = scene
    assert main(["predict", str(path), "--point", "5,5", *extra, "--out", str(tmp_path / "m.png")]) == 2
    assert message in capsys.readouterr().err
    assert main(["segment", str(path), *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_segment_tiled_large_image_labels_and_coco_at_full_resolution(scene, tmp_path, capsys):
    path, truth = scene
    out = tmp_path / "out"
    assert main(["segment", str(path), "--tile-shape", "256", "--halo", "32", "--out", str(out)]) == 0
    labels = read_label_image(out / "scene_labels.tif")
    assert labels.shape == (600, 700)
    assert match_instances(labels, truth).f1 >= 0.7
    assert seam_score(labels, truth).split_fraction <= 0.01
    coco = json.loads((out / "coco.json").read_text())
    assert coco["images"][0]["height"] == 600 and coco["images"][0]["width"] == 700
    boxes = np.array([a["bbox"] for a in coco["annotations"]])
    assert len(boxes) == len(np.unique(labels)) - 1
    assert boxes[:, 0].max() > 450 and boxes[:, 1].max() > 400  # objects of the far tiles, in image coordinates
