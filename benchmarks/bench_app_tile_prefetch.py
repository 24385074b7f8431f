"""Click -> mask on a large image: a tile prefetched while the user looked vs a cold tile (issue 26).

Runs the real app (napari viewer + studio widget, bundled tiny model) under a display (Xvfb via
pyvirtualdisplay when $DISPLAY is unset) on a synthetic 2048 x 2048 nuclei scene (121 tiles of the tiny model).
The view is zoomed onto one corner; the studio's :class:`~infosam_app.tile_prefetch.TilePrefetcher` embeds the
tiles near it in the background. Then clicks (a positive point on a true nucleus, the prompts cleared between
clicks) are timed from the click to the mask being set, on the GUI thread, side by side:

* prefetched: nuclei in tiles the prefetch embedded (the decoder only);
* cold: nuclei in tiles far from the view, never embedded (the tile's encoder pass, then the decoder).

Disk caches are off, so a cold tile is really cold.

    python benchmarks/bench_app_tile_prefetch.py [--clicks 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import add_json_argument, write_report

from infosam_app.gl_safety import import_triton_first
from infosam_app.testing import wait_until

import_triton_first()  # before any GL window exists (see infosam_app.gl_safety)

SIZE = 2048


def _display():
    if os.environ.get("DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    d = Display(visible=False, size=(1600, 1000))
    d.start()
    return d


def nucleus_in(tiles, truth: np.ndarray, used: set[int]) -> tuple[int, float, float] | None:
    """A true nucleus (label, row, col of its centre) well inside the inner region of one of ``tiles``."""
    from scipy import ndimage

    labels = [lab for lab in range(1, int(truth.max()) + 1) if lab not in used]
    centres = ndimage.center_of_mass(truth > 0, truth, labels)
    for tile in tiles:
        y0, x0, y1, x1 = tile.inner
        for lab, (cy, cx) in zip(labels, centres, strict=True):
            if y0 + 16 <= cy < y1 - 16 and x0 + 16 <= cx < x1 - 16:
                return lab, float(cy), float(cx)
    return None


def time_click(widget, cy: float, cx: float) -> float:
    controller = widget.prompts
    controller.clear()
    wait_until(lambda: controller.mask is None, 5)
    t0 = time.perf_counter()
    controller.add_point(cx, cy, positive=True)
    if not wait_until(lambda: controller.mask is not None, 60, interval=0.001):
        raise RuntimeError(f"no mask for a click at ({cx:.0f}, {cy:.0f}): {widget.session.last_error}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=6, help="clicks per kind (each on its own tile)")
    add_json_argument(ap)
    args = ap.parse_args()
    display = _display()
    import napari
    import tifffile

    from infosam_app.tile_prefetch import camera_of
    from infosam_app.widget import StudioWidget
    from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene
    from infosam_core.inference.tiling import tile_at
    from infosam_core.models.registry import load_sam

    tmp = Path(tempfile.mkdtemp(prefix="infosam-bench-prefetch-"))
    image, truth = nuclei_scene(NucleiSceneConfig(size=(SIZE, SIZE), n_objects=400), seed=2026)
    path = tmp / "scene_2048.tif"
    tifffile.imwrite(path, image)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    widget = StudioWidget(viewer, load_model=False)
    viewer.window.add_dock_widget(widget, name="InfoSAM Studio")
    s = widget.session
    s.use_model(load_sam("tiny"), label="tiny")
    wait_until(lambda: "base" in s.predictors, 60)
    s.open_project(tmp / "proj")
    s.predictor.cache_dir = None
    s.add_images([path])
    if not wait_until(lambda: s.rgb is not None and s.embedding_ready, 120):
        raise RuntimeError(f"the image was not shown: {s.last_error}")
    s.predictor.cache_dir = None
    tiled = s.tiled_predictor()
    prefetcher = widget.tile_prefetch

    # look at the top-left corner, zoomed in; wait for the prefetch of the tiles near it
    camera = camera_of(viewer)
    camera.zoom = 2.0
    camera.center = (0.0, 300.0, 300.0)
    t0 = time.perf_counter()
    wait_until(lambda: prefetcher.running, 10)
    wait_until(lambda: not prefetcher.running, 300)
    prefetch_s = time.perf_counter() - t0
    warm_tiles = [t for t in prefetcher.last_tiles if tiled.tile_in_memory(t)]
    view = prefetcher.current_view()
    print(f"view {tuple(round(v) for v in view)}: {len(warm_tiles)} tiles prefetched in {prefetch_s:.1f} s")

    all_tiles = tiled.tiles
    cold_tiles = [t for t in reversed(all_tiles) if not tiled.tile_in_memory(t) and min(t.inner[:2]) >= SIZE // 2]
    used: set[int] = set()
    warm, cold = [], []
    for kind, pool, out in (("prefetched", warm_tiles, warm), ("cold", cold_tiles, cold)):
        remaining = list(pool)
        while len(out) < args.clicks and remaining:
            found = nucleus_in(remaining, truth, used)
            if found is None:
                break
            label, cy, cx = found
            used.add(label)
            tile = tile_at(all_tiles, cy, cx)
            remaining = [t for t in remaining if t.index != tile.index]
            was_warm = tiled.tile_in_memory(tile)
            assert was_warm == (kind == "prefetched"), f"{kind} click on tile {tile.index}: in memory {was_warm}"
            out.append(time_click(widget, cy, cx))
    widget.prompts.clear()

    # the model's share, without the app: TiledPredictor.predict_region on the GUI thread's torch threads
    from infosam_app.workers import gui_torch_threads

    def region_seconds(tile) -> float:
        y0, x0, y1, x1 = tile.inner
        point = np.array([[(x0 + x1) / 2, (y0 + y1) / 2]])
        with gui_torch_threads():
            t0 = time.perf_counter()
            tiled.predict_region(point, np.array([1]))
            return time.perf_counter() - t0

    region_warm = [region_seconds(t) for t in warm_tiles[: args.clicks]]
    region_cold: list[float] = []
    for tile in cold_tiles:
        if len(region_cold) == args.clicks:
            break
        if not tiled.tile_in_memory(tile):  # tiles at the image's edge may share a window: skip embedded ones
            region_cold.append(region_seconds(tile))

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    figures = {
        "image": f"{SIZE}x{SIZE}",
        "model": "tiny",
        "tiles": len(all_tiles),
        "prefetched_tiles": len(warm_tiles),
        "prefetch_s": round(prefetch_s, 2),
        "click_prefetched_s": [round(v, 4) for v in warm],
        "click_cold_s": [round(v, 4) for v in cold],
        "median_prefetched_s": round(med(warm), 4),
        "median_cold_s": round(med(cold), 4),
        "cold_over_prefetched": round(med(cold) / med(warm), 2) if warm and cold else None,
        "predict_region_prefetched_s": round(med(region_warm), 4),
        "predict_region_cold_s": round(med(region_cold), 4),
        "predict_region_cold_over_prefetched": round(med(region_cold) / med(region_warm), 2),
    }
    print(f"{'click -> mask (median)':28s} {'prefetched tile':>16s} {'cold tile':>10s} {'cold / prefetched':>18s}")
    print(
        f"{'tiny, 2048^2, GUI thread':28s} {med(warm):15.3f}s {med(cold):9.3f}s "
        f"{figures['cold_over_prefetched']!s:>18s}"
    )
    print(
        f"{'TiledPredictor.predict_region':28s} {med(region_warm):15.3f}s {med(region_cold):9.3f}s "
        f"{figures['predict_region_cold_over_prefetched']!s:>18s}"
    )
    print(f"  prefetched clicks: {figures['click_prefetched_s']}; cold clicks: {figures['click_cold_s']}")
    write_report(args.json, "app_tile_prefetch", figures, device="cpu")
    widget.cleanup()
    viewer.close()
    if display is not None:
        display.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
