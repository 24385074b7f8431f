"""Z-stacks and time series: (Z, Y, X) / (T, Y, X) arrays, with or without channels, read plane by plane.

Sources (:func:`read_stack`):

* a multi-page TIFF / OME-TIFF / ImageJ hyperstack: the axes come from the file's metadata (tifffile's
  ``series.axes``: OME-XML, ImageJ, tifffile's own shaped description); a plain multi-page TIFF has none
  (tifffile calls its page axis ``Q``);
* a zarr array, or an OME-Zarr image (its first multiscale level and the ``multiscales`` axes);
* a folder of numbered slices (``slice_000.tif``, ``img7.png``, ...): sorted by the last number in each name,
  every slice the same shape.

Axes: letters ``Z`` (depth), ``T`` (time), ``Y``, ``X``, ``C`` (channels; tifffile's ``S`` samples too).
Axes of length 1 are dropped; exactly one of Z / T may remain (a (T, Z, Y, X) file is refused: pick one time
point or one depth). Where the source does not say (``Q`` / ``I`` axes, a plain array), ``axes=`` (the CLI's
``--axes ZYX`` / ``TYX`` / ``ZCYX`` ...) says it; without it a 3-D array is read as Z, Y, X and a 4-D array
whose last axis has 1-4 entries as Z, Y, X, C (:attr:`Stack.axes_guessed` says so; propagation treats Z and T
alike). Anything else is refused with a message naming the file and the ``--axes`` to give.

Planes are read lazily (TIFF and zarr through zarr stores, folders one file per slice) and converted to RGB
uint8 with one contrast for the whole stack (:meth:`Stack.rgb`: the 0.5 / 99.5 percentiles of a sample of
planes), so that an object keeps its brightness from slice to slice. Limits: each plane obeys
:func:`~infosam_core.io.images.max_pixels`, and the whole stack :func:`max_voxels` (``$INFOSAM_MAX_VOXELS``,
default 4 billion), both checked from headers before any pixel is decoded.

3D label files (:func:`write_label_stack` / :func:`read_label_stack`): a label volume with the stack's
(N, Y, X) shape as a zlib TIFF (axes ``ZYX`` / ``TYX`` in its metadata) or a zarr array (one chunk per
plane), written atomically (a temporary file or folder renamed into place).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.io.images import (
    PERCENTILE_RANGE,
    ImageError,
    check_pixel_count,
    max_pixels,
    read_image,
    to_rgb_uint8,
)

STACK_AXES = ("Z", "T")
#: axis letters a source or ``--axes`` may name; tifffile's S (samples) is a channel axis
KNOWN_AXES = frozenset("ZTYXCS")
DEFAULT_MAX_VOXELS = 4_000_000_000
MAX_VOXELS_ENV = "INFOSAM_MAX_VOXELS"
SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
LABEL_STACK_SUFFIXES = (".tif", ".tiff", ".zarr")
_CONTRAST_PLANES = 8  # planes sampled for the stack-wide contrast


class StackError(ImageError):
    """A stack that cannot be used; the message names the source and the fix (an :class:`ImageError` too)."""


def max_voxels() -> int:
    """The largest stack (planes x height x width) read here: ``$INFOSAM_MAX_VOXELS`` or the default."""
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise StackError(f"{MAX_VOXELS_ENV}={raw!r}: expected a number of voxels, e.g. 8000000000") from None
    if value < 1:
        raise StackError(f"{MAX_VOXELS_ENV}={raw!r}: must be >= 1")
    return value


@dataclass
class Stack:
    """A (N, Y, X[, C]) stack read plane by plane. ``axes`` is ``"ZYX"``, ``"TYX"``, ``"ZYXC"`` or ``"TYXC"``."""

    source: str
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    read_plane: Callable[[int], np.ndarray] = field(repr=False)
    axes_guessed: bool = False
    _contrast: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``"Z"`` (a z-stack) or ``"T"`` (a time series)."""
        return self.axes[0]

    @property
    def n_planes(self) -> int:
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(Y, X) of every plane."""
        return int(self.shape[1]), int(self.shape[2])

    @property
    def label_shape(self) -> tuple[int, int, int]:
        """(N, Y, X): the shape of this stack's 3D label volume."""
        return int(self.shape[0]), int(self.shape[1]), int(self.shape[2])

    def check_index(self, index: int, what: str = "slice") -> int:
        if not 0 <= index < self.n_planes:
            raise StackError(
                f"{self.source}: {what} {index} is outside the stack's {self.n_planes} planes (0..{self.n_planes - 1})."
            )
        return int(index)

    def plane(self, index: int) -> np.ndarray:
        """Plane ``index`` as stored: (Y, X) or (Y, X, C)."""
        plane = np.asarray(self.read_plane(self.check_index(index)))
        if plane.shape != tuple(self.shape[1:]):
            raise StackError(f"{self.source}: plane {index} has shape {plane.shape}, expected {self.shape[1:]}.")
        return plane

    def contrast(self) -> tuple[float, float]:
        """(low, high) values mapped to 0 and 255 for every plane: percentiles over a sample of planes."""
        if self._contrast is None:
            picks = np.unique(np.linspace(0, self.n_planes - 1, min(_CONTRAST_PLANES, self.n_planes)).astype(int))
            values = np.concatenate([self.plane(int(i)).reshape(-1)[::7].astype(np.float64) for i in picks])
            if not np.isfinite(values).all():
                raise StackError(f"{self.source}: the stack contains NaN or infinite values; replace them first.")
            lo, hi = (float(v) for v in np.percentile(values, PERCENTILE_RANGE))
            if hi <= lo:
                lo, hi = float(values.min()), float(values.max())
            self._contrast = (lo, hi)
        return self._contrast

    def rgb(self, index: int) -> np.ndarray:
        """Plane ``index`` as RGB uint8 (Y, X, 3): uint8 and bool as :func:`to_rgb_uint8`; other types with the
        stack-wide :meth:`contrast` (so brightness does not jump between planes)."""
        plane = self.plane(index)
        name = f"{self.source} plane {index}"
        if plane.dtype in (np.uint8, np.bool_):
            return to_rgb_uint8(plane, name=name)
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            raise StackError(f"{name}: NaN or infinite values; replace them (e.g. np.nan_to_num).")
        lo, hi = self.contrast()
        if hi <= lo:
            scaled = np.zeros(plane.shape, dtype=np.uint8)
        else:
            scaled = np.round(np.clip((plane.astype(np.float64) - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)
        return to_rgb_uint8(scaled, name=name)

    def to_array(self) -> np.ndarray:
        """The whole stack in memory, (N, Y, X[, C])."""
        return np.stack([self.plane(i) for i in range(self.n_planes)])


# ------------------------------------------------------------------------------------------------ axes
def parse_axes(text: str) -> str:
    """``--axes`` text (``ZYX``, ``tyx``, ``ZCYX`` ...) -> upper-case letters, checked."""
    axes = text.strip().upper()
    bad = sorted(set(axes) - KNOWN_AXES)
    if not axes or bad or len(set(axes)) != len(axes):
        raise StackError(
            f"--axes {text!r}: give each axis once, with the letters Z (depth), T (time), Y, X and C (channels), "
            "e.g. --axes ZYX, TYX or ZCYX"
        )
    if "Y" not in axes or "X" not in axes:
        raise StackError(f"--axes {text!r}: Y and X must be named, e.g. --axes ZYX")
    return axes


def _plan_axes(shape: tuple[int, ...], axes: str | None, source: str) -> tuple[str, bool]:
    """The source's axes (one letter per dimension, known letters only) and whether they were guessed."""
    ndim = len(shape)
    if axes is not None and all(a in KNOWN_AXES for a in axes):
        if len(axes) != ndim:
            raise StackError(
                f"{source}: axes {axes!r} name {len(axes)} dimensions but the data has {ndim} (shape {shape}); "
                f"give one letter per dimension with --axes."
            )
        return axes.replace("S", "C"), False
    # unknown (a plain multi-page TIFF's Q, ImageJ's I, a bare array): guess only the plain cases
    looks_2d = ndim == 3 and ((shape[-1] <= 4 < shape[0]) or (shape[0] in (1, 3, 4) and shape[-1] > 4))
    if looks_2d:
        raise StackError(
            f"{source}: shape {shape} is laid out like one 2-D image with channels, and the file does not name its "
            "axes; if it is a stack, say so with --axes (e.g. --axes ZYX)."
        )
    if ndim == 3:
        return "ZYX", True
    if ndim == 4 and shape[-1] <= 4:
        return "ZYXC", True
    raise StackError(
        f"{source}: {ndim}-D data of shape {shape} whose axes the file does not name; give them with --axes "
        f"(one letter per dimension: Z, T, Y, X, C), e.g. --axes {'ZCYX' if ndim == 4 else 'TZYX'}."
    )


def _stack_layout(shape: tuple[int, ...], axes: str, source: str) -> tuple[str, list[int | None], bool]:
    """From the source's axes: the stack's axes (``ZYX`` / ``TYXC`` ...), an index template (None = the stack
    axis, -1 = keep, 0 = a length-1 axis dropped) and whether channels must be moved last."""
    sizes = dict(zip(axes, shape, strict=True))
    stack_axes = [a for a in STACK_AXES if a in sizes and sizes[a] > 1]
    if len(stack_axes) > 1:
        raise StackError(
            f"{source}: both Z ({sizes['Z']}) and T ({sizes['T']}) have more than one plane (shape {shape}, axes "
            f"{axes}); one kind at a time is supported: save one time point or one depth as its own file."
        )
    if not stack_axes:
        present = [a for a in STACK_AXES if a in sizes]
        if not present:
            raise StackError(
                f"{source}: a single plane (shape {shape}, axes {axes}), not a stack; use it as an image, or give "
                "--axes naming a Z or T axis."
            )
        stack_axes = present[:1]
    stack_axis = stack_axes[0]
    if "C" in sizes and sizes["C"] > 4:
        raise StackError(
            f"{source}: {sizes['C']} channels (shape {shape}, axes {axes}); expected 1 (gray), 3 (RGB) or 4. "
            "Pick or combine up to 3 channels first."
        )
    keep_channels = "C" in sizes and sizes["C"] > 1
    template: list[int | None] = []
    kept: list[str] = []
    for letter, size in zip(axes, shape, strict=True):
        if letter == stack_axis:
            template.append(None)
        elif letter in "YX" or (letter == "C" and keep_channels):
            template.append(-1)
            kept.append(letter)
        elif size == 1:
            template.append(0)
        else:
            raise StackError(f"{source}: axis {letter} has {size} entries (shape {shape}); expected 1 there.")
    if kept.index("Y") > kept.index("X"):
        raise StackError(f"{source}: axes {axes} put X before Y; transposed planes are not supported.")
    channel_last = not keep_channels or kept[-1] == "C"
    out_axes = stack_axis + "YX" + ("C" if keep_channels else "")
    return out_axes, template, channel_last


def _plane_reader(array: Any, template: list[int | None], channel_last: bool) -> Callable[[int], np.ndarray]:
    def read(index: int) -> np.ndarray:
        key = tuple(index if t is None else (slice(None) if t == -1 else 0) for t in template)
        plane = np.asarray(array[key])
        if not channel_last:
            plane = np.moveaxis(plane, 0, -1)  # (C, Y, X) -> (Y, X, C)
        return plane

    return read


def _check_sizes(shape: tuple[int, ...], source: str) -> None:
    if len(shape) < 3 or min(shape) <= 0:
        raise StackError(f"{source}: shape {shape} is not a stack (expected (N, Y, X) with or without channels).")
    total = math.prod(int(d) for d in shape)
    limit = max_voxels()
    if total > limit:
        raise StackError(
            f"{source}: {total / 1e9:.1f} billion values (shape {shape}), above the limit of {limit / 1e9:.1f} "
            f"billion; crop the stack, or raise the limit with the environment variable {MAX_VOXELS_ENV}={total}."
        )


def stack_from_array(array: Any, axes: str | None = None, source: str = "array") -> Stack:
    """A :class:`Stack` over an in-memory or zarr-like array (``shape``, ``dtype``, ``__getitem__``)."""
    shape = tuple(int(d) for d in array.shape)
    parsed = parse_axes(axes) if axes is not None else None
    _check_sizes(shape, source)
    return _make_stack(array, shape, parsed, source)


def _make_stack(array: Any, shape: tuple[int, ...], axes: str | None, source: str) -> Stack:
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise StackError(f"{source}: unsupported value type {dtype}; give a numeric (integer or float) stack.")
    source_axes, guessed = _plan_axes(shape, axes, source)
    out_axes, template, channel_last = _stack_layout(shape, source_axes, source)
    n = shape[template.index(None)]
    planes_shape = [shape[i] for i, t in enumerate(template) if t == -1]
    if not channel_last:
        planes_shape = planes_shape[1:] + planes_shape[:1]
    out_shape = (n, *planes_shape)
    check_pixel_count(tuple(out_shape[1:3]), source)
    _check_sizes(out_shape, source)
    return Stack(source, out_axes, out_shape, dtype, _plane_reader(array, template, channel_last), guessed)


# ---------------------------------------------------------------------------------------------- readers
def is_stack_source(path: str | Path) -> bool:
    """A folder that is not a zarr store (slices), or a zarr store whose data reads as a stack (a 2-D zarr image
    is not one)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" or (path.is_dir() and _looks_like_zarr(path)):
        try:
            read_stack(path)
        except StackError:
            return False
        return True
    return path.is_dir()


def is_stack_file(path: str | Path) -> bool:
    """A TIFF whose first series is a stack, not one 2-D image: its metadata names a Z or T axis with more than one
    plane, or it has more planes than a 2-D image's layouts allow ((Y, X, C) or (C, Y, X) with C <= 4). False for
    every other file, and for a TIFF whose header cannot be read (the image reader then says why)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return False
            shape = tuple(int(d) for d in tif.series[0].shape)
            axes = str(tif.series[0].axes)
    except Exception:  # noqa: BLE001 - not a readable TIFF: not a stack either
        return False
    sizes = dict(zip(axes, shape, strict=False))
    if any(sizes.get(a, 1) > 1 for a in STACK_AXES):
        return True
    dims = [d for d in shape if d > 1]
    if len(dims) <= 2:
        return False
    return not (len(dims) == 3 and (dims[-1] <= 4 or dims[0] in (1, 3, 4)))


def read_stack(path: str | Path, axes: str | None = None) -> Stack:
    """A stack from a multi-page TIFF / OME-TIFF, a zarr array or OME-Zarr image, or a folder of numbered
    slices (see the module docstring). ``axes`` overrides what the source says. StackError names the fix."""
    path = Path(path)
    given = parse_axes(axes) if axes is not None else None
    if not path.exists():
        raise StackError(f"{path}: not found. Check the path.")
    if path.suffix.lower() == ".zarr" or (path.is_dir() and _looks_like_zarr(path)):
        return _read_zarr(path, given)
    if path.is_dir():
        return _read_slice_folder(path, given)
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, given)
    raise StackError(
        f"{path}: a {path.suffix or 'suffix-less'} file is not a stack format; give a multi-page TIFF / OME-TIFF, "
        "a .zarr, or a folder of numbered slices."
    )


def _looks_like_zarr(path: Path) -> bool:
    return any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def _read_tiff(path: Path, axes: str | None) -> Stack:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise StackError(f"{path}: no image in this TIFF.")
            series = tif.series[0]
            shape = tuple(int(d) for d in series.shape)
            file_axes = str(series.axes)
    except StackError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader error becomes one line naming the file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise StackError(f"{path}: not a readable TIFF ({first}).") from None
    _check_sizes(shape, str(path))
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    array: Any = zarr.open(store, mode="r")
    if not hasattr(array, "shape") or tuple(array.shape) != shape:
        array = tifffile.imread(path, series=0)  # a layout tifffile's zarr store does not give plainly
    return _make_stack(array, shape, axes if axes is not None else file_axes, str(path))


def _read_zarr(path: Path, axes: str | None) -> Stack:
    import zarr

    try:
        node: Any = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - every reader error becomes one line naming the file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise StackError(f"{path}: not a readable zarr ({first}).") from None
    source_axes = axes
    if not hasattr(node, "shape"):  # a group: OME-Zarr's first multiscale level
        attrs: dict[str, Any] = dict(node.attrs)
        multiscales = attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales")
        if not multiscales:
            raise StackError(f"{path}: a zarr group without OME-Zarr 'multiscales'; give the array's own path.")
        first = multiscales[0]
        node = node[first["datasets"][0]["path"]]
        if source_axes is None and first.get("axes"):
            names = [a["name"] if isinstance(a, dict) else str(a) for a in first["axes"]]
            source_axes = "".join(n[0].upper() for n in names)
    elif source_axes is None:
        dims = node.attrs.get("_ARRAY_DIMENSIONS")  # xarray's convention
        if isinstance(dims, list) and all(isinstance(d, str) and d for d in dims):
            source_axes = "".join(d[0].upper() for d in dims)
    shape = tuple(int(d) for d in node.shape)
    _check_sizes(shape, str(path))
    return _make_stack(node, shape, source_axes, str(path))


_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def numbered_slices(folder: Path) -> list[Path]:
    """The image files of ``folder`` in slice order (the last number in each name); StackError when a file has
    no number or two share one."""
    files = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES
    ]
    if not files:
        raise StackError(f"{folder}: no slices ({', '.join(SLICE_SUFFIXES)}) in this folder.")
    numbered: dict[int, Path] = {}
    for p in files:
        match = _NUMBER.search(p.stem)
        if match is None:
            raise StackError(
                f"{p}: no slice number in the name; name the slices with their index (e.g. slice_007.tif)."
            )
        number = int(match.group(1))
        if number in numbered:
            raise StackError(f"{p} and {numbered[number]} have the same slice number {number}.")
        numbered[number] = p
    return [numbered[k] for k in sorted(numbered)]


