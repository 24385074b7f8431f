"""Binary segmentation datasets for training and evaluation: (RGB image, bool mask, name) samples.

``load_folder_dataset(path)`` accepts

* a folder with ``images/`` and ``masks/`` sub-folders, paired by file stem (``images/a.jpg`` <->
  ``masks/a.png``), or
* a CSV file (UTF-8) with columns ``image,label`` (paths relative to the CSV's folder, which they may
  not leave: absolute paths and ``..`` out of it are refused), or a folder holding exactly one such CSV.

Images go through :func:`infosam_core.io.images.load_rgb`. Masks are binarised: an 8-bit mask whose maximum
is 255 (the usual {0, 255} PNG, possibly anti-aliased) is ``> 127``; every other mask (0/1 PNGs, label
images, 16-bit, float) is ``> 0``; a colour mask counts a pixel if any channel is set. Every problem
raises :class:`DatasetError` naming the file(s). A z-stack / time series in ``images/`` (a multi-page TIFF that
is a stack) pairs with a mask or label volume of the same shape: one sample per slice with mask pixels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infosam_core.io.images import ImageError, load_rgb, read_image
from infosam_core.io.paths import UnsafePathError, resolve_inside
from infosam_core.io.stacks import is_stack_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file(s) and the fix."""


@dataclass
class SegmentationSample:
    """One training/evaluation example: ``image`` RGB uint8 (H, W, 3), ``mask`` bool (H, W), ``name``."""

    image: np.ndarray
    mask: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise DatasetError(
                f"{self.name}: image must be RGB uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}"
            )
        if self.mask.shape != self.image.shape[:2]:
            raise DatasetError(
                f"{self.name}: mask shape {self.mask.shape} differs from image shape {self.image.shape[:2]}"
            )
        self.mask = self.mask.astype(bool, copy=False)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) mask array -> bool (H, W), following the module docstring's rule."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        if mask.shape[2] in (2, 4):  # drop alpha
            mask = mask[..., : mask.shape[2] - 1]
        mask = mask.max(axis=2)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype == np.uint8 and mask.size and mask.max() == 255:
        return mask > 127
    return mask > 0


def load_mask(path: str | Path) -> np.ndarray:
    try:
        mask = read_image(path)
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"unsupported mask pixel type {mask.dtype}")
        return binarize_mask(mask)
    except ValueError as exc:
        if isinstance(exc, ImageError):
            raise DatasetError(str(exc)) from None
        raise DatasetError(f"{path}: {exc}") from None


def load_pair(image_path: Path, mask_path: Path, name: str | None = None) -> SegmentationSample:
    """Read one image + mask pair; a size mismatch names both files."""
    if not mask_path.exists():
        raise DatasetError(f"{image_path}: no mask for this image (expected {mask_path}).")
    try:
        image = load_rgb(image_path)
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    mask = load_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DatasetError(
            f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); they must be the same size."
        )
    return SegmentationSample(image=image, mask=mask, name=name or image_path.stem)


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in files:
                raise DatasetError(f"{folder}: two files share the name {p.stem!r} ({files[p.stem].name}, {p.name}).")
            files[p.stem] = p
    return files


def _load_folders(root: Path) -> list[SegmentationSample]:
    images, masks = _files_by_stem(root / "images"), _files_by_stem(root / "masks")
    samples = []
    for stem, image_path in images.items():
        mask_path = masks.get(stem, root / "masks" / f"{stem}.png")
        if is_stack_file(image_path):  # a z-stack / time series: one sample per slice of its mask volume
            samples.extend(load_stack_pair(image_path, mask_path, stem))
        else:
            samples.append(load_pair(image_path, mask_path, stem))
    return samples


def load_stack_pair(image_path: Path, mask_path: Path, name: str) -> list[SegmentationSample]:
    """A stack and its (N, Y, X) mask or label volume (same stem in masks/): one sample per slice where the mask
    has pixels (binarised as 2-D masks are), named ``<name>[<slice>]``."""
    from infosam_core.io.stacks import StackError, read_stack

    try:
        stack = read_stack(image_path)
        volume = read_stack(mask_path)
    except StackError as exc:
        raise DatasetError(str(exc)) from None
    if volume.label_shape != stack.label_shape:
        raise DatasetError(
            f"{mask_path}: the mask volume is {volume.label_shape} but {image_path.name} is {stack.label_shape} "
            "(planes, height, width); give the masks of this stack."
        )
    samples = []
    for index in range(stack.n_planes):
        plane = volume.plane(index)
        mask = np.asarray((plane.any(axis=-1) if plane.ndim == 3 else plane) > 0)
        if mask.any():
            samples.append(SegmentationSample(stack.rgb(index), mask, f"{name}[{index}]"))
    if not samples:
        raise DatasetError(f"{mask_path}: the mask volume is empty; give the objects of {image_path.name}.")
    return samples


def _read_csv_rows(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            if "image" not in fields or "label" not in fields:
                raise DatasetError(
                    f"{csv_path}: needs a header with columns image,label (found {', '.join(fields)[:200] or 'none'})."
                )
            return [
                {k.strip().lower(): (v if isinstance(v, str) else "").strip() for k, v in row.items() if k}
                for row in reader
            ]
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{csv_path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8."
        ) from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV file ({str(exc)[:160]}).") from None
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot be read ({exc.strerror or exc}).") from None


def _load_csv(csv_path: Path) -> list[SegmentationSample]:
    rows = _read_csv_rows(csv_path)
    samples = []
    for i, row in enumerate(rows, start=2):
        if not row.get("image") or not row.get("label"):
            raise DatasetError(f"{csv_path}, line {i}: empty image or label path.")
        try:
            image_path = resolve_inside(csv_path.parent, row["image"], follow_links=False)
            mask_path = resolve_inside(csv_path.parent, row["label"], follow_links=False)
        except UnsafePathError as exc:
            raise DatasetError(
                f"{csv_path}, line {i}: {exc}; paths in a dataset CSV are relative to its folder and stay inside it."
            ) from None
        if not image_path.exists():
            raise DatasetError(f"{csv_path}, line {i}: image {image_path} not found.")
        samples.append(load_pair(image_path, mask_path, Path(row["image"]).stem))
    return samples


def load_folder_dataset(path: str | Path) -> list[SegmentationSample]:
    """All samples of a dataset folder or CSV (see the module docstring), in file-name / CSV order."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: not found. Give a folder with images/ and masks/, or a CSV image,label.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: a dataset is a folder (images/ + masks/) or a .csv file, not this file.")
        samples = _load_csv(path)
    elif (path / "images").is_dir() and (path / "masks").is_dir():
        samples = _load_folders(path)
    else:
        csvs = sorted(path.glob("*.csv"))
        if len(csvs) != 1:
            raise DatasetError(
                f"{path}: expected images/ and masks/ sub-folders (paired by file name) or one CSV file with "
                f"columns image,label; found {'several CSV files' if csvs else 'neither'}."
            )
        samples = _load_csv(csvs[0])
    if not samples:
        raise DatasetError(f"{path}: the dataset is empty (no images found).")
    return samples


def split(
    samples: list[SegmentationSample], val_fraction: float, seed: int = 0
) -> tuple[list[SegmentationSample], list[SegmentationSample]]:
    """A seeded random (train, val) split; val gets round(val_fraction * n) samples (at least 1 if > 0)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * len(samples)))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), len(samples) - 1)
    order = np.random.default_rng(seed).permutation(len(samples))
    val_idx = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val
