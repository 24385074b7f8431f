"""Reading images from disk and converting any image array to what SAM expects: RGB uint8 (H, W, 3).

``read_image(path)`` returns the raw array as stored (any dtype, any channel count). ``to_rgb_uint8``
converts it; the rules, in order:

* layout: (H, W) and (H, W, 1) are grayscale and replicated to 3 channels; (H, W, 2) is gray + alpha
  and (H, W, 4) is RGBA: alpha is dropped. A 3-D array whose *first* axis has 1, 3 or 4 entries and
  whose last axis does not (e.g. a (3, H, W) TIFF) is channel-first and transposed. Other channel
  counts, and arrays with fewer than 2 or more than 3 dimensions, are refused.
* values: ``uint8`` is kept as is; ``bool`` becomes 0 / 255; floats already within [0, 1] are
  multiplied by 255; everything else (uint16 and other integers, other floats) is scaled so that the
  0.5th percentile maps to 0 and the 99.5th to 255 (over all channels together, so colour balance is
  kept), which makes 16-bit microscopy and HDR-ish floats look right. A constant image becomes 0.
* refused: empty arrays, NaN or infinite values, non-numeric dtypes.

CMYK images Pillow reads (print JPEGs) are converted to RGB by Pillow, not taken as RGBA.

Every failure raises :class:`ImageError`, whose message names the file (when there is one) and the fix.

Size limit. A small compressed file can decode to gigabytes (a 391 KB zlib TIFF of 20000 x 20000 px is
1.5 GB). :func:`read_image` therefore reads the image's size from the file's header first and refuses
images of more than :func:`max_pixels` pixels (height x width, default :data:`DEFAULT_MAX_PIXELS` =
100 megapixels, e.g. 10000 x 10000) before decoding anything. Raise it with the environment variable
``INFOSAM_MAX_PIXELS`` (e.g. ``INFOSAM_MAX_PIXELS=400000000``). The same limit applies to masks and
label images. A multi-frame image (APNG, GIF, ...) counts frames x height x width, all read from headers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from infosam_core.io.paths import regular_file_problem

TIFF_SUFFIXES = (".tif", ".tiff")


PERCENTILE_RANGE = (0.5, 99.5)


# Percentiles of larger arrays are computed on an evenly strided subsample of about this many values.
_PERCENTILE_SAMPLE = 4_000_000


DEFAULT_MAX_PIXELS = 100_000_000


MAX_PIXELS_ENV = "INFOSAM_MAX_PIXELS"


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (when known) and what to do."""


def max_pixels() -> int:
    """The largest image (height x width) any reader here decodes: ``$INFOSAM_MAX_PIXELS`` or the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ImageError(f"{MAX_PIXELS_ENV}={raw!r}: expected a number of pixels, e.g. 400000000") from None
    if value < 1:
        raise ImageError(f"{MAX_PIXELS_ENV}={raw!r}: must be >= 1")
    return value


def check_pixel_count(shape: tuple[int, ...], where: str) -> None:
    """Refuse an image of ``shape`` (as stored: (H, W), (H, W, C), (C, H, W), (pages, H, W, ...)) whose
    pixel count (all elements but a channel axis of 1-4) exceeds :func:`max_pixels`."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ImageError(f"{where}: invalid image size {tuple(dims)} in the file header.")
    if len(dims) >= 3 and dims[-1] <= 4:
        dims = dims[:-1]
    elif len(dims) == 3 and dims[0] <= 4:
        dims = dims[1:]
    pixels = math.prod(dims)
    limit = max_pixels()
    if pixels > limit:
        size = " x ".join(str(d) for d in shape)
        raise ImageError(
            f"{where}: the image is {size} ({pixels / 1e6:.0f} megapixels), above the limit of "
            f"{limit / 1e6:.0f} megapixels that protects against decompression bombs. If the image is genuine, "
            f"crop or downscale it, or raise the limit with the environment variable {MAX_PIXELS_ENV}={pixels}."
        )


