"""Exporting accepted objects: label images (TIFF or PNG) per image and one COCO JSON (RLE masks).

Every file is written atomically. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.annotation.label_files import read_labels_tiff, write_labels_tiff
from infosam_core.annotation.project import Project
from infosam_core.io.atomic import atomic_path, write_json_atomic

LABEL_FORMATS = ("tif", "png")


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


def _label_image_for(project: Project, key: str) -> np.ndarray | None:
    ann = project.annotations(key)
    if ann.labels is not None:
        return ann.labels
    shape = project.entry(key).shape
    if shape is None:  # never opened, never annotated: read the image to know its size
        from infosam_core.io.images import read_image

        shape = read_image(project.image_path(key)).shape[:2]
    return np.zeros(shape, dtype=np.uint16)


def export_label_images(
    project: Project, out_dir: str | Path, fmt: str = "tif", only_annotated: bool = False
) -> list[Path]:
    """One label image per project image, named ``<image stem>_labels.<fmt>``; returns the written paths."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "tiff":
        fmt = "tif"
    if fmt not in LABEL_FORMATS:
        raise ExportError(f"unknown label format {fmt!r}; choose one of {', '.join(LABEL_FORMATS)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    used: set[str] = set()
    for entry in project.images:
        if only_annotated and not project.object_count(entry.key):
            continue
        labels = _label_image_for(project, entry.key)
        stem = Path(entry.name).stem
        name = f"{stem}_labels.{fmt}"
        if name in used:  # two images with the same file name from different folders
            name = f"{entry.key}_labels.{fmt}"
        used.add(name)
        written.append(write_label_image(out_dir / name, labels))
    return written


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
) -> dict[str, Any]:
    """A COCO instance-segmentation dict from ``(file_name, label_image, extra_per_object)`` items.

    Each non-zero label becomes one annotation (RLE segmentation, area, xywh bbox, ``iscrowd`` 0); the
    optional ``extra_per_object[label]`` dict is stored under the annotation's ``attributes``.
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
            x, y, bw, bh = mask_utils.toBbox({**rle, "counts": rle["counts"].encode("ascii")}).tolist()
            ann = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle,
                "area": int(mask_utils.area({**rle, "counts": rle["counts"].encode("ascii")})),
                "bbox": [float(x), float(y), float(bw), float(bh)],
                "iscrowd": 0,
                "attributes": {"label": int(label), **((extra or {}).get(int(label), {}))},
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
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }


def project_to_coco(project: Project, only_annotated: bool = True, category: str = "object") -> dict[str, Any]:
    """The project as a COCO dict; each annotation carries its object's prompts under ``attributes``."""

    def items():
        for entry in project.images:
            if only_annotated and not project.object_count(entry.key):
                continue
            ann = project.annotations(entry.key)
            extra = {oid: {"prompts": obj.to_dict()["prompts"], "model": obj.model} for oid, obj in ann.objects.items()}
            yield entry.name, _label_image_for(project, entry.key), extra

    return coco_from_label_images(items(), category=category)


def export_coco(project: Project, path: str | Path, only_annotated: bool = True) -> Path:
    """Write the project's objects as one COCO JSON file (atomically)."""
    coco = project_to_coco(project, only_annotated=only_annotated)
    write_json_atomic(path, coco)
    return Path(path)


def coco_to_label_images(coco: dict[str, Any] | str | Path) -> dict[str, np.ndarray]:
    """Rebuild ``file_name -> label image`` from a COCO dict or file (round-trip checks, re-import)."""
    if not isinstance(coco, dict):
        coco = json.loads(Path(coco).read_text("utf-8"))
    out: dict[str, np.ndarray] = {}
    by_id = {}
    for im in coco["images"]:
        out[im["file_name"]] = np.zeros((im["height"], im["width"]), dtype=np.uint16)
        by_id[im["id"]] = im["file_name"]
    for n, ann in enumerate(coco["annotations"], start=1):
        labels = out[by_id[ann["image_id"]]]
        label = int(ann.get("attributes", {}).get("label", n))
        labels[decode_rle(ann["segmentation"])] = label
    return out
