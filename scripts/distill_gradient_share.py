"""How much of the student's gradient comes from InfoSAM's L_d, against the segmentation loss, while training.

    python scripts/distill_gradient_share.py --data data/nuclei/train --steps 0 8 24 40 --seed 1

Trains Adapter + InfoSAM at the issue-31 protocol's settings (batch 4, Adam 2e-4 cosine over ``--epochs``
epochs) for each ``--center`` setting and, at the listed optimiser steps, prints for the step's batch: the L2
norm over the student's trainable parameters of the gradient of the segmentation loss and of ``beta * L_d``,
their ratio, L_d (its floor is -log2(batch size): every relation vector orthogonal to the others, in the
teacher and in the student) and ``rel_cos_s`` (the student's relation vectors' mean cosine across the batch;
near 1 = collapsed). The batches and prompts are the training run's own (the trainer's seeded draws).
"""

from __future__ import annotations

import argparse

import torch

from infosam_core.data.datasets import load_folder_dataset
from infosam_core.models.registry import load_sam
from infosam_core.training.batches import epoch_order, flip_variants
from infosam_core.training.config import TrainConfig
from infosam_core.training.trainer import Trainer


def gradient_norm(loss: torch.Tensor, params: list[torch.Tensor], retain: bool) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def measure(trainer: Trainer, at: set[int]) -> list[dict[str, float]]:
    """Train ``trainer`` up to the largest step of ``at``, measuring at each step of ``at`` (before that step)."""
    config = trainer.config
    beta = float(config.distill_options.get("beta", 0.5))
    params = [p for n, p in trainer.student.named_parameters() if p.requires_grad and not n.startswith("distiller.")]
    variants = flip_variants(config.hflip, config.vflip)
    trainer.student.train()
    rows: list[dict[str, float]] = []
    step, last = 0, max(at)
    for epoch in range(1, config.epochs + 1):
        order = epoch_order(config.seed, epoch, len(trainer.prepared))
        for b in range(trainer.steps_per_epoch):
            batch = trainer._next_batch(order, b, variants, epoch)
            if step in at:
                losses = trainer.step_losses(batch)
                seg = gradient_norm(losses.seg, params, retain=True)
                distill = gradient_norm(beta * losses.terms["l_d"], params, retain=False)
                rows.append(
                    dict(
                        step=step,
                        grad_seg=seg,
                        grad_beta_l_d=distill,
                        ratio=distill / seg,
                        l_d=float(losses.terms["l_d"].detach()),
                        rel_cos_s=float(losses.diagnostics["rel_cos_s"].detach()),
                    )
                )
            if step >= last:
                return rows
            trainer.optimizer_step(batch, epoch)
            step += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a training folder (images/, masks/)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 8, 24, 40])
    parser.add_argument("--epochs", type=int, default=10, help="sets the cosine schedule's length (default: 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--center", choices=["false", "true", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = load_folder_dataset(args.data)
    base = load_sam(args.model)
    centers = {"false": [False], "true": [True], "both": [False, True]}[args.center]
    for center in centers:
        options = {"alpha": 1.0, "beta": 0.5, "center": center}
        config = TrainConfig(
            distill="infosam", distill_options=options, epochs=args.epochs, batch_size=4, seed=args.seed
        )
        for row in measure(Trainer(config, base, samples), set(args.steps)):
            print(
                f"center={str(center).lower():5} step {row['step']:3d}: |grad seg| {row['grad_seg']:.3g}  "
                f"|grad beta*L_d| {row['grad_beta_l_d']:.3g}  ratio {row['ratio']:.3f}  L_d {row['l_d']:.3f}  "
                f"rel_cos_s {row['rel_cos_s']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
