"""An annotation project: a folder that holds everything a user accepted, saved at once and atomically.

Layout of a project folder::

    project.json                    manifest: name, format version, the image list (path, hash, shape), the
                                    category list (id, name, colour; absent in older projects = one
                                    category "object")
    ui.json                         UI state (the image shown last); not essential
    adapt.json                      the app's Adapt memory (active adapter, settings, curves); not essential
    annotations/<key>/objects.json  per image: image path + sha256, the label file's name, every object's
                                    prompts (points, box, chosen candidate), area, bounding box, model
    annotations/<key>/labels-<rev>.tif   the label image (0 = background, object id elsewhere), uint16/32
    adapters/ , exports/            written by the app (training output, exported masks)
    cache/embeddings/               image embeddings computed by the app (``<pixels hash>-<model>.safetensors``)

Crash safety. Saving one image's annotations is a two-step commit:

1. write a *new* label file ``labels-<rev+1>.tif`` (atomically: temp file, fsync, rename);
2. write ``objects.json`` (atomically) naming that file -- this rename is the commit point;
3. delete the older label files.

A crash before step 2 leaves the previous ``objects.json`` naming the previous, untouched label file (the
orphan new file is removed on the next open); a crash after it leaves the new state. No reader ever sees a
label image that disagrees with its prompts. Temporary files of a writer that died are removed too.

Batches. :meth:`Project.add_labelled_images` (imports) changes many images and the manifest at once, all or
nothing: it writes every new label file and every new ``objects.json`` / ``project.json`` as
``<name>.pending``, then the journal ``.infosam-batch.json`` listing them (atomically: the commit point), then
renames each pending file into place and deletes the journal. Whoever takes the project's lock next finishes
a journal left by a crash (renames what is still pending); pending files without a journal are an
uncommitted batch and are deleted. A crash before the journal leaves the old state, after it the new one.
:meth:`Project.remove_image` is such a batch too: its journal also lists what to delete once the manifest is
renamed (the image's ``annotations/<key>`` folder and its files in ``cache/embeddings``).

Adding images. :meth:`Project.add_images` decodes each new file once (:mod:`infosam_core.io.image_checks`):
a file that is not an image, is truncated or is over the pixel limit is not added; the result's ``refused``
says which and why.
(``read_only`` opens take no lock and finish nothing: until the project is opened normally once, they read the
state from before such a crashed batch, or partly after it.)

Sharing. A project may be open in several processes (two app windows, the app and a script) and in several
``Project`` objects at once. Every change runs under the project's lock (``.infosam.lock``, an OS file lock
held only for the change, so a crashed holder can never leave a stale lock) and starts by re-reading what
it changes from disk (the manifest, the image's ``objects.json``) when another writer changed it: no writer
overwrites another's objects or images. If the lock stays taken for :data:`LOCK_TIMEOUT_S` seconds, the
change is refused with a :class:`ProjectError` naming the holder (pid, host, since when), read from
``.infosam.lock.owner``. ``Project.open(root, read_only=True)`` reads without ever writing.

Untrusted project files. A project folder may come from someone else: every value of ``project.json`` and
``objects.json`` is checked (a bad one raises :class:`ProjectError` naming the file and field), image keys
must be plain folder names and label files must be ``labels-NNNNNN.tif``, and every path built from them
goes through :func:`infosam_core.io.paths.resolve_inside`, so nothing outside the project folder is ever
written, deleted or read as a label file. Image files themselves are referenced where the user added them
and are only ever read.

Coordinates: prompts are stored in image pixels, ``x`` = column, ``y`` = row (SAM's convention); a box is
``[x0, y0, x1, y1]``. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infosam_core.annotation.label_files import read_labels_tiff, write_labels_tiff
from infosam_core.annotation.records import (
    CATEGORY_PALETTE,
    MAX_CATEGORY_ID,
    MAX_LABEL_ID,
    AnnotatedObject,
    Category,
    ImageAnnotations,
    ImageEntry,
    LabelledImage,
    ObjectPrompts,
    ProjectError,
    _now,
    as_int,
    as_list,
    categories_from_list,
    get_field,
)
from infosam_core.data.masks import mask_bounds
from infosam_core.io.atomic import _fsync_dir, remove_stale_temp_files, write_json_atomic
from infosam_core.io.hashing import file_sha256
from infosam_core.io.image_checks import RefusedImage, check_image_file, refusal_reason
from infosam_core.io.images import ImageError, check_pixel_count, load_rgb
from infosam_core.io.paths import UnsafePathError, resolve_inside, safe_name

FORMAT_VERSION = 1


MANIFEST_NAME = "project.json"


OBJECTS_NAME = "objects.json"


UI_STATE_NAME = "ui.json"


LOCK_NAME = ".infosam.lock"


LOCK_OWNER_NAME = ".infosam.lock.owner"


LOCK_TIMEOUT_S = 20.0


BATCH_JOURNAL_NAME = ".infosam-batch.json"


PENDING_SUFFIX = ".pending"


READ_LOCK_TIMEOUT_S = 2.0


class ProjectBusyError(ProjectError):
    """Another process or object held the project's lock for too long; the message names it."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


