"""Helpers for driving the studio from tests, benchmarks and the screenshot script (no pytest import)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_synthetic_images(folder: str | Path, n: int = 3) -> list[Path]:
    """``n`` (<= 3) small images with bright blobs: 8-bit gray PNG, RGB PNG and 16-bit TIFF."""
    import imageio.v3 as iio
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    specs = [((96, 128), "gray.png"), ((100, 120), "rgb.png"), ((80, 100), "deep16.tif")][:n]
    for _i, (shape, name) in enumerate(specs):
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        img = rng.normal(30, 5, shape)
        for cy, cx, r in ((shape[0] * 0.3, shape[1] * 0.3, 12), (shape[0] * 0.65, shape[1] * 0.7, 15)):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += 170
        img = np.clip(img, 0, 255)
        path = folder / name
        if name.endswith(".tif"):
            tifffile.imwrite(path, (img * 250).astype(np.uint16))
        elif name == "rgb.png":
            iio.imwrite(path, np.stack([img, img * 0.6, 255 - img], -1).astype(np.uint8))
        else:
            iio.imwrite(path, img.astype(np.uint8))
        paths.append(path)
    return paths


def open_test_studio(viewer, sam, folder: str | Path):
    """The studio docked in ``viewer``, predicting with ``sam`` (labelled "tiny (test)"), with a project in
    ``folder/proj`` holding the three synthetic images of ``folder/images``; returned once the first
    image's embedding is ready. The GC is not frozen (test processes must collect closed viewers)."""
    from infosam_app.widget import StudioWidget

    folder = Path(folder)
    widget = StudioWidget(viewer, load_model=False, freeze_gc=False)
    viewer.window.add_dock_widget(widget, name="InfoSAM Studio")
    s = widget.session
    s.use_model(sam, label="tiny (test)")
    if not wait_until(lambda: "base" in s.predictors, 30):
        raise TimeoutError(f"the model was not installed: {s.last_error}")
    s.open_project(folder / "proj")
    make_synthetic_images(folder / "images")
    s.add_images([folder / "images"])
    if not wait_until(lambda: s.embedding_ready, 30):
        raise TimeoutError(f"no embedding: {s.last_error}")
    return widget


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.01) -> bool:
    """Process Qt events until ``condition()`` holds (scripts; tests use ``qtbot.waitUntil``)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(interval)
    app.processEvents()
    return condition()


def prompt_until_mask(controller, attempts=None) -> np.ndarray | None:
    """Give prompts (points, then boxes, each with every candidate) until the preview mask could be accepted
    (see :meth:`infosam_app.objects.ObjectEditor.acceptable`); returns it (None if no attempt gave one)."""
    session = controller.session
    h, w = session.rgb.shape[:2]
    attempts = attempts or [
        ("point", (w * 0.3, h * 0.3)),
        ("point", (w * 0.7, h * 0.65)),
        ("box", (w * 0.1, h * 0.1, w * 0.5, h * 0.5)),
        ("box", (w * 0.5, h * 0.4, w * 0.95, h * 0.95)),
        ("box", (0, 0, w - 1, h - 1)),
    ]
    for kind, args in attempts:
        controller.clear()
        controller.add_point(*args) if kind == "point" else controller.set_box(*args)
        for _ in range(4):
            m = controller.mask
            if m is not None and controller.objects.acceptable(m, controller.refine_id):
                return m
            controller.next_candidate()
    return None
