"""The bundled sample images (``resources/samples``) and where their project goes."""

from __future__ import annotations

from pathlib import Path

from infosam_core.annotation.project import IMAGE_SUFFIXES, default_projects_dir
from infosam_core.resources import SAMPLES_DIR


def sample_paths() -> list[Path]:
    return (
        sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if SAMPLES_DIR.is_dir() else []
    )


def samples_project_dir() -> Path:
    """The samples' project: in the user data folder, never the working directory."""
    return default_projects_dir() / "samples"


def sample_layers():
    """napari sample-data contribution: the sample images as image layers."""
    from infosam_core.io.images import read_image

    return [(read_image(p), {"name": p.stem}, "image") for p in sample_paths()]