_LABELS_RE = re.compile(r"^labels-(\d{6})\.tif$")


_JOURNAL_FILE_RE = re.compile(r"^(project\.json|annotations/[A-Za-z0-9_.-]{1,80}/objects\.json)$")


# what a journal may delete when it is finished (remove_image): an image's annotation folder, a cached embedding
_JOURNAL_REMOVE_RE = re.compile(
    r"^(annotations/[A-Za-z0-9_.-]{1,80}|cache/embeddings/[0-9a-f]{32}-[A-Za-z0-9_.-]{1,120})$"
)


class AddedImages(list[ImageEntry]):
    """What :meth:`Project.add_images` returns: the entries of the usable files (new ones and those already in
    the project), and in ``refused`` the files that were not added, each with the reason."""

    def __init__(self, entries: Iterable[ImageEntry] = ()) -> None:
        super().__init__(entries)
        self.refused: list[RefusedImage] = []


def rgb_pixels_hash(rgb: np.ndarray) -> str:
    """The key under which an image's embeddings are cached (the same as
    :func:`infosam_core.inference.embedding_cache.image_hash`, here without importing torch)."""
    import hashlib

    rgb = np.ascontiguousarray(rgb)
    h = hashlib.sha256(rgb.data.cast("B"))
    h.update(f"{rgb.shape}{rgb.dtype.str}".encode())
    return h.hexdigest()[:32]


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
    method returns. Several ``Project`` objects and processes may use one folder at once (see "Sharing" in
    the module docstring); ``read_only=True`` refuses every change.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], read_only: bool = False):
        from filelock import FileLock

        self.root = Path(root)
        self.read_only = read_only
        self.images: list[ImageEntry] = []
        self._annotations: dict[str, ImageAnnotations] = {}
        self._stamps: dict[str, tuple[int, int, int] | None] = {}  # file -> (inode, mtime_ns, size) last seen
        self._lock = FileLock(str(self.root / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
        self._apply_manifest(manifest, str(self.root / MANIFEST_NAME))

    def _apply_manifest(self, manifest: Any, where: str) -> None:
        """Take the manifest's values (checked), keeping the ImageEntry objects of keys already known."""
        if not isinstance(manifest, dict):
            raise ProjectError(f"{where}: not a project manifest (a JSON object is expected).")
        name = manifest.get("name")
        self.name = name if isinstance(name, str) and name else self.root.name
        self.created = str(manifest.get("created", ""))
        settings = manifest.get("settings", {})
        if not isinstance(settings, dict):
            raise ProjectError(f"{where}: field 'settings' must be a JSON object; the file is damaged.")
        self.settings = dict(settings)
        self.categories: list[Category] = categories_from_list(manifest.get("categories"), where)
        raw = get_field(manifest, "images", where, required=False) or []
        entries = [ImageEntry.from_dict(d, where, f"images[{i}]") for i, d in enumerate(as_list(raw, where, "images"))]
        keys = [e.key for e in entries]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ProjectError(f"{where}: field 'images' names the key {dup!r} twice; the file is damaged.")
        for e in entries:
            if e.shape:
                try:
                    check_pixel_count(tuple(e.shape), f"{where}: image {e.key}")
                except ImageError as exc:
                    raise ProjectError(str(exc)) from None
        known = {e.key: e for e in self.images}
        merged = []
        for e in entries:
            old = known.get(e.key)
            if old is not None:
                old.path, old.relpath, old.sha256, old.name, old.shape = e.path, e.relpath, e.sha256, e.name, e.shape
                e = old
            merged.append(e)
        self.images[:] = merged

    # ---- the lock (see "Sharing" in the module docstring)
    @contextlib.contextmanager
    def _locked(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the project's lock for one change (re-entrant within a thread); ProjectBusyError after
        ``timeout`` (default :data:`LOCK_TIMEOUT_S`) seconds."""
        if self.read_only:
            raise ProjectError(f"{self.root}: opened read-only; open it normally to change it.")
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=LOCK_TIMEOUT_S if timeout is None else timeout)
        except Timeout:
            raise ProjectBusyError(
                f"{self.root}: the project is busy: {self._lock_holder()} has held its lock for more than "
                f"{LOCK_TIMEOUT_S if timeout is None else timeout:.0f} s. Wait for it, or close that program if it "
                "hangs; or open the project read-only."
            ) from None
        except OSError as exc:
            raise ProjectError(f"{self.root}: cannot lock the project ({exc.strerror or exc}).") from None
        try:
            if self._lock.lock_counter == 1:
                self._write_lock_owner()
                self._finish_batch()
            yield
        finally:
            self._lock.release()

    def _write_lock_owner(self) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "program": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
        }
        with contextlib.suppress(OSError):
            (self.root / LOCK_OWNER_NAME).write_text(json.dumps(owner) + "\n", "utf-8")

    def _lock_holder(self) -> str:
        try:
            owner = json.loads((self.root / LOCK_OWNER_NAME).read_text("utf-8"))
            return (
                f"{owner.get('program', 'a program')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
                f"since {owner.get('since', '?')})"
            )
        except (OSError, ValueError, AttributeError):
            return "another program"

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh_manifest(self) -> None:
        """Re-read ``project.json`` if another writer changed it since this object last read or wrote it."""
        stamp = self._stamp(self.manifest_path)
        if stamp is None or stamp == self._stamps.get(MANIFEST_NAME):
            return
        self._apply_manifest(_read_json(self.manifest_path), str(self.manifest_path))
        self._stamps[MANIFEST_NAME] = stamp

    # ---- opening
    @classmethod
    def create(cls, root: str | Path, name: str | None = None) -> Project:
        root = Path(root).expanduser().resolve()
        if (root / MANIFEST_NAME).exists():
            raise ProjectError(f"{root}: already holds a project; open it instead.")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: is a file, not a folder.")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{root}: cannot create the project folder ({exc.strerror or exc}).") from None
        project = cls(root, {"name": name or root.name, "created": _now()})
        with project._locked():
            if (root / MANIFEST_NAME).exists():  # another process created it meanwhile
                raise ProjectError(f"{root}: already holds a project; open it instead.")
            project.save_manifest()
        return project

    @classmethod
    def open(cls, root: str | Path, read_only: bool = False) -> Project:
        """Open an existing project; ``read_only`` never writes anything (no lock, no clean-up)."""
        root = Path(root).expanduser().resolve()
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ProjectError(f"{root}: not a project folder (no {MANIFEST_NAME}).")
        stamp = cls._stamp(manifest_path)
        manifest = _read_json(manifest_path)
        if isinstance(manifest, dict):
            version = as_int(manifest.get("format", 0), str(manifest_path), "format", 0)
            if version > FORMAT_VERSION:
                raise ProjectError(
                    f"{manifest_path}: written by a newer InfoSAM Studio (format {version}); update the app."
                )
        project = cls(root, manifest, read_only=read_only)
        project._stamps[MANIFEST_NAME] = stamp
        if not read_only:
            with project._locked():  # finishes a batch a crash left (its manifest is then read anew)
                project._refresh_manifest()
                remove_stale_temp_files(root)
        return project

    @classmethod
    def open_or_create(cls, root: str | Path, name: str | None = None) -> Project:
        root = Path(root).expanduser()
        if (root / MANIFEST_NAME).is_file():
            return cls.open(root)
        try:
            return cls.create(root, name)
        except ProjectError:
            if (root / MANIFEST_NAME).is_file():  # created by another process at the same moment
                return cls.open(root)
            raise

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
        """``annotations/<key>``, guaranteed inside the project folder (ProjectError otherwise)."""
        try:
            return resolve_inside(self.root, Path("annotations") / safe_name(key))
        except UnsafePathError as exc:
            raise ProjectError(f"{self.root}: image key {key!r} is not usable as a folder name ({exc}).") from None

    # ---- manifest and images
    def to_manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "app": "infosam-studio",
            "name": self.name,
            "created": self.created,
            "images": [e.to_dict() for e in self.images],
            "categories": [c.to_dict() for c in self.categories],
            "settings": self.settings,
        }

    # ---- categories
    def category(self, category_id: int) -> Category:
        """The category with this id (ProjectError if the project has none)."""
        for c in self.categories:
            if c.id == category_id:
                return c
        raise ProjectError(f"{self.root}: no category with id {category_id}.")

    def category_named(self, name: str) -> Category | None:
        for c in self.categories:
            if c.name == name:
                return c
        return None

    def add_category(self, name: str, color: str | None = None) -> Category:
        """The category called ``name``, created (with the next palette colour unless ``color``) if new; saved."""
        with self._locked():
            self._refresh_manifest()
            before = len(self.categories)
            cat = self._ensure_category(name, color)
            if len(self.categories) != before:
                self.save_manifest()
            return cat

    def _ensure_category(self, name: str, color: str | None = None) -> Category:
        """In memory only: the category called ``name``, appended if new (the caller saves the manifest)."""
        name = str(name).strip()
        if not name or len(name) > 80 or "\x00" in name:
            raise ProjectError(f"category name {name!r:.90} must be non-empty and at most 80 characters.")
        found = self.category_named(name)
        if found is not None:
            return found
        new_id = max((c.id for c in self.categories), default=0) + 1
        if new_id > MAX_CATEGORY_ID:
            raise ProjectError(f"{self.root}: at most {MAX_CATEGORY_ID} categories.")
        cat = Category.from_dict(
            {"id": new_id, "name": name, "color": color or CATEGORY_PALETTE[(new_id - 1) % len(CATEGORY_PALETTE)]},
            "new category",
        )
        self.categories.append(cat)
        return cat

    def set_setting(self, name: str, value: Any) -> None:
        """Set the project setting ``name`` to ``value`` (JSON; None removes it); saved at once, atomically."""
        with self._locked():
            self._refresh_manifest()
            if value is None:
                if name not in self.settings:
                    return
                self.settings.pop(name)
            else:
                json.dumps(value)  # TypeError now rather than a half-built manifest later
                self.settings[name] = value
            self.save_manifest()

    def save_manifest(self) -> None:
        """Write this object's manifest (callers that change it re-read it first, under the lock)."""
        with self._locked():
            write_json_atomic(self.manifest_path, self.to_manifest())
            self._stamps[MANIFEST_NAME] = self._stamp(self.manifest_path)

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
        if self.read_only:
            return
        state = self.ui_state()
        if all(state.get(k) == v for k, v in values.items()):
            return
        state.update(values)
        tmp = self.ui_state_path.with_name(f".{UI_STATE_NAME}.{os.getpid()}.nosync.tmp")  # stale ones are removed
        try:
            tmp.write_text(json.dumps(state, indent=2) + "\n", "utf-8")
            os.replace(tmp, self.ui_state_path)
        except OSError:
            pass

    def add_images(self, paths: Iterable[str | Path]) -> AddedImages:
        """Add image files and folders' images; returns the entries (existing ones for duplicates).

        Images are identified by content (sha256): adding the same file twice adds it once. Every new file is
        checked first (:func:`infosam_core.io.image_checks.check_image_file`: it decodes completely, within
        the pixel limit); one that is not usable is not added and is listed, with the reason, in the result's
        ``refused``.
        """
        files = find_images(paths)
        with self._locked():
            self._refresh_manifest()
            return self._add_images(files, strict=False)

    def _add_images(self, files: list[Path], save: bool = True, strict: bool = True) -> AddedImages:
        """``strict``: an unusable file raises ProjectError (imports: all or nothing); else it is refused."""
        by_hash = {e.sha256: e for e in self.images}
        keys = {e.key for e in self.images}
        result = AddedImages()
        changed = False
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                reason = f"not a supported image file type ({', '.join(IMAGE_SUFFIXES)})."
                if strict:
                    raise ProjectError(f"{path}: {reason}")
                result.refused.append(RefusedImage(path, reason))
                continue
            digest = file_sha256(path)
            if digest in by_hash:
                result.append(by_hash[digest])
                continue
            shape: list[int] | None = None
            if not strict:
                try:
                    shape = list(check_image_file(path))
                except ImageError as exc:
                    result.refused.append(RefusedImage(path, refusal_reason(exc, path)))
                    continue
                except OSError as exc:
                    result.refused.append(RefusedImage(path, f"cannot be read ({exc.strerror or exc})."))
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
            entry = ImageEntry(key=key, path=str(path), relpath=rel, sha256=digest, name=path.name, shape=shape)
            self.images.append(entry)
            by_hash[digest] = entry
            keys.add(key)
            result.append(entry)
            changed = True
        if changed and save:
            self.save_manifest()
        return result

    def remove_image(self, key: str) -> ImageEntry:
        """Take image ``key`` out of the project, all or nothing: its manifest entry, its objects (the
        ``annotations/<key>`` folder) and its cached embeddings (``cache/embeddings``). The image file itself
        is never touched. A batch (see "Batches" in the module docstring): a crash leaves the old state or,
        once the journal is written, the new one (finished by whoever takes the lock next)."""
        with self._locked():
            self._refresh_manifest()
            entry = self.entry(key)  # KeyError for an unknown key
            folder = self.annotation_dir(key)
            remove = [f"annotations/{folder.name}"] if folder.exists() else []
            remove += [f"cache/embeddings/{p.name}" for p in self._cached_embedding_files(entry)]
            kept = [e for e in self.images if e.key != key]
            manifest = self.to_manifest()
            manifest["images"] = [e.to_dict() for e in kept]
            write_json_atomic(self.root / (MANIFEST_NAME + PENDING_SUFFIX), manifest)
            write_json_atomic(  # the commit point
                self.root / BATCH_JOURNAL_NAME, {"format": 1, "files": [MANIFEST_NAME], "remove": remove}
            )
            self._finish_batch()
            self.images[:] = kept
            self._annotations.pop(key, None)
            self._stamps.pop(f"objects/{key}", None)
            self._stamps[MANIFEST_NAME] = self._stamp(self.manifest_path)
            return entry

    def _cached_embedding_files(self, entry: ImageEntry) -> list[Path]:
        """The image's files in ``cache/embeddings`` (named ``<hash of its RGB pixels>-<model>.safetensors``);
        none when the image cannot be read (then no embedding of it was ever computed)."""
        cache = self.root / "cache" / "embeddings"
        if not cache.is_dir():
            return []
        try:
            digest = rgb_pixels_hash(load_rgb(self.image_path(entry)))
        except (ProjectError, ImageError, OSError, MemoryError):
            return []
        return sorted(p for p in cache.glob(f"{digest}-*.safetensors") if p.is_file())

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
        if p.is_absolute() and p.is_file():
            return p
        if entry.relpath:
            q = (self.root / entry.relpath).resolve()
            if q.is_file():
                return q
        raise ProjectError(f"{entry.name}: image file not found at {entry.path}; was it moved or deleted?")

    def set_shape(self, key: str, shape: Sequence[int]) -> None:
        shape_list = [int(shape[0]), int(shape[1])]
        if self.entry(key).shape == shape_list or self.read_only:
            return
        with self._locked():
            self._refresh_manifest()
            entry = self.entry(key)
            if entry.shape != shape_list:
                entry.shape = shape_list
                self.save_manifest()

    # ---- annotations
    def annotations(self, key: str) -> ImageAnnotations:
        """The image's accepted objects (loaded from disk on first use, re-read when another writer changed
        them)."""
        if self.read_only:
            return self._fresh_annotations(key)
        try:
            with self._locked(timeout=READ_LOCK_TIMEOUT_S):
                return self._fresh_annotations(key)
        except ProjectBusyError:  # another writer is slow: show what is known (changes still wait for the lock)
            if key in self._annotations:
                return self._annotations[key]
            return self._load_annotations(self.entry(key), clean_up=False)

    def _fresh_annotations(self, key: str) -> ImageAnnotations:
        """The cached annotations, re-read if ``objects.json`` changed on disk since (call under the lock)."""
        entry = self.entry(key)
        stamp = self._stamp(self.annotation_dir(key) / OBJECTS_NAME)
        cached = self._annotations.get(key)
        if cached is None or stamp != self._stamps.get(f"objects/{key}"):
            fresh = self._load_annotations(entry)
            if cached is not None:  # keep the object the caller holds, with the other writer's state
                cached.labels, cached.objects, cached.revision = fresh.labels, fresh.objects, fresh.revision
                fresh = cached
            self._annotations[key] = fresh
            self._stamps[f"objects/{key}"] = stamp
        return self._annotations[key]

    def object_count(self, key: str) -> int:
        if key in self._annotations:
            return len(self._annotations[key].objects)
        try:
            path = self.annotation_dir(key) / OBJECTS_NAME
        except ProjectError:
            return 0
        if not path.is_file():
            return 0
        try:
            objects = json.loads(path.read_text("utf-8")).get("objects", [])
            return len(objects) if isinstance(objects, list) else 0
        except (OSError, ValueError, AttributeError):
            return 0

    def object_counts(self) -> dict[str, int]:
        return {e.key: self.object_count(e.key) for e in self.images}

    def total_objects(self) -> int:
        return sum(self.object_counts().values())

    def _load_annotations(self, entry: ImageEntry, clean_up: bool = True) -> ImageAnnotations:
        """Read and check ``objects.json`` and its label file (under the lock, or read-only, or without
        ``clean_up``)."""
        folder = self.annotation_dir(entry.key)
        meta_path = folder / OBJECTS_NAME
        where = str(meta_path)
        if not meta_path.is_file():
            if clean_up:
                self._remove_orphans(folder, keep=None)
            labels = np.zeros(entry.shape, dtype=np.uint16) if entry.shape else None
            return ImageAnnotations(entry, labels)
        meta = _read_json(meta_path)
        labels_name = get_field(meta, "labels_file", where, required=False)
        labels = None
        if labels_name is not None:
            if not isinstance(labels_name, str) or not _LABELS_RE.match(labels_name):
                raise ProjectError(
                    f"{where}: field 'labels_file' must name a file labels-NNNNNN.tif in the same folder, "
                    f"found {labels_name!r:.80}; the project file is damaged or was edited by hand."
                )
            labels_path = folder / labels_name
            if not labels_path.is_file():
                raise ProjectError(f"{labels_path}: missing, though {meta_path.name} names it.")
            labels = read_labels_tiff(labels_path)
            if entry.shape and list(labels.shape) != list(entry.shape):
                raise ProjectError(
                    f"{labels_path}: the label image is {labels.shape[1]}x{labels.shape[0]} px but "
                    f"{MANIFEST_NAME} says the image is {entry.shape[1]}x{entry.shape[0]} px; the project is damaged."
                )
        raw_objects = as_list(get_field(meta, "objects", where, required=False) or [], where, "objects")
        objects: dict[int, AnnotatedObject] = {}
        for i, d in enumerate(raw_objects):
            obj = AnnotatedObject.from_dict(d, where, f"objects[{i}]")
            if obj.id in objects:
                raise ProjectError(f"{where}: field 'objects[{i}].id' repeats id {obj.id}; the file is damaged.")
            objects[obj.id] = obj
        revision = as_int(get_field(meta, "revision", where, required=False) or 0, where, "revision", 0, 999_999)
        if clean_up:
            self._remove_orphans(folder, keep=labels_name)
        if labels is None and entry.shape:
            labels = np.zeros(entry.shape, dtype=np.uint16)
        return ImageAnnotations(entry, labels, objects, revision=revision)

    def _remove_orphans(self, folder: Path, keep: str | None) -> None:
        """Delete label files and temp files left by an interrupted save (never the committed one)."""
        if self.read_only or not folder.is_dir() or folder.is_symlink():
            return
        batch_open = (self.root / BATCH_JOURNAL_NAME).exists()
        for p in folder.iterdir():
            uncommitted = p.name == OBJECTS_NAME + PENDING_SUFFIX and not batch_open
            if (_LABELS_RE.match(p.name) and p.name != keep) or uncommitted:
                with contextlib.suppress(OSError):
                    p.unlink()
        remove_stale_temp_files(folder)

    def save_annotations(self, ann: ImageAnnotations) -> None:
        """Persist one image's annotations (two-step atomic commit, see the module docstring)."""
        with self._locked():
            self._save_annotations(ann)

    def _writable_annotation_dir(self, key: str) -> Path:
        folder = self.annotation_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.root.resolve()):
            raise ProjectError(f"{folder}: leads outside the project folder; the project is damaged.")
        return folder

    def _write_new_labels(self, folder: Path, ann: ImageAnnotations) -> tuple[int, str | None, dict[str, Any]]:
        """Step 1 of a save: the new label file; returns (revision, its name, the ``objects.json`` content)."""
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
        return rev, labels_name, meta

    def _save_annotations(self, ann: ImageAnnotations) -> None:
        folder = self._writable_annotation_dir(ann.entry.key)
        rev, labels_name, meta = self._write_new_labels(folder, ann)
        write_json_atomic(folder / OBJECTS_NAME, meta)  # the commit point
        self._stamps[f"objects/{ann.entry.key}"] = self._stamp(folder / OBJECTS_NAME)
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
        category: int = 1,
    ) -> AnnotatedObject:
        """Accept ``mask`` (bool, H x W) as a new object, or as the new shape of ``replace_id``; saved at once.

        Pixels that belong to other accepted objects are kept unless ``overwrite``. Raises
        :class:`ProjectError` when nothing of the mask is left to paint. ``category``: a category id of the
        project.
        """
        mask = np.asarray(mask)
        if mask.ndim != 2 or min(mask.shape) < 1:
            raise ProjectError(f"a mask must be a 2-D (H, W) array, got shape {mask.shape}")
        mask = mask.astype(bool, copy=False)
        with self._locked():
            return self._add_object(key, mask, prompts, model, replace_id, overwrite, category)

    def _add_object(
        self,
        key: str,
        mask: np.ndarray,
        prompts: ObjectPrompts,
        model: str,
        replace_id: int | None,
        overwrite: bool,
        category: int = 1,
    ) -> AnnotatedObject:
        self._refresh_manifest()
        self.category(category)  # refuses an unknown id
        ann = self._fresh_annotations(key)
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
        obj = AnnotatedObject(
            id=object_id,
            prompts=prompts,
            area=area,
            bbox=_bbox(paint),
            model=model,
            created=_now(),
            category=category,
        )
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

    def set_object_category(self, key: str, object_id: int, category: int) -> AnnotatedObject:
        """Give an object another category (a category id of the project); saved at once."""
        with self._locked():
            self._refresh_manifest()
            self.category(category)
            ann = self._fresh_annotations(key)
            if object_id not in ann.objects:
                raise ProjectError(f"object {object_id} does not exist in {ann.entry.name}.")
            objects = dict(ann.objects)
            obj = AnnotatedObject.from_dict(objects[object_id].to_dict())
            obj.category = category
            objects[object_id] = obj
            self._commit(ann, ann.labels, objects)
            return obj

    def remove_object(self, key: str, object_id: int) -> AnnotatedObject:
        with self._locked():
            return self._remove_object(key, object_id)

    def _remove_object(self, key: str, object_id: int) -> AnnotatedObject:
        ann = self._fresh_annotations(key)
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
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ProjectError(f"a mask must be a 2-D (H, W) array, got shape {mask.shape}")
        with self._locked():
            self._restore_object(key, obj, mask)

    def _restore_object(self, key: str, obj: AnnotatedObject, mask: np.ndarray) -> None:
        ann = self._fresh_annotations(key)
        labels = ann.ensure_labels(mask.shape).copy()
        objects = dict(ann.objects)
        labels[labels == obj.id] = 0
        labels[np.asarray(mask, bool) & (labels == 0)] = obj.id
        objects[obj.id] = obj
        self._commit(ann, labels, objects)

    def _commit(self, ann: ImageAnnotations, labels: np.ndarray | None, objects: dict[int, AnnotatedObject]) -> None:
        """Save the new state first; only once it is on disk does the in-memory state change."""
        staged = ImageAnnotations(ann.entry, labels, objects, ann.revision)
        self._save_annotations(staged)
        ann.labels, ann.objects, ann.revision = staged.labels, staged.objects, staged.revision
        self._annotations[ann.entry.key] = ann

    # ---- batches (imports): all or nothing, see "Batches" in the module docstring
    def add_labelled_images(
        self, items: Sequence[LabelledImage], model: str = "import", categories: Sequence[str] = ()
    ) -> dict[str, list[int]]:
        """Add the images of ``items`` (if new) and their objects, all or nothing; returns key -> new object ids.

        Each non-zero value of an item's label image becomes one object of that item's category (created in the
        project if new), its bounding box recorded as its prompt. An image without objects keeps its label
        values as object ids; otherwise the new objects are numbered after the existing ones and never paint
        over them. Everything is checked before anything is written; a :class:`ProjectError` names the item's
        ``source`` and leaves the project as it was. ``categories``: names to create first, in this order (e.g. a
        COCO file's list, so that its ids keep their order).
        """
        with self._locked():
            self._refresh_manifest()
            try:
                for name in categories:
                    self._ensure_category(name)
                return self._add_labelled_images(list(items), model)
            except BaseException:
                if (self.root / BATCH_JOURNAL_NAME).exists():  # committed: finish it if we still can
                    with contextlib.suppress(Exception):
                        self._finish_batch()
                self._apply_manifest(_read_json(self.manifest_path), str(self.manifest_path))
                self._stamps[MANIFEST_NAME] = self._stamp(self.manifest_path)
                raise

    def _add_labelled_images(self, items: list[LabelledImage], model: str) -> dict[str, list[int]]:
        entries = self._add_images([Path(it.image) for it in items], save=False)
        staged: list[tuple[ImageAnnotations, ImageAnnotations]] = []
        seen: dict[str, str] = {}
        for item, entry in zip(items, entries):
            if entry.key in seen:
                raise ProjectError(
                    f"{item.source}: labels for {entry.name} are given twice (also by {seen[entry.key]})."
                )
            seen[entry.key] = item.source
            labels = np.asarray(item.labels)
            if labels.ndim != 2 or labels.dtype.kind not in "uib":
                raise ProjectError(
                    f"{item.source}: a label image is 2-D integers, found {labels.dtype} {labels.shape}."
                )
            if entry.shape and list(labels.shape) != list(entry.shape):
                raise ProjectError(
                    f"{item.source}: the labels are {labels.shape[1]}x{labels.shape[0]} px but the image "
                    f"{entry.name} is {entry.shape[1]}x{entry.shape[0]} px."
                )
            entry.shape = [int(labels.shape[0]), int(labels.shape[1])]
            ann = self._fresh_annotations(entry.key)
            new = self._stage_labelled_image(item, ann, labels, model)
            if new is not None:
                staged.append((ann, new))
        # write: new label files and pending objects.json / project.json, then the journal (commit point)
        committed: list[str] = []
        for _ann, new in staged:
            folder = self._writable_annotation_dir(new.entry.key)
            new.revision, _name, meta = self._write_new_labels(folder, new)
            write_json_atomic(folder / (OBJECTS_NAME + PENDING_SUFFIX), meta)
            committed.append(f"annotations/{folder.name}/{OBJECTS_NAME}")
        write_json_atomic(self.root / (MANIFEST_NAME + PENDING_SUFFIX), self.to_manifest())
        committed.append(MANIFEST_NAME)
        write_json_atomic(self.root / BATCH_JOURNAL_NAME, {"format": 1, "files": committed})  # the commit point
        self._finish_batch()
        self._stamps[MANIFEST_NAME] = self._stamp(self.manifest_path)
        result: dict[str, list[int]] = {}
        for ann, new in staged:
            key = ann.entry.key
            result[key] = sorted(set(new.objects) - set(ann.objects))
            ann.labels, ann.objects, ann.revision = new.labels, new.objects, new.revision
            self._annotations[key] = ann
            folder = self.annotation_dir(key)
            self._stamps[f"objects/{key}"] = self._stamp(folder / OBJECTS_NAME)
            self._remove_orphans(folder, keep=f"labels-{new.revision:06d}.tif")
        return result

    def _stage_labelled_image(
        self, item: LabelledImage, ann: ImageAnnotations, labels: np.ndarray, model: str
    ) -> ImageAnnotations | None:
        """The image's annotations with ``item``'s objects added (in memory); None when it holds none."""
        from scipy import ndimage

        existing = ann.ensure_labels(labels.shape)
        values, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(labels.shape)
        if values.size and int(values[0]) < 0:
            raise ProjectError(f"{item.source}: holds negative labels ({int(values[0])}); labels are 0 or positive.")
        if values.size and int(values[-1]) > MAX_LABEL_ID:
            raise ProjectError(f"{item.source}: label {int(values[-1])} is above the largest id ({MAX_LABEL_ID}).")
        nonzero = [k for k, v in enumerate(values.tolist()) if v != 0]
        if not nonzero:
            return None
        fresh = not ann.objects and not existing.any()
        start = ann.next_id()
        ids = [int(values[k]) if fresh else start + n for n, k in enumerate(nonzero)]
        if max(ids) > MAX_LABEL_ID:
            raise ProjectError(f"{item.source}: too many objects for one image ({max(ids)}).")
        index = (inverse + 1).astype(np.int64)  # value k of ``values`` -> k + 1; 0 = nothing to paint
        index[(labels == 0) | (existing != 0)] = 0
        areas = np.bincount(index.ravel(), minlength=values.size + 1)
        boxes = ndimage.find_objects(index, max_label=values.size)
        top = max(max(ids), int(existing.max(initial=0)))
        new_labels = existing.astype(np.uint16 if top <= 65535 else np.uint32, copy=True)
        lut = np.zeros(values.size + 1, dtype=new_labels.dtype)
        objects = dict(ann.objects)
        created = _now()
        for k, object_id in zip(nonzero, ids):
            value = int(values[k])
            if areas[k + 1] == 0:
                raise ProjectError(
                    f"{item.source}: object {value} lies entirely on objects already in {ann.entry.name}; nothing of "
                    "it is left to add."
                )
            rows, cols = boxes[k]
            bbox = [int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)]
            name = item.categories.get(value) or self.categories[0].name
            objects[object_id] = AnnotatedObject(
                id=object_id,
                prompts=ObjectPrompts(box=[float(bbox[0]), float(bbox[1]), float(bbox[2] - 1), float(bbox[3] - 1)]),
                area=int(areas[k + 1]),
                bbox=bbox,
                model=model,
                created=created,
                category=self._ensure_category(name).id,
            )
            lut[k + 1] = object_id
        painted = lut[index]
        new_labels[index > 0] = painted[index > 0]
        return ImageAnnotations(ann.entry, new_labels, objects, ann.revision)

    def _finish_batch(self) -> None:
        """Finish a batch whose journal is on disk (rename what is still pending), or remove the pending
        manifest of one that never committed (called whenever the lock is taken)."""
        journal = self.root / BATCH_JOURNAL_NAME
        if not journal.is_file():
            with contextlib.suppress(OSError):
                (self.root / (MANIFEST_NAME + PENDING_SUFFIX)).unlink()
            return
        try:
            content = json.loads(journal.read_text("utf-8"))
            names = [f for f in content["files"] if isinstance(f, str) and _JOURNAL_FILE_RE.match(f)]
            removals = [f for f in content.get("remove", []) if isinstance(f, str) and _JOURNAL_REMOVE_RE.match(f)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            names, removals = [], []  # unreadable (written atomically, so edited by hand): never committed
        for name in names:
            try:
                final = resolve_inside(self.root, name)
            except UnsafePathError:
                continue
            pending = final.with_name(final.name + PENDING_SUFFIX)
            if pending.is_file():
                os.replace(pending, final)
                _fsync_dir(final.parent)
        for target in removals:
            _remove_inside(self.root, target)
        journal.unlink()
        _fsync_dir(self.root)

    def iter_objects(self) -> Iterable[tuple[ImageEntry, ImageAnnotations]]:
        """(entry, annotations) of every image with at least one object."""
        for e in self.images:
            if self.object_count(e.key):
                yield e, self.annotations(e.key)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProjectError(f"{path}: cannot be read ({str(exc)[:200]}).") from None
    except RecursionError:
        raise ProjectError(f"{path}: cannot be read (nested too deeply).") from None


def _remove_inside(root: Path, relative: str) -> None:
    """Delete a file or a folder (with its content) named relative to ``root``; never anything outside it, and
    never through a symbolic link."""
    import shutil

    try:
        target = resolve_inside(root, relative)
    except UnsafePathError:
        return
    path = root / relative
    if path.is_symlink() or path.resolve() != target:
        return
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _fsync_dir(path.parent)


def _bbox(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1) of the mask, end exclusive (COCO-style extents); zeros for an empty mask."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = bounds
    return [x0, y0, x1 + 1, y1 + 1]
