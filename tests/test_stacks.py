"""Stacks (issue 27): (Z, Y, X) / (T, Y, X) with or without channels from TIFF / OME-TIFF / ImageJ, zarr /
OME-Zarr and folders of numbered slices; axes from metadata or ``axes=``; clear refusals; 3D label files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from infosam_core.io.images import ImageError, to_rgb_uint8
from infosam_core.io.stacks import (
    StackError,
    numbered_slices,
    read_label_stack,
    read_stack,
    stack_from_array,
    write_label_stack,
)


@pytest.fixture
def volume() -> np.ndarray:
    return (np.random.default_rng(0).random((5, 20, 30)) * 4000).astype(np.uint16)


def test_plain_multipage_tiff_is_read_as_zyx_with_a_guess_flag(tmp_path, volume):
    tifffile.imwrite(tmp_path / "plain.tif", volume)
    stack = read_stack(tmp_path / "plain.tif")
    assert (stack.axes, stack.shape, stack.axes_guessed) == ("ZYX", (5, 20, 30), True)
    np.testing.assert_array_equal(stack.plane(3), volume[3])
    np.testing.assert_array_equal(stack.to_array(), volume)
    assert read_stack(tmp_path / "plain.tif", axes="tyx").axes == "TYX"


@pytest.mark.parametrize(
    ("kwargs", "axes", "expected"),
    [
        ({"metadata": {"axes": "TCYX"}}, "TYX", (5, 20, 30)),
        ({"imagej": True, "metadata": {"axes": "ZYX"}}, "ZYX", (5, 20, 30)),
        ({"ome": True, "metadata": {"axes": "TZYX"}}, "TYX", (5, 20, 30)),
    ],
)
def test_axes_come_from_the_tiff_metadata(tmp_path, volume, kwargs, axes, expected):
    data = volume[:, None] if kwargs["metadata"]["axes"] in ("TCYX", "TZYX") else volume
    tifffile.imwrite(tmp_path / "s.tif", data, **kwargs)
    stack = read_stack(tmp_path / "s.tif")
    assert (stack.axes, stack.shape, stack.axes_guessed) == (axes, expected, False)
    np.testing.assert_array_equal(stack.plane(4), volume[4])


def test_channel_first_planes_are_moved_last(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (4, 3, 16, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "zc.tif", data, metadata={"axes": "ZCYX"})
    stack = read_stack(tmp_path / "zc.tif")
    assert (stack.axes, stack.shape) == ("ZYXC", (4, 16, 24, 3))
    np.testing.assert_array_equal(stack.plane(2), data[2].transpose(1, 2, 0))
    assert stack.rgb(2).shape == (16, 24, 3)


def test_unknown_4d_layout_asks_for_axes_and_takes_them(tmp_path):
    data = np.zeros((4, 3, 16, 24), np.uint8)
    tifffile.imwrite(tmp_path / "q.tif", data)
    with pytest.raises(StackError, match=r"q.tif.*--axes ZCYX"):
        read_stack(tmp_path / "q.tif")
    assert read_stack(tmp_path / "q.tif", axes="ZCYX").shape == (4, 16, 24, 3)


@pytest.mark.parametrize(
    ("shape", "axes", "match"),
    [
        ((3, 4, 16, 16), "TZYX", "both Z"),
        ((3, 16, 16), "ZYX ", None),
        ((1, 16, 16), "ZYX", None),
        ((3, 16, 16), "ZYXC", "name 4 dimensions"),
        ((3, 7, 16, 16), "ZCYX", "7 channels"),
        ((16, 16, 3), "YXC", "single plane"),
    ],
)
def test_refusals_name_the_source_and_the_fix(shape, axes, match):
    array = np.zeros(shape, np.uint8)
    if match is None:
        stack = stack_from_array(array, axes, source="mem")
        assert stack.n_planes == shape[0]
        return
    with pytest.raises(StackError, match=match):
        stack_from_array(array, axes, source="mem")


def test_bad_axes_text_and_voxel_limit(monkeypatch):
    with pytest.raises(StackError, match="--axes 'ZQX'"):
        stack_from_array(np.zeros((2, 4, 4)), "ZQX")
    monkeypatch.setenv("INFOSAM_MAX_VOXELS", "100")
    with pytest.raises(StackError, match="INFOSAM_MAX_VOXELS=160"):
        stack_from_array(np.zeros((10, 4, 4)), "ZYX")


def test_stack_contrast_is_the_same_for_every_plane():
    volume = np.stack([np.full((8, 8), v, np.uint16) for v in (100, 200, 300, 400)])
    volume[:, 0, 0] = 0
    stack = stack_from_array(volume, "ZYX")
    # per-plane scaling would make every plane's flat part 255; the stack's keeps them apart
    values = [int(stack.rgb(i)[4, 4, 0]) for i in range(4)]
    assert values == sorted(values) and len(set(values)) == 4


def test_zarr_array_and_ome_zarr_group(tmp_path, volume):
    array = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=volume.shape, dtype=volume.dtype, zarr_format=2)
    array[:] = volume
    stack = read_stack(tmp_path / "a.zarr")
    assert stack.axes == "ZYX" and stack.axes_guessed
    np.testing.assert_array_equal(stack.plane(1), volume[1])

    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=2)
    level = group.create_array("0", shape=(5, 1, 20, 30), dtype=volume.dtype)
    level[:] = volume[:, None]
    group.attrs["multiscales"] = [
        {"axes": [{"name": "t"}, {"name": "c"}, {"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    ]
    stack = read_stack(tmp_path / "ome.zarr")
    assert (stack.axes, stack.shape, stack.axes_guessed) == ("TYX", (5, 20, 30), False)
    np.testing.assert_array_equal(stack.plane(4), volume[4])


def test_folder_of_numbered_slices_in_number_order(tmp_path, volume):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, plane in enumerate(volume):
        iio.imwrite(folder / f"img_{i * 5}.png", (plane // 16).astype(np.uint8))  # 0, 5, 10: not text order
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in numbered_slices(folder)][:3] == ["img_0.png", "img_5.png", "img_10.png"]
    stack = read_stack(folder, axes="TYX")
    assert (stack.axes, stack.shape) == ("TYX", (5, 20, 30))
    np.testing.assert_array_equal(stack.plane(2), (volume[2] // 16).astype(np.uint8))


def test_folder_refusals(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    with pytest.raises(StackError, match="no slices"):
        read_stack(folder)
    iio.imwrite(folder / "a1.png", np.zeros((8, 8), np.uint8))
    iio.imwrite(folder / "b1.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(StackError, match="same slice number 1"):
        read_stack(folder)
    (folder / "b1.png").unlink()
    iio.imwrite(folder / "a2.png", np.zeros((9, 8), np.uint8))
    stack = read_stack(folder)
    with pytest.raises(StackError, match=r"a2.png.*same size"):
        stack.plane(1)
    with pytest.raises(StackError, match="outside the stack's 2 planes"):
        stack.plane(2)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(StackError, match="not found"):
        read_stack(tmp_path / "missing.tif")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(StackError, match="not a stack format"):
        read_stack(tmp_path / "x.png")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(StackError, match=r"bad.tif: (no image|not a readable TIFF)"):
        read_stack(tmp_path / "bad.tif")


@pytest.mark.parametrize("name", ["labels.tif", "labels.zarr"])
def test_label_stack_round_trip_and_replace(tmp_path, name):
    labels = np.zeros((4, 10, 12), np.uint16)
    labels[1:3, 2:5, 2:6] = 1
    labels[2, 6:9, 6:9] = 300
    path = write_label_stack(tmp_path / name, labels, axes="TYX")
    back = read_label_stack(path)
    np.testing.assert_array_equal(back, labels)
    assert read_stack(path).axes == "TYX"
    write_label_stack(path, labels[:, ::-1].copy())  # over an existing file / store: replaced whole
    np.testing.assert_array_equal(read_label_stack(path), labels[:, ::-1])
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind
    with pytest.raises(StackError, match=r"\.png"):
        write_label_stack(tmp_path / "l.png", labels)
    with pytest.raises(StackError, match=r"\(N, Y, X\)"):
        write_label_stack(tmp_path / "l.tif", labels[0])


def test_two_dimensional_images_are_unchanged_and_stacks_point_to_the_stack_commands():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert to_rgb_uint8(gray).shape == (8, 8, 3)
    with pytest.raises(ImageError, match="--slice"):
        to_rgb_uint8(np.zeros((5, 8, 8, 2), np.uint8))


def test_two_dimensional_layouts_are_not_guessed_as_stacks(tmp_path):
    with pytest.raises(StackError, match="like one 2-D image with channels.*--axes"):
        stack_from_array(np.zeros((64, 48, 3), np.uint8))
    with pytest.raises(StackError, match="like one 2-D image"):
        stack_from_array(np.zeros((3, 64, 48), np.uint8))
    assert stack_from_array(np.zeros((3, 64, 48), np.uint8), "ZYX").n_planes == 3
    from infosam_core.io.stacks import is_stack_file, is_stack_source

    flat = zarr.open(str(tmp_path / "rgb.zarr"), mode="w", shape=(64, 48, 3), dtype=np.uint8, zarr_format=2)
    flat[:] = 1
    volume = zarr.open(str(tmp_path / "vol.zarr"), mode="w", shape=(6, 64, 48), dtype=np.uint8, zarr_format=2)
    volume[:] = 1
    assert not is_stack_source(tmp_path / "rgb.zarr") and is_stack_source(tmp_path / "vol.zarr")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 48, 3), np.uint8))
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((6, 64, 48), np.uint8))
    assert not is_stack_file(tmp_path / "rgb.tif") and is_stack_file(tmp_path / "vol.tif")


def test_training_dataset_takes_stacks_slice_by_slice(tmp_path):
    from infosam_core.data.datasets import DatasetError, load_folder_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    volume = np.random.default_rng(2).integers(0, 60, (5, 32, 40), dtype=np.uint8)
    labels = np.zeros((5, 32, 40), np.uint16)
    labels[1:4, 5:15, 5:20] = 7
    volume[labels > 0] = 200
    tifffile.imwrite(tmp_path / "images" / "vol.tif", volume, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "masks" / "vol.tif", labels, metadata={"axes": "ZYX"})
    iio.imwrite(tmp_path / "images" / "flat.png", np.zeros((16, 16), np.uint8))
    flat_mask = np.zeros((16, 16), np.uint8)
    flat_mask[2:5, 2:5] = 255
    iio.imwrite(tmp_path / "masks" / "flat.png", flat_mask)
    samples = load_folder_dataset(tmp_path)
    assert sorted(s.name for s in samples) == ["flat", "vol[1]", "vol[2]", "vol[3]"]
    by_name = {s.name: s for s in samples}
    np.testing.assert_array_equal(by_name["vol[2]"].mask, labels[2] > 0)
    assert by_name["vol[2]"].image.shape == (32, 40, 3)
    tifffile.imwrite(tmp_path / "masks" / "vol.tif", labels[:4], metadata={"axes": "ZYX"})
    with pytest.raises(DatasetError, match="the mask volume is \\(4, 32, 40\\)"):
        load_folder_dataset(tmp_path)
