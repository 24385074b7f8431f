"""Images bounded before they decode (issue 32): multi-frame APNG / GIF count frames x pixels against the limit;
CMYK JPEGs load with their real colours; a FIFO is refused without opening it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from infosam_core.io.images import MAX_PIXELS_ENV, ImageError, load_rgb, read_image

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _animated(path: Path, frames: int, size: tuple[int, int], mode: str = "RGB") -> Path:
    images = [Image.new(mode, size, (i * 7) % 256 if mode == "L" else ((i * 7) % 256, 0, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


@pytest.mark.parametrize("suffix", [".png", ".gif", ".webp"])
def test_animated_images_count_every_frame_against_the_limit(tmp_path, monkeypatch, suffix):
    """10 frames of 400 x 400 (0.16 MP each, 1.6 MP in all) against a 1 MP limit: refused from the header, one
    frame alone is accepted."""
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000000")
    many = _animated(tmp_path / f"many{suffix}", 10, (400, 400))
    import imageio.v3 as iio

    decode = iio.imread
    monkeypatch.setattr(iio, "imread", lambda *a, **k: pytest.fail("decoded before the limit was checked"))
    with pytest.raises(ImageError, match=r"many\.\w+: the image is 10 x 400 x 400 x \d .*above the limit of 1 mega"):
        read_image(many)
    monkeypatch.setattr(iio, "imread", decode)
    one = _animated(tmp_path / f"one{suffix}", 1, (400, 400))
    assert read_image(one).shape[:2] == (400, 400)  # a one-frame GIF too (it came as a stack of one)
    assert load_rgb(one).shape == (400, 400, 3)


@FUZZ
@given(frames=st.integers(1, 6), height=st.integers(1, 64), width=st.integers(1, 64), gray=st.booleans())
def test_fuzzed_animated_images_are_read_within_the_limit_or_refused(tmp_path_factory, frames, height, width, gray):
    folder = tmp_path_factory.mktemp("anim")
    limit = 4000
    os.environ[MAX_PIXELS_ENV] = str(limit)
    try:
        for suffix in (".png", ".gif"):
            path = _animated(folder / f"a{suffix}", frames, (width, height), "L" if gray else "RGB")
            try:
                image = read_image(path)
            except ImageError as exc:
                assert str(exc).startswith(str(path)) and "\n" not in str(exc)
                assert frames * height * width > limit
            else:
                assert image.size <= 4 * limit
                assert image.shape[-3:-1] == (height, width) or image.shape[-2:] == (height, width)
    finally:
        del os.environ[MAX_PIXELS_ENV]


def test_cmyk_jpeg_loads_with_its_rgb_colours(tmp_path):
    """Issue 32: an RGB-229 pixel saved as CMYK loaded as 26 (C taken as R, K dropped)."""
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (229, 100, 50)
    rgb[:, 8:] = (20, 200, 240)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=100)
    assert Image.open(tmp_path / "print.jpg").mode == "CMYK"
    loaded = load_rgb(tmp_path / "print.jpg")
    assert loaded.shape == (16, 16, 3)
    assert np.abs(loaded[2:-2, 2:6].astype(int) - (229, 100, 50)).max() <= 6
    assert np.abs(loaded[2:-2, 10:14].astype(int) - (20, 200, 240)).max() <= 6


def test_a_fifo_as_an_image_is_refused_without_opening(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: errors.append(_error(read_image, fifo)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "reading a FIFO hangs"
    assert isinstance(errors[0], ImageError) and "a FIFO (named pipe), not a regular file" in str(errors[0])


def _error(call, *args) -> BaseException | None:
    try:
        call(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test
        return exc
    return None


def test_a_cmyk_tiff_is_converted_to_rgb_not_taken_as_rgba(tmp_path):
    """Issue 32: CMYK TIFFs read through tifffile kept C, M, Y, K (a cyan print became near-black RGBA)."""
    import numpy as np
    import tifffile

    from infosam_core.io.images import load_rgb

    cmyk = np.zeros((8, 10, 4), np.uint8)
    cmyk[..., 0] = 255  # full cyan, no black: RGB (0, 255, 255)
    cmyk[:4, :, 3] = 128  # half black on the top rows: RGB (0, 127, 127)
    for dtype, scale in ((np.uint8, 1), (np.uint16, 257)):
        path = tmp_path / f"print_{np.dtype(dtype).name}.tif"
        tifffile.imwrite(path, cmyk.astype(dtype) * scale, photometric="separated")
        rgb = load_rgb(path)
        assert rgb.shape == (8, 10, 3)
        assert tuple(rgb[6, 0]) == (0, 255, 255)
        assert tuple(rgb[0, 0]) == (0, 127, 127)
