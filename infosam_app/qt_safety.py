"""Qt binding releases known to crash the app, refused (the command) or warned about (the napari plugin).

PySide6 6.12.0 (PySide6-Essentials / shiboken6 6.12.0): a Qt call that returns ``None`` to Python decrements
``None``'s reference count once too often. napari's main-window event filter
(``napari/_qt/qt_main_window.py``, ``eventFilter``) calls ``QApplication.activePopupWidget()`` on every event;
with no popup open that returns None, so each event costs one reference of ``None`` until the count reaches 0
and CPython aborts with ``Fatal Python error: none_dealloc``. How soon depends on how many events arrived
(menus, notifications, right-clicks in the image list), so the crash came after a long session and did not
come back on a second try. It is not the app's code: the fix is another PySide6 release (``pyproject.toml``
excludes 6.12.0; 6.11.3 is tested).

:func:`binding_problem` is pure (tested without Qt); :func:`current_binding_problem` asks qtpy which binding
is in use. ``INFOSAM_ALLOW_QT_BINDING=1`` lets a user start anyway.
"""

from __future__ import annotations

import os

ALLOW_ENV = "INFOSAM_ALLOW_QT_BINDING"


# (binding, version) -> what goes wrong with it
KNOWN_BAD: dict[tuple[str, str], str] = {
    ("PySide6", "6.12.0"): (
        "Qt calls that return None decrement None's reference count; napari's window event filter calls one on "
        "every event, and Python aborts after a while (Fatal Python error: none_dealloc)"
    ),
}


FIX = 'pip install "PySide6-Essentials!=6.12.0" (6.11.3 is tested), or install PyQt5 instead'


def binding_problem(binding: str, version: str) -> str | None:
    """A message naming the problem and the fix when ``binding`` ``version`` is known to crash; else None."""
    why = KNOWN_BAD.get((binding, version))
    if why is None:
        return None
    return (
        f"{binding} {version} is installed, and it crashes napari: {why}. Fix: {FIX}. "
        f"(To start anyway, set {ALLOW_ENV}=1.)"
    )


def current_binding() -> tuple[str, str]:
    """(binding name, version) of the Qt binding qtpy uses, e.g. ("PySide6", "6.11.3")."""
    import qtpy

    name = str(qtpy.API_NAME)
    version = str(getattr(qtpy, "PYSIDE_VERSION", None) or getattr(qtpy, "PYQT_VERSION", None) or "")
    return name, version


def current_binding_problem() -> str | None:
    """:func:`binding_problem` of the binding in use; None also when the user allowed it (:data:`ALLOW_ENV`)."""
    if os.environ.get(ALLOW_ENV, "").strip() not in ("", "0"):
        return None
    try:
        binding, version = current_binding()
    except Exception:  # noqa: BLE001 - no binding at all: napari's own import error says it better
        return None
    return binding_problem(binding, version)
