"""What is recorded per annotated object and image: the prompts a user gave, the object and its category, the
image entry, and a batch of labelled images to add at once."""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


class ProjectError(ValueError):
    """A project folder that cannot be opened or changed; the message says why and what to do."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------- schema checks
# Project files may come from someone else: every value read from them is checked for type and range, and a
# bad one raises ProjectError naming the file (``where``) and the field.
def _fail(where: str, field_name: str, problem: str) -> ProjectError:
    return ProjectError(f"{where}: field {field_name!r} {problem}; the project file is damaged or was edited by hand.")


def get_field(d: Any, key: str, where: str, field_name: str | None = None, required: bool = True) -> Any:
    name = field_name or key
    if not isinstance(d, dict):
        raise _fail(where, name.rsplit(".", 1)[0] if "." in name else "(top level)", "is not a JSON object")
    if key not in d:
        if required:
            raise _fail(where, name, "is missing")
        return None
    return d[key]


def as_int(value: Any, where: str, field_name: str, lo: int | None = None, hi: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise _fail(where, field_name, f"must be an integer, found {value!r:.60}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(where, field_name, f"must be in [{lo}, {hi}], found {value}")
    return value


def as_float(value: Any, where: str, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, field_name, f"must be a finite number, found {value!r:.60}")
    return float(value)


@overload
def as_str(value: Any, where: str, field_name: str, allow_none: Literal[False] = False) -> str: ...


@overload
def as_str(value: Any, where: str, field_name: str, allow_none: bool) -> str | None: ...


def as_str(value: Any, where: str, field_name: str, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise _fail(where, field_name, f"must be a string, found {type(value).__name__}")
    return value


def as_list(value: Any, where: str, field_name: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, field_name, f"must be a list, found {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _fail(where, field_name, f"must hold {length} values, found {len(value)}")
    return value


MAX_LABEL_ID = 2**32 - 1


# ----------------------------------------------------------------------------------------------- categories
DEFAULT_CATEGORY = "object"


MAX_CATEGORY_ID = 65535


# Distinct colours for new categories, in order (the first is the default category's).
CATEGORY_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


_COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class Category:
    """A class of objects in a project: its id (the value of a semantic label image, COCO's ``category_id``),
    its name and its display colour (``#rrggbb``)."""

    id: int
    name: str
    color: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "category", field_name: str = "category") -> Category:
        f = field_name
        cid = as_int(get_field(d, "id", where, f"{f}.id"), where, f"{f}.id", 1, MAX_CATEGORY_ID)
        name = as_str(get_field(d, "name", where, f"{f}.name"), where, f"{f}.name").strip()
        if not name or len(name) > 80 or "\x00" in name:
            raise _fail(where, f"{f}.name", "must be a non-empty name of at most 80 characters")
        color = get_field(d, "color", where, f"{f}.color", required=False)
        if color is None:
            color = CATEGORY_PALETTE[(cid - 1) % len(CATEGORY_PALETTE)]
        color = as_str(color, where, f"{f}.color")
        if not _COLOUR_RE.match(color):
            raise _fail(where, f"{f}.color", f"must be a colour #rrggbb, found {color!r:.20}")
        return cls(id=cid, name=name, color=color.lower())


def default_categories() -> list[Category]:
    """The category list of a project that names none (projects written before categories existed)."""
    return [Category(1, DEFAULT_CATEGORY, CATEGORY_PALETTE[0])]


def categories_from_list(raw: Any, where: str) -> list[Category]:
    """The checked category list of a manifest (``None`` = the default list); ids and names are unique."""
    if raw is None:
        return default_categories()
    cats = [Category.from_dict(d, where, f"categories[{i}]") for i, d in enumerate(as_list(raw, where, "categories"))]
    if not cats:
        return default_categories()
    for attr in ("id", "name"):
        values = [getattr(c, attr) for c in cats]
        if len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise _fail(where, "categories", f"names the {attr} {dup!r} twice")
    return cats


# ----------------------------------------------------------------------------------------------- records
@dataclass
class ObjectPrompts:
    """The prompts that produced one object. ``points``: ``[[x, y, label], ...]``, label 1 = positive,
    0 = negative; ``box``: ``[x0, y0, x1, y1]`` or None; ``candidate``: which multimask output was chosen
    (None = single-mask output)."""

    points: list[list[float]] = field(default_factory=list)
    box: list[float] | None = None
    candidate: int | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    def point_coords(self) -> np.ndarray | None:
        """(N, 2) float array of x, y (SAM's ``point_coords``) or None."""
        return np.asarray([p[:2] for p in self.points], dtype=np.float32) if self.points else None

    def point_labels(self) -> np.ndarray | None:
        return np.asarray([int(p[2]) for p in self.points], dtype=np.int64) if self.points else None

    def box_array(self) -> np.ndarray | None:
        return np.asarray(self.box, dtype=np.float32) if self.box is not None else None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "prompts", field_name: str = "prompts") -> ObjectPrompts:
        points = []
        raw_points = get_field(d, "points", where, f"{field_name}.points", required=False) or []
        for i, p in enumerate(as_list(raw_points, where, f"{field_name}.points")):
            f = f"{field_name}.points[{i}]"
            p = as_list(p, where, f, length=3)
            points.append([as_float(p[0], where, f), as_float(p[1], where, f), as_int(p[2], where, f, 0, 1)])
        box = get_field(d, "box", where, f"{field_name}.box", required=False)
        if box is not None:
            box = [as_float(v, where, f"{field_name}.box") for v in as_list(box, where, f"{field_name}.box", length=4)]
        candidate = get_field(d, "candidate", where, f"{field_name}.candidate", required=False)
        if candidate is not None:
            candidate = as_int(candidate, where, f"{field_name}.candidate", 0, 16)
        return cls(points=points, box=box, candidate=candidate)


