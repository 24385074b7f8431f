"""Is the studio responsive while it works? Event-loop stalls and click -> mask latency, measured.

Runs the real app (napari viewer + studio widget, tiny model) under a display (Xvfb: started here with
pyvirtualdisplay when $DISPLAY is unset) and reports:

1. Heartbeat: a QTimer ticks every 10 ms on the GUI thread; the longest gap between ticks minus 10 ms is
   the longest event-loop stall (target <= 100 ms). Measured while idle, during embeddings (the app's own
   flow: images shown one after another, each embedding computed in the background) and during training
   ('Adapt to my data' with the app's controller).
2. Click -> mask shown: a point is added to the prompt layer (what napari's add-mode click handler does),
   the controller predicts and sets the preview layer; the time until the canvas has drawn the new preview
   is recorded. Median / p95 over many clicks, idle and during training.
   ``drawn_over_preview_layer`` is issue 29's check (click -> drawn median over click -> preview layer median).
   ``redraw_idle``: a canvas redraw with nothing changed, timed the same way (what any change costs to be seen).
   ``preview_update``: the preview layer's update alone at 512-2048 px, full refresh vs changed region.
3. Background runner: the same workloads (a loop of embeddings; training steps) run on napari's
   ``thread_worker`` (superqt QThreadPool workers) and on our ``QThread`` tasks; heartbeat stalls and
   workload times are compared.

    python benchmarks/bench_app_responsiveness.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import add_json_argument, write_report

from infosam_app.gl_safety import import_triton_first
from infosam_app.testing import wait_until  # no Qt/torch import at module level

ROOT = Path(__file__).resolve().parents[1]

import_triton_first()  # before any GL window exists (see infosam_app.gl_safety)


def _display():
    if os.environ.get("DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    d = Display(visible=False, size=(1600, 1000))
    d.start()
    return d


class Pauses:
    """Durations of Python's garbage collections (they hold the GIL: a stall whichever thread runs them)
    and of the canvas draws (OpenGL; software-rendered under Xvfb) during a phase."""

    def __init__(self, canvas=None):
        import gc

        self.gc_ms: list[float] = []
        self.draw_ms: list[float] = []
        self._t = 0.0
        gc.callbacks.append(self._on_gc)
        if canvas is not None:
            orig = canvas.on_draw
            canvas.events.draw.disconnect(orig)

            def timed(event):
                t = time.perf_counter()
                orig(event)
                self.draw_ms.append((time.perf_counter() - t) * 1000)

            canvas.events.draw.connect(timed)

    def _on_gc(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        elif info.get("generation") == 2:
            self.gc_ms.append((time.perf_counter() - self._t) * 1000)

    def take(self) -> dict:
        out = {
            "full_gc_count": len(self.gc_ms),
            "full_gc_max_ms": round(max(self.gc_ms, default=0), 1),
            "draws": len(self.draw_ms),
            "draw_max_ms": round(max(self.draw_ms, default=0), 1),
        }
        self.gc_ms.clear()
        self.draw_ms.clear()
        return out


class Heartbeat:
    """Ticks every ``interval_ms``; records the gaps between ticks."""

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.gaps: list[float] = []

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def start(self):
        self.gaps.clear()
        self.last = None
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        g = np.asarray(self.gaps) if self.gaps else np.asarray([self.interval])
        stall = np.maximum(g - self.interval, 0) * 1000
        return {
            "ticks": int(g.size),
            "max_stall_ms": round(float(stall.max()), 1),
            "p99_stall_ms": round(float(np.percentile(stall, 99)), 1),
            "mean_gap_ms": round(float(g.mean() * 1000), 1),
        }


def pump(cond, timeout: float = 120.0) -> bool:
    """Process Qt events until ``cond()``; polls every 1 ms (latencies are measured with it)."""
    return wait_until(cond, timeout, interval=0.001)


def click_latencies(widget, n: int, mask_ms: list[float] | None = None) -> list[float]:
    """Add n points one after another (clearing between); ms until the canvas drew the new preview.
    ``mask_ms`` collects the part until the preview layer was set (prediction + layer update)."""
    s, c = widget.session, widget.prompts
    canvas = widget.viewer.window._qt_viewer.canvas._scene_canvas
    state = {"mask": False, "drawn": False}

    def on_mask():
        state["mask"] = True
        state["t_mask"] = time.perf_counter()

    def on_draw(_event=None):
        if state["mask"]:
            state["drawn"] = True

    c.mask_shown.connect(on_mask)
    canvas.events.draw.connect(on_draw)
    h, w = s.rgb.shape[:2]
    rng = np.random.default_rng(0)
    out = []
    try:
        for _ in range(n):
            c.clear()
            pump(lambda: True, 0.01)
            state.update(mask=False, drawn=False)
            r, col = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
            t0 = time.perf_counter()
            s.layers.points.add([r, col])  # what napari's add-mode mouse handler does on a click
            ok = pump(lambda: state["drawn"], 10)
            if ok:
                out.append((time.perf_counter() - t0) * 1000)
                if mask_ms is not None:
                    mask_ms.append((state["t_mask"] - t0) * 1000)
    finally:
        c.mask_shown.disconnect(on_mask)
        canvas.events.draw.disconnect(on_draw)
        c.clear()
    return out


def measure_preview_update(widget, sizes=(512, 1024, 2048), n: int = 8) -> list[dict]:
    """The preview layer's update alone, for each preview size: a disc mask (radius size/10) moved to a random
    place, as successive clicks give. ``update_ms``: GUI time of ``StudioLayers.set_preview``; ``drawn_ms``: from
    the update to the canvas drawn (as for clicks). The full refresh (the old way: whole array written, layer
    refreshed) and the changed-region update alternate, mask after mask, in one run."""
    s = widget.session
    layers = s.layers
    canvas = widget.viewer.window._qt_viewer.canvas._scene_canvas
    drawn = {"flag": False}

    def on_draw(_event=None):
        drawn["flag"] = True

    canvas.events.draw.connect(on_draw)
    rows = []
    rng = np.random.default_rng(2)
    try:
        for size in sizes:
            yy, xx = np.mgrid[:size, :size]
            times: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
            layers.set_preview(np.zeros((size, size), bool))
            pump(lambda: True, 0.05)
            for i in range(2 * n):
                partial = bool(i % 2)
                layers.partial_preview = partial
                cy, cx = rng.uniform(0.2, 0.8, 2) * size
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size / 10) ** 2
                pump(lambda: True, 0.01)
                drawn["flag"] = False
                t0 = time.perf_counter()
                layers.set_preview(mask)
                t1 = time.perf_counter()
                pump(lambda: drawn["flag"], 10)
                times[partial][0].append((t1 - t0) * 1000)
                times[partial][1].append((time.perf_counter() - t0) * 1000)
            row = {"size": size}
            for partial, name in ((False, "full_refresh"), (True, "changed_region")):
                row[f"{name}_update_ms"] = round(statistics.median(times[partial][0]), 1)
                row[f"{name}_drawn_ms"] = round(statistics.median(times[partial][1]), 1)
            rows.append(row)
    finally:
        layers.partial_preview = True
        canvas.events.draw.disconnect(on_draw)
        layers.set_preview(None, s.rgb.shape[:2])
    return rows


def measure_frame(widget, n: int = 15) -> dict:
    """A canvas redraw with nothing changed, timed as clicks are (until the event loop is done with it): what
    any click pays after its mask is in the preview layer (software OpenGL under Xvfb)."""
    canvas = widget.viewer.window._qt_viewer.canvas._scene_canvas
    drawn = {"flag": False}

    def on_draw(_event=None):
        drawn["flag"] = True

    canvas.events.draw.connect(on_draw)
    out = []
    try:
        for _ in range(n):
            pump(lambda: True, 0.01)
            drawn["flag"] = False
            t0 = time.perf_counter()
            canvas.update()
            if pump(lambda: drawn["flag"], 10):
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        canvas.events.draw.disconnect(on_draw)
    return lat_stats(out)


def lat_stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "max_ms": round(max(values), 1),
    }


def synthetic_samples(n=8, size=256):
    from infosam_core.data.datasets import SegmentationSample

    rng = np.random.default_rng(1)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = rng.normal(40, 8, (size, size))
        cy, cx, r = rng.uniform(60, size - 60, 2).tolist() + [rng.uniform(15, 40)]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[mask] += 150
        rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, -1)
        out.append(SegmentationSample(rgb, mask, f"s{i}"))
    return out


_EMBED_RUN = [0]


def embed_loop(predictor, n, size=768):
    """n embeddings of new random images (never in the cache)."""
    _EMBED_RUN[0] += 1
    rng = np.random.default_rng(1000 + _EMBED_RUN[0])
    for _ in range(n):
        predictor.embed(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return n


def train_steps(sam, samples, steps, signal=None):
    from infosam_core.training.config import TrainConfig
    from infosam_core.training.trainer import train

    config = TrainConfig(peft="adapter", distill="infosam", max_steps=steps, epochs=1000, batch_size=4)
    return train(config, sam, samples, progress=(signal.emit if signal is not None else None)).steps


def run_on(kind: str, fn, *args):
    """Run fn(*args) on a QThread task or a napari thread_worker, measuring the heartbeat meanwhile."""
    from qtpy.QtCore import QObject, Signal

    from infosam_app.workers import TaskRunner

    class Relay(QObject):
        progress = Signal(object)

    relay = Relay()
    relay.progress.connect(lambda _p: None)
    done = {}
    hb = Heartbeat()
    hb.start()
    t0 = time.perf_counter()
    if kind == "qthread":
        runner = TaskRunner()
        runner.run(
            lambda: fn(*args, **({"signal": relay.progress} if fn is train_steps else {})),
            on_result=lambda r: done.setdefault("r", r),
            on_error=lambda e: done.setdefault("e", e),
        )
    else:
        from napari.qt.threading import create_worker

        worker = create_worker(
            fn, *args, **({"signal": relay.progress} if fn is train_steps else {}), _start_thread=False
        )
        worker.returned.connect(lambda r: done.setdefault("r", r))
        worker.errored.connect(lambda e: done.setdefault("e", e))
        worker.start()
    pump(lambda: bool(done), 900)
    wall = time.perf_counter() - t0
    stats = hb.stop()
    if "e" in done:
        raise done["e"]
    return {"runner": kind, "work_s": round(wall, 2), **stats}


def open_studio(freeze_gc: bool):
    """A shown napari viewer with the studio, the bundled tiny model and the sample images, embedding ready."""
    import napari

    from infosam_app.samples import sample_paths
    from infosam_app.widget import StudioWidget
    from infosam_core.models.registry import load_sam

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    widget = StudioWidget(viewer, load_model=False, freeze_gc=freeze_gc)
    viewer.window.add_dock_widget(widget, name="InfoSAM Studio")
    s = widget.session
    s.use_model(load_sam("tiny"), label="tiny")
    pump(lambda: "base" in s.predictors)
    s.open_project(Path(tempfile.mkdtemp(prefix="infosam-bench-proj-")))
    s.add_images(sample_paths())
    pump(lambda: s.embedding_ready)
    return viewer, widget


def measure_embedding(s, hb: Heartbeat, pauses: Pauses, n_embed: int) -> dict:
    """Embeddings computed in the background while the GUI idles (the image stays; disk caches off)."""
    for p in s.predictors.values():
        p.cache_dir = None
    pauses.take()
    hb.start()
    t0 = time.perf_counter()
    for _ in range(n_embed):
        s.invalidate_embeddings()
        pump(lambda: s.embedding_ready)
    return {"embeddings": n_embed, "wall_s": round(time.perf_counter() - t0, 2), **hb.stop(), **pauses.take()}


def measure_image_switching(s, hb: Heartbeat, pauses: Pauses) -> dict:
    """The app's own flow: go through the images twice (napari layer updates and canvas draws on the GUI
    thread), each embedding computed in the background, prefetch off."""
    s.prefetch_enabled = False
    s.predictor.clear_cache()
    switch_ms = []
    t_switch = [0.0]
    s.image_changed.connect(lambda _i: switch_ms.append((time.perf_counter() - t_switch[0]) * 1000))
    pauses.take()
    hb.start()
    t0 = time.perf_counter()
    for _rep in range(2):
        for i in range(len(s.project.images)):
            s.predictor.clear_cache()
            t_switch[0] = time.perf_counter()
            s.show_image(i)
            pump(lambda i=i: s.index == i and s.embedding_ready)
    result = {
        "switches": 2 * len(s.project.images),
        "wall_s": round(time.perf_counter() - t0, 2),
        "switch_gui_ms_median": round(statistics.median(switch_ms), 1),
        **hb.stop(),
        **pauses.take(),
    }
    s.prefetch_enabled = True
    return result


def _clicks_summary(latencies: list[float], to_mask: list[float]) -> dict:
    summary = lat_stats(latencies)
    summary["to_preview_layer_median_ms"] = round(statistics.median(to_mask), 1) if to_mask else None
    if to_mask and latencies:  # the check: click -> drawn median <= 2x click -> preview layer median
        summary["drawn_over_preview_layer"] = round(statistics.median(latencies) / statistics.median(to_mask), 2)
    return summary


def measure_clicks_idle(widget, n_clicks: int) -> dict:
    """Click -> mask shown, nothing else running."""
    s = widget.session
    s.show_image(0)
    pump(lambda: s.index == 0 and s.embedding_ready)
    to_mask: list[float] = []
    return _clicks_summary(click_latencies(widget, n_clicks, to_mask), to_mask)


def measure_training(widget, hb: Heartbeat, pauses: Pauses, n_steps: int) -> tuple[dict, dict]:
    """An "Adapt to my data" run from the app's controller: first the heartbeat while it trains alone (progress
    bar, loss plot and ETA updating), then clicks while it goes on. Returns (training, clicks) figures."""
    from infosam_app.testing import prompt_until_mask

    s = widget.session
    for i in range(len(s.project.images)):
        s.show_image(i)
        pump(lambda i=i: s.index == i and s.embedding_ready)
        prompt_until_mask(widget.prompts)
        widget.prompts.accept()
    panel = widget.adapt_panel
    panel.max_steps = n_steps * 3
    steps = []
    panel.controller.progress.connect(lambda p: steps.append(p.step))
    t0 = time.perf_counter()
    assert panel.start(), s.last_error
    pauses.take()  # only what happens from here on
    hb.start()
    pump(lambda: len(steps) >= n_steps or not panel.controller.running, 900)
    train_hb = {**hb.stop(), **pauses.take()}
    clicks: list[float] = []
    to_mask: list[float] = []
    while panel.controller.running:
        clicks += click_latencies(widget, 3, to_mask)
    training = {"steps_measured": n_steps, "wall_s_total": round(time.perf_counter() - t0, 2), **train_hb}
    pump(lambda: s.active == "adapted" and s.embedding_ready, 60)
    return training, _clicks_summary(clicks, to_mask)


def compare_runners(s, n_embed: int, n_steps: int) -> list[dict]:
    """thread_worker vs QThread on the same workloads (embeddings, training steps), alternating."""
    samples = synthetic_samples()
    pred = s.predictors["base"]
    sam = s.sams["base"]
    compare = []
    for kind in ("qthread", "thread_worker", "qthread", "thread_worker"):
        pred.clear_cache()
        compare.append({"workload": f"{n_embed} embeddings (768 px)", **run_on(kind, embed_loop, pred, n_embed)})
        compare.append({"workload": f"{n_steps} training steps", **run_on(kind, train_steps, sam, samples, n_steps)})
    return compare


def print_summary(results: dict) -> None:
    print("\n== InfoSAM Studio responsiveness (tiny model, CPU) ==")
    print(
        f"cpus {results['cpu_count']}, torch threads {results['torch_threads']}, "
        f"load avg at start {results['load_avg_start'][0]:.2f}"
    )
    for key in ("idle", "embedding", "image_switching", "app_training", "click_idle", "redraw_idle"):
        print(f"{key:<24} {json.dumps(results[key])}")
    print(f"{'click_during_training':<24} {json.dumps(results['click_during_training'])}")
    print("preview layer update (full refresh vs changed region; median ms of the update / until drawn):")
    for row in results["preview_update"]:
        print(
            f"  {row['size']:>5} px   full {row['full_refresh_update_ms']:>6.1f} / {row['full_refresh_drawn_ms']:>6.1f}"
            f"   changed region {row['changed_region_update_ms']:>6.1f} / {row['changed_region_drawn_ms']:>6.1f}"
        )
    ratio = results["click_idle"].get("drawn_over_preview_layer")
    print(f"click -> drawn / click -> preview layer (idle): {ratio} (issue 29 target <= 2)")
    print("runner comparison (heartbeat every 10 ms):")
    for row in results["runner_comparison"]:
        print(
            f"  {row['workload']:<26} {row['runner']:<14} work {row['work_s']:>6.2f} s   "
            f"max stall {row['max_stall_ms']:>6.1f} ms   p99 {row['p99_stall_ms']:>5.1f} ms"
        )
    target = max(results["embedding"]["max_stall_ms"], results["app_training"]["max_stall_ms"])
    print(
        f"longest stall during embedding/training: {target:.1f} ms (target <= 100 ms): "
        f"{'OK' if target <= 100 else 'ABOVE TARGET'}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer clicks and steps")
    add_json_argument(ap)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--no-gc-freeze", action="store_true", help="measure without gc.freeze() (see StudioWidget)")
    args = ap.parse_args()
    display = _display()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="infosam-bench-"))
    n_clicks, n_steps, n_embed = (15, 4, 4) if args.quick else (40, 10, 10)
    results: dict = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gc_freeze": not args.no_gc_freeze,
        "load_avg_start": os.getloadavg(),
    }
    viewer, widget = open_studio(freeze_gc=not args.no_gc_freeze)
    s = widget.session
    pauses = Pauses(viewer.window._qt_viewer.canvas._scene_canvas)
    hb = Heartbeat()
    hb.start()
    pump(lambda: False, 1.0)
    results["idle"] = {**hb.stop(), **pauses.take()}
    results["embedding"] = measure_embedding(s, hb, pauses, n_embed)
    results["image_switching"] = measure_image_switching(s, hb, pauses)
    results["click_idle"] = measure_clicks_idle(widget, n_clicks)
    results["redraw_idle"] = measure_frame(widget)
    results["preview_update"] = measure_preview_update(widget, n=4 if args.quick else 8)
    results["app_training"], results["click_during_training"] = measure_training(widget, hb, pauses, n_steps)
    results["runner_comparison"] = compare_runners(s, n_embed, n_steps)
    results["load_avg_end"] = os.getloadavg()

    widget.cleanup()
    viewer.close()
    if display is not None:
        display.stop()
    print_summary(results)
    write_report(args.json, "app_responsiveness", results, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
