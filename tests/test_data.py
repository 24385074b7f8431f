"""Dataset loading: folder and CSV layouts, mask binarisation, clear errors, splitting."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from infosam_core.data.datasets import DatasetError, SegmentationSample, binarize_mask, load_folder_dataset, split


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, array)
    return path


def _image(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _mask(h=20, w=30, value=255):
    m = np.zeros((h, w), np.uint8)
    m[5:15, 10:20] = value
    return m


def test_folder_dataset_pairs_by_stem(tmp_path):
    _write(tmp_path / "images" / "b.png", _image(seed=1))
    _write(tmp_path / "images" / "a.jpg", _image(seed=2))
    _write(tmp_path / "masks" / "a.png", _mask(value=255))
    _write(tmp_path / "masks" / "b.png", _mask(value=1))  # 0/1 mask
    samples = load_folder_dataset(tmp_path)
    assert [s.name for s in samples] == ["a", "b"]
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape == (20, 30, 3)
        assert s.mask.dtype == bool and s.mask.sum() == 100


def test_binarisation_rules():
    aa = np.array([[0, 100, 128, 255]], np.uint8)  # anti-aliased 0/255 mask: > 127
    assert binarize_mask(aa).tolist() == [[False, False, True, True]]
    labels = np.array([[0, 1, 2, 7]], np.uint8)  # label image / 0-1 mask: > 0
    assert binarize_mask(labels).tolist() == [[False, True, True, True]]
    assert binarize_mask(np.array([[0, 300]], np.uint16)).tolist() == [[False, True]]
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[..., 3] = 255  # opaque alpha is not foreground
    rgba[0, 1, 0] = 255
    assert binarize_mask(rgba).tolist() == [[False, True]]


def test_csv_dataset_relative_paths(tmp_path):
    _write(tmp_path / "data" / "x" / "one.png", _image())
    _write(tmp_path / "data" / "y" / "one_gt.png", _mask())
    (tmp_path / "data" / "train.csv").write_text("image,label\nx/one.png,y/one_gt.png\n")
    for target in (tmp_path / "data" / "train.csv", tmp_path / "data"):
        samples = load_folder_dataset(target)
        assert len(samples) == 1 and samples[0].name == "one" and samples[0].mask.sum() == 100


def test_errors_name_the_files(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_folder_dataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_folder_dataset(tmp_path)
    _write(tmp_path / "images" / "c.png", _image())
    with pytest.raises(DatasetError, match=r"c\.png: no mask.*masks/c\.png"):
        load_folder_dataset(tmp_path)
    _write(tmp_path / "masks" / "c.png", _mask(h=21))
    with pytest.raises(DatasetError, match=r"images/c\.png is 30x20 but its mask .*masks/c\.png is 30x21"):
        load_folder_dataset(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "list.csv").write_text("img,mask\na,b\n")
    with pytest.raises(DatasetError, match="columns image,label"):
        load_folder_dataset(bad)
    (bad / "list.csv").write_text("image,label\nmissing.png,m.png\n")
    with pytest.raises(DatasetError, match="line 2: image .*missing.png not found"):
        load_folder_dataset(bad)


def test_sample_checks_shapes():
    with pytest.raises(DatasetError, match="differs"):
        SegmentationSample(_image(), np.zeros((5, 5), bool), "x")


def test_split_is_seeded_and_disjoint():
    samples = [SegmentationSample(_image(4, 4), np.ones((4, 4), bool), f"s{i}") for i in range(10)]
    train, val = split(samples, 0.2, seed=1)
    assert len(train) == 8 and len(val) == 2
    assert {s.name for s in train} | {s.name for s in val} == {s.name for s in samples}
    assert [s.name for s in split(samples, 0.2, seed=1)[1]] == [s.name for s in val]
    assert split(samples, 0.0)[1] == []
