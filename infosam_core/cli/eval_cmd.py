"""`infosam eval`: prompted evaluation of SAM (optionally with an adapter) on a dataset.

    infosam eval --data my_dataset --prompt box --out runs/base_eval
    infosam eval --data my_dataset --adapter runs/mine/adapter --prompt box --out runs/mine/eval

One seeded prompt per image (box: a jittered box, the paper's protocol; point; points5: 2 foreground +
3 background points). Prints the mean of each metric and writes ``<out>/metrics.csv`` (per image + mean)
and ``<out>/metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument
from infosam_core.cli.train_cmd import check_device, check_out_dir
from infosam_core.data.prompt_sampling import PROTOCOLS
from infosam_core.evaluation.metrics import METRICS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate SAM (+ adapter) on a dataset with seeded prompts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset: folder with images/ + masks/, or a CSV image,label"
    )
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file for --model")
    parser.add_argument("--adapter", type=Path, help="adapter saved by `infosam train` (.json/.safetensors pair)")
    parser.add_argument("--prompt", choices=PROTOCOLS, default="box", help="prompt protocol (default: box)")
    parser.add_argument("--metrics", nargs="+", choices=list(METRICS), help="metrics to compute (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="prompt seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infosam_core.data.datasets import load_folder_dataset
    from infosam_core.evaluation.prompted import evaluate, save_eval
    from infosam_core.models.checkpoints import CheckpointError
    from infosam_core.models.registry import load_sam
    from infosam_core.peft.checkpoint import PeftCheckpointError, load_peft_checkpoint, read_peft_checkpoint_info

    check_device(args.device)
    check_out_dir(args.out)
    try:
        if args.adapter:
            read_peft_checkpoint_info(args.adapter)  # a broken adapter is reported before the data is read
        samples = load_folder_dataset(args.data)
        sam = load_sam(args.model, args.checkpoint)
        if args.adapter:
            sam = load_peft_checkpoint(sam, args.adapter)
        sam.to(args.device)
    except (ValueError, CheckpointError, PeftCheckpointError, RuntimeError) as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CLIError(message if isinstance(exc, RuntimeError) else str(exc)) from None

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    result = evaluate(sam, samples, prompt=args.prompt, seed=args.seed, metrics=args.metrics, progress=progress)
    name = f"SAM {args.model}" + (f" + {args.adapter}" if args.adapter else "")
    print(name)
    print(result.table())
    try:
        csv_path, json_path = save_eval(result, args.out)
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the results ({exc.strerror or exc})") from None
    print(f"per-image metrics -> {csv_path}; summary -> {json_path}")
    return 0
