"""Prompted evaluation of a SAM (base or adapted) on a binary segmentation dataset.

Per image: one seeded prompt drawn from the ground truth (:func:`infosam_core.data.prompt_sampling.eval_prompt`:
``box`` = one jittered box, the paper's protocol; ``point``; ``points5`` = 2 foreground + 3 background
points, the roads protocol), a single-mask prediction at the image's original size (segment-anything's
``SamPredictor`` for segment-anything models, the reference protocol bit for bit; other families, e.g. SAM2,
through :class:`~infosam_core.inference.predictor.Predictor` and their prediction backend, as
``SAM2ImagePredictor`` predicts; HQ-SAM as sam-hq's ``SamPredictor``), and the metrics of ``sigmoid(logits)`` against the mask. The prompt's generator is
seeded by ``(seed, crc32(name))``, so an image gets the same prompt whatever the dataset's order or subset.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import expit

from infosam_core.data.datasets import SegmentationSample
from infosam_core.data.prompt_sampling import PROTOCOLS, eval_prompt
from infosam_core.evaluation.metrics import METRICS, MetricSummary
from infosam_core.inference.backends import backend_for
from infosam_core.inference.precision import resolve_precision
from infosam_core.inference.predictor import Predictor
from infosam_core.models.decoder_features import decoder_encoder_blocks
from infosam_core.models.protocols import SamLike
from infosam_core.models.sam import SamBackend

if TYPE_CHECKING:
    from segment_anything import SamPredictor


@dataclass
class EvalResult:
    """Per-image metric rows (``image`` + one column per metric), their means, and what was skipped."""

    prompt: str
    seed: int
    rows: list[dict[str, Any]]
    mean: dict[str, float]
    skipped: list[str] = field(default_factory=list)  # images with an empty mask (no prompt possible)

    @property
    def miou(self) -> float:
        return self.mean.get("iou", float("nan"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "n_images": len(self.rows),
            "mean": self.mean,
            "skipped": self.skipped,
            "per_image": self.rows,
        }

    def csv_text(self) -> str:
        """Per-image rows then a ``mean`` row, as CSV."""
        names = list(self.mean)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", *names])
        for row in self.rows:
            writer.writerow([row["image"], *(f"{row[n]:.6f}" for n in names)])
        writer.writerow(["mean", *(f"{self.mean[n]:.6f}" for n in names)])
        return buf.getvalue()

    def table(self) -> str:
        """A plain-text table of the means."""
        width = max([len(n) for n in self.mean] + [6])
        lines = [f"{'metric':<{width}}  mean over {len(self.rows)} images (prompt: {self.prompt}, seed {self.seed})"]
        lines += [f"{n:<{width}}  {v:.4f}" for n, v in self.mean.items()]
        if self.skipped:
            lines.append(f"skipped (empty mask): {len(self.skipped)}")
        return "\n".join(lines)


def prompt_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of an image's evaluation prompt: depends on the seed and the image name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


@torch.no_grad()
def evaluate(
    sam: SamLike,
    samples: list[SegmentationSample],
    prompt: str = "box",
    seed: int = 0,
    metrics: tuple[str, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
    precision: str = "float32",
) -> EvalResult:
    """Evaluate ``sam`` (left in eval mode) on ``samples`` with one ``prompt`` per image.

    ``metrics``: names from :data:`infosam_core.evaluation.metrics.METRICS` (all by default). ``progress(done, total)``
    is called after each image. ``precision``: of the image encoder (``inference.precision``; float32, the
    reference, by default).
    """
    if prompt not in PROTOCOLS:
        raise ValueError(f"unknown prompt {prompt!r}; choose one of {', '.join(PROTOCOLS)}")
    names = tuple(METRICS) if metrics is None else tuple(metrics)
    summary = MetricSummary(names)
    skipped: list[str] = []
    was_training = sam.training
    sam.eval()
    predictor = _predictor(sam, precision)
    try:
        for i, sample in enumerate(samples):
            if not sample.mask.any():
                skipped.append(sample.name)
            else:
                kwargs = eval_prompt(sample.mask, prompt_rng(seed, sample.name), prompt)
                predictor.set_image(sample.image)
                logits, _, _ = predictor.predict(**kwargs, multimask_output=False, return_logits=True)
                prob = expit(logits[0].astype(np.float64))
                summary.add(sample.name, prob, sample.mask)
            if progress is not None:
                progress(i + 1, len(samples))
    finally:
        sam.train(was_training)
    return EvalResult(prompt=prompt, seed=seed, rows=summary.rows, mean=summary.mean, skipped=skipped)


def _predictor(sam: SamLike, precision: str = "float32") -> SamPredictor | Predictor:
    """segment-anything's own predictor where its backend applies; otherwise the project's :class:`Predictor`
    (no embedding cache: every image is embedded once) with the model family's backend -- also for a decoder
    that reads encoder blocks besides the embedding (HQ-SAM's: sam-hq's single mask per prompt), and for an
    encoder precision other than float32."""
    if resolve_precision(precision, sam.device) != "float32":
        return Predictor(sam, cache_size=0, use_interactive_decoder=False, precision=precision)
    if isinstance(backend_for(sam), SamBackend) and not decoder_encoder_blocks(sam.mask_decoder):
        from segment_anything import SamPredictor  # imports torchvision (2.3 s): only where it is the reference

        return SamPredictor(sam)
    return Predictor(sam, cache_size=0, use_interactive_decoder=False)


def save_eval(result: EvalResult, out_dir: str | Path, stem: str = "metrics") -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (per image + mean) and ``<stem>.json`` into ``out_dir``, atomically."""
    from infosam_core.io.atomic import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    csv_path = write_text_atomic(out_dir / f"{stem}.csv", result.csv_text())
    json_path = write_json_atomic(out_dir / f"{stem}.json", result.to_dict())
    return csv_path, json_path
