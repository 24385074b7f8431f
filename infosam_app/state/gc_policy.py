"""The app's garbage-collector policy: freeze what is alive, hold collections while a run sets up.

A full collection scans every tracked object while holding the GIL; with napari, Qt wrappers, torch and a
model in memory that is ~0.4 s measured, and the GUI stalls whichever thread triggered it (e.g. during
training). So the studio manages the GC:

- :func:`freeze_all` once the first model is in memory (``StudioWidget``): everything alive is moved out of
  the collector's reach; from then on :func:`manages_gc` is True.
- :func:`freeze_new` before a training run starts (``TrainingController.start``): what was made since, too.
- :func:`hold_collections` around a training run's set-up (copying the model, preparing samples makes many
  objects: no full pass then); :meth:`GcHold.release_before` wraps the run's progress callback so that at
  the first step the objects the set-up made are frozen and collections resume (a full collection would
  otherwise scan them, ~0.1 s measured).

Where the app does not manage the GC (tests, scripts: nothing frozen) every call here does nothing. Holds
nest: collections resume when the outermost hold is released; a hold is released at most once.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_holds = 0  # holds not yet released; collections are disabled while > 0


def manages_gc() -> bool:
    """Whether the app froze the GC (:func:`freeze_all`) in this process."""
    return gc.get_freeze_count() > 0


def freeze_all() -> None:
    """Collect once, then move every object alive out of the collector's reach (the app manages the GC)."""
    gc.collect()
    gc.freeze()


def freeze_new() -> None:
    """Where the app manages the GC: freeze the objects made since the last freeze, too."""
    if manages_gc():
        gc.freeze()


def holds() -> int:
    """How many holds are active now (tests, diagnostics)."""
    return _holds


class GcHold:
    """One hold on collections (see :func:`hold_collections`); :meth:`release` ends it early."""

    def __init__(self) -> None:
        self.active = False

    def acquire(self) -> GcHold:
        """Disable collections, where the app manages the GC and they are enabled (or held already)."""
        global _holds
        with _lock:
            if manages_gc() and (gc.isenabled() or _holds > 0):
                _holds += 1
                self.active = True
                gc.disable()
        return self

    def release(self, freeze: bool = False) -> None:
        """End the hold (once; later calls do nothing): with ``freeze``, freeze what was made during it first.
        Collections resume when no other hold is active."""
        global _holds
        with _lock:
            if not self.active:
                return
            self.active = False
            if freeze:
                gc.freeze()
            _holds -= 1
            if _holds == 0:
                gc.enable()

    def release_before(self, callback: Callable[[T], object]) -> Callable[[T], None]:
        """``callback`` that, at its first call, first releases this hold freezing what the set-up made."""

        def call(value: T) -> None:
            self.release(freeze=True)
            callback(value)

        return call


@contextlib.contextmanager
def hold_collections() -> Iterator[GcHold]:
    """Hold collections for the block (where the app manages the GC); released at the end at the latest."""
    hold = GcHold().acquire()
    try:
        yield hold
    finally:
        hold.release()
