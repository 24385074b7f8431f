"""The image encoder in each precision and attention, side by side in one run: seconds per image, error of the
embedding, achieved GFLOPS as a fraction of a matmul's measured in the same run.

    python benchmarks/bench_precision.py                        # tiny, vit_t, vit_b (random weights), 2 threads
    python benchmarks/bench_precision.py --models tiny vit_b --threads 1 --runs 3 --json out.json

Per model, on one image at the encoder's input size (random weights except the bundled tiny model):

* ``reference_s``: segment-anything's own ``SamPredictor.set_image`` path -- the package's attention (explicit
  matmul + softmax), float32;
* ``float32_s``, ``bfloat16_s``, ``int8_s``: :class:`~infosam_core.inference.predictor.Predictor`'s encoder
  pass (fused attention) in each precision; ``auto`` is one of them (named in ``auto``);
* with ``--onnxruntime``: ``ort_float32_s`` and ``ort_int8_s``, the same encoder exported to ONNX and run by
  ONNX Runtime (the ``export`` extra) on the same threads, in float32 and dynamically quantized to int8
  (per-channel int8 weights, ``onnxruntime.quantization.quantize_dynamic``): the "other well-kept runtime" of
  issue 29, measured beside torch's paths;
* ``*_rel_err``: relative L2 distance of the embedding to the reference float32 one;
* ``*_gflops``: the encoder's FLOPs (``torch.utils.flop_counter``) per second, and ``matmul_gflops`` of a
  2048^2 matmul in float32 and bfloat16 on the same threads: how close the encoder runs to the limit.

Runs alternate between variants (A B C A B C ...), so that a load change on a shared machine hits all alike;
medians are printed. Ratios (``speedup_vs_reference``) are the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _report import add_json_argument, write_report
from torch.utils.flop_counter import FlopCounterMode

from infosam_core.inference.precision import (
    as_float32,
    auto_precision,
    cpu_features,
    encoder_context,
    quantized_copy,
)
from infosam_core.models.fused_attention import use_reference_attention
from infosam_core.models.registry import load_sam

PRECISIONS = ("float32", "bfloat16", "int8")


def matmul_gflops(dtype: torch.dtype, size: int = 2048, runs: int = 3) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def encoder_gflop(encoder: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder(x)
    return counter.get_total_flops() / 1e9


def onnxruntime_variants(
    encoder: torch.nn.Module, x: torch.Tensor, threads: int, folder: Path
) -> dict[str, Callable[[], torch.Tensor]]:
    """``encoder`` exported to ONNX in ``folder`` and run by ONNX Runtime's CPU provider on ``threads`` threads:
    in float32 and dynamically quantized (int8 weights per output channel, activations quantized per run)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path, int8_path = folder / "encoder.onnx", folder / "encoder.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about shapes read as Python numbers
        torch.onnx.export(encoder, (x,), str(float_path), opset_version=17, dynamo=False, input_names=["x"])
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # the quantizer logs a warning for each tensor it leaves in float
    try:
        quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root_logger.setLevel(level)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    feed = {"x": x.numpy()}

    def runner(path: Path) -> Callable[[], torch.Tensor]:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: torch.from_numpy(session.run(None, feed)[0])

    return {"ort_float32": runner(float_path), "ort_int8": runner(int8_path)}


def bench_model(model_type: str, runs: int, onnxruntime_threads: int | None = None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn
        sam = load_sam(model_type)
    size = sam.image_encoder.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(sam.image_encoder)
    use_reference_attention(reference)
    int8 = quantized_copy(sam).image_encoder

    def in_precision(encoder: torch.nn.Module, precision: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode(), encoder_context(precision, "cpu"):
                return as_float32(encoder(x))

        return run

    variants: dict[str, Callable[[], torch.Tensor]] = {
        "reference": in_precision(reference, "float32"),
        "float32": in_precision(sam.image_encoder, "float32"),
        "bfloat16": in_precision(sam.image_encoder, "bfloat16"),
        "int8": in_precision(int8, "int8"),
    }
    with contextlib.ExitStack() as stack:  # the ONNX files (hundreds of MB for ViT-B) live only while timed
        if onnxruntime_threads is not None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_precision_")))
            variants.update(onnxruntime_variants(sam.image_encoder, x, onnxruntime_threads, scratch))
        outputs = {name: run() for name, run in variants.items()}  # warm-up, and the embeddings compared
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(runs):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    gflop = encoder_gflop(sam.image_encoder, x)
    ref = outputs["reference"]
    row: dict = {"model": model_type, "input": size, "encoder_gflop": round(gflop, 1), "auto": auto_precision("cpu")}
    for name in variants:
        seconds = statistics.median(times[name])
        row[f"{name}_s"] = round(seconds, 4)
        row[f"{name}_gflops"] = round(gflop / seconds, 1)
        row[f"{name}_rel_err"] = float((outputs[name] - ref).norm() / ref.norm())
        row[f"{name}_speedup_vs_reference"] = round(statistics.median(times["reference"]) / seconds, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vit_t", "vit_b"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs", type=int, help="timed runs per variant (default: 1 for ViT-B/L/H, 7 for the small encoders)"
    )
    parser.add_argument(
        "--onnxruntime", action="store_true", help="also run the encoder with ONNX Runtime (float32, int8 dynamic)"
    )
    add_json_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = cpu_features()
    print(f"CPU: amx_bf16={features.amx_bf16} avx512_bf16={features.avx512_bf16} vnni={features.vnni}")
    mm = {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}
    print(f"matmul 2048^2 on {args.threads} threads: float32 {mm['float32']:.0f} GFLOPS, bfloat16 {mm['bfloat16']:.0f}")
    rows = []
    for model_type in args.models:
        runs = args.runs if args.runs is not None else (1 if model_type in ("vit_b", "vit_l", "vit_h") else 7)
        row = bench_model(model_type, runs, args.threads if args.onnxruntime else None)
        row["matmul_gflops"] = {k: round(v, 1) for k, v in mm.items()}
        best = max(mm.values())
        rows.append(row)
        print(f"{model_type} ({row['input']}^2, {row['encoder_gflop']} GFLOP, auto = {row['auto']}):")
        for name in ("reference", *PRECISIONS, *(("ort_float32", "ort_int8") if args.onnxruntime else ())):
            print(
                f"  {name:9s} {row[f'{name}_s']:8.3f} s  x{row[f'{name}_speedup_vs_reference']:5.2f} vs reference"
                f"  rel. err {row[f'{name}_rel_err']:.4f}  {row[f'{name}_gflops']:6.1f} GFLOPS"
                f" ({row[f'{name}_gflops'] / best:.0%} of the best matmul)"
            )
    write_report(args.json, "precision", rows)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
