"""Learning curve of automatic segmentation: base tiny SAM vs tiny adapted on 5, 10, 20, 40 nucleus images.

    PYTHONPATH=. nice -n 10 python scripts/segment_learning_curve.py                 # ../shared/data by default
    python scripts/segment_learning_curve.py --data DIR --out docs/segment_learning_curve

Data: the DSB 2018 nuclei (``images/<id>.png``, ``masks/<id>.png``). Only 256 x 256 images are used (the
most common size; keeps the run short). A seeded permutation splits them into a fixed held-out set
(``--eval-images``) and a training pool; the n-image training sets are nested (the first n of the pool).
Objects = connected components of each binary mask (8-connectivity), as a user accepting the
nuclei one by one would produce; each object is one training sample (prompts drawn by the trainer).

For each n an Adapter (no distillation, the app's "Adapt" default method) trains on the tiny model for
the same number of steps (``--steps``, batch 4), so the curve measures what the extra images bring, not
extra compute. Every model then segments the held-out images with
:func:`infosam_core.inference.automatic.segment_all` (``AutomaticConfig.for_model("tiny")``, the CLI's
settings) and is scored with instance F1 at IoU 0.5 pooled over the held-out objects
(:mod:`infosam_core.evaluation.instances`).

Writes ``<out>.json`` (figures, settings, seconds; after every model, so ``--resume`` continues an
interrupted run) and ``<out>.png`` (matplotlib, when installed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from infosam_core.data.datasets import SegmentationSample
from infosam_core.evaluation.instances import InstanceScore, instances_from_mask, match_instances
from infosam_core.inference.automatic import AutomaticConfig, segment_all
from infosam_core.inference.predictor import Predictor
from infosam_core.io.atomic import write_json_atomic
from infosam_core.io.images import load_rgb, read_image
from infosam_core.models.registry import load_sam
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei"


def load_pairs(data: Path, size: tuple[int, int] = (256, 256)) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, RGB image, instance labels) of every image of ``size``, sorted by id."""
    pairs = []
    for mask_path in sorted((data / "masks").glob("*.png")):
        mask = np.asarray(read_image(mask_path))
        if mask.shape[:2] != size:
            continue
        image = load_rgb(data / "images" / mask_path.name)
        pairs.append((mask_path.stem, image, instances_from_mask(mask > 0)))
    return pairs


def object_samples(pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> list[SegmentationSample]:
    """One sample per object (connected component)."""
    samples = []
    for name, image, labels in pairs:
        for label in range(1, int(labels.max()) + 1):
            samples.append(SegmentationSample(image, labels == label, f"{name}#{label}"))
    return samples


def evaluate_f1(sam, held_out, config: AutomaticConfig) -> tuple[InstanceScore, float, list[float]]:
    """Pooled F1@0.5 over ``held_out``, seconds per image, per-image uncertainty."""
    predictor = Predictor(sam, cache_size=1)
    total = InstanceScore(0, 0, 0)
    uncertainties = []
    start = time.perf_counter()
    for _, image, truth in held_out:
        result = segment_all(predictor, image, config)
        total = total + match_instances(result.labels(), truth)
        uncertainties.append(result.uncertainty)
    return total, (time.perf_counter() - start) / len(held_out), uncertainties


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("docs/segment_learning_curve"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--eval-images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="training steps per adapted model (batch 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep the rows of an earlier run's JSON")
    parser.add_argument("--plot-only", action="store_true", help="plot the JSON's rows (implies --resume)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    pairs = load_pairs(args.data)
    order = np.random.default_rng(args.seed).permutation(len(pairs))
    held_out = [pairs[i] for i in order[: args.eval_images]]
    pool = [pairs[i] for i in order[args.eval_images :]]
    if len(pool) < max(args.sizes):
        raise SystemExit(f"{args.data}: {len(pool)} training images, need {max(args.sizes)}")
    config = AutomaticConfig.for_model("tiny")
    figures = {
        "data": str(args.data.name),
        "held_out_images": [name for name, _, _ in held_out],
        "held_out_objects": int(sum(int(t.max()) for _, _, t in held_out)),
        "automatic_config": config.__dict__,
        "train": {"peft": "adapter", "distill": "none", "steps": args.steps, "batch_size": 4, "seed": args.seed},
        "rows": [],
    }
    json_path = args.out.with_suffix(".json")
    previous: dict = {}
    if (
        args.resume or args.plot_only
    ) and json_path.exists():  # rows of an interrupted run with the same settings are kept
        previous = json.loads(json_path.read_text("utf-8"))
        if {k: previous.get(k) for k in ("held_out_images", "train")} == {
            k: figures[k] for k in ("held_out_images", "train")
        }:
            figures["rows"] = previous["rows"]
    rows = figures["rows"]
    earlier_seconds = float(previous.get("total_seconds", 0.0)) if rows else 0.0
    done = {r["images"] for r in rows}

    def save() -> None:
        figures["total_seconds"] = earlier_seconds + time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, figures)

    if args.plot_only:
        args.sizes = []
    elif 0 not in done:
        score, seconds, unc = evaluate_f1(load_sam("tiny"), held_out, config)
        rows.append({"images": 0, "objects": 0, **score.to_dict(), "seconds_per_image": seconds, "uncertainty": unc})
        print(f"base: F1@0.5 {score.f1:.3f} (P {score.precision:.3f}, R {score.recall:.3f}), {seconds:.1f} s/image")
        save()
    for n in args.sizes:
        if n in done:
            continue
        samples = object_samples(pool[:n])
        train_config = TrainConfig(
            peft="adapter", distill="none", epochs=1000, max_steps=args.steps, batch_size=4, seed=args.seed
        )
        t0 = time.perf_counter()
        result = train(train_config, load_sam("tiny"), samples)
        train_seconds = time.perf_counter() - t0
        score, seconds, unc = evaluate_f1(result.model, held_out, config)
        rows.append(
            {
                "images": n,
                "objects": len(samples),
                **score.to_dict(),
                "seconds_per_image": seconds,
                "train_seconds": train_seconds,
                "train_steps": result.steps,
                "uncertainty": unc,
            }
        )
        print(
            f"{n} images ({len(samples)} objects, {result.steps} steps, {train_seconds:.0f} s): "
            f"F1@0.5 {score.f1:.3f} (P {score.precision:.3f}, R {score.recall:.3f})",
            flush=True,
        )
        save()
    rows.sort(key=lambda r: r["images"])

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (figures in the JSON)")
        return
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    xs = [r["images"] for r in rows[1:]]
    ax.plot(xs, [r["f1"] for r in rows[1:]], "o-", label="adapted (Adapter)")
    ax.axhline(rows[0]["f1"], color="gray", linestyle="--", label="base tiny")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("annotated training images")
    ax.set_ylabel("F1 @ IoU 0.5 (held-out)")
    ax.set_title(f"Segment all, nuclei ({figures['held_out_objects']} held-out objects)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"))
    print(f"-> {args.out.with_suffix('.png')}, {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
