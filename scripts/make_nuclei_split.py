"""Write the small fixed train/test split of the DSB2018 nuclei data used by ``docs/results/``.

    python scripts/make_nuclei_split.py --source ../shared/data/dsb2018_nuclei --out data/nuclei

Takes only the 256x256 images (the tiny model's input size: no resizing decides the result), orders them
by id, draws 32 train + 32 test ids with ``numpy.random.default_rng(2018)`` and writes
``OUT/train/{images,masks}`` and ``OUT/test/{images,masks}`` (symbolic links, or copies with ``--copy``).
The chosen ids are committed as ``experiments/nuclei_split.json``; with that file present the script uses
it (and checks that the source still has those files) instead of drawing again, so the split never moves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SPLIT_FILE = ROOT / "experiments" / "nuclei_split.json"
SEED = 2018
N_TRAIN = N_TEST = 32


def default_source() -> Path:
    """``shared/data/dsb2018_nuclei`` beside the checkout (or beside a folder above it, for worktrees)."""
    for folder in ROOT.parents:
        if (folder / "shared" / "data" / "dsb2018_nuclei").is_dir():
            return folder / "shared" / "data" / "dsb2018_nuclei"
    return ROOT.parent / "shared" / "data" / "dsb2018_nuclei"


def draw_split(source: Path) -> dict[str, list[str]]:
    ids = sorted(p.stem for p in (source / "images").glob("*.png"))
    square = [i for i in ids if Image.open(source / "images" / f"{i}.png").size == (256, 256)]
    order = np.random.default_rng(SEED).permutation(len(square))
    chosen = [square[k] for k in order[: N_TRAIN + N_TEST]]
    return {"train": sorted(chosen[:N_TRAIN]), "test": sorted(chosen[N_TRAIN:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=default_source(), help="default: ../shared/data/dsb2018_nuclei")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "nuclei")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    args = parser.parse_args(argv)
    if not (args.source / "images").is_dir():
        print(f"{args.source}: no images/ folder (the DSB2018 nuclei data, see its SOURCE.txt)", file=sys.stderr)
        return 2
    if SPLIT_FILE.exists():
        split = json.loads(SPLIT_FILE.read_text())
    else:
        split = draw_split(args.source)
        SPLIT_FILE.write_text(json.dumps({"seed": SEED, "source": "dsb2018_nuclei", **split}, indent=1) + "\n")
    for part in ("train", "test"):
        for kind in ("images", "masks"):
            folder = args.out / part / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in split[part]:
                src, dst = (args.source / kind / f"{i}.png").resolve(), folder / f"{i}.png"
                if not src.exists():
                    print(f"{src}: missing (the split lists it)", file=sys.stderr)
                    return 2
                if dst.exists() or dst.is_symlink():
                    dst.unlink()
                if args.copy:
                    shutil.copyfile(src, dst)
                else:
                    dst.symlink_to(src)
    print(f"{len(split['train'])} train + {len(split['test'])} test images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
