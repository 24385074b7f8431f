"""A comparison table paired by seed, from the run records of one or more ``infosam experiment`` outputs.

    python scripts/paired_table.py docs/results/infosam_default_nuclei docs/results/infosam_default_extras \
        --dataset Nuclei --reference Adapter --zero-shot "SAM zero-shot"

Per method (zero-shot, the reference, then the others in file-name order): IoU x100 mean ± sample std over its seeds, the gain over the reference
method at each seed (only seeds both have) and its mean, the number of seeds at or above the reference, and
the gain over zero-shot. Prints markdown. Reads only ``OUT/runs/*.json`` (finished runs, status ok).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(folders: list[Path], dataset: str, metric: str) -> dict[str, dict[int, float]]:
    """method -> seed -> metric x100, for the runs of ``dataset``."""
    out: dict[str, dict[int, float]] = {}
    for folder in folders:
        for path in sorted((folder / "runs").glob("*.json")):
            record = json.loads(path.read_text())
            if record.get("status", "ok") != "ok" or record.get("dataset") != dataset:
                continue
            out.setdefault(record["method"], {})[int(record["seed"])] = 100 * float(record["metrics"][metric])
    return out


def signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def table(runs: dict[str, dict[int, float]], reference: str, zero_shot: str | None) -> str:
    ref = runs.get(reference, {})
    zs = runs.get(zero_shot, {}) if zero_shot else {}
    lines = [
        f"| method | IoU | vs {reference}, per seed | mean gain | seeds ≥ {reference} | vs zero-shot |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = [m for m in (zero_shot, reference) if m in runs]
    for method in first + [m for m in runs if m not in first]:
        by_seed = runs[method]
        values = [by_seed[s] for s in sorted(by_seed)]
        mean = statistics.mean(values)
        cell = f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"
        cell += f" (n={len(values)})"
        seeds = [s for s in sorted(by_seed) if s in ref]
        if method in (reference, zero_shot) or not seeds:
            per_seed = mean_gain = at_least = "–"
        else:
            gains = [by_seed[s] - ref[s] for s in seeds]
            per_seed = " / ".join(f"s{s} {signed(g)}" for s, g in zip(seeds, gains))
            mean_gain = signed(statistics.mean(gains))
            at_least = f"{sum(g >= 0 for g in gains)}/{len(gains)}"
        zs_seeds = [s for s in sorted(by_seed) if s in zs]
        vs_zs = (
            signed(statistics.mean(by_seed[s] - zs[s] for s in zs_seeds)) if zs_seeds and method != zero_shot else "–"
        )
        lines.append(f"| {method} | {cell} | {per_seed} | {mean_gain} | {at_least} | {vs_zs} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--reference", default="Adapter")
    parser.add_argument("--zero-shot", default="SAM zero-shot")
    parser.add_argument("--metric", default="iou")
    args = parser.parse_args()
    print(table(load(args.folders, args.dataset, args.metric), args.reference, args.zero_shot))


if __name__ == "__main__":
    main()
