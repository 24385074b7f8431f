"""Training on large images: samples are native-resolution crops around each object (object_crops)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from infosam_core.annotation.training_samples import ObjectSource, build_samples
from infosam_core.cli import main
from infosam_core.data.datasets import SegmentationSample
from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
from infosam_core.inference.tiling import TilingConfig
from infosam_core.inference.tiling_crops import object_crops

TILING = TilingConfig(192, 32)  # the tiny model's default: windows of 256 px


def _scene():
    image, labels = nuclei_scene(NucleiSceneConfig(size=(700, 600), n_objects=12), seed=3)
    return np.repeat(image[..., None], 3, axis=2), labels


def test_each_object_becomes_a_native_resolution_crop_from_its_tiles_window():
    rgb, labels = _scene()
    samples = [SegmentationSample(rgb, labels == i, f"scene#{i}") for i in range(1, 13)]
    crops = object_crops(samples, TILING)
    assert len(crops) == 12
    for sample, crop in zip(samples, crops, strict=True):
        assert crop.image.shape == (256, 256, 3)  # a tile window: native resolution, no resize
        assert crop.mask.sum() == sample.mask.sum()  # the whole object, every pixel
        y0, x0 = (int(v) for v in crop.name.rsplit("@", 1)[1].split(","))
        assert np.array_equal(crop.image, rgb[y0 : y0 + 256, x0 : x0 + 256])
    # objects answered from one tile window share its array (the trainer's encoder cache embeds it once)
    assert len({id(c.image) for c in crops}) < 12


def test_a_binary_mask_is_split_into_objects_and_small_images_are_kept():
    rgb, labels = _scene()
    crops = object_crops([SegmentationSample(rgb, labels > 0, "all")], TILING)
    assert len(crops) == 12 and {c.name.split("@")[0] for c in crops} == {f"all#{i}" for i in range(1, 13)}
    small = SegmentationSample(rgb[:200, :256].copy(), labels[:200, :256] > 0, "small")
    assert object_crops([small], TILING) == [small]


def test_an_object_larger_than_a_tile_gets_a_grown_or_downscaled_window():
    rgb = np.zeros((2000, 2000, 3), dtype=np.uint8)
    mask = np.zeros((2000, 2000), dtype=bool)
    mask[100:500, 300:700] = True
    (grown,) = object_crops([SegmentationSample(rgb, mask, "big")], TILING)
    assert grown.image.shape[0] >= 400 + 64 and grown.mask.sum() == mask.sum()
    huge = np.zeros((2000, 2000), dtype=bool)
    huge[50:1950, 50:1950] = True
    (view,) = object_crops([SegmentationSample(rgb, huge, "huge")], TILING)
    assert max(view.image.shape[:2]) <= 2 * 256 and view.mask.any()


def test_project_objects_of_a_large_image_as_crops(tmp_path):
    rgb, labels = _scene()
    iio.imwrite(tmp_path / "scene.png", rgb)
    source = ObjectSource(tmp_path / "scene.png", "scene.png", labels, list(range(1, 13)))
    whole = build_samples([source])
    assert all(s.image.shape == (700, 600, 3) for s in whole)  # without tiling: as before
    cropped = build_samples([source], TILING)
    assert len(cropped) == 12 and all(s.image.shape == (256, 256, 3) for s in cropped)


@pytest.mark.slow
def test_infosam_train_on_large_images_trains_on_object_crops(tmp_path, capsys):
    rgb, labels = _scene()
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    for name in ("a", "b"):
        iio.imwrite(tmp_path / "data" / "images" / f"{name}.png", rgb)
        iio.imwrite(tmp_path / "data" / "masks" / f"{name}.png", (labels > 0).astype(np.uint8) * 255)
    args = ["train", "--data", str(tmp_path / "data"), "--peft", "decoder", "--distill", "none"]
    args += ["--epochs", "1", "--max-steps", "1", "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert "training on 24 images" in capsys.readouterr().out
    assert main([*args, "--tile-shape", "0", "--out", str(tmp_path / "run0")]) == 0
    assert "training on 2 images" in capsys.readouterr().out


def test_infosam_eval_on_large_images_scores_each_object_in_its_window(tmp_path, capsys):
    """`infosam eval` sees a large image as `train` trains on it: one row per object, at native resolution;
    the small nuclei are far better segmented so than in the whole image resized (--tile-shape 0)."""
    import json

    rgb, labels = _scene()
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    iio.imwrite(tmp_path / "data" / "images" / "a.png", rgb)
    iio.imwrite(tmp_path / "data" / "masks" / "a.png", (labels > 0).astype(np.uint8) * 255)
    args = ["eval", "--data", str(tmp_path / "data"), "--metrics", "iou"]
    assert main([*args, "--out", str(tmp_path / "tiled")]) == 0
    assert "evaluated per object in native-resolution windows, 12 samples" in capsys.readouterr().out
    assert main([*args, "--tile-shape", "0", "--out", str(tmp_path / "whole")]) == 0
    tiled, whole = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("tiled", "whole"))
    assert tiled["n_images"] == 12 and whole["n_images"] == 1
    assert tiled["mean"]["iou"] > whole["mean"]["iou"] + 0.2, (tiled["mean"], whole["mean"])
