"""`infosam export-model`: write the adapted model where other tools run it.

    infosam export-model --adapter runs/mine/adapter --format sam --out mine_sam.pth      # merged checkpoint
    infosam export-model --model vit_b --checkpoint sam_vit_b_01ec64.pth --adapter runs/b/adapter \
        --format onnx --out mine_onnx/                                                    # encoder + decoder
    infosam export-model --model sam2.1_hiera_tiny --checkpoint sam2.1_hiera_tiny.pt --adapter runs/s2/adapter \
        --format sam2 --out mine_sam2.pt

``sam`` / ``sam2``: one checkpoint in the base model's own format with the adapter merged (LoRA, BitFit,
decoder-only), for stock segment-anything / MobileSAM / micro-sam / sam2. ``onnx``: a folder with
``encoder.onnx``, ``decoder.onnx`` (segment-anything's ONNX interface) and ``onnx.json`` (the preprocessing),
checked with onnxruntime; every PEFT method but HQ-SAM and ConvLoRA. A format that does not apply to the
adapter's method is refused (exit 2) before the model is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infosam_core.cli import CLIError, add_model_argument, defer_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-model",
        help="write the adapted model as a SAM / SAM2 checkpoint or as ONNX files",
        description=__doc__.split("\n\n")[0],
    )
    defer_arguments(parser, _add_arguments)  # the export formats module imports torch: only for `export-model`
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from infosam_core.model_export.formats import FORMATS

    add_model_argument(parser)
    parser.add_argument("--checkpoint", type=Path, help="weights file (.pth or .safetensors) for --model")
    parser.add_argument(
        "--adapter", type=Path, help="adapter saved by `infosam train` or the app (without: the base model)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="sam: segment-anything checkpoint (SAM, tiny, MobileSAM); sam2: SAM2 checkpoint; onnx: folder of "
        "encoder.onnx + decoder.onnx + onnx.json",
    )
    parser.add_argument(
        "--multi-mask",
        action="store_true",
        help="onnx: the decoder returns all four masks (default: one, picked as segment-anything's export does)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file (sam, sam2) or folder (onnx)")


def run(args: argparse.Namespace) -> int:
    from infosam_core.adapter_files.checkpoint import read_peft_checkpoint_info
    from infosam_core.adapter_files.loading import check_adapter_file, load_model_with_adapter
    from infosam_core.model_export.formats import ONNX_FORMAT, check_format, precheck_format

    if args.format == ONNX_FORMAT and args.out.is_file():
        raise CLIError(f"--out {args.out}: ONNX export writes a folder; this is a file")
    if args.format != ONNX_FORMAT and args.out.is_dir():
        raise CLIError(f"--out {args.out}: is a folder; give the checkpoint's file name (e.g. model.pth)")
    try:
        method = "none"
        if args.adapter is not None:
            check_adapter_file(args.adapter, args.model, args.checkpoint)
            method = str(read_peft_checkpoint_info(args.adapter)["method"])
        precheck_format(method, args.model, args.format)
        model = load_model_with_adapter(args.model, args.checkpoint, args.adapter, device="cpu")
        check_format(model, args.format)
    except ValueError as exc:  # ExportFormatError, CheckpointError, PeftCheckpointError: one line each
        raise CLIError(str(exc)) from None
    from infosam_core.model_export.onnx_files import OnnxCheckError
    from infosam_core.model_export.writer import export_model

    try:
        result = export_model(model, args.format, args.out, single_mask=not args.multi_mask)
    except (ValueError, ImportError, OnnxCheckError) as exc:  # ExportFormatError, CheckpointError: one line each
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    print(result.summary)
    return 0
