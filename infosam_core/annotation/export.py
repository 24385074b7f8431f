"""Exporting accepted objects: label images (TIFF or PNG) per image -- instance labels, one instance label image
per category, or a semantic image whose pixels are category ids -- and one COCO JSON (RLE masks, the
project's categories).

Every file is written atomically. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.annotation.label_files import read_labels_tiff, write_labels_tiff
from infosam_core.annotation.project import Project
from infosam_core.io.atomic import atomic_path, write_json_atomic
from infosam_core.io.images import ImageError, check_pixel_count
from infosam_core.io.paths import UnsafePathError, resolve_inside

LABEL_FORMATS = ("tif", "png")


# What one label image per project image holds: every object's id; one file per category with that category's
# objects' ids; or the category id of every object's pixels.
LABEL_LAYOUTS = ("instances", "per_category", "semantic")


class ExportError(ValueError):
    """An export that cannot be done; the message says why."""


# ----------------------------------------------------------------------------------------------- label images
def write_label_image(path: str | Path, labels: np.ndarray) -> Path:
    """Write a 2-D label image; the suffix picks the format (``.tif``/``.tiff`` or ``.png``).

    PNG holds 16 bits at most: a label image with ids above 65535 must go to TIFF.
    """
    path = Path(path)
    labels = np.asarray(labels)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return write_labels_tiff(path, labels)
    if suffix == ".png":
        if labels.size and int(labels.max()) > 65535:
            raise ExportError(f"{path.name}: {int(labels.max())} objects do not fit a 16-bit PNG; export as TIFF.")
        if labels.size and int(labels.min()) < 0:
            raise ExportError(f"{path.name}: negative labels cannot be written to PNG.")
        import imageio.v3 as iio

        with atomic_path(path) as tmp:
            iio.imwrite(tmp, labels.astype(np.uint16), extension=".png")
        return path
    raise ExportError(f"{path.name}: unknown label format {suffix!r}; use .tif or .png.")


def read_label_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_labels_tiff(path)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def _label_image_for(project: Project, key: str) -> np.ndarray:
    ann = project.annotations(key)
    if ann.labels is not None:
        return ann.labels
    shape: Sequence[int] | None = project.entry(key).shape
    if shape is None:  # never opened, never annotated: read the image to know its size
        from infosam_core.io.images import read_image

        try:
            shape = read_image(project.image_path(key)).shape[:2]
        except ImageError as exc:
            raise ExportError(str(exc)) from None
    return np.zeros(shape, dtype=np.uint16)


def _label_image_or_skip(project: Project, key: str, skipped: list[str] | None) -> np.ndarray | None:
    """:func:`_label_image_for`, or None (noted in ``skipped``) for an image that cannot be read; without
    ``skipped`` the ExportError is raised."""
    try:
        return _label_image_for(project, key)
    except ExportError as exc:
        if skipped is None:
            raise
        skipped.append(f"{project.entry(key).name}: {exc}")
        return None


def export_label_images(
    project: Project,
    out_dir: str | Path,
    fmt: str = "tif",
    only_annotated: bool = False,
    layout: str = "instances",
    skipped: list[str] | None = None,
) -> list[Path]:
    """Label images of the project's images; returns the written paths. ``layout`` (:data:`LABEL_LAYOUTS`):
    ``instances``: ``<image stem>_labels.<fmt>``, 0 = background, each object its id; ``per_category``:
    ``<image stem>_<category>_labels.<fmt>`` for every category of the project, holding the ids of that
    category's objects only; ``semantic``: ``<image stem>_semantic.<fmt>``, each object's pixels its category id.

    An image without objects whose file cannot be read (its size is then unknown) is skipped: named, with the
    reason, in ``skipped`` when given, else the ExportError is raised."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "tiff":
        fmt = "tif"
    if fmt not in LABEL_FORMATS:
        raise ExportError(f"unknown label format {fmt!r}; choose one of {', '.join(LABEL_FORMATS)}.")
    if layout not in LABEL_LAYOUTS:
        raise ExportError(f"unknown label layout {layout!r}; choose one of {', '.join(LABEL_LAYOUTS)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    used: set[str] = set()
    for entry in project.images:
        if only_annotated and not project.object_count(entry.key):
            continue
        labels = _label_image_or_skip(project, entry.key, skipped)
        if labels is None:
            continue
        stem = _plain_stem(entry.name) or _plain_stem(entry.key) or "image"
        if f"{stem}_labels.{fmt}" in used:  # two images with the same file name from different folders
            stem = _plain_stem(entry.key) or "image"
        used.add(f"{stem}_labels.{fmt}")
        for name, image in _layout_images(project, entry.key, labels, stem, layout):
            try:
                target = resolve_inside(out_dir, f"{name}.{fmt}")  # names come from the project file: kept inside
            except UnsafePathError as exc:
                raise ExportError(
                    f"{project.root}: image {entry.key!r} gives an unusable export name ({exc})."
                ) from None
            written.append(write_label_image(target, image))
    return written


def _layout_images(
    project: Project, key: str, labels: np.ndarray, stem: str, layout: str
) -> list[tuple[str, np.ndarray]]:
    """(file name without suffix, label image) of one project image in ``layout``."""
    if layout == "instances":
        return [(f"{stem}_labels", labels)]
    objects = project.annotations(key).objects
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint32)  # object id -> its category id
    for oid, obj in objects.items():
        if oid < lut.size:
            lut[oid] = obj.category
    categories_of = lut[labels]
    if layout == "semantic":
        top = max((c.id for c in project.categories), default=1)
        return [(f"{stem}_semantic", categories_of.astype(np.uint16 if top <= 65535 else np.uint32))]
    out = []
    for cat in project.categories:
        name = _plain_stem(cat.name + ".x") or f"category{cat.id}"
        out.append((f"{stem}_{name}_labels", np.where(categories_of == cat.id, labels, 0).astype(labels.dtype)))
    return out


