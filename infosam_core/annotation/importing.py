"""Importing existing annotations into a project: instance label images, binary mask folders, COCO files and
label arrays (e.g. a viewer's label layer).

Everything is read and checked first (sizes against the images, image names, empty masks, overlapping COCO
masks: each refused with one message naming the file); only then are the objects written, in one all-or-nothing
batch (:meth:`Project.add_labelled_images`). Each object becomes a normal project object: its bounding box is
recorded as its prompt, it is editable and Adapt learns from it.

Which label file belongs to which image (label folders): the label file's stem is the image's stem, or the
image's stem followed by one of :data:`LABEL_STEM_SUFFIXES` (``img.png`` <- ``img.tif``, ``img.png``,
``img_labels.tif``, ``img_masks.png``, ``img_cp_masks.png``, ...); an exact stem match wins. A label file that
matches no image, or two label files for one image, are refused. In a COCO file an image's ``file_name`` is
matched by its last path part (``images/img.png`` -> ``img.png``), else by its stem.

Kinds (``kind``): ``labels`` (instance label images, any integer type: each non-zero value one object),
``masks`` (binary masks: each 8-connected component of a mask file one object; or a sub-folder per image, named
by the image's stem, with one mask file per object), ``coco`` (polygons, compressed or uncompressed RLE, several
categories). ``auto``: a ``.json`` file is COCO; a folder of sub-folders is masks (one object per file); a folder
of files is label images, where a file holding only 0 and 255 (or booleans) is read as a binary mask. An all-zero
label image adds its image without objects; an empty mask file or COCO annotation is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infosam_core.annotation.project import Project, find_images
from infosam_core.annotation.records import LabelledImage, ProjectError
from infosam_core.io.images import ImageError, load_rgb, read_image
from infosam_core.io.paths import paths_by_stem

ImportKind = Literal["auto", "labels", "masks", "coco"]


IMPORT_KINDS: tuple[str, ...] = ("auto", "labels", "masks", "coco")


LABEL_STEM_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_cp_masks", "-labels", "-label", "-mask")


LABEL_FILE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


class LabelImportError(ProjectError):
    """Labels that cannot be imported; the message names the file and what is wrong. Nothing was written."""


@dataclass
class ImportSummary:
    """What one import added: images with labels, objects, and objects per category name."""

    images: int
    objects: int
    per_category: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        cats = ", ".join(f"{n} {name}" for name, n in self.per_category.items())
        return f"imported {self.objects} objects into {self.images} images" + (f" ({cats})" if cats else "")


# ----------------------------------------------------------------------------------------------- entry points
def import_labels(
    project: Project,
    images: Path | str | Sequence[Path | str],
    labels: Path | str,
    kind: str = "auto",
    category: str | None = None,
) -> ImportSummary:
    """Import ``labels`` (a folder or a COCO file) for ``images`` (a folder or files) into ``project``, all or
    nothing. ``category``: the category of label images' and masks' objects (default: the project's first)."""
    image_files = find_images([images] if isinstance(images, (str, Path)) else images)
    items, categories = read_labels(image_files, labels, kind, category)
    return commit_import(project, items, categories)


def import_label_array(
    project: Project, image: Path | str, labels: np.ndarray, category: str | None = None, source: str = "labels"
) -> ImportSummary:
    """Import one label array (e.g. a viewer's label layer) for one image file: each non-zero value one
    object of ``category``."""
    image = Path(image)
    arr = _checked_label_array(np.asarray(labels), source)
    _check_size(image, arr.shape, source)
    cats = dict.fromkeys((int(v) for v in np.unique(arr) if v != 0), category) if category else {}
    return commit_import(project, [LabelledImage(image, arr, cats, source)], [category] if category else [])


def read_labels(
    images: Sequence[Path], labels: Path | str, kind: str = "auto", category: str | None = None
) -> tuple[list[LabelledImage], list[str]]:
    """Read and check every label of ``labels`` for the image files ``images`` (nothing is written); returns
    the items and the category names in their file's order."""
    labels = Path(labels)
    if kind not in IMPORT_KINDS:
        raise LabelImportError(f"unknown import kind {kind!r}; choose one of {', '.join(IMPORT_KINDS)}.")
    if not labels.exists():
        raise LabelImportError(f"{labels}: no such file or folder.")
    if not images:
        raise LabelImportError("no images to import labels for; name a folder of images or image files.")
    if kind == "coco" or (kind == "auto" and labels.is_file()):
        if not labels.is_file():
            raise LabelImportError(f"{labels}: a COCO import reads a .json file, not a folder.")
        return read_coco(labels, images)
    if not labels.is_dir():
        raise LabelImportError(f"{labels}: label images and masks are read from a folder.")
    cats = [category] if category else []
    subfolders = [p for p in sorted(labels.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if subfolders and kind in ("auto", "masks"):
        return read_mask_subfolders(labels, images, category), cats
    return read_label_folder(labels, images, category, binary=True if kind == "masks" else None), cats


def commit_import(project: Project, items: list[LabelledImage], categories: Sequence[str]) -> ImportSummary:
    """Write items read by :func:`read_labels` into ``project`` in one all-or-nothing batch."""
    if not items:
        raise LabelImportError("nothing to import: no label file matched an image.")
    try:
        added = project.add_labelled_images(items, model="import", categories=[c for c in categories if c])
    except LabelImportError:
        raise
    except ProjectError as exc:
        raise LabelImportError(str(exc)) from None
    per_category: dict[str, int] = {}
    for key, ids in added.items():
        objects = project.annotations(key).objects
        for oid in ids:
            name = project.category(objects[oid].category).name
            per_category[name] = per_category.get(name, 0) + 1
    return ImportSummary(len(items), sum(len(ids) for ids in added.values()), per_category)


# ----------------------------------------------------------------------------------------------- matching
def match_label_file(label_file: Path, images_by_stem: dict[str, Path]) -> Path | None:
    """The image a label file belongs to (see the module docstring's rule), or None."""
    stem = label_file.stem
    if stem in images_by_stem:
        return images_by_stem[stem]
    for suffix in sorted(LABEL_STEM_SUFFIXES, key=len, reverse=True):
        if stem.endswith(suffix) and stem[: -len(suffix)] in images_by_stem:
            return images_by_stem[stem[: -len(suffix)]]
    return None


def _images_by_stem(images: Sequence[Path]) -> dict[str, Path]:
    by_stem, clash = paths_by_stem(list(images))
    if clash is not None:
        im, first = clash
        raise LabelImportError(
            f"{im}: two images share the name {im.stem!r} ({first.name}); labels are matched by name, "
            "so import them from separate folders."
        )
    return by_stem


def _label_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LABEL_FILE_SUFFIXES
    )


# ----------------------------------------------------------------------------------------------- label images
def read_label_folder(
    folder: Path, images: Sequence[Path], category: str | None = None, binary: bool | None = None
) -> list[LabelledImage]:
    """One item per label file of ``folder``. ``binary``: True = every file is a binary mask (8-connected
    components are the objects), False = instance labels, None = decide per file (only 0 and 255, or booleans:
    a binary mask)."""
    by_stem = _images_by_stem(images)
    files = _label_files(folder)
    if not files:
        raise LabelImportError(f"{folder}: no label images ({', '.join(LABEL_FILE_SUFFIXES)}) in it.")
    items: list[LabelledImage] = []
    taken: dict[Path, Path] = {}
    for f in files:
        image = match_label_file(f, by_stem)
        if image is None:
            raise LabelImportError(
                f"{f}: matches no image (its name should be an image's name, optionally followed by _labels or "
                f"_masks); images are in {images[0].parent}."
            )
        if image in taken:
            raise LabelImportError(f"{f}: {image.name} already has the label file {taken[image].name}; keep one.")
        taken[image] = f
        arr = _read_label_file(f)
        if arr.ndim != 2:
            raise LabelImportError(f"{f}: a label image must be one channel (2-D), found shape {arr.shape}.")
        if binary or (binary is None and _looks_binary(arr)):
            arr = _components(arr != 0)
        else:
            arr = _checked_label_array(arr, str(f))
        _check_size(image, arr.shape, str(f))
        cats = dict.fromkeys((int(v) for v in np.unique(arr) if v != 0), category) if category else {}
        items.append(LabelledImage(image, arr, cats, str(f)))
    return items


def read_mask_subfolders(folder: Path, images: Sequence[Path], category: str | None = None) -> list[LabelledImage]:
    """One item per sub-folder of ``folder`` (named by an image's stem, or its stem + ``_masks``), each mask file
    in it one object (non-zero pixels). An empty mask file, or two masks sharing pixels, are refused."""
    by_stem = _images_by_stem(images)
    items: list[LabelledImage] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image = match_label_file(Path(sub.name + ".x"), by_stem)
        if image is None:
            raise LabelImportError(f"{sub}: this mask folder's name matches no image; name it after its image.")
        files = _label_files(sub)
        if not files:
            raise LabelImportError(f"{sub}: holds no mask files ({', '.join(LABEL_FILE_SUFFIXES)}).")
        shape = _image_shape(image)
        labels = np.zeros(shape, dtype=np.uint32)
        owner: dict[int, Path] = {}
        for n, f in enumerate(files, start=1):
            mask = _read_label_file(f)
            if mask.ndim != 2:
                raise LabelImportError(f"{f}: a mask must be one channel (2-D), found shape {mask.shape}.")
            mask = mask != 0
            if mask.shape != shape:
                raise LabelImportError(_size_message(str(f), mask.shape, image, shape))
            if not mask.any():
                raise LabelImportError(f"{f}: the mask is empty (no non-zero pixel); remove it or fix it.")
            clash = labels[mask]
            if clash.any():
                other = owner[int(clash[clash != 0][0])]
                raise LabelImportError(f"{f}: overlaps {other.name}; an image's objects must not share pixels.")
            labels[mask] = n
            owner[n] = f
        cats = dict.fromkeys(range(1, len(files) + 1), category) if category else {}
        items.append(LabelledImage(image, _smallest(labels), cats, str(sub)))
    return items


def _read_label_file(path: Path) -> np.ndarray:
    try:
        arr = read_image(path)
    except ImageError as exc:
        raise LabelImportError(str(exc)) from None
    gray_rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4)  # an RGB(A) file whose channels agree: a gray mask
    if gray_rgb and all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, 3)):
        arr = arr[..., 0]
    return arr


