"""Adapting SAM to a dataset: PEFT, optionally with distillation (InfoSAM by default) from the frozen pre-trained model.

``train(config, base_sam, samples) -> TrainResult``. The student is a deep copy of ``base_sam`` with
``config.peft`` applied; the teacher is ``base_sam`` itself, frozen and only ever run under ``no_grad`` (it is
copied only when it has to move to another device, so the caller's model is never modified). Per step:

* each sample gets the paper's prompt: with probability ``p_box`` a jittered box, else one foreground
  point; the decoder gives the single-mask output; ``structure_loss`` on logits upsampled to the model's
  input size (its 31 px edge-weight window at 1024 px is scaled with the input size: 9 px for tiny);
* with a distiller (``config.distill``, see :mod:`infosam_core.distill`): + ``distill_weight * distiller``;
  for InfoSAM ``lambda * (alpha * L_r + beta * L_d)``, where the teacher's image embedding and mask token
  (SAM: ``hs[:, 1]``; SAM2: ``hs[:, 2]``) and the student's go through one shared relation module. The
  trainer never branches on the distiller's name: it hands each step's outputs to the distiller
  (:class:`~infosam_core.distill.DistillInputs`).

Model families (segment-anything's SAM / MobileSAM, SAM2) differ behind one interface,
:class:`~infosam_core.models.training_backbone.TrainingBackbone`, chosen by the model's type: how samples are
resized, how the encoder runs and what it returns (:class:`~infosam_core.models.training_backbone.ImageFeatures`:
the embedding plus extra decoder inputs such as SAM2's high-resolution features), how prompts are encoded
and how the decoder gives the single-mask output and its token. The trainer never branches on a family.

:class:`Trainer` runs in visible phases: build the student (and distiller), build the caches, then per
step: stop check, batch, :meth:`Trainer.step`; per epoch: :meth:`Trainer.validate`, then the epoch-end
callbacks (``callbacks``: each ``callback(trainer, epoch)``, e.g. the relation-map figures of
:mod:`infosam_core.evaluation.relation_maps`); :func:`train` is the one-call form.

Efficiency (:class:`~infosam_core.training.encoder_cache.EncoderCache`): the teacher's image embeddings are computed
once per (image, flip variant) and cached (the reference code re-ran the teacher encoder every step;
samples sharing one image array, e.g. several objects of one image, share the entry);
flips are applied to the image, so each variant is its own cache entry (flipping embeddings instead would
not be exact: SAM's absolute position embedding and bottom/right padding are not flip-symmetric). The
student's frozen leading blocks (blocks 0-1 with ``adapter``) are cached the same way, so a step runs
only the student's trainable part of the encoder, once. With a fully frozen encoder (``decoder``) the
student's embeddings are the teacher's. ``teacher_cache=False`` recomputes both encoders in full every
step (benchmarks only); ``teacher_cache_max_mb`` bounds the cache (entries beyond it are recomputed).

Mean teacher (``teacher_ema`` > 0; not in the paper): the teacher is a frozen copy of the student (PEFT modules
included) that follows it as an exponential moving average after every optimiser step; it starts as the student
does (the pre-trained model with zero-initialised adapters, or ``init_model``) and drifts towards the adapted one,
so a distiller compares the student with a teacher that learns the task too. Its embeddings change every step, so
they are not cached (the student's frozen prefix still is).

Optimisation: Adam (no weight decay), cosine from ``lr`` to ``min_lr`` over all planned steps (the mask
decoder's trainable parameters at ``decoder_lr_scale`` times that rate; 1 = the paper), batches of
``batch_size`` with the last partial batch dropped. Everything random comes from ``seed`` through local
generators (no global RNG state), so training can run in a worker thread: the epoch's order from (seed,
epoch), each sample's flip and prompt from (seed, epoch, sample index) (:mod:`~infosam_core.training.batches`).

Several processes (``torchrun``; :mod:`~infosam_core.training.distributed`): when a process group is
initialised, ``batch_size`` is the global batch, each rank takes its equal share of every global batch, the
student is wrapped in DistributedDataParallel, distillers take batch statistics over the global batch
(``DistillInputs.gather``), stop decisions and non-finite steps are agreed by all ranks, and validation is
sharded over the ranks and reduced. The result equals a one-process run up to float rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from infosam_core.data.datasets import SegmentationSample
from infosam_core.distill import Distiller, DistillInputs, ModelDims, make_distiller
from infosam_core.distill.base import distiller_of, set_distiller
from infosam_core.distill.registry import batch_size_problem, options_for_batch
from infosam_core.evaluation.prompted import evaluate
from infosam_core.inference.precision import native_bf16
from infosam_core.models.devices import resolve_device
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of
from infosam_core.models.training_backbone import ImageFeatures
from infosam_core.peft.common import auxiliary_loss
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import PeftReport, peft_state_of, trained_state
from infosam_core.training.batches import (
    Batch,
    epoch_order,
    flip_variants,
    make_batch,
    prepare_samples,
    sample_rng,
)
from infosam_core.training.collapse import CollapseMonitor
from infosam_core.training.config import TrainConfig
from infosam_core.training.distributed import DistributedContext
from infosam_core.training.encoder_cache import EncoderCache
from infosam_core.training.losses import structure_loss
from infosam_core.training.results import TrainingError, TrainProgress, TrainResult
from infosam_core.training.schedules import cosine_lr

EpochCallback = Callable[["Trainer", int], None]
"""Called after every epoch (after validation) with the trainer and the epoch number (1-based). It may read
``trainer.student`` / ``trainer.teacher`` / ``trainer.distiller``; it must leave the student in training mode
and its weights unchanged."""


@dataclass
class StepLosses:
    """One step's losses: ``total`` (what is minimised), ``seg``, the distiller's unweighted terms and its
    diagnostics (not minimised; e.g. InfoSAM's ``rel_cos_s``)."""

    total: torch.Tensor
    seg: torch.Tensor
    terms: dict[str, torch.Tensor]
    diagnostics: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def values(self) -> np.ndarray:
        """[total, seg, *terms, *diagnostics] as floats (one device sync)."""
        t = [
            self.total.detach(),
            self.seg.detach(),
            *(v.detach() for v in self.terms.values()),
            *(v.detach() for v in self.diagnostics.values()),
        ]
        return torch.stack(t).float().cpu().numpy()


class _StepModule(torch.nn.Module):
    """The student as one module whose forward is a training step's losses: what DistributedDataParallel wraps
    (DDP hooks the parameters of the module it wraps and needs the loss to come out of its forward)."""

    def __init__(self, student: SamLike, step_losses: Callable[[Batch], StepLosses]) -> None:
        super().__init__()
        self.student = student
        self.step_losses = step_losses

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        losses = self.step_losses(batch)
        return losses.total, losses.seg, losses.terms, losses.diagnostics


def build_student(
    config: TrainConfig, base_sam: SamLike, init_model: SamLike | None, device: torch.device, generator: torch.Generator
) -> SamLike:
    """A copy of ``base_sam`` with ``config.peft`` applied, or a copy of ``init_model`` (an earlier result of
    the same method on the same base model) to continue from, with the distiller attached as
    ``student.distiller`` (kept from ``init_model`` when it has the same one)."""
    if init_model is not None:
        state = peft_state_of(init_model)
        if state is None or state.method != config.peft:
            raise ValueError(
                f"cannot continue: the given model uses PEFT {state.method if state else 'none'!r}, "
                f"but this run asks for {config.peft!r}. Use the same method to continue training."
            )
        if state.base_fingerprint != model_fingerprint(base_sam):
            raise ValueError("cannot continue: the given model was adapted from another base model")
        student = copy.deepcopy(init_model).to(device)
    else:
        student = copy.deepcopy(base_sam).to(device)
        apply_peft(student, config.peft, generator=generator, **config.peft_options)
    current = distiller_of(student)
    if not (current is not None and current.name == config.distill):
        distiller = make_distiller(config.distill, config.distill_options, ModelDims.of(student), generator)
        set_distiller(student, distiller.to(device) if distiller is not None else None)
    return student


class Trainer:
    """One fine-tuning run. ``Trainer(...).run() -> TrainResult``; see the module docstring and :func:`train`."""

    def __init__(
        self,
        config: TrainConfig,
        base_sam: SamLike,
        samples: list[SegmentationSample],
        progress: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        val_samples: list[SegmentationSample] | None = None,
        init_model: SamLike | None = None,
        callbacks: list[EpochCallback] | None = None,
    ) -> None:
        config.validate()
        self.config, self.base_sam, self.val_samples = config, base_sam, val_samples
        self.callbacks = list(callbacks or [])
        self.progress_callback, self.stop_requested = progress, should_stop
        self.device = resolve_device(config.device)
        self.use_bf16 = config.bf16 and native_bf16(self.device)  # CUDA with bf16, a CPU with AMX
        self.dist = DistributedContext.current(self.device)
        if config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({self.dist.world_size}): use e.g. --batch-size "
                f"{max(1, round(config.batch_size / self.dist.world_size)) * self.dist.world_size}"
            )
        # a distiller built for the batch (SemCKD) is built for the batch each process trains on
        per_process = config.batch_size // self.dist.world_size
        options = options_for_batch(config.distill, config.distill_options, per_process)
        if options != config.distill_options:
            problem = batch_size_problem(config.distill, options, per_process)
            if problem:
                raise ValueError(problem)
            config = self.config = dataclasses.replace(config, distill_options=options)
        self.generator = torch.Generator().manual_seed(config.seed)
        base_backbone = family_of(base_sam).training_backbone(base_sam)
        self.prepared = prepare_samples(samples, base_backbone.input_size, resize=base_backbone.resize)
        if len(self.prepared) < config.batch_size:
            raise ValueError(
                f"need at least batch_size={config.batch_size} samples with a non-empty mask, got {len(self.prepared)}"
            )
        self.steps_per_epoch = len(self.prepared) // config.batch_size
        self.planned_steps = config.epochs * self.steps_per_epoch
        self.total_steps = min(self.planned_steps, config.max_steps or self.planned_steps)
        self._build_models(init_model)
        self._build_caches()
        # with several processes: DDP (parameters broadcast from rank 0, gradients averaged in backward)
        self.parallel_step = self.dist.wrap(_StepModule(self.student, self.step_losses)) if self.dist.enabled else None
        named = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        decoder = [p for n, p in named if n.split(".")[0].endswith("mask_decoder")]  # SAM / SAM2 decoders
        groups = [{"params": self.params, "lr_scale": 1.0}]
        if decoder and config.decoder_lr_scale != 1.0:  # the decoder at its own rate (issue 31's candidate)
            rest = [p for n, p in named if not n.split(".")[0].endswith("mask_decoder")]
            groups = [{"params": rest, "lr_scale": 1.0}, {"params": decoder, "lr_scale": config.decoder_lr_scale}]
        self.optimizer = torch.optim.Adam([g for g in groups if g["params"]], lr=config.lr, weight_decay=0.0)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, torch.Tensor] | None = None
        self.best_val: float | None = None
        self.best_epoch: int | None = None
        self.step_count = 0
        self.epoch = 1  # the epoch being trained (1-based)
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------------------------------- phases
    def _build_models(self, init_model: SamLike | None) -> None:
        self.student = build_student(self.config, self.base_sam, init_model, self.device, self.generator)
        self.distiller: Distiller | None = distiller_of(self.student)
        self.term_names = self.distiller.term_names if self.distiller is not None else ()
        self.diagnostic_names = self.distiller.diagnostic_names if self.distiller is not None else ()
        self.collapse = CollapseMonitor()
        self.report = PeftReport.from_model(self.student)
        self.teacher = self.student  # without distillation only the frozen parts are shared, and the student has them
        self.ema_pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        if self.distiller is not None and self.config.teacher_ema > 0:
            self.teacher = self._mean_teacher()
        elif self.distiller is not None:
            on_device = next(self.base_sam.parameters()).device == self.device
            self.teacher = self.base_sam if on_device else copy.deepcopy(self.base_sam).to(self.device)
        # what differs per model family (resizing, encoder outputs, prompts, decoding): chosen by the model's family
        self.student_backbone = family_of(self.student).training_backbone(self.student)
        self.teacher_backbone = (
            self.student_backbone
            if self.teacher is self.student
            else family_of(self.teacher).training_backbone(self.teacher)
        )

    def _mean_teacher(self) -> SamLike:
        """A frozen copy of the student without its distiller, and the (teacher, student) parameters the moving
        average pairs (the student's trainable ones)."""
        distiller = distiller_of(self.student)
        set_distiller(self.student, None)  # not copied: the teacher never runs it
        try:
            teacher = copy.deepcopy(self.student)
        finally:
            set_distiller(self.student, distiller)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        by_name = dict(teacher.named_parameters())
        trained = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad and n in by_name]
        self.ema_pairs = ([by_name[n] for n, _ in trained], [p for _, p in trained])
        return teacher

    @torch.no_grad()
    def _update_mean_teacher(self) -> None:
        """teacher <- teacher_ema * teacher + (1 - teacher_ema) * student, for the student's trained parameters."""
        weight = 1.0 - self.config.teacher_ema
        for teacher, student in zip(*self.ema_pairs):
            teacher.lerp_(student, weight)

    def _build_caches(self) -> None:
        c = self.config
        self.cache = EncoderCache(
            self.teacher,
            self.student,
            self.distiller is not None,
            c.teacher_cache,
            c.teacher_cache_max_mb * 2**20,
            checkpoint=c.grad_checkpoint,
            teacher_changes=bool(self.ema_pairs[0]),
            blocks=self.distiller.encoder_blocks if self.distiller is not None else (),
            backbones=(self.teacher_backbone, self.student_backbone),
        )
        self.size = self.student_backbone.input_size
        self.edge_kernel = max(3, round(31 * self.size / 1024) | 1)  # the paper's 31 px edge band at 1024 px (tiny: 9)

    def step_losses(self, batch: Batch) -> StepLosses:
        """Forward one batch: the segmentation loss and, with a distiller, its terms."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            encoded = self.cache.features(batch)
            f_t, f_s = encoded.teacher, encoded.student
            low_res, _, tok_s = self.student_backbone.decode(encoded.student_features(), batch)
            logits = F.interpolate(low_res.float(), (self.size, self.size), mode="bilinear", align_corners=False)
            seg = structure_loss(logits, batch.masks, kernel_size=self.edge_kernel)
            aux = auxiliary_loss(self.student)  # losses PEFT modules report (ConvLoRA's load balancing)
            total = seg if aux is None else seg + aux  # in the total; the reported seg loss stays the segmentation's
            if self.distiller is None:
                return StepLosses(total, seg, {})
            assert f_t is not None  # the cache encodes the teacher whenever there is a distiller
            inputs = DistillInputs(
                f_t,
                f_s,
                tok_s,
                low_res,
                batch.masks,
                lambda with_logits: self._decode_teacher(batch, encoded.teacher_features(), with_logits),
                teacher_features=encoded.teacher_blocks,
                student_features=encoded.student_blocks,
                gather=self.dist.gather,
                step=self.step_count,
                epoch=self.epoch,
            )
            out = self.distiller(inputs)
            return StepLosses(total + self.config.distill_weight * out.total, seg, out.terms, out.diagnostics)

    @torch.no_grad()
    def _decode_teacher(self, batch: Batch, f_t: ImageFeatures, with_logits: bool):
        if with_logits:
            logits, _, token = self.teacher_backbone.decode(f_t, batch)
            return logits, token
        return None, self.teacher_backbone.mask_token(f_t, batch)

    _STOP_CODES = (None, "cancelled", "time_budget")  # agreed across processes: the largest code wins

    def _stop_reason(self) -> str | None:
        if self.step_count >= self.total_steps:  # the same on every process
            return "max_steps" if self.total_steps < self.planned_steps else "completed"
        code = 0
        if self.stop_requested is not None and self.stop_requested():
            code = 1
        budget = self.config.time_budget_s
        if budget is not None and time.monotonic() - self.t0 >= budget:
            code = 2
        return self._STOP_CODES[self.dist.agree_max(code)]

    def _next_batch(self, order: np.ndarray, b: int, variants: list[int], epoch: int = 1) -> Batch:
        """This process's share of global batch ``b``; flips and prompts drawn per sample from (seed, epoch, index)."""
        c = self.config
        rows = self.dist.shard([int(i) for i in order[b * c.batch_size : (b + 1) * c.batch_size]])
        rngs = [sample_rng(c.seed, epoch, i) for i in rows]
        keys = [(i, int(g.choice(variants))) for i, g in zip(rows, rngs)]
        return make_batch(self.student, self.prepared, keys, rngs, c.p_box, c.box_jitter)

    def optimizer_step(self, batch: Batch, epoch: int) -> np.ndarray:
        """One step on ``batch``; returns [total, seg, *terms]. A non-finite loss or gradient is never applied:
        :class:`TrainingError` carries the last good weights."""
        c = self.config
        self.epoch = epoch  # read by step_losses (a distiller's warm-up)
        lr = cosine_lr(self.step_count, self.total_steps, c.lr, c.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.lr = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.parallel_step is not None:
            losses = StepLosses(*self.parallel_step(batch))
        else:
            losses = self.step_losses(batch)
        # averaged over the processes: a non-finite value on any process makes every process skip the step
        values = self.dist.mean(torch.from_numpy(losses.values()).double()).numpy()
        grad_norm = float("nan")
        if np.isfinite(values).all():
            losses.total.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip or float("inf")))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            what = "gradient norm" if np.isfinite(values).all() else "loss"
            named = ", ".join(f"{n} {v:.4g}" for n, v in zip(("seg", *self.term_names), values[1:]))
            reason = (
                f"training stopped at step {self.step_count + 1} (epoch {epoch}): the {what} is not finite "
                f"(loss {values[0]:.4g}, {named})"
            )
            bf16_hint = ", or turn bf16 off (bf16=False, --no-bf16)" if self.use_bf16 else ""
            raise TrainingError(
                f"{reason}. Lower the learning rate (e.g. lr={c.lr / 10:g}), set grad_clip (e.g. 1.0) or check the "
                f"masks for errors{bf16_hint}. The weights of the last good step ({self.step_count}) are in "
                "error.result.model; continue from them with init_model=error.result.model.",
                self._finish("error"),
                reason,
            )
        self.optimizer.step()
        self._update_mean_teacher()
        self.step_count += 1
        self.collapse.update(
            dict(zip((*self.term_names, *self.diagnostic_names), values[2:].tolist())), self.step_count
        )
        return values

    def validate(self) -> float | None:
        """Mean IoU on the validation samples (``config.val_prompt``); keeps the best epoch's weights."""
        if not self.val_samples:
            return None
        c = self.config
        if not self.dist.enabled:
            val = evaluate(self.student, self.val_samples, c.val_prompt, seed=c.seed, metrics=("iou",)).miou
            self.student.train()
            return val
        # each process evaluates every W-th sample (prompts are seeded per image name, so they do not depend on
        # the split); the mean over all samples comes from the summed IoUs and counts
        shard = self.val_samples[self.dist.rank :: self.dist.world_size]
        rows = evaluate(self.student, shard, c.val_prompt, seed=c.seed, metrics=("iou",)).rows if shard else []
        self.student.train()
        total, count = self.dist.sum(torch.tensor([sum(r["iou"] for r in rows), len(rows)], dtype=torch.float64))
        return float(total / count) if count > 0 else float("nan")

    def _report(self, epoch: int, values: np.ndarray, val: float | None = None) -> None:
        if self.progress_callback is None:
            return
        elapsed = time.monotonic() - self.t0
        n_terms = len(self.term_names)
        terms = {n: float(v) for n, v in zip(self.term_names, values[2 : 2 + n_terms])}
        diagnostics = {n: float(v) for n, v in zip(self.diagnostic_names, values[2 + n_terms :])}
        eta = elapsed / max(self.step_count, 1) * (self.total_steps - self.step_count)
        self.progress_callback(
            TrainProgress(
                self.step_count,
                self.total_steps,
                epoch,
                float(values[0]),
                float(values[1]),
                terms,
                self.lr,
                elapsed,
                eta,
                val_miou=val,
                diagnostics=diagnostics,
                distill_collapsed=self.collapse.collapsed,
            )
        )

    def _finish(self, reason: str) -> TrainResult:
        if self.best is not None and self.config.keep_best and reason != "error":
            self.student.load_state_dict(self.best, strict=False)
        self.student.eval()
        return TrainResult(
            self.student,
            self.report,
            self.config,
            self.history,
            self.step_count,
            reason == "cancelled",
            reason,
            self.best_val,
            self.best_epoch,
            time.monotonic() - self.t0,
            self.cache.teacher_images,
            self.collapse.first_step,
        )

    # ------------------------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        c = self.config
        variants = flip_variants(c.hflip, c.vflip)
        stop_reason: str | None = None
        self.lr = c.lr
        self.student.train()
        for epoch in range(1, c.epochs + 1):
            order = epoch_order(c.seed, epoch, len(self.prepared))
            sums, n_epoch = np.zeros(2 + len(self.term_names) + len(self.diagnostic_names)), 0
            for b in range(self.steps_per_epoch):
                stop_reason = self._stop_reason()
                if stop_reason is not None:
                    break
                values = self.optimizer_step(self._next_batch(order, b, variants, epoch), epoch)
                sums += values
                n_epoch += 1
                self._report(epoch, values)
            if n_epoch == 0:
                break
            means = sums / n_epoch
            record: dict[str, Any] = dict(epoch=epoch, steps=self.step_count, lr=self.lr)
            record.update(zip(("loss", "seg_loss", *self.term_names, *self.diagnostic_names), means.tolist()))
            record.update(self.collapse.end_epoch())
            if stop_reason != "cancelled" and (val := self.validate()) is not None:
                record["val_miou"] = val
                if not math.isnan(val) and (self.best_val is None or val > self.best_val):
                    self.best_val, self.best_epoch = val, epoch
                    self.best = {k: v.detach().clone() for k, v in trained_state(self.student).items()}
                self._report(epoch, means, val)
            record["elapsed_s"] = round(time.monotonic() - self.t0, 3)
            self.history.append(record)
            for callback in self.callbacks:
                callback(self, epoch)
                self.student.train()
            if stop_reason is not None:
                break
        return self._finish(stop_reason or "completed")