def _header_shape(path: Path) -> tuple[tuple[int, ...] | None, str | None]:
    """The stored array shape from the file's header, without decoding pixels (None when unknown), and Pillow's
    mode (e.g. ``"CMYK"``; None for TIFF and formats Pillow does not read). A multi-frame image (APNG, GIF, WebP,
    ...) is ``(frames, height, width, bands)``: every frame is decoded, so the limit counts them all."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return None, None
            return tuple(int(d) for d in tif.series[0].shape), _tiff_mode(tif)
    from PIL import Image

    # Pillow's own bomb guard would refuse at open, before this check names the limit: the header is read
    # without it, and the decoding that follows runs with Pillow's limit set to ours.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            width, height = im.size
            frames = int(getattr(im, "n_frames", 1) or 1)  # from the header (APNG's acTL) or a scan of frame headers
            if frames > 1:
                return (frames, int(height), int(width), len(im.getbands())), im.mode
            return (int(height), int(width)), im.mode
    except Exception:  # noqa: BLE001 - not a format Pillow reads: imageio tries its other plugins next
        return None, None
    finally:
        Image.MAX_IMAGE_PIXELS = max_pixels()


def _tiff_mode(tif: object) -> str | None:
    """``"CMYK"`` for a TIFF whose first page stores C, M, Y, K separations (photometric SEPARATED with the CMYK
    ink set and four samples), else None (the samples are taken as stored)."""
    import tifffile

    page = tif.pages[0]  # type: ignore[attr-defined]
    inkset = page.tags.get(332)  # InkSet: 1 = CMYK (also when absent), 2 = another ink set
    if (
        getattr(page, "photometric", None) == tifffile.PHOTOMETRIC.SEPARATED
        and (inkset is None or inkset.value == 1)
        and getattr(page, "samplesperpixel", 0) == 4
    ):
        return "CMYK"
    return None


def cmyk_to_rgb(image: np.ndarray) -> np.ndarray:
    """RGB of a (H, W, 4) CMYK array (0 = no ink), in the input's dtype: ``R = (1 - C)(1 - K)`` etc., the plain
    conversion Pillow also uses; ink amounts in ``[0, max]`` of an unsigned integer type or in ``[0, 1]``."""
    if image.ndim != 3 or image.shape[-1] != 4:
        raise ImageError(f"a CMYK image must have 4 samples per pixel, got shape {image.shape}")
    top = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    ink = image.astype(np.float32) / top
    rgb = (1.0 - ink[..., :3]) * (1.0 - ink[..., 3:4]) * top
    return np.rint(rgb).astype(image.dtype) if np.issubdtype(image.dtype, np.integer) else rgb.astype(image.dtype)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` of an image file from its header, without decoding pixels; None when the header does
    not say it plainly (an unknown format, a multi-frame or multi-page image). ImageError for a file that is
    not a regular file or whose header cannot be read."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise ImageError(f"{path}: {'file not found' if problem == 'not found' else 'is ' + problem}.")
    try:
        shape, _ = _header_shape(path)
    except Exception as exc:  # noqa: BLE001 - a header no reader understands: one message naming the file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ImageError(f"{path}: not a readable image ({first}).") from None
    if shape is None:
        return None
    dims = list(shape)
    if len(dims) == 3 and dims[-1] <= 4:
        dims = dims[:-1]
    elif len(dims) == 3 and dims[0] <= 4:
        dims = dims[1:]
    return (int(dims[0]), int(dims[1])) if len(dims) == 2 else None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as stored: PNG, JPEG, BMP, ... via imageio; .tif / .tiff via tifffile.

    Returns the raw array (e.g. (H, W) uint16 for a 16-bit TIFF, (H, W, 4) uint8 for an RGBA PNG).
    Raises :class:`ImageError` for a missing, empty, corrupt or unsupported file.
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem == "not found":
        raise ImageError(f"{path}: file not found. Check the path.")
    if problem == "a folder":
        raise ImageError(f"{path}: is a folder, not an image file.")
    if problem is not None:
        raise ImageError(f"{path}: is {problem}, not a regular file; give an image file.")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes). Copy or export the image again.")
    try:
        shape, mode = _header_shape(path)
        if shape is not None:
            check_pixel_count(shape, str(path))
        if mode == "CMYK" and path.suffix.lower() in TIFF_SUFFIXES:  # a print TIFF: tifffile keeps C, M, Y, K
            import tifffile

            image = cmyk_to_rgb(tifffile.imread(path))
        elif mode == "CMYK":  # e.g. a print JPEG: Pillow converts (inverted Adobe CMYK too); imageio keeps C, M, Y, K
            from PIL import Image

            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        elif path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            image = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            image = iio.imread(path)
            if shape is not None and len(shape) == 2 and image.ndim == 4 and image.shape[0] == 1:
                image = image[0]  # a one-frame GIF comes as a stack of one (imageio's Pillow plugin)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(
            f"{path}: not enough memory to decode this image; crop or downscale it, or lower {MAX_PIXELS_ENV}."
        ) from None
    except Exception as exc:  # noqa: BLE001 - every reader error becomes one message naming the file
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ImageError(
            f"{path}: not a readable image ({first_line}). The file may be truncated or not an image; "
            "export it again as PNG, JPEG or TIFF."
        ) from None
    image = np.asarray(image)
    if image.size == 0:
        raise ImageError(f"{path}: the image has no pixels (shape {image.shape}).")
    check_pixel_count(image.shape, str(path))  # formats whose header was not read
    return image


def to_rgb_uint8(image: np.ndarray, name: str | None = None) -> np.ndarray:
    """Convert an image array to RGB uint8 of shape (H, W, 3), following the rules in the module docstring.

    ``name`` (e.g. the file name) is used in error messages. An input that is already a C-contiguous
    (H, W, 3) uint8 array is returned as is (not copied).
    """
    where = f"{name}: " if name else ""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ImageError(f"{where}unsupported pixel type {image.dtype}; give a numeric (integer or float) image.")
    if image.size == 0:
        raise ImageError(f"{where}the image is empty (shape {image.shape}).")
    image = _to_hwc(image, where)
    image = _to_uint8(image, where)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 2:
        image = np.repeat(image[:, :, :1], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def load_rgb(path: str | Path) -> np.ndarray:
    """``to_rgb_uint8(read_image(path))``: an image file as RGB uint8 (H, W, 3)."""
    return to_rgb_uint8(read_image(path), name=str(path))


def _to_hwc(image: np.ndarray, where: str) -> np.ndarray:
    """(H, W) -> (H, W, 1); channel-first (C, H, W) -> (H, W, C); check the channel count (1-4)."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3:
        raise ImageError(
            f"{where}expected a 2-D (H, W) or 3-D (H, W, C) image, got {image.ndim}-D shape {image.shape}. "
            "For z-stacks or time series, pass one plane (e.g. image[0]), or use the stack commands "
            "(infosam predict STACK --slice K --propagate, infosam segment STACK; infosam_core.io.stacks)."
        )
    if image.shape[2] not in (1, 2, 3, 4) and image.shape[0] in (1, 3, 4):
        image = np.moveaxis(image, 0, 2)
    if image.shape[2] not in (1, 2, 3, 4):
        raise ImageError(
            f"{where}{image.shape[2]} channels in shape {image.shape}; expected 1 (gray), 3 (RGB) or 4 (RGBA). "
            "For multichannel images, pick or combine up to 3 channels first."
        )
    if min(image.shape[:2]) == 0:
        raise ImageError(f"{where}the image is empty (shape {image.shape}).")
    return image


def _to_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Map values to 0..255 uint8 (see the module docstring for the rules)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "f":
        image = image.astype(np.float64, copy=False)
        if not np.isfinite(image).all():
            raise ImageError(f"{where}the image contains NaN or infinite values; replace them (e.g. np.nan_to_num).")
        lo, hi = float(image.min()), float(image.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(image * 255.0).astype(np.uint8)
    return _percentile_scale(image)


def _percentile_scale(image: np.ndarray) -> np.ndarray:
    """Linear map: the 0.5th percentile -> 0, the 99.5th -> 255, clipped (min/max if they coincide)."""
    values = image.reshape(-1)
    if values.size > _PERCENTILE_SAMPLE:
        values = values[:: values.size // _PERCENTILE_SAMPLE + 1]
    lo, hi = (float(v) for v in np.percentile(values, PERCENTILE_RANGE))
    if hi <= lo:
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
