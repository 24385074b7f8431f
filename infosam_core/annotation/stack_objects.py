"""Objects in 3D: a project's z-stacks and time series, and their accepted objects (one id through its slices).

Kept beside the project's 2-D images, in files of their own (the project's 2-D files are untouched)::

    stacks.json                        the project's stacks: key, name, path (+ relpath), axes, shape
    stacks/<key>/objects.json          revision, label file, every object: id, category, the prompts that made it
                                       per slice (``{"16": {"box": [...]}, "20": {"points": ...}}``), the slices it
                                       spans, its voxel count, model, time
    stacks/<key>/labels-<rev>.tif      the (N, Y, X) label volume (0 background, object id elsewhere)

Saves are all or nothing, as for 2-D objects: the new label volume is written first (atomically), then
``objects.json`` naming it (the commit point), then older label files are removed; every change holds the
project's lock. A time series keeps one id per tracked object across its frames.

:class:`StackObjects` changes them (add, correct from one slice, remove, restore) and :class:`StackEdits` keeps
an undo stack over those changes. :func:`stack_training_sources` lists every object's 2-D slices for Adapt
(training samples are the object's slices).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.annotation.project import Project
from infosam_core.annotation.records import ProjectError, _now, as_int, as_list, get_field
from infosam_core.io.atomic import write_json_atomic
from infosam_core.io.paths import resolve_inside
from infosam_core.io.stacks import Stack, StackError, read_label_stack, read_stack, write_label_stack

STACKS_MANIFEST = "stacks.json"
STACKS_DIR = "stacks"
OBJECTS_NAME = "objects.json"
_LABELS_RE = re.compile(r"^labels-(\d{6})\.tif$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
BOTH, FORWARD, BACKWARD = "both", "forward", "backward"


@dataclass
class StackEntry:
    key: str
    name: str
    path: str
    relpath: str | None
    axes: str
    shape: list[int]
    given_axes: str | None = None  # the axes the user gave when the file does not name them

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "path": self.path,
            "relpath": self.relpath,
            "axes": self.axes,
            "shape": self.shape,
            "given_axes": self.given_axes,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str, name: str) -> StackEntry:
        key = get_field(d, "key", where, f"{name}.key")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ProjectError(f"{where}: field '{name}.key' must be a plain folder name, found {key!r:.60}.")
        shape = [
            as_int(v, where, f"{name}.shape", 1, 10**9) for v in as_list(get_field(d, "shape", where), where, "shape")
        ]
        axes = get_field(d, "axes", where, f"{name}.axes")
        if axes not in ("ZYX", "TYX", "ZYXC", "TYXC"):
            raise ProjectError(f"{where}: field '{name}.axes' must be ZYX, TYX, ZYXC or TYXC, found {axes!r:.20}.")
        relpath = get_field(d, "relpath", where, f"{name}.relpath", required=False)
        given = get_field(d, "given_axes", where, f"{name}.given_axes", required=False)
        if given is not None and (not isinstance(given, str) or not re.fullmatch(r"[ZTYXCS]{2,6}", given)):
            raise ProjectError(f"{where}: field '{name}.given_axes' must be axis letters, found {given!r:.20}.")
        path = str(get_field(d, "path", where))
        return cls(key, str(get_field(d, "name", where)), path, relpath, axes, shape, given)

    @property
    def label_shape(self) -> tuple[int, int, int]:
        return int(self.shape[0]), int(self.shape[1]), int(self.shape[2])


@dataclass
class StackObject:
    """One accepted 3D object (or track): its id, category, prompts per slice, the slices it spans."""

    id: int
    category: int = 1
    prompts: dict[int, dict[str, Any]] = field(default_factory=dict)
    slices: list[int] = field(default_factory=list)  # [first, last]
    voxels: int = 0
    model: str = ""
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "prompts": {str(k): v for k, v in sorted(self.prompts.items())},
            "slices": self.slices,
            "voxels": self.voxels,
            "model": self.model,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str, name: str) -> StackObject:
        prompts_raw = get_field(d, "prompts", where, f"{name}.prompts", required=False) or {}
        if not isinstance(prompts_raw, dict):
            raise ProjectError(f"{where}: field '{name}.prompts' must be an object (slice -> prompts).")
        prompts: dict[int, dict[str, Any]] = {}
        for k, v in prompts_raw.items():
            if not (isinstance(k, str) and k.isdigit() and isinstance(v, dict)):
                raise ProjectError(f"{where}: field '{name}.prompts' maps slice numbers to prompts, found {k!r:.20}.")
            prompts[int(k)] = v
        slices = [as_int(v, where, f"{name}.slices", 0, 10**9) for v in as_list(d.get("slices", []), where, "slices")]
        return cls(
            id=as_int(get_field(d, "id", where, f"{name}.id"), where, f"{name}.id", 1, 2**32 - 1),
            category=as_int(d.get("category", 1), where, f"{name}.category", 1, 10**6),
            prompts=prompts,
            slices=slices,
            voxels=as_int(d.get("voxels", 0), where, f"{name}.voxels", 0, None),
            model=str(d.get("model", "")),
            created=str(d.get("created", "")),
        )


@dataclass
class StackAnnotations:
    entry: StackEntry
    labels: np.ndarray
    objects: dict[int, StackObject]
    revision: int = 0

    def mask(self, object_id: int) -> np.ndarray:
        return self.labels == object_id

    def next_id(self) -> int:
        return max(self.objects, default=0) + 1


def _span(mask: np.ndarray) -> list[int]:
    planes = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    return [int(planes[0]), int(planes[-1])] if len(planes) else []


class StackObjects:
    """The stacks of one project and their 3D objects (see the module docstring)."""

    def __init__(self, project: Project) -> None:
        self.project = project

    # ---------------------------------------------------------------------------------------- stacks
    @property
    def root(self) -> Path:
        return self.project.root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.project.read_only:
            raise ProjectError(f"{self.root}: opened read-only; open it normally to change its stacks.")
        with self.project._locked():  # the project's one lock: stack saves never interleave with other writers
            yield

    def entries(self) -> list[StackEntry]:
        path = self.root / STACKS_MANIFEST
        if not path.is_file():
            return []
        import json

        where = str(path)
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{where}: not readable JSON ({exc}); the project is damaged.") from None
        raw = as_list(get_field(data, "stacks", where), where, "stacks")
        return [StackEntry.from_dict(d, where, f"stacks[{i}]") for i, d in enumerate(raw)]

    def entry(self, key: str) -> StackEntry:
        for e in self.entries():
            if e.key == key:
                return e
        raise ProjectError(f"{self.root}: no stack {key!r} in this project.")

    def add_stack(self, path: str | Path, axes: str | None = None) -> StackEntry:
        """Register a stack (a multi-page TIFF, zarr or folder of numbered slices); the same path twice is added
        once. StackError when it cannot be read as a stack."""
        path = Path(path).resolve()
        stack = read_stack(path, axes)
        with self._locked():
            entries = self.entries()
            for e in entries:
                if Path(e.path) == path:
                    return e
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name.split(".")[0])[:40] or "stack"
            key = f"{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            try:
                rel: str | None = os.path.relpath(path, self.root)
            except ValueError:
                rel = None
            entry = StackEntry(key, path.name, str(path), rel, stack.axes, list(stack.shape), axes)
            entries.append(entry)
            write_json_atomic(self.root / STACKS_MANIFEST, {"stacks": [e.to_dict() for e in entries]})
            return entry

    def open_stack(self, key: str) -> Stack:
        """The stack's pixels (read lazily); ProjectError when the file moved or changed shape."""
        entry = self.entry(key)
        try:
            stack = read_stack(stack_path(self.project, entry), entry.given_axes)
        except StackError as exc:
            raise ProjectError(f"{entry.name}: {exc}") from None
        if list(stack.shape) != entry.shape:
            raise ProjectError(f"{entry.name}: the stack is now {stack.shape}, annotated as {tuple(entry.shape)}.")
        return stack

    # ------------------------------------------------------------------------------------- annotations
    def folder(self, key: str) -> Path:
        try:
            return resolve_inside(self.root, Path(STACKS_DIR) / key)
        except ValueError:
            raise ProjectError(f"stack key {key!r}: leads outside the project folder.") from None

    def annotations(self, key: str) -> StackAnnotations:
        entry = self.entry(key)
        folder = self.folder(key)
        meta_path = folder / OBJECTS_NAME
        if not meta_path.is_file():
            return StackAnnotations(entry, np.zeros(entry.label_shape, np.uint16), {})
        import json

        where = str(meta_path)
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{where}: not readable JSON ({exc}); the project is damaged.") from None
        name = get_field(meta, "labels_file", where)
        if not isinstance(name, str) or not _LABELS_RE.match(name):
            raise ProjectError(f"{where}: field 'labels_file' must name labels-NNNNNN.tif, found {name!r:.60}.")
        try:
            labels = read_label_stack(folder / name)
        except (StackError, OSError) as exc:
            raise ProjectError(f"{folder / name}: {exc}") from None
        if labels.shape != entry.label_shape:
            raise ProjectError(f"{folder / name}: shape {labels.shape}, but the stack is {entry.label_shape}.")
        raw = as_list(get_field(meta, "objects", where), where, "objects")
        objects = {}
        for i, d in enumerate(raw):
            obj = StackObject.from_dict(d, where, f"objects[{i}]")
            objects[obj.id] = obj
        revision = as_int(get_field(meta, "revision", where), where, "revision", 0, 999_999)
        return StackAnnotations(entry, labels, objects, revision)

    def _commit(self, ann: StackAnnotations, labels: np.ndarray, objects: dict[int, StackObject]) -> None:
        """New label volume, then objects.json (the commit point), then the old volume removed."""
        folder = self.folder(ann.entry.key)
        folder.mkdir(parents=True, exist_ok=True)
        revision = ann.revision + 1
        name = f"labels-{revision:06d}.tif"
        write_label_stack(folder / name, labels, axes=ann.entry.axes[0] + "YX")
        meta = {
            "format": 1,
            "stack": ann.entry.to_dict(),
            "revision": revision,
            "labels_file": name,
            "saved": _now(),
            "objects": [objects[i].to_dict() for i in sorted(objects)],
        }
        write_json_atomic(folder / OBJECTS_NAME, meta)
        for p in folder.iterdir():
            if _LABELS_RE.match(p.name) and p.name != name:
                with contextlib.suppress(OSError):
                    p.unlink()
        ann.labels, ann.objects, ann.revision = labels, objects, revision

    def _check_masks(self, ann: StackAnnotations, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks).astype(bool, copy=False)
        if masks.shape != ann.entry.label_shape:
            raise ProjectError(f"a 3D mask of {ann.entry.name} is {ann.entry.label_shape}, got {masks.shape}.")
        return masks

    def add_object(
        self,
        key: str,
        masks: np.ndarray,
        prompts: dict[int, dict[str, Any]],
        model: str = "",
        category: int = 1,
    ) -> StackObject:
        """Accept a (N, Y, X) mask as a new object (voxels of other objects are kept); saved at once."""
        with self._locked():
            self.project.category(category)
            ann = self.annotations(key)
            masks = self._check_masks(ann, masks)
            labels = ann.labels.copy()
            object_id = ann.next_id()
            paint = masks & (labels == 0)
            if not paint.any():
                raise ProjectError(
                    "the mask is empty" if not masks.any() else "the mask lies on objects already accepted"
                )
            if object_id > np.iinfo(labels.dtype).max:
                labels = labels.astype(np.uint32)
            labels[paint] = object_id
            obj = StackObject(object_id, category, dict(prompts), _span(paint), int(paint.sum()), model, _now())
            self._commit(ann, labels, {**ann.objects, object_id: obj})
            return obj

    def set_object(self, key: str, obj: StackObject, masks: np.ndarray) -> None:
        """Put ``obj`` with exactly ``masks`` (free voxels only): a correction, or the undo of one / of a delete."""
        with self._locked():
            ann = self.annotations(key)
            masks = self._check_masks(ann, masks)
            labels = ann.labels.copy()
            labels[labels == obj.id] = 0
            paint = masks & (labels == 0)
            if obj.id > np.iinfo(labels.dtype).max:
                labels = labels.astype(np.uint32)
            labels[paint] = obj.id
            obj = StackObject(**{**obj.__dict__, "slices": _span(paint), "voxels": int(paint.sum())})
            self._commit(ann, labels, {**ann.objects, obj.id: obj})

    def remove_object(self, key: str, object_id: int) -> tuple[StackObject, np.ndarray]:
        """Delete an object; returns it and its mask (for undo)."""
        with self._locked():
            ann = self.annotations(key)
            if object_id not in ann.objects:
                raise ProjectError(f"object {object_id} does not exist in {ann.entry.name}.")
            mask = ann.labels == object_id
            labels = ann.labels.copy()
            labels[mask] = 0
            objects = dict(ann.objects)
            removed = objects.pop(object_id)
            self._commit(ann, labels, objects)
            return removed, mask

    def export_labels(self, key: str, path: str | Path) -> Path:
        """The stack's label volume with the stack's (N, Y, X) shape, as .tif or .zarr."""
        ann = self.annotations(key)
        return write_label_stack(path, ann.labels, axes=ann.entry.axes[0] + "YX")