@dataclass
class AnnotatedObject:
    """One accepted object: its id in the label image, the prompts that made it, facts about it, and its
    category (a :class:`Category` id of the project; objects saved before categories existed read as 1)."""

    id: int
    prompts: ObjectPrompts
    area: int
    bbox: list[int]  # [x0, y0, x1, y1], inclusive-exclusive, in pixels
    model: str = ""
    created: str = ""
    category: int = 1  # a Category id of the project (1 = the default category)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"] = asdict(self.prompts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "object", field_name: str = "object") -> AnnotatedObject:
        f = field_name
        bbox = get_field(d, "bbox", where, f"{f}.bbox", required=False)
        bbox = [0, 0, 0, 0] if bbox is None else as_list(bbox, where, f"{f}.bbox", length=4)
        return cls(
            id=as_int(get_field(d, "id", where, f"{f}.id"), where, f"{f}.id", 1, MAX_LABEL_ID),
            prompts=ObjectPrompts.from_dict(
                get_field(d, "prompts", where, f"{f}.prompts", required=False) or {}, where, f"{f}.prompts"
            ),
            area=as_int(get_field(d, "area", where, f"{f}.area", required=False) or 0, where, f"{f}.area", 0),
            bbox=[as_int(v, where, f"{f}.bbox", 0) for v in bbox],
            model=str(get_field(d, "model", where, f"{f}.model", required=False) or ""),
            created=str(get_field(d, "created", where, f"{f}.created", required=False) or ""),
            category=as_int(
                get_field(d, "category", where, f"{f}.category", required=False) or 1,
                where,
                f"{f}.category",
                1,
                MAX_CATEGORY_ID,
            ),
        )


@dataclass
class ImageEntry:
    """One image of the project. ``key`` names its annotation folder and is stable across sessions."""

    key: str
    path: str  # absolute path when added
    relpath: str | None  # relative to the project root (lets a project and its images move together)
    sha256: str
    name: str
    shape: list[int] | None = None  # (H, W) once known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "image entry", field_name: str = "image") -> ImageEntry:
        """Checked: ``key`` is one plain folder name (it names ``annotations/<key>``), ``shape`` is 2 positive
        integers; paths are strings (the image is only ever read, never written)."""
        f = field_name
        key = as_str(get_field(d, "key", where, f"{f}.key"), where, f"{f}.key")
        if not _KEY_RE.match(key) or key in (".", ".."):
            raise _fail(where, f"{f}.key", f"must be a plain folder name (letters, digits, _ . -), found {key!r:.60}")
        path = as_str(get_field(d, "path", where, f"{f}.path"), where, f"{f}.path")
        if "\x00" in path:
            raise _fail(where, f"{f}.path", "holds a NUL character")
        relpath = as_str(get_field(d, "relpath", where, f"{f}.relpath", required=False), where, f"{f}.relpath", True)
        if relpath is not None and "\x00" in relpath:
            raise _fail(where, f"{f}.relpath", "holds a NUL character")
        shape = get_field(d, "shape", where, f"{f}.shape", required=False)
        if shape:
            shape = [as_int(v, where, f"{f}.shape", 1, 2**31) for v in as_list(shape, where, f"{f}.shape", length=2)]
        name = get_field(d, "name", where, f"{f}.name", required=False)
        return cls(
            key=key,
            path=path,
            relpath=relpath,
            sha256=as_str(get_field(d, "sha256", where, f"{f}.sha256"), where, f"{f}.sha256"),
            name=as_str(name, where, f"{f}.name") if name else Path(path).name,
            shape=shape or None,
        )


@dataclass
class ImageAnnotations:
    """The accepted objects of one image: the label image and each object's record, kept in step."""

    entry: ImageEntry
    labels: np.ndarray | None  # (H, W) uint16/uint32; None until the image's shape is known
    objects: dict[int, AnnotatedObject] = field(default_factory=dict)
    revision: int = 0

    def next_id(self) -> int:
        return max(self.objects, default=0) + 1

    def ensure_labels(self, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(v) for v in shape[:2])
        if self.labels is None:
            self.labels = np.zeros(shape, dtype=np.uint16)
        elif self.labels.shape != shape:
            raise ProjectError(
                f"{self.entry.name}: the saved label image is {self.labels.shape[1]}x{self.labels.shape[0]} px "
                f"but the image is {shape[1]}x{shape[0]} px: the image file changed since it was annotated."
            )
        return self.labels


@dataclass
class LabelledImage:
    """Objects to add to one image in one batch (:meth:`Project.add_labelled_images`): ``labels`` (H, W)
    integers, 0 = background, every other value one object; ``categories[value]`` that object's category name;
    ``source`` the file they were read from (named in messages)."""

    image: Path
    labels: np.ndarray
    categories: dict[int, str]
    source: str
