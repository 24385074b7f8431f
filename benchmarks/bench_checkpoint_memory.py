"""Activation memory of the student's image encoder with and without activation checkpointing.

    python benchmarks/bench_checkpoint_memory.py --model vit_b --batch 1 --threads 1 --json benchmarks/results/checkpoint_memory.json

Counts the bytes of the tensors autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``)
during one forward pass of the trainable encoder blocks (after the frozen, cached prefix) and the neck, for
the ``adapter`` method on a random-init model -- the memory that grows with batch size and resolution and
that ``TrainConfig(grad_checkpoint=True)`` / ``infosam train --grad-checkpoint`` avoids. Device independent
(the same tensors are saved on CPU and CUDA), so it runs on a CPU; also prints the forward+backward time.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _report import add_json_argument, write_report


def measure(model: str, batch: int, checkpoint: bool) -> tuple[float, float]:
    from infosam_core.models.sam import build_sam, encoder_prefix, encoder_suffix, frozen_prefix_depth
    from infosam_core.peft.registry import apply_peft

    torch.manual_seed(0)
    sam = build_sam(model)
    apply_peft(sam, "adapter")
    encoder = sam.image_encoder
    depth = frozen_prefix_depth(encoder)
    x = torch.randn(batch, 3, encoder.img_size, encoder.img_size)
    with torch.no_grad():
        h = encoder_prefix(encoder, x, depth)  # cached during training: no activations kept
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()  # a storage saved twice counts once
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = encoder_suffix(encoder, h, depth, checkpoint=checkpoint)
    out.float().pow(2).mean().backward()
    return sum(seen.values()) / 2**20, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {flag: measure(args.model, args.batch, flag) for flag in (False, True)}
    for flag, (mb, s) in rows.items():
        print(
            f"{args.model} batch {args.batch} adapter, checkpointing {'on ' if flag else 'off'}: "
            f"{mb:8.0f} MB saved for backward, forward+backward {s:.1f} s"
        )
    off, on = rows[False], rows[True]
    print(
        f"checkpointing: {on[0] / off[0]:.3f}x activation memory ({off[0] / args.batch:.0f} -> "
        f"{on[0] / args.batch:.0f} MB per image), {on[1] / off[1]:.2f}x encoder time"
    )
    figures = {
        "model": args.model,
        "peft": "adapter",
        "batch": args.batch,
        "saved_for_backward_mb": {"off": off[0], "on": on[0]},
        "per_image_mb": {"off": off[0] / args.batch, "on": on[0] / args.batch},
        "forward_backward_s": {"off": off[1], "on": on[1]},
        "memory_ratio": on[0] / off[0],
        "time_ratio": on[1] / off[1],
    }
    write_report(args.json, "checkpoint_memory", figures, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
