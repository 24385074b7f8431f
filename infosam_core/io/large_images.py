"""Images read by region: what tiled prediction and segment-all read their tiles from.

A :class:`RegionSource` has a ``shape`` (H, W) and ``read_rgb(y0, x0, y1, x1, step)`` -> RGB uint8 of that
region (every ``step``-th pixel: a downscaled view). :class:`ArrayRegions` wraps an image already in memory
(converted once with :func:`~infosam_core.io.images.to_rgb_uint8`); :func:`open_regions` opens a zarr /
OME-Zarr store or a TIFF (tiled / pyramidal OME-TIFF read tile by tile through tifffile's zarr store) as a
:class:`LazyRegions` that reads and decodes only the regions asked for. :func:`write_labels_zarr` writes a
large label image as OME-Zarr.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from infosam_core.io.images import (
    MAX_PIXELS_ENV,
    PERCENTILE_RANGE,
    TIFF_SUFFIXES,
    ImageError,
    check_pixel_count,
    max_pixels,
    to_rgb_uint8,
)


@runtime_checkable
class RegionSource(Protocol):
    """An image read one region at a time."""

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) at full resolution."""
        ...

    def read_rgb(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """RGB uint8 (h, w, 3) of rows y0:y1:step and columns x0:x1:step (ends exclusive)."""
        ...


class ArrayRegions:
    """A :class:`RegionSource` over an in-memory image (any array ``to_rgb_uint8`` accepts)."""

    def __init__(self, image: np.ndarray, name: str | None = None) -> None:
        self.rgb = to_rgb_uint8(image, name)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def read_rgb(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        _check_region(self.shape, y0, x0, y1, x1, step)
        return np.ascontiguousarray(self.rgb[y0:y1:step, x0:x1:step])


def as_regions(image: np.ndarray | RegionSource) -> RegionSource:
    """``image`` as a :class:`RegionSource` (an array is wrapped in :class:`ArrayRegions`)."""
    if isinstance(image, np.ndarray):
        return ArrayRegions(image)
    if isinstance(image, RegionSource):
        return image
    return ArrayRegions(np.asarray(image))


def _check_region(shape: tuple[int, int], y0: int, x0: int, y1: int, x1: int, step: int) -> None:
    height, width = shape
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width) or step < 1:
        raise ValueError(
            f"region rows {y0}:{y1}, columns {x0}:{x1} (step {step}) is not inside the {height}x{width} image"
        )


# ------------------------------------------------------------------------------------------ lazy sources
#: the overview the intensity range of a lazy non-uint8 image is taken from has about this many pixels
OVERVIEW_PIXELS = 4_000_000

ZARR_SUFFIXES = (".zarr", ".ome.zarr")


def is_zarr_path(path: str | Path) -> bool:
    """A zarr / OME-Zarr store: a folder named ``*.zarr`` or holding zarr metadata."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.name.lower().endswith(".zarr") or any(
        (path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")
    )


class LazyRegions:
    """A :class:`RegionSource` over a zarr-like array (zarr, or a TIFF's tiles through tifffile's zarr store):
    only the regions asked for are read and decoded.

    ``array`` is 2-D (Y, X), (Y, X, C) or (C, Y, X) after leading axes of length 1 are dropped (OME's T, C, Z).
    Values: uint8 and bool as :func:`~infosam_core.io.images.to_rgb_uint8` maps them; other types are mapped
    with the 0.5th / 99.5th percentiles of a strided overview of the whole image (about
    :data:`OVERVIEW_PIXELS` pixels), the same for every region, so tiles match at the seams.

    The decompression-bomb guard (:func:`~infosam_core.io.images.max_pixels`) counts what each read decodes,
    not the image's size: a 400-megapixel zarr can be segmented tile by tile; one region above the limit is
    refused, and so is a file stored in chunks (tiles, strips) above it, since any read decodes a whole chunk
    (a single-strip TIFF of 20000 x 20000 is a bomb however small the region asked for).
    """

    def __init__(self, array: Any, name: str, close: Any = None) -> None:
        shape = tuple(int(d) for d in array.shape)
        core: list[int] = list(shape)
        self._index: tuple[Any, ...] = ()
        while len(core) > 2 and core[0] == 1:  # OME's leading T, C, Z of length 1
            self._index += (0,)
            core = core[1:]
        if len(core) == 3 and core[-1] > 4 and core[0] <= 4:
            self._channel_axis: int | None = 0
        elif len(core) == 3:
            self._channel_axis = 2
        elif len(core) == 2:
            self._channel_axis = None
        else:
            raise ImageError(
                f"{name}: an array of shape {shape} is not one 2-D image (Y, X), (Y, X, C) or (C, Y, X); "
                "pick one plane or channel first"
            )
        if self._channel_axis is not None and core[self._channel_axis] > 4:
            raise ImageError(f"{name}: {core[self._channel_axis]} channels in shape {shape}; expected 1, 3 or 4")
        self.array = array
        self.name = name
        self._close = close
        self.dtype = np.dtype(array.dtype)
        ys = core[1] if self._channel_axis == 0 else core[0]
        xs = core[2] if self._channel_axis == 0 else core[1]
        self._shape = (int(ys), int(xs))
        self._range: tuple[float, float] | None = None
        self._check_chunks()

    def _check_chunks(self) -> None:
        chunks = getattr(self.array, "chunks", None)
        if not chunks or len(chunks) != len(self.array.shape):
            return
        y_axis = len(self._index) + (1 if self._channel_axis == 0 else 0)
        rows, cols = int(chunks[y_axis]), int(chunks[y_axis + 1])
        limit = max_pixels()
        if rows * cols > limit:
            raise ImageError(
                f"{self.name}: stored in chunks (tiles or strips) of {rows} x {cols} pixels "
                f"({rows * cols / 1e6:.0f} megapixels): reading any region decodes a whole chunk, above the limit "
                f"of {limit / 1e6:.0f} megapixels that protects against decompression bombs. Save it tiled (e.g. "
                f"OME-TIFF or zarr with 512 x 512 tiles), or raise the limit with the environment variable "
                f"{MAX_PIXELS_ENV}={rows * cols}."
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def read_raw(self, y0: int, x0: int, y1: int, x1: int, step: int) -> np.ndarray:
        region = (slice(y0, y1, step), slice(x0, x1, step))
        if self._channel_axis == 0:
            data = np.asarray(self.array[(*self._index, slice(None), *region)])
            return np.moveaxis(data, 0, -1)
        return np.asarray(self.array[(*self._index, *region)])

    def value_range(self) -> tuple[float, float]:
        """(low, high) mapped to 0 and 255 for a non-uint8 image (from the overview)."""
        if self._range is None:
            height, width = self._shape
            step = max(1, math.ceil(math.sqrt(height * width / OVERVIEW_PIXELS)))
            overview = self.read_raw(0, 0, height, width, step).astype(np.float64)
            if not np.isfinite(overview).all():
                raise ImageError(f"{self.name}: the image contains NaN or infinite values")
            low, high = (float(v) for v in np.percentile(overview, PERCENTILE_RANGE))
            if high <= low:
                low, high = float(overview.min()), float(overview.max())
            if self.dtype.kind == "f" and overview.min() >= 0 and overview.max() <= 1:
                low, high = 0.0, 1.0
            self._range = (low, high)
        return self._range

    def read_rgb(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        _check_region(self._shape, y0, x0, y1, x1, step)
        rows, cols = len(range(y0, y1, step)), len(range(x0, x1, step))
        check_pixel_count((rows, cols), f"{self.name} (a region of it)")
        data = self.read_raw(y0, x0, y1, x1, step)
        if self.dtype != np.uint8 and self.dtype != np.bool_:
            low, high = self.value_range()
            scale = 255.0 / (high - low) if high > low else 0.0
            data = np.round(np.clip((data.astype(np.float64) - low) * scale, 0.0, 255.0)).astype(np.uint8)
        return to_rgb_uint8(data, self.name)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def _zarr_image_array(node: Any, name: str) -> Any:
    """The full-resolution array of a zarr node: the node itself, or an OME-Zarr group's first multiscale level
    (``multiscales[0].datasets[0].path``, in ``attrs`` (0.4) or ``attrs["ome"]`` (0.5)), else a group's ``"0"``."""
    if hasattr(node, "shape"):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    path = "0"
    if multiscales:
        try:
            path = str(multiscales[0]["datasets"][0]["path"])
        except (KeyError, IndexError, TypeError):
            raise ImageError(f"{name}: OME-Zarr multiscales metadata without a dataset path") from None
    try:
        array = node[path]
    except KeyError:
        raise ImageError(
            f"{name}: a zarr group without an image array (no {path!r}); give the array's folder"
        ) from None
    if not hasattr(array, "shape"):
        raise ImageError(f"{name}: {path!r} in this zarr group is not an array")
    return array


def open_regions(path: str | Path) -> LazyRegions:
    """A lazy :class:`RegionSource` for a zarr / OME-Zarr store or a TIFF (tiled, pyramidal OME-TIFF: read by
    tile; strips otherwise). ImageError naming the file for anything else or anything unreadable."""
    import zarr

    path = Path(path)
    where = str(path)
    if is_zarr_path(path):
        try:
            node = zarr.open(str(path), mode="r")
        except Exception as exc:  # noqa: BLE001 - every reader error: one message naming the store
            raise ImageError(f"{where}: not a readable zarr store ({type(exc).__name__}: {exc})") from None
        return LazyRegions(_zarr_image_array(node, where), where)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        import tifffile

        try:
            store = tifffile.imread(path, aszarr=True)
            node = zarr.open(store, mode="r")
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{where}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
        return LazyRegions(_zarr_image_array(node, where), where, close=store.close)
    raise ImageError(f"{where}: read by region only from zarr / OME-Zarr folders and TIFF files")


def write_labels_zarr(path: str | Path, labels: np.ndarray, chunk: int = 512) -> Path:
    """Write a label image as an OME-Zarr (0.4) group: array ``0`` chunked ``chunk`` x ``chunk`` + multiscales
    metadata, written into a temporary folder beside ``path`` and moved into place (all or nothing)."""
    import shutil
    import tempfile

    import zarr

    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        root = zarr.open_group(str(tmp / "store"), mode="w", zarr_format=2)
        array = root.create_array("0", shape=labels.shape, dtype=labels.dtype, chunks=(chunk, chunk))
        array[:] = labels
        root.attrs["multiscales"] = [
            {
                "version": "0.4",
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
            }
        ]
        root.attrs["image-label"] = {"version": "0.4"}
        if path.exists():
            old = tmp / "old"
            path.rename(old)
        (tmp / "store").rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_labels_zarr(path: str | Path) -> np.ndarray:
    """A label image written by :func:`write_labels_zarr` (or any 2-D integer zarr / OME-Zarr array), read whole."""
    source = open_regions(path)
    if source.dtype.kind not in "iub":
        raise ImageError(f"{path}: not a label image (values of type {source.dtype})")
    height, width = source.shape
    check_pixel_count((height, width), str(path))
    return source.read_raw(0, 0, height, width, 1)