def train(
    config: TrainConfig,
    base_sam: SamLike,
    samples: list[SegmentationSample],
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    val_samples: list[SegmentationSample] | None = None,
    init_model: SamLike | None = None,
    callbacks: list[EpochCallback] | None = None,
) -> TrainResult:
    """Train a PEFT (+ distiller) student of ``base_sam`` on ``samples``; see the module docstring.

    ``progress`` gets a :class:`TrainProgress` after every step; ``should_stop()`` is polled before every
    step (True -> stop, ``cancelled=True``). With ``val_samples``, the mean IoU (``config.val_prompt``) is
    measured after every epoch and, with ``keep_best``, the best epoch's weights are returned (also when
    cancelled). ``init_model`` (a previous ``TrainResult.model``, or an adapter loaded with
    :func:`~infosam_core.adapter_files.checkpoint.load_peft_checkpoint`) continues an earlier run. ``callbacks`` are
    called after every epoch as ``callback(trainer, epoch)`` (:data:`EpochCallback`).
    Raises ValueError for unusable settings/data and :class:`TrainingError` when the loss or gradients stop
    being finite (``error.result`` holds the last good weights: a bad step is never applied).
    """
    return Trainer(config, base_sam, samples, progress, should_stop, val_samples, init_model, callbacks).run()
