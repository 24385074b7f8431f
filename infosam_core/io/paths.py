"""Paths taken from files (project manifests, CSV datasets, adapter descriptions) are untrusted.

:func:`resolve_inside` is the one gate every such path goes through: it resolves ``relative`` against
``root`` (following ``..`` and symbolic links) and refuses anything that lands outside ``root`` -- absolute
paths, ``../..`` traversals, links pointing elsewhere, NUL bytes. :func:`safe_name` checks a single file or
folder name (no separators, not ``.`` / ``..``).
"""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A path from a file that would reach outside the folder it belongs to (callers re-raise their own error)."""


def resolve_inside(root: str | Path, relative: str | Path, follow_links: bool = True) -> Path:
    """``root / relative`` resolved, guaranteed to lie inside ``root`` (or be ``root``); else UnsafePathError.

    ``follow_links=False`` checks the path as written (``..`` and absolute paths refused) but lets symbolic
    links the user made inside ``root`` point elsewhere (e.g. a dataset's ``images`` linked to another disk).
    """
    text = os.fspath(relative)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise UnsafePathError(f"{relative!r} is not a usable relative path")
    if Path(text).is_absolute() or Path(text).drive or text.startswith(("/", "\\")):
        raise UnsafePathError(f"{text!r} is an absolute path; only paths inside {root} are accepted")
    base = Path(root).resolve() if follow_links else Path(os.path.abspath(root))
    target = (base / text).resolve() if follow_links else Path(os.path.normpath(base / text))
    if target != base and base not in target.parents:
        raise UnsafePathError(f"{text!r} leads outside {base}")
    return target


def safe_name(name: object) -> str:
    """``name`` if it is one plain file/folder name (no separator, not '.'/'..', no NUL); else UnsafePathError."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise UnsafePathError(f"{name!r} is not a plain file name")
    if len(name) > 255:
        raise UnsafePathError(f"{name[:40]!r}...: file name longer than 255 characters")
    return name


def regular_file_problem(path: str | Path) -> str | None:
    """What keeps ``path`` from being read as a file: ``"not found"``, ``"a folder"``, or ``"a FIFO"`` /
    ``"a device"`` / ``"a socket"`` (reading one hangs or never ends: refuse it before opening); None for a
    regular file (symbolic links followed)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "not found"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def paths_by_stem(paths: list[Path] | tuple[Path, ...]) -> tuple[dict[str, Path], tuple[Path, Path] | None]:
    """``{stem: path}`` of ``paths`` (the first of each stem) and the first two paths that share a stem, or None
    (label files are named after their image's stem, so two such images would collide)."""
    by_stem: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            return by_stem, (path, by_stem[path.stem])
        by_stem[path.stem] = path
    return by_stem, None
