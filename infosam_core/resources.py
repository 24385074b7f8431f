"""Where the bundled files are: the tiny model and its card, the sample images.

They live in the repository's top-level ``resources/`` folder, which is installed as the package
``infosam_resources`` (see ``setup.py``), so they are found the same way from a source checkout (editable
install), from an installed wheel, and -- when nothing is installed -- next to this package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _resources_dir() -> Path:
    try:
        root = files("infosam_resources")
    except ModuleNotFoundError:  # not installed: a plain source checkout on sys.path
        return Path(__file__).resolve().parent.parent / "resources"
    return Path(str(root))


RESOURCES_DIR = _resources_dir()
MODELS_DIR = RESOURCES_DIR / "models"
SAMPLES_DIR = RESOURCES_DIR / "samples"
BUNDLED_TINY_CHECKPOINT = MODELS_DIR / "sam_tiny.safetensors"
