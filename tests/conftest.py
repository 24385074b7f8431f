"""Shared fixtures (the builders several test files share that are not fixtures: tests/helpers.py).

Import triton before any GL context exists (see shared/reference/setup-notes.md: importing it after Mesa's
llvmpipe is loaded by a napari window segfaults)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from infosam_app.gl_safety import import_triton_first

import_triton_first()  # before any GL window exists (see infosam_app.gl_safety)

# INFOSAM_SHARED_DIR: where ../shared is for a checkout elsewhere (e.g. a git worktree)
SHARED_DIR = Path(os.environ.get("INFOSAM_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
DSB_DIR = SHARED_DIR / "data" / "dsb2018_nuclei"

# One intra-op thread for the whole suite. On a 2-core machine shared with other work, OpenMP's 2-thread
# barriers make small ops wait for a descheduled thread: a tiny training step measured 1.3 s with 1 thread
# vs 8.4 s with 2, a prompt 45 ms vs ~1 s. On an idle machine 1 thread costs little for these small models.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def random_tiny_sam():
    """A randomly initialised tiny SAM, fixed seed (fast; for parity and plumbing tests)."""
    from infosam_core.models.sam import build_sam

    torch.manual_seed(0)
    return build_sam("tiny")


@pytest.fixture(scope="session")
def tiny_sam():
    """The bundled, pretrained tiny SAM."""
    from infosam_core.models.registry import load_sam

    return load_sam("tiny")


@pytest.fixture(scope="session")
def dsb_dir() -> Path:
    if not (DSB_DIR / "images").is_dir():
        pytest.skip(f"{DSB_DIR} not present (../shared is only on development machines)")
    return DSB_DIR


@pytest.fixture
def studio(make_napari_viewer, tmp_path, monkeypatch, tiny_sam):
    """A viewer with the studio docked, the tiny model in use and three synthetic images in a project."""
    from infosam_app.testing import open_test_studio

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # never the user's real data folder
    widget = open_test_studio(make_napari_viewer(), tiny_sam, tmp_path)
    yield widget
    widget.cleanup()


@pytest.fixture(scope="module")
def ellipse_dataset(tmp_path_factory) -> Path:
    """8 small images with one bright ellipse each, as an ``infosam train --data`` folder (images/, masks/)."""
    from helpers import write_ellipse_dataset

    ellipses = [(24 + i % 3, 30 + i, 8 + i, 12) for i in range(8)]
    return write_ellipse_dataset(tmp_path_factory.mktemp("ddp_ds"), ellipses, shape=(48, 64))
