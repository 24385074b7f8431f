"""`infosam pretrain`: pretrain a SAM (default: the bundled `tiny`) on the synthetic data engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from infosam_core.cli.common import add_device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a small SAM from scratch on synthetic scenes (how the bundled model is made)",
        description="Pretrain a SAM with SAM's recipe on the synthetic data engine. Resumes from OUT/last.pt.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output folder (checkpoints, log)")
    p.add_argument("--model", default="tiny", help="architecture (default tiny)")
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--images-per-step", type=int, default=4)
    p.add_argument("--masks-per-image", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pixel-loss",
        default="balanced_bce",
        help="pixel term beside dice: balanced_bce (default; learns from scratch) or bce (unbiased logits: "
        "to continue a pretrained model) or focal (SAM's 20 x focal)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="keep an exponential moving average of the weights (OUT/sam_<model>_ema.safetensors); 0 = off",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    add_device_argument(p)
    p.add_argument(
        "--data-workers", type=int, default=0, help="processes drawing scenes ahead of the model (default 0)"
    )
    p.add_argument("--log-every", type=int, default=20, help="steps per log line / history entry")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--init", type=Path, default=None, help="continue from these weights (fresh optimizer)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if OUT/last.pt exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infosam_core.cli import CLIError
    from infosam_core.cli.common import check_device, check_out_dir
    from infosam_core.models.devices import resolve_device
    from infosam_core.training.pretraining.config import PretrainConfig
    from infosam_core.training.pretraining.pretrainer import Pretrainer

    check_device(args.device)
    check_out_dir(args.out)

    config = PretrainConfig(
        out_dir=args.out,
        model_type=args.model,
        steps=args.steps,
        images_per_step=args.images_per_step,
        masks_per_image=args.masks_per_image,
        lr=args.lr,
        seed=args.seed,
        ema_decay=args.ema_decay,
        pixel_loss=args.pixel_loss,
        threads=args.threads,
        device=str(resolve_device(args.device)),
        data_workers=args.data_workers,
        log_every=args.log_every,
        time_budget_s=args.time_budget,
        resume=not args.no_resume,
        init_weights=args.init,
    )
    try:
        trainer = Pretrainer(config, log=lambda msg: print(msg, flush=True))
    except ValueError as exc:  # no GPU, a bad --init file (models.CheckpointError), ...
        raise CLIError(str(exc)) from None
    weights = trainer.run()
    print(f"weights: {weights}")
    if weights != trainer.weights_path():
        print(f"last step's weights (without averaging): {trainer.weights_path()}")
    return 0
