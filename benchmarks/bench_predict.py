"""Interactive prediction speed: encoder time per image, and prompt -> mask time on a cached embedding.

    python benchmarks/bench_predict.py              # tiny (bundled), random-init MobileSAM (vit_t) and vit_b
    python benchmarks/bench_predict.py --runs 100 --skip-vit-b --skip-mobile-sam --threads 1
    python benchmarks/bench_predict.py --skip-vit-b --runs 20 --json benchmarks/results/predict.json

Prints one row per model: parameter count, model-fingerprint time (paid once per model swap), image
encoder time per image (resize + normalise + encoder, no cache), and the median / 95th percentile of
``Predictor.predict`` over ``--runs`` prompts (alternating 1-3 random points and random boxes, single
mask, on a ``--size`` image) -- as shipped, where stock SAM decoders run as ``InteractiveDecoder``
-- and, in the same run on the same prompts, through segment-anything's own ``MaskDecoder.forward`` and
``Sam.postprocess_masks`` (``ref.`` columns).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _report import add_json_argument, write_report

from infosam_core.inference.predictor import Predictor
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.registry import load_sam


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _prompts(n: int, height: int, width: int, rng: np.random.Generator) -> list[dict]:
    prompts = []
    for i in range(n):
        if i % 2:
            x0, x1 = np.sort(rng.uniform(0, width, 2))
            y0, y1 = np.sort(rng.uniform(0, height, 2))
            prompts.append({"box": np.array([x0, y0, x1, y1])})
        else:
            k = int(rng.integers(1, 4))
            coords = np.stack([rng.uniform(0, width, k), rng.uniform(0, height, k)], axis=1)
            prompts.append({"point_coords": coords, "point_labels": rng.integers(0, 2, k)})
    return prompts


def bench_model(model_type: str, encoder_runs: int, prompt_runs: int, height: int, width: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init vit_b warns; expected here
        sam = load_sam(model_type)
    params = sum(p.numel() for p in sam.parameters())
    start = time.perf_counter()
    model_fingerprint(sam.image_encoder)
    fingerprint_s = time.perf_counter() - start

    predictor = Predictor(sam, cache_size=0)
    predictor.embed(_image(64, 64, seed=123))  # warm-up (first-call allocations)
    encoder_s = []
    for run in range(encoder_runs):
        image = _image(height, width, seed=run)
        start = time.perf_counter()
        embedding = predictor.embed(image)
        encoder_s.append(time.perf_counter() - start)
    predictor.set_embedding(embedding)

    prompts = _prompts(prompt_runs, height, width, np.random.default_rng(0))
    predictor.use_interactive_decoder = True
    prompt_s = _time_prompts(predictor, prompts)
    predictor.use_interactive_decoder = False  # segment-anything's MaskDecoder.forward, same run
    reference_s = _time_prompts(predictor, prompts)
    return {
        "model": model_type,
        "params": params,
        "fingerprint_s": fingerprint_s,
        "encoder_s": float(np.mean(encoder_s)),
        "encoder_runs": encoder_runs,
        "prompt_median_ms": 1000 * float(np.median(prompt_s)),
        "prompt_p95_ms": 1000 * float(np.percentile(prompt_s, 95)),
        "prompt_runs": prompt_runs,
        "reference_median_ms": 1000 * float(np.median(reference_s)),
        "reference_p95_ms": 1000 * float(np.percentile(reference_s, 95)),
    }


def _time_prompts(predictor: Predictor, prompts: list[dict]) -> list[float]:
    predictor.predict(**prompts[0], multimask_output=False)  # warm-up (and the per-image decoder cache)
    seconds = []
    for prompt in prompts:
        start = time.perf_counter()
        predictor.predict(**prompt, multimask_output=False)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="prompts per model (default 50)")
    parser.add_argument("--encoder-runs", type=int, default=5, help="images for tiny's encoder (default 5)")
    parser.add_argument("--vit-b-encoder-runs", type=int, default=1, help="images for vit_b (~15 s each)")
    parser.add_argument("--skip-vit-b", action="store_true", help="leave ViT-B out")
    parser.add_argument("--mobile-sam-encoder-runs", type=int, default=2, help="images for vit_t (~2-3 s each)")
    parser.add_argument("--skip-mobile-sam", action="store_true", help="leave MobileSAM (vit_t) out")
    parser.add_argument("--size", default="768x1024", help="image HxW (default 768x1024)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))

    rows = [bench_model("tiny", args.encoder_runs, args.runs, height, width)]
    if not args.skip_mobile_sam:
        rows.append(bench_model("vit_t", args.mobile_sam_encoder_runs, args.runs, height, width))
    if not args.skip_vit_b:
        rows.append(bench_model("vit_b", args.vit_b_encoder_runs, args.runs, height, width))

    print(f"image {height}x{width}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    header = (
        f"{'model':<6} {'params':>8} {'fingerprint':>11} {'encoder/img':>12} {'prompt median':>13} "
        f"{'prompt p95':>10} {'ref. median':>11} {'ref. p95':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<6} {r['params'] / 1e6:>7.1f}M {r['fingerprint_s']:>10.2f}s "
            f"{r['encoder_s']:>9.2f}s x{r['encoder_runs']} {r['prompt_median_ms']:>10.1f} ms "
            f"{r['prompt_p95_ms']:>7.1f} ms {r['reference_median_ms']:>8.1f} ms {r['reference_p95_ms']:>6.1f} ms"
        )
    print(f"(prompt times over {args.runs} prompts: alternating 1-3 points and boxes, single mask;")
    print(" 'prompt' = Predictor.predict as shipped (InteractiveDecoder), 'ref.' = the same prompts through")
    print(" segment-anything's MaskDecoder.forward and Sam.postprocess_masks, same run)")
    encoder = {r["model"]: r["encoder_s"] for r in rows}
    if "vit_t" in encoder:
        ratios = ", ".join(f"{m} {encoder[m] / encoder['vit_t']:.2f}x" for m in encoder if m != "vit_t")
        print(f"encoder time relative to MobileSAM (vit_t): {ratios}")
    figures = {
        "image_size": [height, width],
        "prompts": "alternating 1-3 random points and random boxes, single mask",
        "rows": rows,
        "interactive_over_reference": {r["model"]: r["prompt_median_ms"] / r["reference_median_ms"] for r in rows},
    }
    if "vit_t" in encoder:
        figures["encoder_over_mobile_sam"] = {m: encoder[m] / encoder["vit_t"] for m in encoder if m != "vit_t"}
    write_report(args.json, "predict", figures, device="cpu")


if __name__ == "__main__":
    main()
