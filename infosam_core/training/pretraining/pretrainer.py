"""Pretraining a SAM from scratch on the synthetic data engine, with SAM's recipe (how ``tiny`` is made).

Each step: ``images_per_step`` synthetic scenes, ``masks_per_image`` objects from each. Per scene, the
first prompt is (with p = 0.5) a noisy box for every chosen object, else one point drawn uniformly from
each object. Then ``corrective_clicks`` rounds as in SAM's interactive training: a new point is drawn from
the error region of the previous prediction (positive where the object was missed, negative where the
mask spilled over), the previous low-res logits are fed back as the mask prompt (with p = 0.5), and the
model predicts again. Loss per mask: class-balanced BCE + dice + MSE(predicted IoU, actual IoU). SAM uses
20 x focal instead of the BCE term; trained from scratch, focal and plain BCE both kept the model predicting
empty masks for hundreds of steps (objects cover ~1% of the pixels, the logits saturate and dice's gradient
vanishes), so balanced BCE is the default (``pixel_loss="focal"`` restores SAM's term). Balanced BCE biases
the logits, though: a pixel of an object covering 2 % of the image weighs 49 times a background pixel, so
the logit at which "object" and "background" are equally likely sits near +4 instead of 0 and masks
thresholded at 0 spill over (the phase-5 tiny model's box masks: precision 0.80, recall 0.97). Continuing a
model that has learnt to find objects, ``pixel_loss="bce"`` (every pixel alike) removes that bias. For the
ambiguous single-point prompt only the best of the three multimask outputs is back-propagated (SAM's rule), but the
IoU head learns the IoU of all three (SAM 2's ``supervise_all_iou``): it is what picks the mask at inference.
Weights are averaged over steps (EMA, ``ema_decay``) and the average is saved beside the last step's weights.

Some scenes are cropped to a random aspect and padded like ``Sam.preprocess`` pads, so the model sees the
padding it meets at inference on non-square images.

Speed: all prompts of a step go through the mask decoder together (one call for the box-prompted objects,
one for the point-prompted ones, one per corrective round), each object on its own image's embedding
(:func:`decode_prompts`); scenes can be drawn in worker processes (``data_workers``) while the model trains,
on the CPU or a GPU (``device``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from infosam_core.models.batched_decoder import decode_all
from infosam_core.models.checkpoints import save_sam_weights
from infosam_core.models.registry import load_sam
from infosam_core.models.sam import build_sam
from infosam_core.training.pretraining.config import PretrainConfig
from infosam_core.training.pretraining.losses import check_pixel_loss, mask_losses
from infosam_core.training.pretraining.prompt_sampler import PromptBatch, corrective_point, noisy_boxes, sample_points
from infosam_core.training.pretraining.scenes import SceneStream
from infosam_core.training.schedules import cosine_anneal


def decode_prompts(sam: Sam, embeddings: torch.Tensor, prompts: PromptBatch, mask_input: torch.Tensor | None):
    """All four mask outputs for N prompts, prompt n on image embedding ``embeddings[n]`` ((N, C, h, w)):
    low-res logits (N, 4, 4h, 4w) and IoU predictions (N, 4), so the objects of a whole step go through the
    decoder in one call (segment-anything's decoder repeats *one* image's embedding for every prompt)."""
    points = (prompts.coords, prompts.labels) if prompts.coords is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=prompts.boxes, masks=mask_input)
    return decode_all(sam.mask_decoder, embeddings, sam.prompt_encoder.get_dense_pe(), sparse, dense)


@dataclass
class _FirstPrediction:
    """The first prompt's prediction for K objects, kept for the corrective clicks that follow it."""

    prompts: PromptBatch
    chosen: torch.Tensor  # (K,) which decoder output was trained (0 for a box, 1-3 for a point)
    low: torch.Tensor  # (K, M, h, w) low-resolution mask logits
    logits: torch.Tensor  # (K, M, S, S) upsampled mask logits
    loss: torch.Tensor  # (K,) segmentation + IoU-head loss
    actual_iou: torch.Tensor  # (K, M') IoU of the trained output(s) with the ground truth, detached

    def select(self, rows: torch.Tensor) -> _FirstPrediction:
        return _FirstPrediction(
            self.prompts.select(rows),
            self.chosen[rows],
            self.low[rows],
            self.logits[rows],
            self.loss[rows],
            self.actual_iou[rows],
        )