def export_stack_labels(project: Project, folder: str | Path) -> list[Path]:
    """Every stack of ``project`` with objects as ``<stack name>_labels.tif`` in ``folder``: the (N, Y, X) label
    volume with the stack's shape (works on a read-only project)."""
    objects = StackObjects(project)
    written = []
    for entry in objects.entries():
        ann = objects.annotations(entry.key)
        if ann.objects:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", entry.name.split(".")[0]) or entry.key
            path = Path(folder) / f"{stem}_labels.tif"
            written.append(write_label_stack(path, ann.labels, axes=entry.axes[0] + "YX"))
    return written


def corrected_mask(old: np.ndarray, new: np.ndarray, start: int, direction: str = BOTH) -> np.ndarray:
    """An object's mask after re-prompting slice ``start`` and propagating ``direction`` from there: the new
    propagation's slices replace the old ones on that side (both sides for ``both``), the rest is kept."""
    if direction not in (BOTH, FORWARD, BACKWARD):
        raise ValueError(f"direction must be {BOTH}, {FORWARD} or {BACKWARD}, got {direction!r}")
    out = np.asarray(old, bool).copy()
    low = 0 if direction in (BOTH, BACKWARD) else start
    high = len(out) if direction in (BOTH, FORWARD) else start + 1
    out[low:high] = np.asarray(new, bool)[low:high]
    return out