def _plain_stem(name: str) -> str:
    """A file stem safe to use as one file name: the last path part, unusual characters replaced."""
    stem = Path(str(name).replace("\\", "/").rsplit("/", 1)[-1]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip(".")[:120]


# ----------------------------------------------------------------------------------------------- COCO
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a 2-D boolean mask, JSON-ready (``counts`` as str)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = dict(rle)
    if isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def coco_from_label_images(
    items: Iterable[tuple[str, np.ndarray, dict[int, dict[str, Any]] | None]],
    category: str = "object",
    categories: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A COCO instance-segmentation dict from ``(file_name, label_image, extra_per_object)`` items.

    Each non-zero label becomes one annotation (RLE segmentation, area, xywh bbox, ``iscrowd`` 0); the
    optional ``extra_per_object[label]`` dict is stored under the annotation's ``attributes``, except its
    ``category_id``, which becomes the annotation's (default 1). ``categories``: COCO's category list (default:
    one category named ``category``).
    """
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    ann_id = 1
    for image_id, (file_name, labels, extra) in enumerate(items, start=1):
        labels = np.asarray(labels)
        h, w = labels.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)})
        for label in np.unique(labels):
            if label == 0:
                continue
            rle = encode_rle(labels == label)
            attributes = dict((extra or {}).get(int(label), {}))
            category_id = attributes.pop("category_id", 1)
            x, y, bw, bh = mask_utils.toBbox({**rle, "counts": rle["counts"].encode("ascii")}).tolist()
            ann = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": int(mask_utils.area({**rle, "counts": rle["counts"].encode("ascii")})),
                "bbox": [float(x), float(y), float(bw), float(bh)],
                "iscrowd": 0,
                "attributes": {"label": int(label), **attributes},
            }
            annotations.append(ann)
            ann_id += 1
    return {
        "info": {
            "description": "InfoSAM Studio export",
            "date_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "images": images,
        "annotations": annotations,
        "categories": list(categories)
        if categories is not None
        else [{"id": 1, "name": category, "supercategory": category}],
    }


def project_to_coco(project: Project, only_annotated: bool = True, skipped: list[str] | None = None) -> dict[str, Any]:
    """The project as a COCO dict with the project's categories; each annotation carries its object's category
    and, under ``attributes``, its prompts. ``skipped``: as in :func:`export_label_images`."""

    def items():
        for entry in project.images:
            if only_annotated and not project.object_count(entry.key):
                continue
            ann = project.annotations(entry.key)
            extra = {
                oid: {"prompts": obj.to_dict()["prompts"], "model": obj.model, "category_id": obj.category}
                for oid, obj in ann.objects.items()
            }
            labels = _label_image_or_skip(project, entry.key, skipped)
            if labels is not None:
                yield entry.name, labels, extra

    categories = [{"id": c.id, "name": c.name, "supercategory": c.name, "color": c.color} for c in project.categories]
    return coco_from_label_images(items(), categories=categories)


def export_coco(
    project: Project, path: str | Path, only_annotated: bool = True, skipped: list[str] | None = None
) -> Path:
    """Write the project's objects as one COCO JSON file (atomically)."""
    coco = project_to_coco(project, only_annotated=only_annotated, skipped=skipped)
    write_json_atomic(path, coco)
    return Path(path)


def coco_to_label_images(coco: dict[str, Any] | str | Path) -> dict[str, np.ndarray]:
    """Rebuild ``file_name -> label image`` from a COCO dict or file (round-trip checks, re-import).

    Only compressed or uncompressed RLE segmentations are read. Any malformed input raises
    :class:`ExportError` naming the file (or "COCO data") and the entry.
    """
    where = "COCO data"
    if not isinstance(coco, (dict, str, Path)):
        raise ExportError(f"COCO data must be a dict or a file path, got {type(coco).__name__}")
    if not isinstance(coco, dict):
        where = str(coco)
        try:
            coco = json.loads(Path(coco).read_text("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ExportError(f"{where}: cannot be read as COCO JSON ({str(exc)[:160]}).") from None
    try:
        return _coco_to_label_images(coco)
    except ExportError as exc:
        raise ExportError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise ExportError(f"{where}: not valid COCO instance data ({type(exc).__name__}: {str(exc)[:160]}).") from None


def _compressed_rle_counts(counts: str | bytes) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``), None if malformed."""
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data) or k > 6:
                return None
            c = data[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        if x < 0 or x > 2**32 - 1:
            return None
        out.append(x)
    return out


def _coco_to_label_images(coco: Any) -> dict[str, np.ndarray]:
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ExportError("no 'images' list")
    out: dict[str, np.ndarray] = {}
    by_id = {}
    for i, im in enumerate(coco["images"]):
        h, w = im["height"], im["width"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
            raise ExportError(f"images[{i}]: height and width must be positive integers")
        try:
            check_pixel_count((h, w), f"images[{i}]")
        except ImageError as exc:
            raise ExportError(str(exc)) from None
        out[str(im["file_name"])] = np.zeros((h, w), dtype=np.uint32)
        by_id[im["id"]] = str(im["file_name"])
    for n, ann in enumerate(coco.get("annotations", []), start=1):
        labels = out[by_id[ann["image_id"]]]
        attributes = ann.get("attributes", {})
        label = attributes.get("label", n) if isinstance(attributes, dict) else n
        if isinstance(label, bool) or not isinstance(label, int) or not 0 < label < 2**32:
            raise ExportError(f"annotations[{n - 1}]: label must be a positive integer")
        rle = ann["segmentation"]
        if not isinstance(rle, dict) or list(rle.get("size", [])) != [labels.shape[0], labels.shape[1]]:
            raise ExportError(f"annotations[{n - 1}]: segmentation must be RLE of its image's size")
        counts = rle.get("counts")
        if isinstance(counts, list):  # uncompressed RLE
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ExportError(f"annotations[{n - 1}]: RLE counts must be non-negative integers")
            if sum(counts) != labels.size:
                raise ExportError(f"annotations[{n - 1}]: RLE counts do not cover the image")
            from pycocotools import mask as mask_utils

            rle = mask_utils.frPyObjects(rle, labels.shape[0], labels.shape[1])
        elif isinstance(counts, (str, bytes)):  # compressed: checked here, pycocotools trusts its input
            decoded = _compressed_rle_counts(counts)
            if decoded is None or sum(decoded) != labels.size:
                raise ExportError(
                    f"annotations[{n - 1}]: compressed RLE counts are malformed or do not cover the image"
                )
        else:
            raise ExportError(f"annotations[{n - 1}]: RLE counts must be a string or a list")
        mask = decode_rle(rle)
        if mask.shape != labels.shape:
            raise ExportError(f"annotations[{n - 1}]: mask shape {mask.shape} differs from its image")
        labels[mask] = label
    return {
        name: (labels.astype(np.uint16) if labels.max(initial=0) <= 65535 else labels) for name, labels in out.items()
    }