class Pretrainer:
    def __init__(self, config: PretrainConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {config.device!r}: torch {torch.__version__} sees no CUDA GPU here; use --device cpu"
            )
        if config.data_workers < 0:
            raise ValueError(f"data_workers must be 0 or more, not {config.data_workers}")
        check_pixel_loss(config.pixel_loss)
        if not 0.0 <= config.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = no weight averaging), not {config.ema_decay}")
        torch.manual_seed(config.seed)
        # segment-anything's class (SAM model types only): decode_prompts runs its mask decoder (batched_decoder)
        model = (
            load_sam(config.model_type, config.init_weights) if config.init_weights else build_sam(config.model_type)
        )
        self.sam = cast(Sam, model).train()
        self.sam.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.rng = np.random.default_rng(config.seed)  # prompt choices (scenes come from their own stream)
        self.gen = torch.Generator().manual_seed(config.seed)
        self._scenes: Iterator[Any] | None = None  # (image, (h, w), masks) per scene
        self._data_wait_s = 0.0  # time spent waiting for scenes since the last log line
        self.optimizer = torch.optim.AdamW(self.sam.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = (
            AveragedModel(self.sam, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay > 0
            else None
        )
        self.step = 0
        self.history: list[dict] = []
        self._start: float | None = None
        self._elapsed_before = 0.0

    # -- schedule / checkpoints ------------------------------------------------------------------------
    def progress(self, step: int) -> float:
        """Fraction of the run done: by steps, or by wall time when a time budget is set (whichever is
        further), so the cosine schedule anneals fully by the deadline on a busy or slow machine."""
        c = self.config
        by_steps = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        if c.time_budget_s is None or self._start is None:
            return by_steps
        return max(by_steps, (self._elapsed_before + time.time() - self._start) / c.time_budget_s)

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        t = self.progress(step)
        return cosine_anneal(t, c.lr, c.lr * c.min_lr_ratio)

    def save(self) -> None:
        out = Path(self.config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        elapsed = time.time() - self._start if self._start is not None else 0.0
        state = {
            "model": self.sam.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed_s": self._elapsed_before + elapsed,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        torch.save(state, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(out / "last.pt")
        save_sam_weights(self.sam, self.weights_path(), metadata={"steps": self.step})
        if self.ema is not None:
            metadata = {"steps": self.step, "ema_decay": self.config.ema_decay}
            save_sam_weights(self.ema.module, self.ema_weights_path(), metadata=metadata)
        (out / "history.json").write_text(json.dumps(self.history))

    def weights_path(self) -> Path:
        return Path(self.config.out_dir) / f"sam_{self.config.model_type}.safetensors"

    def ema_weights_path(self) -> Path:
        return Path(self.config.out_dir) / f"sam_{self.config.model_type}_ema.safetensors"

    def try_resume(self) -> None:
        last = Path(self.config.out_dir) / "last.pt"
        if not (self.config.resume and last.exists()):
            return
        state = torch.load(last, map_location="cpu", weights_only=True)
        self.sam.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        hist = Path(self.config.out_dir) / "history.json"
        self.history = json.loads(hist.read_text()) if hist.exists() else []
        # the time budget counts the earlier runs
        logged = self.history[-1]["elapsed_s"] if self.history else 0.0
        self._elapsed_before = float(state.get("elapsed_s", logged))
        # a fresh data stream after resuming (the old one is not replayed)
        self.rng = np.random.default_rng([self.config.seed, self.step])
        self.gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        self._scenes = None
        self.log(f"resumed from {last} at step {self.step}")

    # -- one step --------------------------------------------------------------------------------------
    def scenes(self):
        """The scene stream, from ``data_workers`` processes (or this one), started at the current step."""
        if self._scenes is None:
            c = self.config
            stream = SceneStream(c.scene, c.masks_per_image, c.p_pad, c.seed, self.step)
            if c.data_workers > 0:
                loader = DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=c.data_workers,
                    prefetch_factor=8,
                    persistent_workers=True,
                )
                self._scenes = iter(loader)
            else:
                self._scenes = iter(stream)
        return self._scenes

    def make_batch(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``images_per_step`` scenes: normalised, padded images (B, 3, S, S) on the device and, per scene,
        its objects' masks (K_b, S, S) bool on the CPU."""
        c = self.config
        waited = time.perf_counter()
        samples = [next(self.scenes()) for _ in range(c.images_per_step)]
        self._data_wait_s += time.perf_counter() - waited
        images = torch.stack([image for image, _, _ in samples]).to(self.device, non_blocking=True).float()
        x = (images - self.sam.pixel_mean) / self.sam.pixel_std
        s = c.scene.image_size
        valid = torch.zeros(len(samples), 1, s, s, dtype=torch.bool)
        for i, (_, (h, w), _) in enumerate(samples):
            valid[i, :, :h, :w] = True
        x = x * valid.to(self.device)  # padding is 0 after normalisation, as in Sam.preprocess
        return x, [target for _, _, target in samples]

    def _first_and_corrective(
        self, embeddings: torch.Tensor, gt: torch.Tensor, use_box: bool, corrective: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """One prompt kind for objects ``gt`` (K, S, S) on ``embeddings`` (K, C, h, w): the first prediction,
        then ``corrective_clicks`` rounds for the objects flagged in ``corrective`` (K,) bool.
        Returns per-mask losses, IoU after the first prompt, IoU after the last corrective click.
        Prompts are drawn on the model's device (from the CPU generator ``self.gen``)."""
        gt = gt.to(self.device)
        first = self._first_prediction(embeddings, gt, use_box)
        iou_first = first.actual_iou.max(1).values
        sub = corrective.nonzero()[:, 0]
        if self.config.corrective_clicks == 0 or sub.numel() == 0:
            return [first.loss], iou_first, None
        sub = sub.to(self.device)
        losses, iou_last = self._corrective_rounds(embeddings[sub], gt[sub], first.select(sub))
        return [first.loss, *losses], iou_first, iou_last

    def _first_prediction(self, embeddings: torch.Tensor, gt: torch.Tensor, use_box: bool) -> _FirstPrediction:
        """The first prompt per object: a noisy box (single mask) or one point (best of three masks)."""
        c = self.config
        s = c.scene.image_size
        gt_f = gt.float()
        k = gt.shape[0]
        if use_box:
            prompts = PromptBatch(None, None, noisy_boxes(gt, self.gen))
        else:
            coords, _ = sample_points(gt, self.gen)
            prompts = PromptBatch(coords[:, None], torch.ones(k, 1, dtype=torch.long, device=self.device), None)
        low, iou_pred = decode_prompts(self.sam, embeddings, prompts, None)
        logits = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)
        if use_box:
            seg, iou_loss, actual = mask_losses(logits[:, :1], iou_pred[:, :1], gt_f, c.pixel_loss)
            chosen = torch.zeros(k, dtype=torch.long, device=self.device)
            loss = seg[:, 0] + iou_loss[:, 0]
        else:  # ambiguous point: the best of the three multimask outputs is trained (SAM's rule)
            seg, iou_loss, actual = mask_losses(logits[:, 1:], iou_pred[:, 1:], gt_f, c.pixel_loss)
            best = seg.detach().argmin(1)
            chosen = best + 1
            # the IoU head ranks the three masks at inference, so it learns every one's IoU (SAM 2's
            # supervise_all_iou); trained on the best one alone it rated the other two 0.17 off on average
            iou_term = iou_loss.mean(1) if c.supervise_all_iou else iou_loss.gather(1, best[:, None])[:, 0]
            loss = seg.gather(1, best[:, None])[:, 0] + iou_term
        return _FirstPrediction(prompts, chosen, low, logits, loss, actual.detach())

    def _corrective_rounds(
        self, embeddings: torch.Tensor, gt: torch.Tensor, first: _FirstPrediction
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``corrective_clicks`` rounds on the objects of ``first``: a click on the largest error of the previous
        mask (and, half the time, that mask's logits as the mask prompt). Returns each round's per-mask loss and
        the IoU after the last round."""
        c = self.config
        s = c.scene.image_size
        gt_f = gt.float()
        prompts, chosen, low, logits = first.prompts, first.chosen, first.low, first.logits
        rows = torch.arange(gt.shape[0], device=self.device)
        losses = []
        for _ in range(c.corrective_clicks):
            prev_low = low[rows, chosen].detach()[:, None]
            pred = logits[rows, chosen].detach() > 0
            coords, labels = corrective_point(pred, gt, self.gen)
            prompts = prompts.with_point(coords, labels)
            mask_input = prev_low if self.rng.random() < 0.5 else None
            low, iou_pred = decode_prompts(self.sam, embeddings, prompts, mask_input)
            low = low[:, :1]
            logits = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)
            seg, iou_loss, actual = mask_losses(logits, iou_pred[:, :1], gt_f, c.pixel_loss)
            losses.append(seg[:, 0] + iou_loss[:, 0])
            chosen = torch.zeros_like(chosen)
        return losses, actual.detach()[:, 0]

    def train_step(self) -> dict:
        c = self.config
        x, targets = self.make_batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        embeddings = self.sam.image_encoder(x)
        # per scene: box or point prompt (p_box), corrective clicks or not (p_corrective)
        use_box = torch.from_numpy(self.rng.random(len(targets)) < c.p_box)
        corrective = torch.from_numpy(self.rng.random(len(targets)) < c.p_corrective)
        owner = torch.cat([torch.full((t.shape[0],), b, dtype=torch.long) for b, t in enumerate(targets)])
        gt = torch.cat(targets)
        losses, ious_first, ious_last = [], [], []
        for box_kind in (True, False):
            idx = (use_box[owner] == box_kind).nonzero()[:, 0]
            if idx.numel() == 0:
                continue
            emb = embeddings[owner[idx].to(self.device)]
            group_losses, first, last = self._first_and_corrective(emb, gt[idx], box_kind, corrective[owner[idx]])
            losses += group_losses
            ious_first.append(first)
            if last is not None:
                ious_last.append(last)
        total = torch.cat(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.sam.parameters(), c.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.sam)
        self.step += 1
        return {
            "step": self.step,
            "loss": float(total.detach()),
            "iou_first": float(torch.cat(ious_first).mean()),
            "iou_corrected": float(torch.cat(ious_last).mean()) if ious_last else float("nan"),
            "lr": self.lr_at(self.step - 1),
        }

    def run(self) -> Path:
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.try_resume()
        Path(c.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(c.out_dir) / "config.json").write_text(json.dumps(asdict(c), default=str, indent=2))
        start = self._start = time.time()
        window: list[dict] = []
        window_start = start
        self._data_wait_s = 0.0
        try:
            while self.step < c.steps:
                if c.time_budget_s is not None and self._elapsed_before + time.time() - start > c.time_budget_s:
                    self.log(f"time budget reached at step {self.step}")
                    break
                stats = self.train_step()
                if not math.isfinite(stats["loss"]):
                    raise FloatingPointError(f"non-finite loss at step {self.step}; lower --lr and resume")
                window.append(stats)
                if self.step % c.log_every == 0 or self.step == c.steps:
                    keys = ("loss", "iou_first", "iou_corrected")
                    mean = {k: float(np.nanmean([w[k] for w in window])) for k in keys}
                    elapsed = self._elapsed_before + time.time() - start
                    # share of the wall time spent waiting for scenes: near 1 means the data engine is the limit
                    data_share = self._data_wait_s / max(time.time() - window_start, 1e-9)
                    mean.update(
                        step=self.step, lr=stats["lr"], elapsed_s=round(elapsed, 1), data_wait=round(data_share, 3)
                    )
                    self.history.append(mean)
                    self.log(
                        f"step {self.step}/{c.steps} loss {mean['loss']:.4f} IoU first {mean['iou_first']:.3f} "
                        f"corrected {mean['iou_corrected']:.3f} lr {stats['lr']:.2e} {elapsed:.0f}s "
                        f"(scenes {data_share:.0%} of the time)"
                    )
                    window = []
                    window_start = time.time()
                    self._data_wait_s = 0.0
                if self.step % c.checkpoint_every == 0:
                    self.save()
        finally:
            self._scenes = None  # lets the scene workers shut down
        self.save()
        return self.ema_weights_path() if self.ema is not None else self.weights_path()
