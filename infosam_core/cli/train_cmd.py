"""`infosam train`: adapt SAM to a dataset with PEFT (+ a distiller: InfoSAM, or none by default on the bundled
tiny model) and save the adapter.

    infosam train --data my_dataset --peft adapter --distill infosam --epochs 10 --out runs/mine
    infosam train --data my_dataset --model vit_b --checkpoint sam_vit_b_01ec64.pth --preset paper --out runs/paper

Writes ``<out>/adapter.json`` + the tensors file it names, ``<out>/adapter.<hash>.safetensors`` (saved all
or nothing; load with ``infosam eval --adapter <out>/adapter``) and ``<out>/history.json`` (settings,
per-epoch losses, validation mIoU, parameter counts). Ctrl-C once stops after the current step and still
saves the adapter; twice aborts.

Several GPUs or machines: launch it with ``torchrun`` (``torchrun --no-python --nproc-per-node 4 infosam
train ...`` or ``torchrun --nproc-per-node 4 -m infosam_core train ...``); ``--batch-size`` is then the
global batch, split over the processes (NCCL on GPUs, one per process by ``LOCAL_RANK``; gloo on the CPU).
Only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from infosam_core.cli import CLIError, InterruptToStop, add_model_argument, defer_arguments
from infosam_core.cli.common import add_device_argument, check_device, check_out_dir, parse_option
from infosam_core.cli.tiling_options import add_tiling_arguments, check_tiling_values, tiling_from_args
from infosam_core.training.defaults import (
    describe_recommended,
    describe_recommended_distiller,
    recommended_distill_options,
    recommended_distiller,
    with_recommended_options,
)

# CLI flag -> TrainConfig field, for flags that default to "not given" (None) so presets can fill them.
OVERRIDABLE = {
    "peft": "peft",
    "distill": "distill",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "min_lr": "min_lr",
    "seed": "seed",
    "lam": "distill_weight",
}
# The paper's InfoSAM weights keep their own flags: --alpha X is --distill-option alpha=X.
INFOSAM_WEIGHT_FLAGS = ("alpha", "beta")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="adapt SAM to a dataset (PEFT + InfoSAM) and save the adapter",
        description=__doc__.split("\n\n")[0],
    )
    defer_arguments(parser, _add_arguments)  # the PEFT and distiller registries import torch: only for `train`
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.distill.registry import DISTILLERS, distiller_names
    from infosam_core.peft.registry import PEFT_METHODS
    from infosam_core.training.config import PRESETS

    parser.add_argument(
        "--data", type=Path, required=True, help="dataset: folder with images/ + masks/, or a CSV image,label"
    )
    parser.add_argument(
        "--val-data", type=Path, help="validation dataset (mIoU after every epoch; the best epoch is kept)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="hold out this fraction of --data for validation"
    )
    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file for --model (e.g. sam_vit_b_01ec64.pth)")
    parser.add_argument("--peft", choices=list(PEFT_METHODS), help="PEFT method (default: adapter)")
    parser.add_argument(
        "--peft-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PEFT option, e.g. rank=8 for lora or train_decoder=false (repeatable)",
    )
    parser.add_argument(
        "--distill",
        choices=distiller_names(),
        help="distillation from the frozen pre-trained SAM (default: infosam; none on the bundled tiny model, "
        "where InfoSAM measured no better than plain PEFT); "
        + "; ".join(f"{n}: {d.description}" for n, d in DISTILLERS.items()),
    )
    parser.add_argument(
        "--distill-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a distiller option, e.g. alpha=0 for infosam, temperature=4 for logit, relation_module=true for "
        "tinysam/mobilesam, blocks=2,5,8,11 for vid/ibd/semckd/reviewkd (repeatable; see docs/DISTILLERS.md)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="default 4; InfoSAM needs >= 2. Under torchrun the global batch (divisible by the process count)",
    )
    parser.add_argument("--lr", type=float, help="peak learning rate (default 2e-4, cosine to --min-lr)")
    parser.add_argument("--min-lr", type=float)
    parser.add_argument("--lam", type=float, help="lambda: weight of the distillation loss (default 1)")
    parser.add_argument("--alpha", type=float, help="InfoSAM: weight of L_r, relation compression (default 1)")
    parser.add_argument("--beta", type=float, help="InfoSAM: weight of L_d, relation distillation (default 0.5)")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="paper: batch 4, Adam 2e-4 cosine to 2e-5, 10 epochs, "
        "adapter + InfoSAM (1, 1, 0.5), seed 42; flags given explicitly still win",
    )
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this much training time")
    add_device_argument(parser, "; under torchrun auto/cuda mean cuda:LOCAL_RANK")
    add_tiling_arguments(parser)  # images larger than a tile: trained on as crops around each object
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in float32 (default: bf16 autocast where bf16 is native -- GPUs that support it, CPUs with AMX; "
        "float32 on other CPUs, where bf16 is slower)",
    )
    parser.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    parser.add_argument("--vflip", action="store_true", help="also flip vertically (e.g. microscopy, aerial images)")
    parser.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="activation checkpointing in the image encoder: far less memory (ViT-B on a small GPU), ~1/3 slower",
    )
    parser.add_argument(
        "--init-adapter", type=Path, help="continue training from this adapter (same base model and method)"
    )
    parser.add_argument(
        "--relation-maps",
        type=int,
        default=0,
        metavar="N",
        help="after every epoch, draw the teacher's and student's InfoSAM relation maps of N fixed training "
        "images (with their histogram) to OUT/relation_maps/epoch_NNN.png",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def build_config(args: argparse.Namespace):
    from infosam_core.training.config import PRESETS, TrainConfig

    values: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    values.update(
        {field: getattr(args, flag) for flag, field in OVERRIDABLE.items() if getattr(args, flag) is not None}
    )
    infosam_asked = (  # an InfoSAM option, weight or relation map names InfoSAM without --distill
        args.distill_option
        or getattr(args, "relation_maps", 0)
        or any(getattr(args, f) is not None for f in (*INFOSAM_WEIGHT_FLAGS, "lam"))
    )
    if "distill" not in values and not infosam_asked:  # no distiller named: the one measured best for the model
        values["distill"] = recommended_distiller(getattr(args, "model", None))
    distill_options = dict(values.get("distill_options", {}))
    if values.get("distill", "infosam") != "infosam":
        distill_options = {}  # a preset's InfoSAM weights do not apply to another distiller
    distill_options.update(parse_option(o, "--distill-option", "alpha=0") for o in args.distill_option)
    for flag in INFOSAM_WEIGHT_FLAGS:
        if getattr(args, flag) is not None:
            if values.get("distill", "infosam") != "infosam":
                raise CLIError(
                    f"--{flag} weighs an InfoSAM term; with --distill {values['distill']} use --distill-option "
                    f"(e.g. rm_{flag}=X with relation_module=true)"
                )
            distill_options[flag] = getattr(args, flag)
    # the setting measured best for this model (tiny: centred InfoSAM relations); a given option wins, and the
    # paper preset names the paper's formula (infosam_core.training.defaults)
    distill_options = with_recommended_options(
        getattr(args, "model", None), values.get("distill", "infosam"), distill_options
    )
    values.update(
        peft_options=dict(parse_option(o) for o in args.peft_option),
        distill_options=distill_options,
        max_steps=args.max_steps,
        time_budget_s=args.time_budget,
        device=args.device,
        hflip=not args.no_flip,
        bf16=not args.no_bf16,
        vflip=args.vflip,
        grad_checkpoint=args.grad_checkpoint,
    )
    if args.time_budget is not None and not args.time_budget > 0:  # NaN fails this too
        raise CLIError(f"--time-budget must be a number of seconds > 0, got {args.time_budget}")
    if args.max_steps is not None and args.max_steps < 1:
        raise CLIError(f"--max-steps must be >= 1, got {args.max_steps}")
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in values.items() if k in known})
    try:
        config.validate()
    except ValueError as exc:
        raise CLIError(_flag_names(str(exc))) from None
    check_device(config.device)
    return config


def _flag_names(message: str) -> str:
    """A TrainConfig message in the CLI's words (``max_steps`` -> ``--max-steps`` ...)."""
    for name, flag in (
        ("max_steps", "--max-steps"),
        ("time_budget_s", "--time-budget"),
        ("distill_weight (lambda)", "--lam"),
        ("min_lr", "--min-lr"),
    ):
        message = message.replace(name, flag)
    return message


