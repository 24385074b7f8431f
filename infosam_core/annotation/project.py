"""An annotation project: a folder that holds everything a user accepted, saved at once and atomically.

Layout of a project folder::

    project.json                    manifest: name, format version, the image list (path, hash, shape)
    ui.json                         UI state (the image shown last); not essential
    annotations/<key>/objects.json  per image: image path + sha256, the label file's name, every object's
                                    prompts (points, box, chosen candidate), area, bounding box, model
    annotations/<key>/labels-<rev>.tif   the label image (0 = background, object id elsewhere), uint16/32
    adapters/ , exports/            written by the app (training output, exported masks)

Crash safety. Saving one image's annotations is a two-step commit:

1. write a *new* label file ``labels-<rev+1>.tif`` (atomically: temp file, fsync, rename);
2. write ``objects.json`` (atomically) naming that file -- this rename is the commit point;
3. delete the older label files.

A crash before step 2 leaves the previous ``objects.json`` naming the previous, untouched label file (the
orphan new file is removed on the next open); a crash after it leaves the new state. No reader ever sees a
label image that disagrees with its prompts.

Coordinates: prompts are stored in image pixels, ``x`` = column, ``y`` = row (SAM's convention); a box is
``[x0, y0, x1, y1]``. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.annotation.label_files import read_labels_tiff, write_labels_tiff
from infosam_core.annotation.records import (
    AnnotatedObject,
    ImageAnnotations,
    ImageEntry,
    ObjectPrompts,
    ProjectError,
    _now,
)
from infosam_core.data.masks import mask_bounds
from infosam_core.io.atomic import write_json_atomic
from infosam_core.io.hashing import file_sha256

FORMAT_VERSION = 1


MANIFEST_NAME = "project.json"


OBJECTS_NAME = "objects.json"


UI_STATE_NAME = "ui.json"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


_LABELS_RE = re.compile(r"^labels-(\d{6})\.tif$")


def default_projects_dir() -> Path:
    """Where projects go when the user names none: the per-user data folder, never the working directory.

    Linux: ``$XDG_DATA_HOME/infosam-studio/projects`` (default ``~/.local/share/...``); macOS:
    ``~/Library/Application Support/...``; Windows: ``%LOCALAPPDATA%\\infosam-studio\\projects``.
    """
    try:
        import platformdirs

        base = Path(platformdirs.user_data_dir("infosam-studio", appauthor=False))
    except ImportError:  # platformdirs is declared, but the core still works without it
        if sys.platform == "win32":
            base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "infosam-studio"
        elif sys.platform == "darwin":
            base = Path.home() / "Library" / "Application Support" / "infosam-studio"
        else:
            base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "infosam-studio"
    return base / "projects"


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (not recursive) into a sorted, de-duplicated list of image files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.iterdir()
                    if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise ProjectError(f"{p}: no such file or folder.")
    seen: set[Path] = set()
    unique = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


# ----------------------------------------------------------------------------------------------- project
class Project:
    """A project folder. Open with :meth:`open`, :meth:`create` or :meth:`open_or_create`.

    Annotations of each image are loaded on first use and cached; every change goes to disk before the
    method returns. One ``Project`` object per folder and per process (it is not locked against others).
    """

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.name: str = str(manifest.get("name") or self.root.name)
        self.created: str = str(manifest.get("created", ""))
        self.images: list[ImageEntry] = [ImageEntry.from_dict(d) for d in manifest.get("images", [])]
        self.settings: dict[str, Any] = dict(manifest.get("settings", {}))
        self._annotations: dict[str, ImageAnnotations] = {}

    # ---- opening
    @classmethod
    def create(cls, root: str | Path, name: str | None = None) -> Project:
        root = Path(root).expanduser().resolve()
        if (root / MANIFEST_NAME).exists():
            raise ProjectError(f"{root}: already holds a project; open it instead.")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: is a file, not a folder.")
        root.mkdir(parents=True, exist_ok=True)
        project = cls(root, {"name": name or root.name, "created": _now()})
        project.save_manifest()
        return project

    @classmethod
    def open(cls, root: str | Path) -> Project:
        root = Path(root).expanduser().resolve()
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ProjectError(f"{root}: not a project folder (no {MANIFEST_NAME}).")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{manifest_path}: cannot be read ({exc}).") from None
        version = int(manifest.get("format", 0))
        if version > FORMAT_VERSION:
            raise ProjectError(
                f"{manifest_path}: written by a newer InfoSAM Studio (format {version}); update the app."
            )
        return cls(root, manifest)

    @classmethod
    def open_or_create(cls, root: str | Path, name: str | None = None) -> Project:
        root = Path(root).expanduser()
        return cls.open(root) if (root / MANIFEST_NAME).is_file() else cls.create(root, name)

    # ---- paths
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def annotation_dir(self, key: str) -> Path:
        return self.annotations_dir / key

    # ---- manifest and images
    def to_manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "app": "infosam-studio",
            "name": self.name,
            "created": self.created,
            "images": [e.to_dict() for e in self.images],
            "settings": self.settings,
        }

    def save_manifest(self) -> None:
        write_json_atomic(self.manifest_path, self.to_manifest())

    @property
    def ui_state_path(self) -> Path:
        return self.root / UI_STATE_NAME

    def ui_state(self) -> dict[str, Any]:
        """Small, non-essential UI state (e.g. the image shown last); {} when missing or unreadable."""
        try:
            state = json.loads(self.ui_state_path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def save_ui_state(self, **values: Any) -> None:
        """Update the UI state file. Not fsynced (it is called on every image change and losing it costs
        nothing), but still renamed into place, so it is never half-written."""
        state = self.ui_state()
        if all(state.get(k) == v for k, v in values.items()):
            return
        state.update(values)
        tmp = self.ui_state_path.with_name(f".{UI_STATE_NAME}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state, indent=2) + "\n", "utf-8")
            os.replace(tmp, self.ui_state_path)
        except OSError:
            pass

    def add_images(self, paths: Iterable[str | Path]) -> list[ImageEntry]:
        """Add image files and folders' images; returns the entries (existing ones for duplicates).

        Images are identified by content (sha256): adding the same file twice adds it once.
        """
        files = find_images(paths)
        by_hash = {e.sha256: e for e in self.images}
        keys = {e.key for e in self.images}
        result: list[ImageEntry] = []
        changed = False
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ProjectError(f"{path}: not a supported image ({', '.join(IMAGE_SUFFIXES)}).")
            digest = file_sha256(path)
            if digest in by_hash:
                result.append(by_hash[digest])
                continue
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40] or "image"
            key = f"{stem}-{digest[:8]}"
            n = 1
            while key in keys:
                n += 1
                key = f"{stem}-{digest[:8]}-{n}"
            try:
                rel = os.path.relpath(path, self.root)
            except ValueError:  # another drive on Windows
                rel = None
            entry = ImageEntry(key=key, path=str(path), relpath=rel, sha256=digest, name=path.name)
            self.images.append(entry)
            by_hash[digest] = entry
            keys.add(key)
            result.append(entry)
            changed = True
        if changed:
            self.save_manifest()
        return result

    def entry(self, key: str) -> ImageEntry:
        for e in self.images:
            if e.key == key:
                return e
        raise KeyError(key)

    def index_of(self, key: str) -> int:
        return [e.key for e in self.images].index(key)

    def image_path(self, entry: ImageEntry | str) -> Path:
        """The image file: the stored absolute path, else the path relative to the project folder."""
        if isinstance(entry, str):
            entry = self.entry(entry)
        p = Path(entry.path)
        if p.exists():
            return p
        if entry.relpath:
            q = (self.root / entry.relpath).resolve()
            if q.exists():
                return q
        raise ProjectError(f"{entry.name}: image file not found at {entry.path}; was it moved or deleted?")

    def set_shape(self, key: str, shape: Sequence[int]) -> None:
        entry = self.entry(key)
        shape_list = [int(shape[0]), int(shape[1])]
        if entry.shape != shape_list:
            entry.shape = shape_list
            self.save_manifest()

    # ---- annotations
    def annotations(self, key: str) -> ImageAnnotations:
        """The image's accepted objects (loaded from disk on first use)."""
        if key not in self._annotations:
            self._annotations[key] = self._load_annotations(self.entry(key))
        return self._annotations[key]

    def object_count(self, key: str) -> int:
        if key in self._annotations:
            return len(self._annotations[key].objects)
        path = self.annotation_dir(key) / OBJECTS_NAME
        if not path.is_file():
            return 0
        try:
            return len(json.loads(path.read_text("utf-8")).get("objects", []))
        except (OSError, ValueError):
            return 0

    def object_counts(self) -> dict[str, int]:
        return {e.key: self.object_count(e.key) for e in self.images}

    def total_objects(self) -> int:
        return sum(self.object_counts().values())

    def _load_annotations(self, entry: ImageEntry) -> ImageAnnotations:
        folder = self.annotation_dir(entry.key)
        meta_path = folder / OBJECTS_NAME
        if not meta_path.is_file():
            self._remove_orphans(folder, keep=None)
            labels = np.zeros(entry.shape, dtype=np.uint16) if entry.shape else None
            return ImageAnnotations(entry, labels)
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ProjectError(f"{meta_path}: cannot be read ({exc}).") from None
        labels_name = meta.get("labels_file")
        labels = None
        if labels_name:
            labels_path = folder / labels_name
            if not labels_path.is_file():
                raise ProjectError(f"{labels_path}: missing, though {meta_path.name} names it.")
            labels = read_labels_tiff(labels_path)
        objects = {int(d["id"]): AnnotatedObject.from_dict(d) for d in meta.get("objects", [])}
        self._remove_orphans(folder, keep=labels_name)
        if labels is None and entry.shape:
            labels = np.zeros(entry.shape, dtype=np.uint16)
        return ImageAnnotations(entry, labels, objects, revision=int(meta.get("revision", 0)))

    @staticmethod
    def _remove_orphans(folder: Path, keep: str | None) -> None:
        """Delete label files left by an interrupted save (never the committed one)."""
        if not folder.is_dir():
            return
        for p in folder.iterdir():
            if _LABELS_RE.match(p.name) and p.name != keep:
                with contextlib.suppress(OSError):
                    p.unlink()

    def save_annotations(self, ann: ImageAnnotations) -> None:
        """Persist one image's annotations (two-step atomic commit, see the module docstring)."""
        folder = self.annotation_dir(ann.entry.key)
        folder.mkdir(parents=True, exist_ok=True)
        rev = ann.revision + 1
        labels_name = None
        if ann.labels is not None:
            labels_name = f"labels-{rev:06d}.tif"
            write_labels_tiff(folder / labels_name, ann.labels)
        meta = {
            "format": FORMAT_VERSION,
            "image": {
                "key": ann.entry.key,
                "name": ann.entry.name,
                "path": ann.entry.path,
                "relpath": ann.entry.relpath,
                "sha256": ann.entry.sha256,
                "shape": list(ann.labels.shape) if ann.labels is not None else ann.entry.shape,
            },
            "revision": rev,
            "labels_file": labels_name,
            "saved": _now(),
            "objects": [ann.objects[i].to_dict() for i in sorted(ann.objects)],
        }
        write_json_atomic(folder / OBJECTS_NAME, meta)  # the commit point
        ann.revision = rev
        self._annotations[ann.entry.key] = ann
        self._remove_orphans(folder, keep=labels_name)

    def add_object(
        self,
        key: str,
        mask: np.ndarray,
        prompts: ObjectPrompts,
        model: str = "",
        replace_id: int | None = None,
        overwrite: bool = False,
    ) -> AnnotatedObject:
        """Accept ``mask`` (bool, H x W) as a new object, or as the new shape of ``replace_id``; saved at once.

        Pixels that belong to other accepted objects are kept unless ``overwrite``. Raises
        :class:`ProjectError` when nothing of the mask is left to paint.
        """
        ann = self.annotations(key)
        mask = np.asarray(mask, dtype=bool)
        labels = ann.ensure_labels(mask.shape)
        if self.entry(key).shape is None:
            self.set_shape(key, mask.shape)
        new_labels = labels.copy()
        if replace_id is not None:
            if replace_id not in ann.objects:
                raise ProjectError(f"object {replace_id} does not exist in {ann.entry.name}.")
            new_labels[new_labels == replace_id] = 0
            object_id = replace_id
        else:
            object_id = ann.next_id()
        paint = mask if overwrite else mask & (new_labels == 0)
        area = int(paint.sum())
        if area == 0:
            raise ProjectError(
                "the mask is empty" if not mask.any() else "the mask lies entirely on objects already accepted"
            )
        if object_id > np.iinfo(new_labels.dtype).max:
            new_labels = new_labels.astype(np.uint32)
        new_labels[paint] = object_id
        obj = AnnotatedObject(id=object_id, prompts=prompts, area=area, bbox=_bbox(paint), model=model, created=_now())
        objects = dict(ann.objects)
        if overwrite:  # objects partly painted over: refresh their areas, drop those that vanished
            for oid, other in list(objects.items()):
                if oid == object_id:
                    continue
                m = new_labels == oid
                if not m.any():
                    del objects[oid]
                else:
                    other.area, other.bbox = int(m.sum()), _bbox(m)
        objects[object_id] = obj
        self._commit(ann, new_labels, objects)
        return obj

    def remove_object(self, key: str, object_id: int) -> AnnotatedObject:
        ann = self.annotations(key)
        if object_id not in ann.objects:
            raise ProjectError(f"object {object_id} does not exist in {ann.entry.name}.")
        new_labels = ann.labels.copy() if ann.labels is not None else None
        if new_labels is not None:
            new_labels[new_labels == object_id] = 0
        objects = dict(ann.objects)
        removed = objects.pop(object_id)
        self._commit(ann, new_labels, objects)
        return removed

    def restore_object(self, key: str, obj: AnnotatedObject, mask: np.ndarray) -> None:
        """Put back an object (e.g. undo of a delete or of a refine) with its id, prompts and mask."""
        ann = self.annotations(key)
        labels = ann.ensure_labels(mask.shape).copy()
        objects = dict(ann.objects)
        labels[labels == obj.id] = 0
        labels[np.asarray(mask, bool) & (labels == 0)] = obj.id
        objects[obj.id] = obj
        self._commit(ann, labels, objects)

    def _commit(self, ann: ImageAnnotations, labels: np.ndarray | None, objects: dict[int, AnnotatedObject]) -> None:
        """Save the new state first; only once it is on disk does the in-memory state change."""
        staged = ImageAnnotations(ann.entry, labels, objects, ann.revision)
        self.save_annotations(staged)
        ann.labels, ann.objects, ann.revision = staged.labels, staged.objects, staged.revision
        self._annotations[ann.entry.key] = ann

    def iter_objects(self) -> Iterable[tuple[ImageEntry, ImageAnnotations]]:
        """(entry, annotations) of every image with at least one object."""
        for e in self.images:
            if self.object_count(e.key):
                yield e, self.annotations(e.key)


def _bbox(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1) of the mask, end exclusive (COCO-style extents); zeros for an empty mask."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = bounds
    return [x0, y0, x1 + 1, y1 + 1]
