"""Background work on plain ``QThread``s, reporting back to the GUI thread through Qt signals.

Why not napari's ``thread_worker``: it was reported to slow napari down. Measured here
(``benchmarks/bench_app_responsiveness.py``: 2-core CPU, tiny model, 10 ms heartbeat) both runners keep
the GUI's longest stall in the same range (about 5-60 ms) for the same embeddings and training steps,
at the same speed: the slowdown was not reproduced. We still use ``QThread``s because
``thread_worker`` runs on the global ``QThreadPool``, whose size is the number of cores: on a 2-core
machine a training run plus a prefetch would queue the shown image's embedding behind them; and because
a task we own can be cancelled and waited for when the widget closes.

A :class:`Task` owns one ``QThread``: ``fn(*args, report=..., should_stop=...)`` runs there; its
``progress``, ``finished``, ``errored`` and ``done`` signals are delivered on the GUI thread (the ``Task``
object lives there).

Usage::

    task = runner.run(fn, image, on_result=show, on_error=complain, on_progress=update)
    task.cancel()  # asks fn to stop: fn polls should_stop()

A task keeps itself alive while its thread runs (a running ``QThread`` must never be collected), and its
``TaskRunner`` (one per session, no global registry) lists the running ones for cancel / shutdown. Code that
must know what runs asks by kind, never by name: ``runner.is_running(TaskKind.TRAINING)``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from qtpy.QtCore import QObject, QThread, Signal


def torch_threads(role: str) -> int:
    """Intra-op threads for torch work on the GUI thread (``"gui"``: prompt decoding, milliseconds) or in a
    background task (``"background"``: embeddings, training).

    Measured on a 2-core machine: the tiny decoder takes ~40 ms with 1 thread but ~400 ms with 2 while
    another thread computes (OpenMP threads spin-wait for a busy core). So the GUI thread uses 1 thread
    (2 above 4 cores) and background tasks leave it a core.
    """
    cores = os.cpu_count() or 1
    return (1 if cores <= 4 else 2) if role == "gui" else max(1, cores - 1)


@contextlib.contextmanager
def gui_torch_threads() -> Iterator[None]:
    """Run a short torch call on the GUI thread with few threads; the thread's setting is restored after."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    want = min(before, torch_threads("gui"))
    if want != before:
        torch.set_num_threads(want)  # per calling thread (OpenMP ICV): other threads keep theirs
    try:
        yield
    finally:
        if want != before:
            torch.set_num_threads(before)


class TaskKind(Enum):
    """What a task is, where other code must know it (a task's ``name`` is for people only)."""

    OTHER = "other"
    TRAINING = "training"  # an adaptation run: it uses the session's base model


class Task(QObject):
    """One background call. Signals arrive on the thread that created the task (the GUI thread)."""

    progress = Signal(object)
    finished = Signal(object)  # the function's return value
    errored = Signal(object)  # the exception (with ``.traceback_text``)
    done = Signal()  # always last, after finished or errored

    def __init__(
        self, fn: Callable[..., Any], *args: Any, name: str = "", kind: TaskKind = TaskKind.OTHER, **kwargs: Any
    ):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = name or getattr(fn, "__name__", "task")
        self.kind = kind
        self._stop = threading.Event()
        self._thread = _Thread(self)
        self.result: Any = None
        self.error: BaseException | None = None
        self.is_done = False
        self.done.connect(self._mark_done)

    def start(self) -> Task:
        self._keepalive = self  # a running thread must outlive its owners (dropped when done)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the thread ends (tests and shutdown only)."""
        return self._thread.wait(ms)

    def _mark_done(self) -> None:
        self.is_done = True
        self._thread.wait(5000)  # run() has returned: let the thread finish before it can be collected
        self._keepalive = None

    def _run(self) -> None:  # worker thread
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(torch_threads("background"))
        kwargs = dict(self.kwargs)
        params = _parameters(self.fn)
        if "report" in params:
            kwargs["report"] = self.progress.emit
        if "should_stop" in params:
            kwargs["should_stop"] = self.should_stop
        try:
            self.result = self.fn(*self.args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the GUI, none kills it
            exc.traceback_text = traceback.format_exc()
            self.error = exc
            self.errored.emit(exc)
        else:
            self.finished.emit(self.result)
        finally:
            self.done.emit()


class _Thread(QThread):
    def __init__(self, task: Task):
        super().__init__()
        self._task = task

    def run(self) -> None:
        self._task._run()


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


class TaskRunner(QObject):
    """Starts tasks and keeps a reference to each until it is done. One per session (no global state)."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._tasks: set[Task] = set()
        self.closed = False

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
        name: str = "",
        kind: TaskKind = TaskKind.OTHER,
        **kwargs: Any,
    ) -> Task:
        task = Task(fn, *args, name=name, kind=kind, **kwargs)
        for signal, callback in ((task.finished, on_result), (task.errored, on_error), (task.progress, on_progress)):
            if callback is not None:
                signal.connect(self._unless_closed(callback))
        self._tasks.add(task)
        task.done.connect(lambda t=task: self._forget(t))
        return task.start()

    def _unless_closed(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """Results that arrive after shutdown (queued before it) are dropped: their receivers are gone."""

        def call(value: Any) -> None:
            if not self.closed:
                callback(value)

        return call

    def _forget(self, task: Task) -> None:
        self._tasks.discard(task)

    @property
    def running(self) -> list[Task]:
        return [t for t in self._tasks if not t.is_done]

    def is_running(self, kind: TaskKind) -> bool:
        """Whether a task of ``kind`` is running."""
        return any(t.kind is kind for t in self.running)

    def cancel_all(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    def shutdown(self, ms: int = 10_000) -> None:
        """Cancel every task and wait for the threads (closing the widget / the viewer)."""
        self.closed = True
        self.cancel_all()
        for t in list(self._tasks):
            t.wait(ms)
        self._tasks.clear()
