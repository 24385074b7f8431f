"""Caching what does not change during fine-tuning: the teacher's image features and the student's frozen leading encoder blocks.

Model families differ behind :class:`~infosam_core.models.training_backbone.TrainingBackbone`, and the cache
runs every family the same way through it: the student's frozen leading blocks
(``frozen_prefix_depth()``: a segment-anything ViT's blocks without a trainable parameter; 0 for families whose
encoder runs whole, MobileSAM's TinyViT and SAM2's Hiera) once per image with ``encode_prefix``, and the rest
of each encoder with ``encode_from``, which captures the outputs of the feature blocks that a multi-level
distiller or a decoder reads (HQ-SAM's) as they pass and returns the family's extra decoder inputs (SAM2's
high-resolution features), cached with the teacher's embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of
from infosam_core.models.training_backbone import ImageFeatures, TrainingBackbone, channels_first
from infosam_core.training.batches import Batch


def _compact(x: torch.Tensor) -> torch.Tensor:
    """float16 for a cached block output when it fits float16's range (relative rounding error <= 2^-11,
    far below what distillation targets need); float32 otherwise."""
    if x.dtype == torch.float32 and bool(x.abs().max() < 6e4):
        return x.half()
    return x.clone()


@dataclass
class EncoderFeatures:
    """One batch's encoder outputs: ``teacher`` / ``student`` embeddings (B, C, h, w) (teacher None without
    distillation), ``teacher_extra`` / ``student_extra`` the other decoder inputs of the family
    (:class:`~infosam_core.models.training_backbone.ImageFeatures`; SAM2's high-resolution features, empty for
    SAM) and, for the requested blocks, ``teacher_blocks`` / ``student_blocks`` by block index, (B, D, h, w)
    channels first."""

    teacher: torch.Tensor | None
    student: torch.Tensor
    teacher_blocks: dict[int, torch.Tensor] = field(default_factory=dict)
    student_blocks: dict[int, torch.Tensor] = field(default_factory=dict)
    teacher_extra: tuple[torch.Tensor, ...] = ()
    student_extra: tuple[torch.Tensor, ...] = ()

    def teacher_features(self) -> ImageFeatures:
        """The teacher's embedding and extra decoder inputs (what its decoder reads)."""
        assert self.teacher is not None  # the teacher is encoded whenever it is read (need_teacher)
        return ImageFeatures(self.teacher, self.teacher_extra)

    def student_features(self) -> ImageFeatures:
        """The student's embedding and extra decoder inputs (what its decoder reads)."""
        return ImageFeatures(self.student, self.student_extra)


