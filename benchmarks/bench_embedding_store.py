"""Precomputed embeddings: ``infosam predict`` on one image with and without ``--embeddings STORE``, side by side.

    python benchmarks/bench_embedding_store.py                   # random-init ViT-B (saved once), 1024^2, 2 threads
    python benchmarks/bench_embedding_store.py --model tiny --json out.json

Runs ``infosam embed IMAGE --out STORE`` once, then alternates ``infosam predict IMAGE --box ...`` without and
with ``--embeddings STORE`` (in this process, model loading included, as a user runs it); prints the medians,
their ratio and the encoder passes each made (0 with the store).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from _report import add_json_argument, write_report

from infosam_core.cli import main as infosam
from infosam_core.inference.predictor import Predictor
from infosam_core.models.registry import load_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    add_json_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # random weights warn
    encodes = []
    real = Predictor._encode

    def counting(self, *a):  # type: ignore[no-untyped-def]
        encodes.append(1)
        return real(self, *a)

    Predictor._encode = counting  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
        iio.imwrite(tmp / "image.png", image)
        common = ["--model", args.model, "--device", "cpu", "--precision", "float32"]
        if args.model != "tiny":  # random weights, saved once: every command must load the same model
            torch.manual_seed(0)
            torch.save(load_sam(args.model).state_dict(), tmp / "weights.pth")
            common += ["--checkpoint", str(tmp / "weights.pth")]
        start = time.perf_counter()
        infosam(["embed", str(tmp / "image.png"), "--out", str(tmp / "store.zarr"), *common])
        embed_s = time.perf_counter() - start
        box = f"{args.size // 4},{args.size // 4},{args.size // 2},{args.size // 2}"
        predict = ["predict", str(tmp / "image.png"), "--box", box, "--out", str(tmp / "mask.png"), *common]
        times: dict[str, list[float]] = {"without": [], "with": []}
        passes: dict[str, int] = {"without": 0, "with": 0}
        for _ in range(args.runs):
            for name, extra in (("without", []), ("with", ["--embeddings", str(tmp / "store.zarr")])):
                before = len(encodes)
                start = time.perf_counter()
                infosam([*predict, *extra])
                times[name].append(time.perf_counter() - start)
                passes[name] += len(encodes) - before
    without, with_store = statistics.median(times["without"]), statistics.median(times["with"])
    print(f"{args.model}, {args.size}^2 image, {args.threads} threads: embed {embed_s:.2f} s")
    print(f"  predict without the store {without:.2f} s ({passes['without']} encoder passes)")
    print(f"  predict with the store    {with_store:.2f} s ({passes['with']} encoder passes)")
    print(f"  speed-up x{without / with_store:.1f}")
    figures = {
        "model": args.model,
        "size": args.size,
        "embed_s": embed_s,
        "predict_without_store_s": without,
        "predict_with_store_s": with_store,
        "encoder_passes": passes,
        "speedup": without / with_store,
    }
    write_report(args.json, "embedding_store", figures)


if __name__ == "__main__":
    main()