def _looks_binary(arr: np.ndarray) -> bool:
    if arr.dtype == bool:
        return True
    values = np.unique(arr)
    return arr.dtype == np.uint8 and values.size <= 2 and set(values.tolist()) <= {0, 255} and 255 in values


def _checked_label_array(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.ndim != 2:
        raise LabelImportError(f"{source}: a label image must be one channel (2-D), found shape {arr.shape}.")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise LabelImportError(f"{source}: a label image holds integers, found {arr.dtype}; save it as integers.")
    if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise LabelImportError(f"{source}: holds negative labels ({int(arr.min())}); labels are 0 or positive.")
    if arr.size and int(arr.max()) > 2**32 - 1:
        raise LabelImportError(f"{source}: label {int(arr.max())} is above the largest object id (2^32 - 1).")
    return arr


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a binary mask as a label image (1..N)."""
    from scipy import ndimage

    if mask.ndim != 2:
        raise LabelImportError(f"a mask must be one channel (2-D), found shape {mask.shape}.")
    labels, _n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return _smallest(labels)


def _smallest(labels: np.ndarray) -> np.ndarray:
    top = int(labels.max(initial=0))
    return labels.astype(np.uint16 if top <= 65535 else np.uint32)


def _image_shape(image: Path) -> tuple[int, int]:
    try:
        shape = load_rgb(image).shape
    except ImageError as exc:
        raise LabelImportError(str(exc)) from None
    return int(shape[0]), int(shape[1])


def _size_message(source: str, shape: Sequence[int], image: Path, image_shape: Sequence[int]) -> str:
    return (
        f"{source}: the labels are {shape[1]}x{shape[0]} px but the image {image.name} is "
        f"{image_shape[1]}x{image_shape[0]} px; labels must have their image's size."
    )


def _check_size(image: Path, shape: Sequence[int], source: str) -> None:
    image_shape = _image_shape(image)
    if tuple(shape[:2]) != image_shape:
        raise LabelImportError(_size_message(source, shape, image, image_shape))


# ----------------------------------------------------------------------------------------------- COCO
def read_coco(path: Path, images: Sequence[Path]) -> tuple[list[LabelledImage], list[str]]:
    """One item per image of a COCO file (polygons, compressed or uncompressed RLE) and its category names in
    the file's order. Unknown images or categories, sizes that differ from the image, empty and overlapping
    masks are refused naming the file and the entry."""
    try:
        coco = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise LabelImportError(f"{path}: cannot be read as COCO JSON ({str(exc)[:160]}).") from None
    try:
        return _read_coco(coco, path, images)
    except LabelImportError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise LabelImportError(
            f"{path}: not valid COCO instance data ({type(exc).__name__}: {str(exc)[:160]})."
        ) from None


def _read_coco(coco: Any, path: Path, images: Sequence[Path]) -> tuple[list[LabelledImage], list[str]]:
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise LabelImportError(f"{path}: not a COCO file (no 'images' list).")
    raw_anns = coco.get("annotations", [])
    raw_cats = coco.get("categories", [])
    if not isinstance(raw_anns, list) or not isinstance(raw_cats, list):
        raise LabelImportError(f"{path}: 'annotations' and 'categories' must be lists.")
    categories: dict[Any, str] = {}
    for i, c in enumerate(raw_cats):
        name = str(c["name"]).strip()
        if not name or c["id"] in categories or name in categories.values():
            raise LabelImportError(f"{path}: categories[{i}] has an empty or repeated name or id.")
        categories[c["id"]] = name
    by_name = {im.name: im for im in images}
    by_stem = {im.stem: im for im in images}
    entries: dict[Any, tuple[Path, np.ndarray, dict[int, str], dict[int, Any]]] = {}
    for i, im in enumerate(coco["images"]):
        file_name = str(im["file_name"]).replace("\\", "/").rsplit("/", 1)[-1]
        image = by_name.get(file_name) or by_stem.get(Path(file_name).stem)
        if image is None:
            raise LabelImportError(
                f"{path}: images[{i}] names {im['file_name']!r}, which is not among the images "
                f"({images[0].parent}); give the folder that holds it."
            )
        h, w = im["height"], im["width"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
            raise LabelImportError(f"{path}: images[{i}]: height and width must be positive integers.")
        shape = _image_shape(image)
        if (h, w) != shape:
            raise LabelImportError(_size_message(f"{path}: images[{i}] ({file_name})", (h, w), image, shape))
        if im["id"] in entries:
            raise LabelImportError(f"{path}: images[{i}]: the image id {im['id']!r} is repeated.")
        entries[im["id"]] = (image, np.zeros((h, w), dtype=np.uint32), {}, {})
    for i, ann in enumerate(raw_anns):
        where = f"{path}: annotations[{i}] (id {ann.get('id', '?')})"
        if ann["image_id"] not in entries:
            raise LabelImportError(f"{where}: its image_id {ann['image_id']!r} is not in 'images'.")
        if ann["category_id"] not in categories:
            raise LabelImportError(f"{where}: its category_id {ann['category_id']!r} is not in 'categories'.")
        image, labels, cats, owners = entries[ann["image_id"]]
        mask = _coco_mask(ann["segmentation"], labels.shape, where)
        if not mask.any():
            raise LabelImportError(f"{where}: the mask of this annotation in {image.name} is empty.")
        clash = labels[mask]
        if clash.any():
            other = owners[int(clash[clash != 0][0])]
            raise LabelImportError(
                f"{where}: overlaps annotation id {other} in {image.name}; an image's objects must not share pixels."
            )
        attributes = ann.get("attributes")
        label = attributes.get("label") if isinstance(attributes, dict) else None
        if not (isinstance(label, int) and not isinstance(label, bool) and 0 < label < 2**32 and label not in owners):
            label = max(owners, default=0) + 1
        labels[mask] = label
        owners[label] = ann.get("id", i)
        cats[label] = categories[ann["category_id"]]
    items = [LabelledImage(image, _smallest(labels), cats, str(path)) for image, labels, cats, _o in entries.values()]
    return items, list(categories.values())


def _coco_mask(segmentation: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE of the image's size) as a boolean mask, checked before pycocotools
    sees it (it trusts its input)."""
    from pycocotools import mask as mask_utils

    from infosam_core.annotation.export import _compressed_rle_counts, decode_rle

    h, w = int(shape[0]), int(shape[1])
    if isinstance(segmentation, list):  # polygons
        polygons = []
        for poly in segmentation:
            if (
                not isinstance(poly, list)
                or len(poly) < 6
                or len(poly) % 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in poly)
            ):
                raise LabelImportError(f"{where}: a polygon is a list of at least 3 x, y pairs of numbers.")
            polygons.append([float(v) for v in poly])
        if not polygons:
            raise LabelImportError(f"{where}: the segmentation holds no polygon.")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
        return np.asarray(mask_utils.decode(rle), dtype=bool)
    if not isinstance(segmentation, dict) or list(segmentation.get("size", [])) != [h, w]:
        raise LabelImportError(f"{where}: the segmentation must be polygons or RLE of its image's size ({h}x{w}).")
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or sum(counts) != h * w:
            raise LabelImportError(f"{where}: RLE counts must be non-negative integers covering the image.")
        return np.asarray(mask_utils.decode(mask_utils.frPyObjects(segmentation, h, w)), dtype=bool)
    if isinstance(counts, (str, bytes)):
        decoded = _compressed_rle_counts(counts)
        if decoded is None or sum(decoded) != h * w:
            raise LabelImportError(f"{where}: compressed RLE counts are malformed or do not cover the image.")
        return decode_rle({"size": [h, w], "counts": counts if isinstance(counts, str) else counts.decode("ascii")})
    raise LabelImportError(f"{where}: RLE counts must be a string or a list.")
