"""Peak memory (VmHWM) and seconds of tiled `infosam predict` / `infosam segment` on zarr images of growing size.

    python benchmarks/bench_tiling_memory.py                         # 1024^2 .. 8192^2 predict, up to 4096^2 segment
    python benchmarks/bench_tiling_memory.py --sizes 1024 2048 --segment-sizes 1024 --json out.json

Each image is the 1024^2 nuclei scene (:mod:`infosam_core.data.nuclei_scene`) repeated to the size and stored as
a zarr array (chunks 512^2). Every command runs in a fresh process whose own peak resident memory (``VmHWM``
from ``/proc/self/status``) is printed at its end, so the figures do not include this script's. Side by side:
``predict`` tiled (a box on one nucleus: one tile read and embedded) and with ``--tile-shape 0`` (the whole
image decoded and shrunk), and tiled ``segment --format zarr`` (``--points-per-side 4``: memory, not quality).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import ROOT, add_json_argument, write_report

from infosam_core.data.nuclei_scene import NucleiSceneConfig, nuclei_scene

_CHILD = """
import sys
from infosam_core.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
print("VMHWM_KB", peak, code)
"""


def run_cli(args: list[str]) -> tuple[float, float]:
    """(peak MB, seconds) of ``infosam ARGS`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", INFOSAM_MAX_PIXELS="100000000")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    seconds = time.perf_counter() - start
    line = next((x for x in done.stdout.splitlines() if x.startswith("VMHWM_KB")), None)
    if line is None or line.split()[2] != "0":
        raise RuntimeError(f"infosam {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(line.split()[1]) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="predict sizes")
    parser.add_argument("--segment-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    add_json_argument(parser)
    args = parser.parse_args()
    import zarr

    scene, truth = nuclei_scene(NucleiSceneConfig(), seed=3)
    ys, xs = np.nonzero(truth == 1)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    figures: dict = {"predict": {}, "segment": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in sorted(set(args.sizes) | set(args.segment_sizes)):
            store = folder / f"scene{size}.zarr"
            array = zarr.open_array(str(store), mode="w", shape=(size, size), dtype="uint8", chunks=(512, 512))
            reps = size // 1024
            for row in range(reps):
                array[row * 1024 : (row + 1) * 1024, :] = np.tile(scene, (1, reps))
            print(f"{size}^2:", flush=True)
            if size in args.sizes:
                tiled = run_cli(["predict", str(store), "--box", box, "--out", str(folder / "m.png")])
                whole = run_cli(
                    ["predict", str(store), "--box", box, "--tile-shape", "0", "--out", str(folder / "w.png")]
                )
                figures["predict"][size] = {"tiled_mb": round(tiled[0]), "tiled_s": round(tiled[1], 1)}
                figures["predict"][size].update({"whole_mb": round(whole[0]), "whole_s": round(whole[1], 1)})
                print(
                    f"  predict tiled {tiled[0]:7.0f} MB {tiled[1]:6.1f} s   whole {whole[0]:7.0f} MB {whole[1]:6.1f} s"
                )
            if size in args.segment_sizes:
                out = folder / f"out{size}"
                seg = run_cli(["segment", str(store), "--format", "zarr", "--points-per-side", "4", "--out", str(out)])
                objects = len(json.loads((out / "coco.json").read_text())["annotations"])
                figures["segment"][size] = {"mb": round(seg[0]), "s": round(seg[1], 1), "objects": objects}
                print(f"  segment tiled {seg[0]:7.0f} MB {seg[1]:6.1f} s   {objects} objects", flush=True)
    write_report(args.json, "tiling_memory", figures)


if __name__ == "__main__":
    main()