@dataclass
class _Undo:
    description: str
    apply: Callable[[], None]


class StackEdits:
    """Changes to one stack's objects with an undo stack: accept, correct from a slice, delete; :meth:`undo`
    puts back the state before the last change (saved at once, like every change)."""

    def __init__(self, objects: StackObjects, key: str) -> None:
        self.objects = objects
        self.key = key
        self._undo: list[_Undo] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def accept(
        self, masks: np.ndarray, prompts: dict[int, dict[str, Any]], model: str = "", category: int = 1
    ) -> StackObject:
        obj = self.objects.add_object(self.key, masks, prompts, model, category)

        def remove() -> None:
            self.objects.remove_object(self.key, obj.id)

        self._undo.append(_Undo(f"accept object {obj.id}", remove))
        return obj

    def correct(
        self, object_id: int, start: int, new_masks: np.ndarray, prompt: dict[str, Any], direction: str = BOTH
    ) -> StackObject:
        """Re-prompted on slice ``start`` and re-propagated ``direction``: the object's new shape (saved)."""
        ann = self.objects.annotations(self.key)
        if object_id not in ann.objects:
            raise ProjectError(f"object {object_id} does not exist in {ann.entry.name}.")
        before, old_mask = ann.objects[object_id], ann.labels == object_id
        updated = StackObject(**{**before.__dict__, "prompts": {**before.prompts, start: prompt}})
        self.objects.set_object(self.key, updated, corrected_mask(old_mask, new_masks, start, direction))
        self._undo.append(
            _Undo(f"correct object {object_id}", lambda: self.objects.set_object(self.key, before, old_mask))
        )
        return self.objects.annotations(self.key).objects[object_id]

    def delete(self, object_id: int) -> StackObject:
        removed, mask = self.objects.remove_object(self.key, object_id)
        self._undo.append(_Undo(f"delete object {object_id}", lambda: self.objects.set_object(self.key, removed, mask)))
        return removed

    def undo(self) -> str | None:
        """Undo the last change; returns what was undone (None when there is nothing to undo)."""
        if not self._undo:
            return None
        last = self._undo.pop()
        last.apply()
        return last.description