class _Reporter:
    """A tqdm bar on a terminal; otherwise one plain line about every 5 % of the steps and per validation."""

    def __init__(self) -> None:
        self.bar: Any = None  # a tqdm bar, made at the first report
        self.tty = sys.stderr.isatty()

    def __call__(self, p) -> None:
        if self.tty:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=p.total_steps, unit="step", dynamic_ncols=True)
            self.bar.n = p.step
            self.bar.set_postfix(
                epoch=p.epoch,
                loss=f"{p.loss:.4f}",
                lr=f"{p.lr:.1e}",
                **({"val_mIoU": f"{p.val_miou:.3f}"} if p.val_miou is not None else {}),
            )
            return
        every = max(1, p.total_steps // 20)
        if p.val_miou is not None:
            print(f"epoch {p.epoch}: validation mIoU {p.val_miou:.4f}", flush=True)
        elif p.step % every == 0 or p.step == p.total_steps or p.step == 1:
            terms = "".join(f", {name} {value:.4f}" for name, value in p.terms.items())
            print(
                f"step {p.step}/{p.total_steps} epoch {p.epoch} loss {p.loss:.4f} (seg {p.seg_loss:.4f}{terms}) "
                f"lr {p.lr:.2e} {p.elapsed_s:.0f}s, ETA {p.eta_s:.0f}s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    import torch

    from infosam_core.models.devices import resolve_device
    from infosam_core.training import distributed

    config = build_config(args)
    check_out_dir(args.out)  # before any data or model is loaded
    if distributed.launched_by_torchrun():
        device = resolve_device(config.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", distributed.local_rank())  # one GPU per process on this machine
        config.device = str(device)
        try:
            context = distributed.init_from_environment(device)
        except (RuntimeError, ValueError) as exc:
            raise CLIError(f"torchrun: cannot join the process group ({exc})") from None
        try:
            return _run(args, config, context)
        finally:
            distributed.shutdown()
    return _run(args, config, distributed.DistributedContext())


def _run(args: argparse.Namespace, config, context) -> int:
    """One process's part of ``infosam train`` (the only one without torchrun); rank 0 prints and saves."""
    from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
    from infosam_core.adapter_files.loading import check_adapter_file
    from infosam_core.data.datasets import load_folder_dataset, split
    from infosam_core.inference.tiling_crops import object_crops
    from infosam_core.models.registry import load_sam
    from infosam_core.training.results import TrainingError
    from infosam_core.training.runs import RunFailedError, train_and_save
    from infosam_core.training.trainer import EpochCallback

    def say(*parts) -> None:
        if context.is_main:
            print(*parts, flush=True)

    check_tiling_values(args)
    if args.relation_maps < 0:
        raise CLIError("--relation-maps must be >= 0")
    if args.relation_maps and config.distill != "infosam":
        raise CLIError(f"--relation-maps draws InfoSAM's relation module; --distill {config.distill} has none")
    try:
        if args.init_adapter:  # a broken adapter, or one for another model, is reported before the data is read
            check_adapter_file(args.init_adapter, args.model, args.checkpoint)
        samples = load_folder_dataset(args.data)
        val = load_folder_dataset(args.val_data) if args.val_data else []
        if args.val_fraction:
            samples, held_out = split(samples, args.val_fraction, seed=config.seed)
            val += held_out
        sam = load_sam(args.model, args.checkpoint)
        init_model = load_peft_checkpoint(sam, args.init_adapter) if args.init_adapter else None
        tiling = tiling_from_args(args, sam)
        if (
            tiling is not None
        ):  # large images: native-resolution crops around each object, as tiled prediction sees them
            samples, val = object_crops(samples, tiling), object_crops(val, tiling)
    except ValueError as exc:  # DatasetError, CheckpointError and PeftCheckpointError are ValueErrors
        raise CLIError(str(exc)) from None
    except MemoryError:
        raise CLIError(f"{args.data}: not enough memory to load this dataset; use fewer or smaller images") from None

    interrupts = InterruptToStop("stopping after this step (Ctrl-C again to abort) ..." if context.is_main else None)

    callbacks: list[EpochCallback] = []
    if args.relation_maps and context.is_main:
        from infosam_core.evaluation.relation_maps import RelationMapRecorder

        callbacks.append(RelationMapRecorder(args.out / "relation_maps", samples, args.relation_maps))
    reporter = _Reporter()
    processes = f" over {context.world_size} processes" if context.enabled else ""
    say(
        f"training on {len(samples)} images ({len(val)} for validation), SAM {args.model}, "
        f"{config.peft} + {config.distill}, {config.epochs} epochs x batch {config.batch_size}{processes}"
    )
    model_default = args.distill is None and not args.preset and config.distill == recommended_distiller(args.model)
    if model_default and (line := describe_recommended_distiller(args.model)):
        say(line)
    recommended = recommended_distill_options(args.model, config.distill)
    if recommended and all(config.distill_options.get(k) == v for k, v in recommended.items()):
        say(describe_recommended(args.model, config.distill))
    facts = {
        "data": str(args.data),
        "model": args.model,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "processes": context.world_size,
    }
    try:
        saved = train_and_save(
            config,
            sam,
            samples,
            args.out if context.is_main else None,  # only rank 0 writes
            facts=facts,
            progress=reporter if context.is_main else None,
            should_stop=interrupts.stop.is_set,
            val_samples=val or None,
            init_model=init_model,
            callbacks=callbacks,
        )
    except RunFailedError as exc:
        raise CLIError(
            f"{exc} (the last good adapter, step {exc.saved_step}, is saved as {exc.files.adapter})"
        ) from None
    except (TrainingError, ValueError) as exc:  # PeftCheckpointError is a ValueError
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the results ({exc.strerror or exc})") from None
    finally:
        reporter.close()
        interrupts.restore()
    if saved.files is None:
        return 0
    result, files = saved.result, saved.files
    print(result.report)
    best = (
        f", best validation mIoU {result.best_val_miou:.4f} (epoch {result.best_epoch})"
        if result.best_val_miou is not None
        else ""
    )
    print(f"{result.stop_reason} after {result.steps} steps in {result.elapsed_s:.0f}s{best}")
    print(f"adapter -> {files.tensors} + {files.adapter.name}; history -> {files.history}")
    return 0
