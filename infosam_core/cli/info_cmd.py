"""``infosam info``: a model's trainable parameters by part and its fingerprint, with a PEFT method (and a
distiller) applied as training would apply them -- like peft's ``print_trainable_parameters``.

    infosam info --model vit_b --peft convlora
    infosam info --model sam2.1_hiera_tiny --checkpoint sam2.1_hiera_tiny.pt --peft lora --peft-option rank=8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument, defer_arguments
from infosam_core.cli.common import parse_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="a model's (trainable) parameters by part and its fingerprint", description=__doc__
    )
    defer_arguments(parser, _add_arguments)  # the PEFT and distiller registries import torch: only for `info`
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.distill.registry import distiller_names
    from infosam_core.peft.registry import PEFT_METHODS

    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file for --model (default: random weights)")
    parser.add_argument("--peft", choices=list(PEFT_METHODS), help="apply this PEFT method first")
    parser.add_argument("--peft-option", action="append", default=[], metavar="KEY=VALUE", help="a PEFT option")
    parser.add_argument("--distill", choices=distiller_names(), default="none", help="attach this distiller too")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")


def run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from infosam_core.distill.base import set_distiller
    from infosam_core.distill.registry import make_distiller
    from infosam_core.models.checkpoints import CheckpointError
    from infosam_core.models.fingerprint import model_fingerprint
    from infosam_core.models.registry import load_sam
    from infosam_core.peft.registry import apply_peft, make_config
    from infosam_core.peft.state import format_parameter_parts, parameter_parts, peft_state_of

    options = dict(parse_option(o) for o in args.peft_option)
    if options and not args.peft:
        raise CLIError("--peft-option given without --peft")
    if args.peft:
        try:  # the options are checked before any model is loaded
            make_config(args.peft, options)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights without --checkpoint: fine for counting
            model = load_sam(args.model, args.checkpoint)
        fingerprint = model_fingerprint(model)
        if args.peft:
            apply_peft(model, args.peft, generator=torch.Generator().manual_seed(0), **options)
        distiller = make_distiller(args.distill, {}, model.prompt_encoder.embed_dim, torch.Generator())
        if distiller is not None:
            set_distiller(model, distiller)
    except (ValueError, TypeError, CheckpointError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    parts = parameter_parts(model)
    state = peft_state_of(model)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                    "fingerprint": fingerprint,
                    "peft": args.peft,
                    "peft_options": state.options if state is not None else None,
                    "distill": args.distill,
                    "parts": {k: vars(v) for k, v in parts.items()},
                },
                indent=2,
            )
        )
        return 0
    source = str(args.checkpoint) if args.checkpoint else "random weights"
    print(f"model {args.model} ({source}), fingerprint {fingerprint}")
    if state is not None:  # args.peft was applied
        opts = ", ".join(f"{k}={v}" for k, v in state.options.items())
        print(f"PEFT {args.peft} ({opts})" + (f" + distiller {args.distill}" if distiller is not None else ""))
    print(format_parameter_parts(parts))
    return 0
