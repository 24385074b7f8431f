"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it.

A reader (or a crash) never sees a half-written file: either the old content or the new one.
Temporary files are named ``.<target name>.<pid>.<random>.tmp<suffix>``; one left behind by a process that
died (kill -9, power loss) is removed by :func:`remove_stale_temp_files`, which the project and adapter
saves call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success, fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp[^/]*$")
_LEGACY_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp[^/]*$")  # before the pid was in the name


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(folder: str | Path, min_age_s: float = 60.0, legacy_age_s: float = 3600.0) -> int:
    """Delete temp files of :func:`atomic_path` in ``folder`` whose writer died; returns how many.

    A temp file is stale when its writer's pid no longer runs and it is older than ``min_age_s`` (so a
    file on a share written by a live process of another machine is spared while it is being written), or,
    for names without a pid, when it is older than ``legacy_age_s``. The current process's own are kept.
    """
    folder = Path(folder)
    removed = 0
    try:
        names = list(folder.iterdir())
    except OSError:
        return 0
    now = time.time()
    for p in names:
        m = _TEMP_RE.match(p.name)
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if m:
            pid = int(m.group("pid"))
            stale = pid != os.getpid() and age >= min_age_s and not pid_alive(pid)
        else:
            stale = bool(_LEGACY_TEMP_RE.match(p.name)) and age >= legacy_age_s
        if stale and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed
