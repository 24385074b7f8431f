"""Import segment-anything's model classes without its package ``__init__``'s predictor and mask generator.

``import segment_anything.modeling`` first runs ``segment_anything/__init__.py``, which imports
``SamPredictor`` and ``SamAutomaticMaskGenerator``, which import torchvision, whose ``ops`` import
``torch._dynamo``: 2.3 s on a 2-core VM, a third of an ``infosam predict`` call, spent on modules the library does
not use (it has its own predictor, resize and mask generator; ``benchmarks/bench_cli_start.py``).

:func:`defer_package_init` (called when ``infosam_core`` is imported) registers the ``segment_anything``
package without running its ``__init__``: its submodules (``segment_anything.modeling``, ``.utils.amg``, ...)
import as usual, and the first access to a name of the package itself (``segment_anything.SamPredictor``,
``from segment_anything import sam_model_registry``) runs the real ``__init__`` then, so code that uses those
names gets exactly what segment-anything defines. Nothing is done when segment-anything was imported already
or is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGE = "segment_anything"
_lock = threading.RLock()


def defer_package_init() -> None:
    """Register ``segment_anything`` with its ``__init__`` deferred to the first use of one of its names."""
    with _lock:
        if PACKAGE in sys.modules:
            return
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return  # not installed (or not a package): the usual import error comes where it is used
        package = importlib.util.module_from_spec(spec)
        package.__getattr__ = _run_init_then_get(package)  # type: ignore[method-assign]
        sys.modules[PACKAGE] = package


def _run_init_then_get(package: ModuleType) -> Any:
    state = ["deferred"]  # -> "running" (the real __init__ runs, under the lock) -> "done"

    def __getattr__(name: str) -> Any:  # the module-level __getattr__ of PEP 562
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        with _lock:  # another thread waits here until the __init__ has run
            if state[0] == "deferred":
                state[0] = "running"
                try:
                    spec = package.__spec__
                    assert spec is not None and spec.loader is not None
                    spec.loader.exec_module(package)  # the real __init__, in the registered module
                finally:
                    state[0] = "done"
                    package.__dict__.pop("__getattr__", None)
        if name in package.__dict__:  # (while "running": a name the __init__ has not defined yet)
            return package.__dict__[name]
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")

    return __getattr__
