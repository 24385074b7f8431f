"""Image reading and the documented conversion to RGB uint8."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from infosam_core.io.images import ImageError, load_rgb, read_image, to_rgb_uint8


def _ramp(dtype, lo, hi, shape=(20, 30)) -> np.ndarray:
    return np.linspace(lo, hi, num=int(np.prod(shape))).reshape(shape).astype(dtype)


# ------------------------------------------------------------------------------------------ conversion
def test_uint8_rgb_is_kept_as_is():
    image = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    out = to_rgb_uint8(image)
    assert out is image


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 1)])
def test_gray_is_replicated(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = to_rgb_uint8(image)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], image.reshape(8, 9))


def test_rgba_drops_alpha():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(image), image[:, :, :3])


def test_gray_alpha_drops_alpha():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 2), dtype=np.uint8)
    out = to_rgb_uint8(image)
    np.testing.assert_array_equal(out, np.repeat(image[:, :, :1], 3, axis=2))


def test_channel_first_is_transposed():
    image = np.random.default_rng(0).integers(0, 256, (3, 10, 12), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(image), np.moveaxis(image, 0, 2))


def test_bool_is_0_or_255():
    image = np.zeros((4, 4), dtype=bool)
    image[1, 2] = True
    out = to_rgb_uint8(image)
    assert set(np.unique(out)) == {0, 255} and out[1, 2, 0] == 255


def test_unit_floats_are_times_255():
    image = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(image)[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize(
    "dtype,lo,hi",
    [
        (np.uint16, 1000, 5000),
        (np.int16, -300, 300),
        (np.int32, 0, 100_000),
        (np.float32, -5.0, 20.0),
        (np.float64, 0.0, 4095.0),
        (np.float16, 2.0, 9.0),
    ],
)
def test_wide_ranges_use_percentile_scaling(dtype, lo, hi):
    image = _ramp(dtype, lo, hi)
    out = to_rgb_uint8(image)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    # the 0.5 / 99.5 percentiles map to 0 / 255; the ends saturate, the middle is mid-grey
    assert out.min() == 0 and out.max() == 255
    assert abs(int(out[:, :, 0].reshape(-1)[300]) - 128) <= 2  # the median pixel
    assert (np.diff(out[:, :, 0].reshape(-1).astype(int)) >= 0).all()  # monotone


def test_uint16_outliers_do_not_crush_contrast():
    image = _ramp(np.uint16, 100, 600, shape=(100, 100))
    image[0, 0] = 65535  # one hot pixel
    out = to_rgb_uint8(image)[:, :, 0]
    assert out[50, 0] > 100  # the body of the image still spans the range


def test_uint16_rgb_keeps_colour_balance():
    image = np.zeros((10, 10, 3), dtype=np.uint16)
    image[..., 0] = np.linspace(0, 4000, 100).reshape(10, 10)
    image[..., 2] = 2000
    out = to_rgb_uint8(image)
    assert out[..., 1].max() == 0 and 100 < out[0, 0, 2] < 160  # scaled together, not per channel


def test_constant_image_becomes_black():
    assert to_rgb_uint8(np.full((4, 4), 700, dtype=np.uint16)).max() == 0


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((0, 5), dtype=np.uint8), "empty"),
        (np.zeros((5, 0, 3), dtype=np.uint8), "empty"),
        (np.zeros((2, 3, 4, 5, 6), dtype=np.uint8), "5-D"),
        (np.zeros((7,), dtype=np.uint8), "1-D"),
        (np.zeros((5, 6, 7), dtype=np.uint8), "7 channels"),
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([[0.1, np.inf]], dtype=np.float32), "NaN or infinite"),
        (np.array([["a", "b"]]), "pixel type"),
        (np.zeros((4, 4), dtype=np.complex64), "pixel type"),
    ],
)
def test_bad_arrays_raise_image_error(image, match):
    with pytest.raises(ImageError, match=match):
        to_rgb_uint8(image)


def test_error_names_the_image():
    with pytest.raises(ImageError, match="scan.tif"):
        to_rgb_uint8(np.zeros((2, 3, 4, 5, 6)), name="scan.tif")


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


# ---------------------------------------------------------------------------------------------- files
def test_png_and_jpeg_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", image)
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), image)
    iio.imwrite(tmp_path / "a.jpg", image)
    jpeg = load_rgb(tmp_path / "a.jpg")
    assert jpeg.shape == (12, 17, 3) and jpeg.dtype == np.uint8


def test_rgba_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", image)
    assert read_image(tmp_path / "a.png").shape == (6, 7, 4)
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), image[..., :3])


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".TIF"])
def test_16bit_tiff(tmp_path, suffix):
    image = _ramp(np.uint16, 200, 3000)
    tifffile.imwrite(tmp_path / f"a{suffix}", image)
    raw = read_image(tmp_path / f"a{suffix}")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, image)
    rgb = load_rgb(tmp_path / f"a{suffix}")
    assert rgb.shape == (20, 30, 3) and rgb.max() == 255


def test_16bit_png(tmp_path):
    image = _ramp(np.uint16, 0, 60000)
    iio.imwrite(tmp_path / "a.png", image)
    assert read_image(tmp_path / "a.png").dtype == np.uint16
    assert load_rgb(tmp_path / "a.png").max() == 255


def test_corrupt_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", image)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="bad.png.*not a readable image"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageError, match="junk.png"):
        load_rgb(tmp_path / "junk.png")


def test_corrupt_tiff(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageError, match="bad.tif"):
        read_image(tmp_path / "bad.tif")


def test_zero_size_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nope.png.*not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_5d_tiff_is_refused_on_conversion(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 2, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(ImageError, match="stack.tif.*one plane"):
        load_rgb(tmp_path / "stack.tif")
