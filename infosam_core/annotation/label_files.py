"""Label images on disk (uint16/uint32 TIFF, zlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infosam_core.annotation.records import ProjectError
from infosam_core.io.atomic import atomic_path


# ----------------------------------------------------------------------------------------------- label I/O
def write_labels_tiff(path: str | Path, labels: np.ndarray) -> Path:
    """Write a 2-D label image as a zlib-compressed TIFF, atomically."""
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label image is 2-D, got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"a label image holds integers, got {labels.dtype}")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack")
    return Path(path)


def read_labels_tiff(path: str | Path) -> np.ndarray:
    """A 2-D integer label image; ProjectError for anything else (size checked from the header first)."""
    import tifffile

    from infosam_core.io.images import ImageError, check_pixel_count

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ProjectError(f"{path}: not a readable label TIFF (no image in it).")
            shape = tuple(int(d) for d in tif.series[0].shape)
            if len(shape) != 2:
                raise ProjectError(f"{path}: a label image must be 2-D, found shape {shape}.")
            check_pixel_count(shape, str(path))
            arr = tif.asarray()
    except (ProjectError, ImageError) as exc:
        raise ProjectError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - report the file, whatever the parser's complaint
        raise ProjectError(f"{path}: not a readable label TIFF ({str(exc)[:200]}).") from None
    if arr.ndim != 2:
        raise ProjectError(f"{path}: a label image must be 2-D, found shape {arr.shape}.")
    if arr.dtype.kind not in "ui":
        raise ProjectError(f"{path}: a label image holds integers, found {arr.dtype}.")
    return arr