class EncoderCache:
    """Per (image key, flip variant): the teacher's image embedding and the student's frozen-prefix output.

    ``teacher`` is the frozen pre-trained model (or the student itself when there is no distillation: then
    only a frozen encoder's embeddings are taken from it); ``student`` the model in training. The frozen prefix
    (the student backbone's ``frozen_prefix_depth()``) is computed once with the student's own (frozen, hence unchanged base)
    blocks and shared by both encoders: a new image costs one prefix, one teacher suffix and one student
    suffix; a cached image costs the student suffix only. With ``enabled=False`` (benchmarks: the
    reference code's behaviour) both encoders run in full every step. Entries stop being added once they
    would exceed ``max_bytes`` (teacher embeddings first: they save the most).

    ``blocks``: encoder block indices a multi-level distiller reads. The teacher's outputs of those blocks are
    cached with its embedding (one entry: both or neither; float16 when in range, see :func:`_compact`); the
    student's are captured during its forward (blocks inside the frozen prefix are the teacher's, which
    went through the same frozen blocks).

    Encoder blocks a decoder reads (HQ-SAM's, the backbones' ``decoder_blocks``) are that decoder's extra
    inputs: captured like the distiller's (by the teacher's pass -- cached with its embedding, in float32 --
    when the student's encoder is frozen or for the teacher's own decoder; in the student's forward otherwise,
    the frozen prefix then ending at the first such block) and appended to ``teacher_extra`` / ``student_extra``.

    A family's extra decoder inputs (SAM2: 32 x 4h x 4w + 64 x 2h x 2w floats per image, 3x the embedding) are
    cached with the teacher's embedding, in float32 (the teacher's decoder reads them exactly), and counted in
    ``max_bytes`` like everything else. ``teacher_changes``: the teacher's weights change during training (a mean
    teacher, ``TrainConfig.teacher_ema``): its outputs are computed every step and never cached (unless the
    student's encoder is frozen: then so is the teacher's). ``backbones``: the (teacher, student) training
    backbones (made from the models when not given).
    """

    def __init__(
        self,
        teacher: SamLike,
        student: SamLike,
        need_teacher: bool,
        enabled: bool,
        max_bytes: float,
        checkpoint: bool = False,
        blocks: tuple[int, ...] = (),
        backbones: tuple[TrainingBackbone, TrainingBackbone] | None = None,
        teacher_changes: bool = False,
    ) -> None:
        self.teacher, self.student = teacher, student
        if backbones is None:
            backbones = (family_of(teacher).training_backbone(teacher), family_of(student).training_backbone(student))
        self.teacher_backbone, self.student_backbone = backbones
        self.checkpoint = checkpoint  # activation checkpointing of the student's trainable blocks
        self.student_frozen = not any(p.requires_grad for p in student.image_encoder.parameters())
        self.need_teacher = need_teacher or self.student_frozen
        self.blocks = tuple(blocks) if need_teacher else ()
        # encoder blocks the decoders read (HQ-SAM): the teacher's pass captures the teacher's, and the student's
        # too when the student's encoder is frozen (its features are then the teacher's)
        self.decoder_blocks_t = tuple(getattr(self.teacher_backbone, "decoder_blocks", ())) if self.need_teacher else ()
        self.decoder_blocks_s = tuple(getattr(self.student_backbone, "decoder_blocks", ()))
        from_teacher = self.decoder_blocks_t + (self.decoder_blocks_s if self.student_frozen else ())
        self.decoder_capture_t = from_teacher if self.need_teacher else ()
        self.capture_t = tuple(dict.fromkeys(self.blocks + from_teacher)) if self.need_teacher else ()
        self.capture_s = tuple(dict.fromkeys(self.blocks + self.decoder_blocks_s))
        self.depth = 0 if self.student_frozen or not enabled else self.student_backbone.frozen_prefix_depth()
        if self.decoder_blocks_s and not self.student_frozen:  # the student's decoder reads its own blocks
            self.depth = min(self.depth, *self.decoder_blocks_s)
        self.enabled, self.max_bytes = enabled, max_bytes
        self.teacher_changes = teacher_changes and not self.student_frozen  # a frozen encoder stays the teacher's
        # key -> (teacher embedding (C, h, w), extra decoder inputs (tuple), {block: (h, w, D)} with ``blocks``)
        self.teacher_entries: dict[tuple[int, int], Any] = {}
        self.prefix_entries: dict[tuple[int, int], torch.Tensor] = {}
        self.bytes = 0
        self.teacher_images = 0  # images the teacher encoder ran on (tests and benchmarks read it)

    def _store(self, entries: dict, key: tuple[int, int], value: Any) -> None:
        tensors = [value] if isinstance(value, torch.Tensor) else [value[0], *value[1], *value[2].values()]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if entries is self.teacher_entries and self.teacher_changes:
            return
        if self.enabled and self.bytes + size <= self.max_bytes:
            # not a view: a view would keep its whole batch tensor alive
            if isinstance(value, torch.Tensor):
                entries[key] = value.clone()
            else:  # the blocks are fresh copies (_compact)
                entries[key] = (value[0].clone(), tuple(t.clone() for t in value[1]), value[2])
            self.bytes += size

    @torch.no_grad()
    def _fill(self, batch: Batch) -> tuple[dict, dict]:
        """Run the encoders on the batch's images that are not cached (each distinct key once).

        Returns this batch's fresh teacher outputs and prefix features, by key (stored too, within budget).
        """
        rows: dict[tuple[int, int], int] = {}  # key -> first row of the batch with that key
        for i, k in enumerate(batch.keys):
            rows.setdefault(k, i)
        need_t = [k for k in rows if self.need_teacher and k not in self.teacher_entries]
        need_p = [k for k in rows if self.depth and k not in self.prefix_entries]
        run = [k for k in rows if k in need_t or k in need_p]
        teacher_out: dict[tuple[int, int], Any] = {}
        prefix_out: dict[tuple[int, int], torch.Tensor] = {}
        if not run:
            return teacher_out, prefix_out
        captured: dict[int, torch.Tensor] = {}
        if self.depth:
            images = batch.images[[rows[k] for k in run]]
            h, captured = self.student_backbone.encode_prefix(images, self.depth, self.capture_t)
            prefix_out = dict(zip(run, h))
            if need_t:
                picked = [run.index(k) for k in need_t]
                captured = {i: v[picked] for i, v in captured.items()}
                t, more = self.teacher_backbone.encode_from(
                    torch.stack([prefix_out[k] for k in need_t]), self.depth, self.capture_t
                )
                captured.update(more)
                teacher_out = dict(zip(need_t, t.unbind()))
        elif need_t:
            t, captured = self.teacher_backbone.encode_from(batch.images[[rows[k] for k in need_t]], 0, self.capture_t)
            teacher_out = dict(zip(need_t, t.unbind()))
        # the distiller's blocks in float16 when in range; decoder inputs exact
        blocks = {i: v.clone() if i not in self.blocks else _compact(v) for i, v in captured.items()}
        teacher_out = {  # (embedding, extra decoder inputs, {block: output})
            k: (e, x, {i: v[n] for i, v in blocks.items()}) for n, (k, (e, x)) in enumerate(teacher_out.items())
        }
        self.teacher_images += len(teacher_out)
        for k, value in teacher_out.items():
            self._store(self.teacher_entries, k, value)
        for k, value in prefix_out.items():
            self._store(self.prefix_entries, k, value)
        return teacher_out, prefix_out

    def embeddings(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(teacher embeddings (B, C, h, w) or None, student embeddings (B, C, h, w))`` for the batch.

        Only the student's part after the frozen prefix carries gradients.
        """
        out = self.features(batch)
        return out.teacher, out.student

    def features(self, batch: Batch) -> EncoderFeatures:
        """The batch's embeddings and, with ``blocks``, block outputs (see :class:`EncoderFeatures`)."""
        teacher_out, prefix_out = self._fill(batch)
        f_t: torch.Tensor | None = None
        extra_t: tuple[torch.Tensor, ...] = ()
        blocks_t: dict[int, torch.Tensor] = {}
        if self.need_teacher:
            entries = [teacher_out[k] if k in teacher_out else self.teacher_entries[k] for k in batch.keys]
            stacked = ImageFeatures.stack([(e, x) for e, x, _ in entries])
            f_t, extra_t = stacked.embed, stacked.extra
            if self.capture_t:
                blocks_t = {
                    i: channels_first(torch.stack([b[i] for _, _, b in entries]).to(f_t.dtype)) for i in self.capture_t
                }
        if self.student_frozen:
            assert f_t is not None  # a frozen student encoder is the teacher's: need_teacher is set
            extra_s = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_s)
            extra_t = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_t)
            blocks_t = {i: blocks_t[i] for i in self.blocks}
            return EncoderFeatures(f_t, f_t, blocks_t, dict(blocks_t), extra_t, extra_s)
        extra_t = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_t)
        if self.depth:
            x = torch.stack([prefix_out[k] if k in prefix_out else self.prefix_entries[k] for k in batch.keys])
        else:
            x = batch.images
        encoded, captured = self.student_backbone.encode_from(x, self.depth, self.capture_s, self.checkpoint)
        f_s, extra_s = encoded.embed, encoded.extra
        extra_s = extra_s + tuple(channels_first(captured[i]) for i in self.decoder_blocks_s)
        blocks_s = {i: channels_first(captured[i]) if i in captured else blocks_t[i] for i in self.blocks}
        blocks_t = {i: blocks_t[i] for i in self.blocks}
        return EncoderFeatures(f_t, f_s, blocks_t, blocks_s, extra_t, extra_s)
