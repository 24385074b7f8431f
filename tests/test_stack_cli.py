"""`infosam predict STACK --slice K --propagate` and `infosam segment STACK` (issue 27)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from infosam_core.cli import main
from infosam_core.data.synthetic_stacks import ellipsoid_stack, iou_3d
from infosam_core.io.stacks import read_label_stack


def _box_arg(labels: np.ndarray, label: int, index: int) -> str:
    ys, xs = np.nonzero(labels[index] == label)
    return f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}"


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    data = ellipsoid_stack(seed=31, shape=(8, 128, 128), n_objects=1)
    path = tmp_path_factory.mktemp("stack") / "small.tif"
    tifffile.imwrite(path, data.image, metadata={"axes": "ZYX"})
    return path, data


@pytest.mark.slow
def test_predict_propagates_through_a_stack_and_writes_the_3d_mask(small_stack, tmp_path, capsys):
    path, data = small_stack
    out = tmp_path / "mask.zarr"
    code = main(
        ["predict", str(path), "--slice", "4", "--box", _box_arg(data.labels, 1, 4), "--propagate", "--out", str(out)]
    )
    assert code == 0
    mask = read_label_stack(out)
    assert mask.shape == (8, 128, 128) and set(np.unique(mask)) <= {0, 255}
    assert iou_3d(mask > 0, data.labels == 1) >= 0.75
    assert "s per slice (projection)" in capsys.readouterr().out


def test_predict_one_slice_of_a_stack_without_propagation(small_stack, tmp_path):
    path, data = small_stack
    out = tmp_path / "one.tif"
    assert main(["predict", str(path), "--slice", "4", "--box", _box_arg(data.labels, 1, 4), "--out", str(out)]) == 0
    mask = read_label_stack(out) > 0
    assert mask[4].any() and not mask[:4].any() and not mask[5:].any()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box", "1,1,20,20"], "is a stack of 8 slices: say which one"),
        (["--slice", "8", "--box", "1,1,20,20"], "--slice 8: the stack has 8 planes"),
        (["--slice", "1", "--box", "1,1,200,20"], "reaches outside the 128x128 slices"),
        (["--slice", "1", "--box", "1,1,20,20", "--propagate", "--out", "m.png"], "written as .tif or .zarr"),
        (["--slice", "1", "--box", "1,1,20,20", "--axes", "ZYXQ"], "--axes 'ZYXQ'"),
        (["--slice", "1", "--box", "1,1,20,20", "--iou-threshold", "2"], "iou_threshold must be within"),
    ],
)
def test_predict_stack_refusals(small_stack, tmp_path, capsys, extra, message):
    path, _ = small_stack
    out = [] if "--out" in extra else ["--out", str(tmp_path / "m.tif")]
    assert main(["predict", str(path), *extra, *out]) == 2
    assert message in capsys.readouterr().err


def test_two_dimensional_predict_is_unchanged(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 200
    tifffile.imwrite(tmp_path / "flat.tif", image)
    assert main(["predict", str(tmp_path / "flat.tif"), "--box", "18,18,42,42", "--out", str(tmp_path / "m.png")]) == 0


@pytest.mark.slow
def test_segment_a_stack_links_objects_between_slices(tmp_path, capsys):
    data = ellipsoid_stack(seed=8, shape=(4, 128, 128), n_objects=1, noise=4.0)
    tifffile.imwrite(tmp_path / "vol.tif", data.image, metadata={"axes": "ZYX"})
    out = tmp_path / "labels"
    code = main(["segment", str(tmp_path / "vol.tif"), "--out", str(out), "--points-per-side", "4"])
    assert code == 0, capsys.readouterr().err
    labels = read_label_stack(out / "vol_labels.tif")
    assert labels.shape == (4, 128, 128)
    truth = data.labels == 1
    best = max(np.unique(labels[labels > 0]), key=lambda i: iou_3d(labels == i, truth))
    assert iou_3d(labels == best, truth) >= 0.5  # one id through the slices
    assert "linked through them" in capsys.readouterr().out


def test_segment_refuses_a_mix_of_stacks_and_images(small_stack, tmp_path, capsys):
    path, _ = small_stack
    flat = tmp_path / "flat.png"
    import imageio.v3 as iio

    iio.imwrite(flat, np.zeros((16, 16), np.uint8))
    assert main(["segment", str(path), str(flat), "--out", str(tmp_path / "o")]) == 2
    assert "segment stacks and images in separate runs" in capsys.readouterr().err


@pytest.mark.slow
def test_issue_check_32_slices_three_ellipsoids(tmp_path):
    """The issue's check: (32, 256, 256), three ellipsoids (a fresh seed), one box on slice 16, the bundled model."""
    data = ellipsoid_stack(seed=90210)
    tifffile.imwrite(tmp_path / "stack.tif", data.image)
    out = tmp_path / "m.tif"
    target = 3
    args = ["predict", str(tmp_path / "stack.tif"), "--slice", "16", "--box", _box_arg(data.labels, target, 16)]
    assert main([*args, "--propagate", "--out", str(out)]) == 0
    mask = tifffile.imread(out) > 0
    assert mask.shape == (32, 256, 256)
    assert iou_3d(mask, data.labels == target) >= 0.75
    assert not (mask & (data.labels > 0) & (data.labels != target)).any()