def _read_slice_folder(folder: Path, axes: str | None) -> Stack:
    paths = numbered_slices(folder)
    first = read_image(paths[0])
    if first.ndim == 3 and first.shape[0] in (1, 3, 4) and first.shape[2] not in (1, 2, 3, 4):
        first = np.moveaxis(first, 0, -1)
    plane_shape = tuple(int(d) for d in first.shape)
    if len(plane_shape) not in (2, 3):
        raise StackError(f"{paths[0]}: a slice must be one 2-D image, found shape {plane_shape}.")
    kind = (axes or "Z")[0]
    if kind not in STACK_AXES:
        raise StackError(f"--axes {axes}: a folder of slices is Z or T first, e.g. --axes TYX")
    out_axes = kind + "YX" + ("C" if len(plane_shape) == 3 and plane_shape[2] > 1 else "")
    if len(plane_shape) == 3 and plane_shape[2] == 1:
        plane_shape = plane_shape[:2]
    shape = (len(paths), *plane_shape)
    check_pixel_count(tuple(shape[1:3]), str(paths[0]))
    _check_sizes(shape, str(folder))

    def read(index: int) -> np.ndarray:
        plane = first if index == 0 else read_image(paths[index])
        if plane.ndim == 3 and plane.shape[0] in (1, 3, 4) and plane.shape[2] not in (1, 2, 3, 4):
            plane = np.moveaxis(plane, 0, -1)
        if plane.ndim == 3 and plane.shape[2] == 1:
            plane = plane[:, :, 0]
        if plane.shape != shape[1:]:
            raise StackError(
                f"{paths[index]}: slice of shape {plane.shape}, but {paths[0].name} is {shape[1:]}; every slice "
                "must have the same size."
            )
        if plane.dtype != first.dtype:
            plane = plane.astype(first.dtype)
        return plane

    return Stack(str(folder), out_axes, shape, np.dtype(first.dtype), read, axes is None)


