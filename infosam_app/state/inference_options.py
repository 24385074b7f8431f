"""How the app's predictors run: the encoder precision (a user preference) and the project's embedding store.

* **Precision** (``auto``, ``float32``, ``bfloat16``, ``int8``; default ``auto``: see
  :mod:`infosam_core.inference.precision`): remembered per user in ``app.json`` beside the projects folder (the
  file that also remembers the getting-started hint), applied to the base and the adapted predictor. The
  model panel shows what it means here, e.g. ``float32 (auto: no AMX)``.
* **Embedding store** (micro-sam's "precomputed embeddings", made by ``infosam embed IMAGES --out STORE``): a
  project setting (``project.json`` ``settings.embedding_store``, saved atomically with the manifest); a path
  inside the project is kept relative to it. A stored image is answered with no encoder pass. A store that is
  missing or is not one gives one message and the app goes on without it.

No Qt here: :class:`infosam_app.session.Session` calls these and the panels show the results.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from infosam_core.annotation.project import Project, default_projects_dir
from infosam_core.io.atomic import write_json_atomic

PRECISION_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16", "int8")
PRECISION_KEY = "precision"  # in the user's app.json
STORE_SETTING = "embedding_store"  # in the project's settings
APP_PREFERENCES_NAME = "app.json"


def app_preferences_path() -> Path:
    """The user's app preferences file (``app.json`` beside the projects folder)."""
    return default_projects_dir().parent / APP_PREFERENCES_NAME


def _read_preferences() -> dict[str, Any]:
    try:
        state = json.loads(app_preferences_path().read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def load_precision_preference() -> str:
    """The precision the user chose last (``auto`` when none, or when the file holds something else)."""
    value = _read_preferences().get(PRECISION_KEY)
    return value if value in PRECISION_CHOICES else "auto"


def save_precision_preference(precision: str) -> None:
    """Remember ``precision`` for the next start (the file is replaced atomically; a read-only home: not kept)."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}; got {precision!r}")
    state = _read_preferences()
    state[PRECISION_KEY] = precision
    with contextlib.suppress(OSError):
        write_json_atomic(app_preferences_path(), state)


def precision_text(predictor: Any) -> str:
    """What ``predictor``'s encoder passes run in, for people: ``"float32 (auto: no AMX)"``."""
    from infosam_core.inference.precision import describe_precision

    return describe_precision(predictor.precision, predictor.device)


def check_precision_for(predictors: dict[str, Any], precision: str) -> None:
    """ValueError (naming the choices, or why not on this device) unless every predictor can run ``precision``."""
    from infosam_core.inference.precision import resolve_precision

    for predictor in predictors.values():
        resolve_precision(precision, predictor.device)


# ---------------------------------------------------------------------------------------- embedding store
def store_setting(project: Project) -> Path | None:
    """The project's embedding store folder (a relative setting is taken from the project root); None: none."""
    value = project.settings.get(STORE_SETTING)
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else project.root / path


def open_store(path: Path) -> Any:
    """The :class:`~infosam_core.inference.embedding_store.EmbeddingStore` at ``path``, for reading.
    Raises EmbeddingStoreError (a ValueError) naming the folder and the fix."""
    from infosam_core.inference.embedding_store import EmbeddingStore

    return EmbeddingStore(path)


def open_project_store(project: Project) -> tuple[Any, str | None]:
    """(the project's store or None, the message to show when the setting names no usable store)."""
    path = store_setting(project)
    if path is None:
        return None, None
    try:
        return open_store(path), None
    except ValueError as exc:
        return None, (
            f"Project {project.name}: its embedding store cannot be used: {exc}. The images are embedded as "
            "usual; choose another store or clear it in the Model panel."
        )


def remember_store(project: Project, path: Path | None) -> None:
    """Save ``path`` (None: no store) as the project's embedding store setting; a path inside the project is
    kept relative to it, so the project can move. ProjectError / OSError when it cannot be saved."""
    if path is None:
        project.set_setting(STORE_SETTING, None)
        return
    path = Path(path).expanduser().resolve()
    try:
        value = path.relative_to(project.root.resolve()).as_posix()
    except ValueError:
        value = str(path)
    project.set_setting(STORE_SETTING, value)
