"""`infosam segment`: automatic segmentation of images and folders to label images + COCO."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from infosam_core.annotation.export import read_label_image
from infosam_core.cli import main
from infosam_core.io.images import load_rgb
from infosam_core.resources import SAMPLES_DIR

FAST = ["--points-per-side", "8"]


@pytest.fixture(scope="module")
def nucleus_folder(tmp_path_factory):
    """The three bundled nucleus samples, cropped small (fast)."""
    folder = tmp_path_factory.mktemp("nuclei")
    for name in ("nuclei_dense_gray.png", "nuclei_stained_rgb.png", "nuclei_fluorescence_16bit.tif"):
        iio.imwrite(folder / f"{name.split('.')[0]}.png", load_rgb(SAMPLES_DIR / name)[:120, :140])
    return folder


@pytest.mark.slow
def test_folder_to_label_images_and_coco_then_resume(nucleus_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(nucleus_folder), "--out", str(out), "--format", "png", *FAST]) == 0
    labels = sorted(out.glob("*_labels.png"))
    assert [p.name.replace("_labels.png", "") for p in labels] == sorted(p.stem for p in nucleus_folder.iterdir())
    for path in labels:
        image = read_label_image(path)
        assert image.shape == (120, 140)
        assert len(np.unique(image)) - 1 >= 2  # several objects each
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["images"]) == 3
    per_image = {im["id"]: 0 for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] += 1
        assert ann["segmentation"]["size"] == [120, 140]
    assert min(per_image.values()) >= 2
    assert "3 images" in capsys.readouterr().out

    # a re-run skips what is done; a deleted label file is made again
    before = labels[0].stat().st_mtime_ns
    labels[1].unlink()
    assert main(["segment", str(nucleus_folder), "--out", str(out), "--format", "png", *FAST]) == 0
    assert "2 of 3 images already segmented" in capsys.readouterr().out
    assert labels[0].stat().st_mtime_ns == before and labels[1].exists()


def test_user_errors(tmp_path, nucleus_folder, capsys):
    assert main(["segment", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["segment", str(nucleus_folder), "--out", str(tmp_path / "o"), "--points-per-side", "0"]) == 2
    assert "points_per_side" in capsys.readouterr().err
    assert main(["segment", str(nucleus_folder), "--out", str(tmp_path / "o"), "--truth", str(tmp_path)]) == 2
    assert "no mask for" in capsys.readouterr().err


@pytest.mark.slow
def test_base_and_adapted_on_dsb_nuclei_print_f1(dsb_dir, tmp_path, capsys, tiny_sam):
    """Three nucleus images, the bundled model and an adapter trained (briefly) on three other ones."""
    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
    from infosam_core.data.datasets import SegmentationSample
    from infosam_core.evaluation.instances import instances_from_mask
    from infosam_core.training.config import TrainConfig
    from infosam_core.training.trainer import train

    names = sorted(p.name for p in (dsb_dir / "masks").glob("*.png"))
    small = [n for n in names if iio.imread(dsb_dir / "masks" / n).shape == (256, 256)]
    images, truth = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    truth.mkdir()
    for name in small[:3]:
        (images / name).write_bytes((dsb_dir / "images" / name).read_bytes())
        (truth / name).write_bytes((dsb_dir / "masks" / name).read_bytes())
    samples = []
    for name in small[3:6]:
        rgb = load_rgb(dsb_dir / "images" / name)
        objects = instances_from_mask(iio.imread(dsb_dir / "masks" / name) > 0)
        samples += [SegmentationSample(rgb, objects == k, f"{name}#{k}") for k in range(1, objects.max() + 1)]
    result = train(TrainConfig(distill="none", max_steps=3, epochs=1, batch_size=2), tiny_sam, samples)
    adapter = tmp_path / "adapter"
    save_peft_checkpoint(result.model, adapter)

    for extra, out in (([], tmp_path / "base"), (["--adapter", str(adapter)], tmp_path / "adapted")):
        assert main(["segment", str(images), "--out", str(out), "--truth", str(truth), *FAST, *extra]) == 0
        printed = capsys.readouterr().out
        assert "F1@0.5" in printed
        assert len(list(out.glob("*_labels.tif"))) == 3
        assert all(len(np.unique(read_label_image(p))) > 2 for p in out.glob("*_labels.tif"))
        assert json.loads((out / "coco.json").read_text())["annotations"]


# ------------------------------------------------------------------------------------- issue 32: hostile inputs
def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_out_truth_and_grid_are_refused_before_the_work(tmp_path, nucleus_folder, capsys, monkeypatch):
    """``--out`` a file, ``--truth`` masks of another size, ``--points-per-side 100000`` (74.5 GiB): exit 2 and one
    line, before any model is loaded."""
    from infosam_core.adapter_files import loading

    monkeypatch.setattr(loading, "load_model_with_adapter", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "file").write_text("x")
    assert main(["segment", str(nucleus_folder), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in _one_line(capsys.readouterr().err)
    truth = tmp_path / "truth"
    truth.mkdir()
    for image in nucleus_folder.iterdir():
        iio.imwrite(truth / image.name, np.zeros((64, 64), np.uint8))
    assert main(["segment", str(nucleus_folder), "--out", str(tmp_path / "o"), "--truth", str(truth)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "the mask is 64 x 64 but" in line and "is 120 x 140" in line
    assert main(["segment", str(nucleus_folder), "--out", str(tmp_path / "o"), "--points-per-side", "100000"]) == 2
    assert "points_per_side must be in [1, 256]" in _one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_out_in_the_input_folder_and_unreadable_label_files(tmp_path, nucleus_folder, capsys):
    """``--out`` = the input folder: a re-run does not segment its own label files (``a_labels_labels.tif``) and
    coco.json lists the images only; a damaged ``*_labels.tif`` already there is made again, not a traceback."""
    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted(nucleus_folder.iterdir())[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    for _ in range(2):
        assert main(["segment", str(folder), "--out", str(folder), *FAST]) == 0
    capsys.readouterr()
    assert not list(folder.glob("*_labels_labels.*"))
    coco = json.loads((folder / "coco.json").read_text())
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(p.name for p in folder.glob("*.png"))
    damaged = sorted(folder.glob("*_labels.tif"))[0]
    damaged.write_bytes(b"not a tiff")
    assert main(["segment", str(folder), "--out", str(folder), *FAST]) == 0
    assert "unreadable" in capsys.readouterr().err
    assert read_label_image(damaged).shape == (120, 140)