# ------------------------------------------------------------------------------------------- 3D labels
def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise StackError(f"{path}: a 3D label volume is (N, Y, X), got shape {labels.shape}.")
    if labels.dtype.kind not in "uib":
        raise StackError(f"{path}: labels hold integers, got {labels.dtype}.")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.size and int(labels.min()) < 0:
        raise StackError(f"{path}: negative labels.")
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return labels.astype(dtype, copy=False)


def write_label_stack(path: str | Path, labels: np.ndarray, axes: str = "ZYX") -> Path:
    """Write a (N, Y, X) label volume atomically: ``.tif`` / ``.tiff`` (zlib, ``axes`` in the metadata) or
    ``.zarr`` (one chunk per plane; a temporary folder renamed into place, an older store replaced)."""
    import tifffile

    from infosam_core.io.atomic import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_STACK_SUFFIXES:
        raise StackError(f"{path}: 3D labels are written as {', '.join(LABEL_STACK_SUFFIXES)}; use one of these.")
    labels = _check_labels(labels, path)
    if axes not in ("ZYX", "TYX"):
        axes = "ZYX"
    if suffix != ".zarr":
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack", metadata={"axes": axes})
        return path
    import zarr

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        array = zarr.open_array(
            str(tmp), mode="w", shape=labels.shape, dtype=labels.dtype, chunks=(1, *labels.shape[1:]), zarr_format=2
        )
        array[:] = labels
        array.attrs["_ARRAY_DIMENSIONS"] = list(axes.lower())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{os.getpid()}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_label_stack(path: str | Path) -> np.ndarray:
    """A (N, Y, X) integer label volume written by :func:`write_label_stack` (or any such TIFF / zarr)."""
    path = Path(path)
    stack = read_stack(path)
    if stack.dtype.kind not in "ui" or len(stack.shape) != 3:
        raise StackError(f"{path}: not a 3D label volume (shape {stack.shape}, {stack.dtype}).")
    return stack.to_array()


__all__ = [
    "Stack",
    "StackError",
    "max_pixels",
    "max_voxels",
    "numbered_slices",
    "parse_axes",
    "read_label_stack",
    "is_stack_file",
    "read_stack",
    "stack_from_array",
    "write_label_stack",
]
