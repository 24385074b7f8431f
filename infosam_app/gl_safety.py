"""One work-around, in one place: importing ``triton`` once a GL window exists segfaults (Mesa llvmpipe with a
CUDA build of torch; the first optimizer step imports triton through ``torch._dynamo``). See
``shared/reference/setup-notes.md``.

Call :func:`import_triton_first` before any window is created (the ``infosam app`` command, tests,
screenshot and benchmark scripts). As a napari plugin the window may exist already; then
:func:`make_triton_unimportable` keeps torch from loading it later (torch runs without it; only
``torch.compile`` would need it). Neither function imports Qt or napari.
"""

from __future__ import annotations

import contextlib
import sys


def import_triton_first() -> None:
    """Import triton now, if it is installed and loads; absent or broken, there is nothing to protect."""
    with contextlib.suppress(Exception):
        import triton  # noqa: F401


def make_triton_unimportable() -> None:
    """After a GL context exists and triton was not loaded yet: make ``import triton`` raise ImportError."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None
