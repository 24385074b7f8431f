"""Bounds of an old (pre-1.6, non-zip) ``torch.save`` file, read before torch allocates anything.

Such a file is four pickles (magic number, protocol, system info, the object) followed by the raw storages. Its
object pickle names every storage with a persistent id ``("storage", <type>, <key>, <device>, <numel>, ...)``,
and ``torch.load`` allocates ``numel`` elements for it *before* reading the bytes: a few hundred bytes can declare
terabytes. The zip format is checked by its member sizes and memory-mapped (:mod:`infosam_core.models.checkpoints`);
this format cannot be memory-mapped, so its pickle is walked here with :mod:`pickletools` (nothing is executed or
built) and the declared storages must fit in the file.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: bytes per element of the typed storages a legacy file names (``torch.<Name>Storage``)
STORAGE_ELEMENT_BYTES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "UntypedStorage": 1,
}

#: how far the declared storages may exceed the file (the file also holds the pickles and an 8-byte count each)
LEGACY_SLACK_BYTES = 1 << 16

#: a legacy file has at most this many pickle operations before it is refused (a state dict of ViT-H has ~30,000)
MAX_PICKLE_OPS = 2_000_000

_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"}
_STR_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPS = {"BINPUT", "LONG_BINPUT", "PUT"}
_GET_OPS = {"BINGET", "LONG_BINGET", "GET"}


@dataclass(frozen=True)
class LegacyStorage:
    """One storage a legacy file declares: its key, typed-storage name and element count."""

    key: str
    storage_type: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * STORAGE_ELEMENT_BYTES[self.storage_type]


#: the number a legacy ``torch.save`` file's first pickle holds (torch.serialization.MAGIC_NUMBER)
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


class LegacyFileError(ValueError):
    """A legacy ``torch.save`` file whose declared storages cannot be trusted; the message says why."""


class NotALegacyFileError(ValueError):
    """The stream does not start with a legacy ``torch.save`` magic number (e.g. a truncated zip checkpoint)."""


def legacy_storages(data: IO[bytes]) -> list[LegacyStorage]:
    """The storages declared by the object pickle of a legacy ``torch.save`` stream (positioned at its start),
    one per key. Raises :class:`LegacyFileError` for a stream that is not that format or names a storage in a way
    this reader does not follow (e.g. an unknown storage type, a count that is not a number), and
    :class:`NotALegacyFileError` when the stream is not that format at all."""
    if not _starts_with_magic(data):
        raise NotALegacyFileError("no torch.save magic number")
    try:
        for _ in range(2):  # protocol version, system info: small pickles of plain values
            _skip_pickle(data)
        return _declared_storages(data)
    except LegacyFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickletools' complaint on a damaged or foreign stream
        raise LegacyFileError(f"not a readable torch.save file ({type(exc).__name__}: {str(exc)[:120]})") from None


def check_legacy_file(path: Path) -> list[LegacyStorage]:
    """Refuse a legacy ``torch.save`` file whose declared storages exceed its own size (a bomb) or that this
    reader cannot follow; return the declared storages. Raises :class:`LegacyFileError` (no file name: callers
    add it) or :class:`NotALegacyFileError`."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        storages = legacy_storages(f)
    declared = sum(s.nbytes for s in storages)
    if declared > size + LEGACY_SLACK_BYTES:
        raise LegacyFileError(
            f"its tensors declare {declared / 2**20:.0f} MiB but the file holds {size / 2**20:.1f} MiB (a crafted "
            "file that would allocate memory it does not contain)"
        )
    return storages


def _starts_with_magic(data: IO[bytes]) -> bool:
    """Whether the first pickle is the legacy magic number (torch refuses anything else before it allocates)."""
    try:
        values = [arg for count, (op, arg, _) in zip(range(16), pickletools.genops(data)) if op.name in _INT_OPS]
    except Exception:  # noqa: BLE001 - not a pickle at all
        return False
    return values == [LEGACY_MAGIC_NUMBER]


def _skip_pickle(data: IO[bytes]) -> None:
    for count, _ in enumerate(pickletools.genops(data)):
        if count > 10_000:
            raise LegacyFileError("its header pickles are not those of a torch.save file")


def _declared_storages(data: IO[bytes]) -> list[LegacyStorage]:
    """Walk the object pickle, keeping just enough of its stack to read each persistent-id tuple (built of
    strings, a ``GLOBAL`` and ints between a ``MARK`` and a ``TUPLE``, some of them fetched from the memo)."""
    frames: list[list[object]] = [[]]
    memo: dict[int, object] = {}
    found: dict[str, LegacyStorage] = {}
    opaque = object()
    for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
        if count > MAX_PICKLE_OPS:
            raise LegacyFileError(f"its pickle has more than {MAX_PICKLE_OPS} operations")
        name = op.name
        top = frames[-1]
        if name == "MARK":
            frames.append([])
        elif name in _STR_OPS:
            top.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
        elif name in _INT_OPS:
            top.append(arg if isinstance(arg, int) and not isinstance(arg, bool) else opaque)
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            top.append(str(arg).replace(" ", ".") if name == "GLOBAL" else opaque)
        elif name == "NONE":
            top.append(None)
        elif name in _PUT_OPS:
            memo[_index(arg)] = top[-1] if top else opaque
        elif name == "MEMOIZE":
            memo[len(memo)] = top[-1] if top else opaque
        elif name in _GET_OPS:
            top.append(memo.get(_index(arg), opaque))
        elif name == "TUPLE":
            items = tuple(frames.pop()) if len(frames) > 1 else ()
            frames[-1].append(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(top[-n:]) if len(top) >= n else ()
            del top[-n:]
            top.append(items)
        elif name == "BINPERSID":
            pid = top.pop() if top else opaque
            storage = _storage_of(pid)
            if storage is not None:
                found.setdefault(storage.key, storage)
            top.append(opaque)
        elif name == "POP_MARK":
            if len(frames) > 1:
                frames.pop()
        elif name == "STOP":
            break
        elif name in ("SETITEMS", "APPENDS", "ADDITEMS", "DICT", "LIST", "FROZENSET", "OBJ", "INST"):
            if len(frames) > 1:
                frames.pop()
            frames[-1].append(opaque)
        else:
            top.append(opaque)  # anything else pushes or rewrites a value we do not need to follow
    return list(found.values())


def _index(arg: object) -> int:
    """A memo index from a PUT / GET operation's argument (-1 when it is not a number)."""
    return arg if isinstance(arg, int) else -1


def _storage_of(pid: object) -> LegacyStorage | None:
    """The storage a persistent id names, None for an id that is not a storage; refuse one we cannot read."""
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
        return None
    if len(pid) < 5 or not isinstance(pid[1], str) or not isinstance(pid[2], str):
        raise LegacyFileError("it names a storage in a form this reader does not follow")
    storage_type = pid[1].rsplit(".", 1)[-1]
    numel = pid[4]
    if storage_type not in STORAGE_ELEMENT_BYTES:
        raise LegacyFileError(f"it names an unknown storage type {pid[1]!r}")
    if not isinstance(numel, int) or numel < 0:
        raise LegacyFileError("a storage's element count is not a non-negative number")
    return LegacyStorage(key=pid[2], storage_type=storage_type, numel=numel)