@dataclass
class StackSliceSource:
    """One stack object's slices for training: the stack (path, axes), a copy of the slices' labels and ids."""

    path: Path
    name: str
    axes: str | None  # the axes to read it with (None: from the file)
    planes: dict[int, np.ndarray]  # slice -> 2-D labels of that slice
    object_ids: list[int]


def stack_training_sources(project: Project) -> list[StackSliceSource]:
    """Every stack of ``project`` with objects: the slices that hold any (training samples are 2-D slices)."""
    objects = StackObjects(project)
    sources = []
    for entry in objects.entries():
        ann = objects.annotations(entry.key)
        if not ann.objects:
            continue
        planes = {int(z): ann.labels[z].copy() for z in np.flatnonzero(ann.labels.reshape(len(ann.labels), -1).any(1))}
        path = stack_path(project, entry)
        sources.append(StackSliceSource(path, entry.name, entry.given_axes, planes, sorted(ann.objects)))
    return sources


def stack_path(project: Project, entry: StackEntry) -> Path:
    """The stack's file or folder: the stored absolute path, else the path relative to the project folder."""
    path = Path(entry.path)
    if not path.exists() and entry.relpath:
        path = (project.root / entry.relpath).resolve()
    if not path.exists():
        raise ProjectError(f"{entry.name}: stack not found at {entry.path}; was it moved or deleted?")
    return path
