"""Adapting SAM to a dataset: PEFT, optionally with InfoSAM distillation from the frozen pre-trained model.

``train(config, base_sam, samples) -> TrainResult``. The student is a deep copy of ``base_sam`` with
``config.peft`` applied; the teacher is ``base_sam`` itself, frozen and only ever run under ``no_grad`` (it is
copied only when it has to move to another device, so the caller's model is never modified). Per step:

* each sample gets the paper's prompt: with probability ``p_box`` a jittered box, else one foreground
  point; the decoder gives the single-mask output; ``structure_loss`` on logits upsampled to the model's
  input size (its 31 px edge-weight window at 1024 px is scaled with the input size: 9 px for tiny);
* with ``distill="infosam"``: + ``lam * (alpha * L_r + beta * L_d)``, where the teacher's image embedding
  and mask token (``hs[:, 1]``) and the student's go through one shared :class:`RelationModule`. L_r's
  inputs are the detached teacher's, so its gradient reaches only the relation module; L_d trains the
  student and the relation module.

Efficiency (:class:`~infosam_core.train_data.EncoderCache`): the teacher's image embeddings are computed
once per (image, flip variant) and cached (the reference code re-ran the teacher encoder every step;
samples sharing one image array, e.g. several objects of one image, share the entry);
flips are applied to the image, so each variant is its own cache entry (flipping embeddings instead would
not be exact: SAM's absolute position embedding and bottom/right padding are not flip-symmetric). The
student's frozen leading blocks (blocks 0-1 with ``adapter``) are cached the same way, so a step runs
only the student's trainable part of the encoder, once. With a fully frozen encoder (``decoder``) the
student's embeddings are the teacher's. ``teacher_cache=False`` recomputes both encoders in full every
step (benchmarks only); ``teacher_cache_max_mb`` bounds the cache (entries beyond it are recomputed).

Optimisation: Adam (no weight decay), cosine from ``lr`` to ``min_lr`` over all planned steps, batches of
``batch_size`` with the last partial batch dropped. Everything random comes from ``seed`` through local
generators (no global RNG state), so training can run in a worker thread.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from infosam_core.data import SegmentationSample
from infosam_core.distill import (
    RelationModule,
    decode,
    mask_token,
    relation_compression_loss,
    relation_distillation_loss,
)
from infosam_core.losses import structure_loss
from infosam_core.peft import PeftReport, apply_peft
from infosam_core.train_data import Batch, EncoderCache, encode_prompts, flip_variants, make_batch, prepare_samples

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setup for all datasets (roads: 20 epochs).
    "paper": dict(peft="adapter", distill="infosam", lam=1.0, alpha=1.0, beta=0.5, epochs=10, batch_size=4,
                  lr=2e-4, min_lr=2e-5, seed=42),
}


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged). ``result`` holds the model with the last good weights;
    ``reason`` is what went wrong without the advice on what to do (the message has both)."""

    def __init__(self, message: str, result: "TrainResult | None" = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.reason = reason or message


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the paper's (see :data:`PRESETS`)."""

    peft: str = "adapter"
    peft_options: dict[str, Any] = field(default_factory=dict)
    distill: str = "infosam"  # "infosam" | "none"
    lam: float = 1.0
    alpha: float = 1.0  # weight of L_r
    beta: float = 0.5  # weight of L_d
    epochs: int = 10
    batch_size: int = 4
    lr: float = 2e-4
    min_lr: float = 2e-5
    grad_clip: float | None = None
    seed: int = 42
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    p_box: float = 0.5
    box_jitter: int = 5
    hflip: bool = True
    vflip: bool = False
    time_budget_s: float | None = None
    max_steps: int | None = None
    teacher_cache: bool = True
    teacher_cache_max_mb: float = 4096.0
    grad_checkpoint: bool = False  # recompute the student's encoder blocks in backward: less memory, ~1/3 slower
    init_adapter: str | None = None  # continue from a saved adapter (adapter_io.save_adapter)
    val_prompt: str = "box"
    keep_best: bool = True  # with validation samples, end with the best epoch's weights

    def validate(self) -> None:
        if self.distill not in ("infosam", "none"):
            raise ValueError(f"distill must be 'infosam' or 'none', got {self.distill!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if self.distill == "infosam" and self.batch_size < 2:
            raise ValueError(
                "InfoSAM needs batch_size >= 2: its losses compare the samples of a batch (B x B Gram matrices) "
                "and are exactly 0 for a single sample. Use a batch size of 2 or more (the paper uses 4), "
                "or distill='none'."
            )
        if not 0 <= self.p_box <= 1:
            raise ValueError(f"p_box must be in [0, 1], got {self.p_box}")
        if not (math.isfinite(self.lr) and math.isfinite(self.min_lr)) or self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")


@dataclass
class TrainProgress:
    """Reported after every step. After an epoch's validation, one more report for the same step carries
    ``val_miou`` (and the epoch's mean losses)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    seg_loss: float
    l_r: float
    l_d: float
    lr: float
    elapsed_s: float
    eta_s: float
    val_miou: float | None = None


@dataclass
class TrainResult:
    """The adapted model (eval mode; ``model.peft_state`` and, with InfoSAM, ``model.relation``) and how it went."""

    model: Sam
    report: PeftReport
    config: TrainConfig
    history: list[dict[str, Any]]  # one entry per epoch (mean losses, lr, validation mIoU)
    steps: int
    cancelled: bool = False
    stop_reason: str = "completed"  # completed | cancelled | time_budget | max_steps | error
    best_val_miou: float | None = None
    best_epoch: int | None = None
    elapsed_s: float = 0.0
    teacher_encoder_images: int = 0  # images the teacher's encoder ran on (once per image and flip variant)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (stored in adapter files and the CLI's history file)."""
        return {"config": asdict(self.config), "steps": self.steps, "stop_reason": self.stop_reason,
                "cancelled": self.cancelled, "best_val_miou": self.best_val_miou, "best_epoch": self.best_epoch,
                "elapsed_s": round(self.elapsed_s, 3), "teacher_encoder_images": self.teacher_encoder_images,
                "history": self.history, "peft": self.report.to_dict()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_lr(step: int, total: int, lr: float, min_lr: float) -> float:
    """CosineAnnealingLR(T_max=total, eta_min=min_lr) at 0-based ``step``."""
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def trained_state(model: Sam) -> dict[str, torch.Tensor]:
    """The tensors training changes: the PEFT state's trainable parameters and the relation module."""
    names = set(model.peft_state.trainable)
    return {k: v for k, v in model.state_dict().items() if k in names or k.startswith("relation.")}


def _build_student(config: TrainConfig, base_sam: Sam, init_model: Sam | None, device: torch.device,
                   generator: torch.Generator) -> Sam:
    from infosam_core.adapter_io import load_adapter
    from infosam_core.models import model_fingerprint

    if init_model is not None or config.init_adapter:
        student = copy.deepcopy(init_model) if init_model is not None else load_adapter(base_sam, config.init_adapter)
        state = getattr(student, "peft_state", None)
        if state is None or state.method != config.peft:
            raise ValueError(
                f"cannot continue: the given model/adapter uses PEFT {state.method if state else 'none'!r}, "
                f"but this run asks for {config.peft!r}. Use the same method to continue training."
            )
        if init_model is not None and state.base_fingerprint != model_fingerprint(base_sam):
            raise ValueError("cannot continue: the given model was adapted from another base model")
        student.to(device)
    else:
        student = copy.deepcopy(base_sam).to(device)
        apply_peft(student, config.peft, generator=generator, **config.peft_options)
    if config.distill == "infosam" and not isinstance(getattr(student, "relation", None), RelationModule):
        student.relation = RelationModule(student.prompt_encoder.embed_dim, generator).to(device)
    return student


def train(
    config: TrainConfig,
    base_sam: Sam,
    samples: list[SegmentationSample],
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    val_samples: list[SegmentationSample] | None = None,
    init_model: Sam | None = None,
) -> TrainResult:
    """Train a PEFT (+ InfoSAM) student of ``base_sam`` on ``samples``; see the module docstring.

    ``progress`` gets a :class:`TrainProgress` after every step; ``should_stop()`` is polled before every
    step (True -> stop, ``cancelled=True``). With ``val_samples``, the mean IoU (box prompts) is measured
    after every epoch and, with ``keep_best``, the best epoch's weights are returned (also when cancelled).
    ``init_model`` (a previous ``TrainResult.model``) or ``config.init_adapter`` continue an earlier run.
    Raises ValueError for unusable settings/data and :class:`TrainingError` when the loss or gradients stop
    being finite (``error.result`` holds the last good weights: a bad step is never applied).
    """
    from infosam_core.evaluate import evaluate

    config.validate()
    device = resolve_device(config.device)
    use_bf16 = config.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    infosam = config.distill == "infosam"

    prepared = prepare_samples(samples, base_sam.image_encoder.img_size)
    if len(prepared) < config.batch_size:
        raise ValueError(f"need at least batch_size={config.batch_size} samples with a non-empty mask, got {len(prepared)}")
    steps_per_epoch = len(prepared) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    student = _build_student(config, base_sam, init_model, device, generator)
    report = PeftReport.from_model(student)
    teacher = student  # without distillation only the frozen parts are shared, and the student has them
    if infosam:
        teacher = base_sam if next(base_sam.parameters()).device == device else copy.deepcopy(base_sam).to(device)
    cache = EncoderCache(teacher, student, infosam, config.teacher_cache, config.teacher_cache_max_mb * 2**20,
                         checkpoint=config.grad_checkpoint)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=0.0)
    variants = flip_variants(config.hflip, config.vflip)
    image_pe = student.prompt_encoder.get_dense_pe()
    teacher_pe = teacher.prompt_encoder.get_dense_pe()
    size = student.image_encoder.img_size
    edge_kernel = max(3, round(31 * size / 1024) | 1)  # the paper's 31 px edge band at 1024 px, scaled (tiny: 9)

    def step_losses(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            f_t, f_s = cache.embeddings(batch)
            sparse, dense = encode_prompts(student.prompt_encoder, batch)
            logits, _, tok_s = decode(student.mask_decoder, f_s, image_pe, sparse, dense)
            logits = F.interpolate(logits.float(), (size, size), mode="bilinear", align_corners=False)
            seg = structure_loss(logits, batch.masks, kernel_size=edge_kernel)
            zero = seg.new_zeros(())
            if not infosam:
                return seg, seg, zero, zero
            with torch.no_grad():
                sparse_t, dense_t = encode_prompts(teacher.prompt_encoder, batch)
                tok_t = mask_token(teacher.mask_decoder, f_t, teacher_pe, sparse_t, dense_t)
            rel_t = student.relation(f_t, tok_t)
            rel_s = student.relation(f_s, tok_s)
            l_r = relation_compression_loss(f_t, tok_t, rel_t)
            l_d = relation_distillation_loss(rel_t, rel_s)
            return seg + config.lam * (config.alpha * l_r + config.beta * l_d), seg, l_r, l_d

    history: list[dict[str, Any]] = []
    best: dict[str, torch.Tensor] | None = None
    best_val: float | None = None
    best_epoch: int | None = None
    step, stop_reason = 0, None
    planned_steps = config.epochs * steps_per_epoch
    t0 = time.monotonic()

    def finish(reason: str) -> TrainResult:
        if best is not None and config.keep_best and reason != "error":
            student.load_state_dict(best, strict=False)
        student.eval()
        return TrainResult(student, report, config, history, step, reason == "cancelled", reason, best_val,
                           best_epoch, time.monotonic() - t0, cache.teacher_images)

    def report_progress(epoch: int, values: Any, lr: float, val: float | None = None) -> None:
        if progress is not None:
            elapsed = time.monotonic() - t0
            progress(TrainProgress(step, total_steps, epoch, *map(float, values), lr, elapsed,
                                   elapsed / max(step, 1) * (total_steps - step), val_miou=val))

    student.train()
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(prepared))
        sums, n_epoch, lr = np.zeros(4), 0, config.lr
        for b in range(steps_per_epoch):
            if step >= total_steps:
                stop_reason = "max_steps" if total_steps < planned_steps else None
            elif should_stop is not None and should_stop():
                stop_reason = "cancelled"
            elif config.time_budget_s is not None and time.monotonic() - t0 >= config.time_budget_s:
                stop_reason = "time_budget"
            if stop_reason is not None or step >= total_steps:
                break
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            keys = [(int(i), int(v)) for i, v in zip(idx, rng.choice(variants, size=len(idx)))]
            batch = make_batch(student, prepared, keys, rng, config.p_box, config.box_jitter)
            lr = cosine_lr(step, total_steps, config.lr, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss, seg, l_r, l_d = step_losses(batch)
            values = torch.stack([loss.detach(), seg.detach(), l_r.detach(), l_d.detach()]).float().cpu().numpy()
            grad_norm = float("nan")
            if np.isfinite(values).all():
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf")))
            if not math.isfinite(grad_norm):  # a non-finite loss or gradient: never apply this step
                optimizer.zero_grad(set_to_none=True)
                what = "gradient norm" if np.isfinite(values).all() else "loss"
                reason = (f"training stopped at step {step + 1} (epoch {epoch}): the {what} is not finite "
                          f"(loss {values[0]:.4g}, seg {values[1]:.4g}, L_r {values[2]:.4g}, L_d {values[3]:.4g})")
                raise TrainingError(
                    f"{reason}. Lower the learning rate (e.g. lr={config.lr / 10:g}), set grad_clip (e.g. 1.0), check the "
                    f"masks for errors, or turn bf16 off. The weights of the last good step ({step}) are in "
                    "error.result.model; continue from them with init_model=error.result.model.",
                    finish("error"), reason,
                )
            optimizer.step()
            step += 1
            sums += values
            n_epoch += 1
            report_progress(epoch, values, lr)
        if n_epoch == 0:
            break
        record: dict[str, Any] = dict(epoch=epoch, steps=step, lr=lr)
        record.update(zip(("loss", "seg_loss", "l_r", "l_d"), (sums / n_epoch).tolist()))
        if val_samples and stop_reason != "cancelled":
            val = evaluate(student, val_samples, config.val_prompt, seed=config.seed, metrics=("iou",)).miou
            student.train()
            record["val_miou"] = val
            if not math.isnan(val) and (best_val is None or val > best_val):
                best_val, best_epoch = val, epoch
                best = {k: v.detach().clone() for k, v in trained_state(student).items()}
            report_progress(epoch, sums / n_epoch, lr, val)
        record["elapsed_s"] = round(time.monotonic() - t0, 3)
        history.append(record)
        if stop_reason is not None:
            break
    return finish(stop_reason or "completed")
