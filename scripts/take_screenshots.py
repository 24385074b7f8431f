"""Screenshots of InfoSAM Studio for the docs: annotating, adapting (progress + losses), Base vs Adapted.

Runs the real app on the bundled samples, drives it like a user would (prompts, accept, "Adapt to my
data", the Base / Adapted toggle) and saves ``annotating.png``, ``adapting.png`` and ``compare.png``.
Needs a display: uses $DISPLAY, else starts a virtual one (pyvirtualdisplay + Xvfb). The project goes to a
temporary folder (nothing is written to the user's data folder).

    python scripts/take_screenshots.py [--out docs/screenshots] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from infosam_app.gl_safety import import_triton_first

import_triton_first()  # before any GL window exists (see infosam_app.gl_safety)

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1500, 940)


def object_prompts(rgb: np.ndarray, n: int) -> list[tuple[float, float, float, float]]:
    """Boxes around the n largest bright blobs (Otsu threshold): where a user would draw boxes."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    gray = rgb.mean(axis=2)
    regions = sorted(regionprops(label(gray > threshold_otsu(gray))), key=lambda r: -r.area)
    boxes = []
    for r in regions:
        y0, x0, y1, x1 = r.bbox
        if 150 < r.area < gray.size / 8 and y0 > 2 and x0 > 2 and y1 < gray.shape[0] - 2 and x1 < gray.shape[1] - 2:
            boxes.append((x0 - 2.0, y0 - 2.0, x1 + 1.0, y1 + 1.0))
        if len(boxes) == n:
            break
    return boxes


def grab_canvas(viewer) -> np.ndarray:
    """The canvas, cropped to the image (the black margins around it removed)."""
    img = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    content = img[..., :3].max(axis=2) > 8
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size and cols.size:
        img = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return img


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str], path: Path) -> None:
    """Two canvas grabs next to each other with a title over each (QPainter, no extra dependency)."""
    from qtpy.QtCore import QRect, Qt
    from qtpy.QtGui import QColor, QFont, QImage, QPainter

    h = max(left.shape[0], right.shape[0])
    bar, gap = 44, 12
    out = QImage(left.shape[1] + right.shape[1] + gap, h + bar, QImage.Format.Format_RGB888)
    out.fill(QColor("#262930"))
    p = QPainter(out)
    font = QFont()
    font.setPointSize(16)
    font.setBold(True)
    p.setFont(font)
    x = 0
    for img, title in zip((left, right), titles):
        rgb = np.ascontiguousarray(img[..., :3])
        q = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888)
        p.drawImage(x, bar, q)
        p.setPen(QColor("#ffffff"))
        p.drawText(QRect(x, 0, rgb.shape[1], bar), Qt.AlignmentFlag.AlignCenter, title)
        x += rgb.shape[1] + gap
    p.end()
    out.save(str(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--steps", type=int, default=40, help="training steps for the adapting/compare shots")
    ap.add_argument("--model", default="tiny", help="SAM type (default: the bundled tiny model)")
    ap.add_argument("--checkpoint", help="weights for --model (default: the bundled ones)")
    ap.add_argument("--getting-started", action="store_true", help="also save getting_started.png (the first-run hint)")
    args = ap.parse_args()
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(WINDOW[0] + 100, WINDOW[1] + 100))
        display.start()
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="infosam-shots-")
    args.out.mkdir(parents=True, exist_ok=True)

    from infosam_app.cli import launch
    from infosam_app.testing import wait_until

    viewer, widget = launch(samples=True, show=True, model=args.model, checkpoint=args.checkpoint)
    qt_window = viewer.window._qt_window
    qt_window.resize(*WINDOW)
    s, c, panel = widget.session, widget.prompts, widget.adapt_panel
    assert wait_until(lambda: "base" in s.predictors and s.embedding_ready, 180), s.last_error
    names = [e.name for e in s.project.images]
    if args.getting_started:
        wait_until(lambda: False, 0.5)
        viewer.window.screenshot(str(args.out / "getting_started.png"), canvas_only=False, flash=False)
    widget.getting_started.dismiss()  # a first-run hint: the README shots show the app as used every day

    def show(name: str) -> None:
        i = names.index(name)
        s.show_image(i)
        assert wait_until(lambda: s.index == i and s.embedding_ready, 120)

    def accept_boxes(n: int) -> int:
        done = 0
        for box in object_prompts(s.rgb, n):
            c.clear()
            c.set_box(*box)
            if c.mask is not None and c.objects.acceptable(c.mask) and c.accept() is not None:
                done += 1
        c.clear()
        return done

    # --- training data: objects on two nuclei images
    show("nuclei_dense_gray.png")
    accept_boxes(6)
    show("nuclei_fluorescence_16bit.tif")
    accepted = accept_boxes(5)
    print(f"accepted {s.project.total_objects()} objects")

    # --- annotating.png: objects, a live preview from a positive + a negative point
    rest = object_prompts(s.rgb, accepted + 2)[accepted:]
    c.clear()
    if rest:
        x0, y0, x1, y1 = rest[0]
        c.add_point((x0 + x1) / 2, (y0 + y1) / 2)
        c.add_point(x1 + 12, (y0 + y1) / 2, positive=False)
    viewer.layers.selection.active = s.layers.points
    widget.tabs.setCurrentIndex(0)
    wait_until(lambda: False, 1.0)
    viewer.window.screenshot(str(args.out / "annotating.png"), canvas_only=False, flash=False)
    prompts_for_compare = c.current_prompts()

    # --- adapting.png: the run in progress (progress bar, ETA, live losses)
    widget.tabs.setCurrentIndex(1)
    panel.max_steps = args.steps
    steps: set[int] = set()
    panel.controller.progress.connect(lambda p: steps.add(p.step))
    assert panel.start(), s.last_error
    wait_until(lambda: len(steps) >= max(2, args.steps * 2 // 3) or not panel.controller.running, 1800)
    wait_until(lambda: False, 0.3)
    viewer.window.screenshot(str(args.out / "adapting.png"), canvas_only=False, flash=False)
    wait_until(lambda: not panel.controller.running, 1800)
    assert panel.controller.last_result is not None, s.last_error
    assert wait_until(lambda: s.active == "adapted" and s.embedding_ready, 120)

    # --- compare.png: the same prompts, predicted by the base and by the adapted model
    c.set_prompts(prompts_for_compare)
    s.layers.objects.visible = False  # the two predictions alone
    viewer.layers.selection.active = s.layers.points
    wait_until(lambda: False, 0.5)
    adapted = grab_canvas(viewer)
    s.set_active("base")
    assert wait_until(lambda: s.active == "base" and s.embedding_ready, 120)
    wait_until(lambda: False, 0.5)
    base = grab_canvas(viewer)
    info = s.infos
    side_by_side(
        base,
        adapted,
        (
            f"Base: {info['base'].label}",
            f"Adapted: {panel.controller.last_result.config.peft}"
            f" + InfoSAM, {panel.controller.last_result.steps} steps",
        ),
        args.out / "compare.png",
    )
    s.layers.objects.visible = True

    widget.cleanup()
    viewer.close()
    for name in ("annotating.png", "adapting.png", "compare.png"):
        print(args.out / name)
    if display is not None:
        # Qt keeps its X connection until the interpreter's teardown: with Xvfb stopped under it, that
        # teardown dies of an X I/O error (segfault, exit 139) after the files are written. Leave before it.
        sys.stdout.flush()
        display.stop()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
