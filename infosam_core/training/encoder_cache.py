"""Caching what does not change during fine-tuning: the teacher's image features and the student's frozen leading encoder blocks.

Model families differ behind :class:`~infosam_core.models.training_backbone.TrainingBackbone`: an encoder that
is not a segment-anything ViT (MobileSAM's TinyViT, SAM2's Hiera) runs whole through its backbone's
``encode``, and its extra decoder inputs (SAM2's high-resolution features) are cached with the embedding;
a TinyViT whose ``layers`` a decoder reads (HQ-SAM's on ``vit_t``) runs whole too, with those layers'
outputs captured as a ViT's blocks are (:func:`~infosam_core.models.decoder_features.encoder_block_outputs`),
and so are the Hiera blocks a multi-level distiller reads on SAM2 (its stage ends by default: forward hooks
on ``trunk.blocks`` while the backbone's ``encode`` runs, so the high-resolution decoder features flow as
without a distiller; the teacher's are cached with its embedding, the student's keep their gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint
from segment_anything.modeling import Sam

from infosam_core.models.decoder_features import captured_block_outputs, encoder_block_outputs
from infosam_core.models.training_backbone import ImageFeatures, TrainingBackbone, training_backbone_for
from infosam_core.training.batches import Batch


def frozen_prefix_depth(encoder: torch.nn.Module) -> int:
    """How many leading ViT blocks (with the patch and position embeddings) have no trainable parameter.

    Their output never changes during training, so it can be cached per image like the teacher's embedding
    (the ``adapter`` method leaves blocks 0 and 1 frozen: 2 of 12 blocks at ViT-B, 2 of 4 at tiny).
    0 for encoders that are not segment-anything ViTs (MobileSAM's TinyViT, SAM2's Hiera): they run whole.
    """
    if not _is_vit(encoder):
        return 0
    if any(p.requires_grad for p in encoder.patch_embed.parameters()):
        return 0
    if encoder.pos_embed is not None and encoder.pos_embed.requires_grad:
        return 0
    depth = 0
    for block in encoder.blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        depth += 1
    return depth


def _is_vit(encoder: torch.nn.Module) -> bool:
    return isinstance(getattr(encoder, "blocks", None), torch.nn.ModuleList) and hasattr(encoder, "pos_embed")


def encoder_prefix(
    encoder: torch.nn.Module,
    x: torch.Tensor,
    depth: int,
    capture: tuple[int, ...] = (),
    features: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Patch + position embedding and blocks[:depth] of an ``ImageEncoderViT``: (B, 3, S, S) -> (B, h, w, D).

    Block ``i`` in ``capture`` (and < ``depth``) has its output (B, h, w, D) put in ``features[i]``.
    """
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for i, block in enumerate(encoder.blocks[:depth]):
        x = block(x)
        if features is not None and i in capture:
            features[i] = x
    return x


def encoder_suffix(
    encoder: torch.nn.Module,
    x: torch.Tensor,
    depth: int,
    checkpoint: bool = False,
    capture: tuple[int, ...] = (),
    features: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """blocks[depth:] and the neck: (B, h, w, D) -> image embeddings (B, C, h, w).

    ``checkpoint``: activation (gradient) checkpointing per block -- only each block's input is kept for the
    backward pass and the block is recomputed there: much less memory (ViT-B at 1024 px) for ~1/3 more time.
    Block ``i`` in ``capture`` (and >= ``depth``) has its output (B, h, w, D) put in ``features[i]``.
    """
    checkpoint = checkpoint and torch.is_grad_enabled()
    for i, block in enumerate(encoder.blocks[depth:], start=depth):
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpoint else block(x)
        if features is not None and i in capture:
            features[i] = x
    return encoder.neck(x.permute(0, 3, 1, 2))


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """(..., h, w, D) block output -> (..., D, h, w)."""
    return x.movedim(-1, -3)


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
        return ImageFeatures(self.teacher, self.teacher_extra)

    def student_features(self) -> ImageFeatures:
        """The student's embedding and extra decoder inputs (what its decoder reads)."""
        return ImageFeatures(self.student, self.student_extra)


class EncoderCache:
    """Per (image key, flip variant): the teacher's image embedding and the student's frozen-prefix output.

    ``teacher`` is the frozen pre-trained model (or the student itself when there is no distillation: then
    only a frozen encoder's embeddings are taken from it); ``student`` the model in training. The frozen prefix
    (:func:`frozen_prefix_depth`) is computed once with the student's own (frozen, hence unchanged base)
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
    ``max_bytes`` like everything else. ``backbones``: the (teacher, student) training backbones (made from the
    models when not given).
    """

    def __init__(
        self,
        teacher: Sam,
        student: Sam,
        need_teacher: bool,
        enabled: bool,
        max_bytes: float,
        checkpoint: bool = False,
        blocks: tuple[int, ...] = (),
        backbones: tuple[TrainingBackbone, TrainingBackbone] | None = None,
    ) -> None:
        self.teacher, self.student = teacher, student
        if backbones is None:
            backbones = (training_backbone_for(teacher), training_backbone_for(student))
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
        self.depth = 0 if self.student_frozen or not enabled else frozen_prefix_depth(student.image_encoder)
        if self.decoder_blocks_s and not self.student_frozen:  # the student's decoder reads its own blocks
            self.depth = min(self.depth, *self.decoder_blocks_s)
        self.enabled, self.max_bytes = enabled, max_bytes
        # key -> (teacher embedding (C, h, w), extra decoder inputs (tuple), {block: (h, w, D)} with ``blocks``)
        self.teacher_entries: dict[tuple[int, int], Any] = {}
        self.prefix_entries: dict[tuple[int, int], torch.Tensor] = {}
        self.bytes = 0
        self.teacher_images = 0  # images the teacher encoder ran on (tests and benchmarks read it)

    def _store(self, entries: dict, key: tuple[int, int], value: Any) -> None:
        tensors = [value] if isinstance(value, torch.Tensor) else [value[0], *value[1], *value[2].values()]
        size = sum(t.numel() * t.element_size() for t in tensors)
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
        rows = {}  # key -> first row of the batch with that key
        for i, k in enumerate(batch.keys):
            rows.setdefault(k, i)
        need_t = [k for k in rows if self.need_teacher and k not in self.teacher_entries]
        need_p = [k for k in rows if self.depth and k not in self.prefix_entries]
        run = [k for k in rows if k in need_t or k in need_p]
        teacher_out: dict[tuple[int, int], Any] = {}
        prefix_out: dict[tuple[int, int], torch.Tensor] = {}
        if not run:
            return teacher_out, prefix_out
        encoder = self.teacher.image_encoder
        captured: dict[int, torch.Tensor] = {}
        if self.depth:
            h = encoder_prefix(
                self.student.image_encoder, batch.images[[rows[k] for k in run]], self.depth, self.capture_t, captured
            )
            prefix_out = dict(zip(run, h))
            if need_t:
                picked = [run.index(k) for k in need_t]
                captured = {i: v[picked] for i, v in captured.items()}
                t = encoder_suffix(
                    encoder, torch.stack([prefix_out[k] for k in need_t]), self.depth, False, self.capture_t, captured
                )
                teacher_out = dict(zip(need_t, t))
        elif need_t and not _is_vit(encoder) and self.decoder_capture_t:  # TinyViT whose layers a decoder reads
            embedding, captured = encoder_block_outputs(
                encoder, batch.images[[rows[k] for k in need_t]], self.capture_t
            )
            teacher_out = dict(zip(need_t, embedding))
        elif need_t and not _is_vit(encoder):  # MobileSAM's TinyViT, SAM2's Hiera: run whole (hooks: the blocks read)
            with captured_block_outputs(encoder, self.capture_t) as captured:
                encoded = self.teacher_backbone.encode(batch.images[[rows[k] for k in need_t]])
            teacher_out = dict(zip(need_t, encoded.unbind()))
        elif need_t:
            x = encoder_prefix(encoder, batch.images[[rows[k] for k in need_t]], 0)
            teacher_out = dict(zip(need_t, encoder_suffix(encoder, x, 0, False, self.capture_t, captured)))
        # the distiller's blocks in float16 when in range; decoder inputs exact
        blocks = {i: v.clone() if i not in self.blocks else _compact(v) for i, v in captured.items()}
        teacher_out = {  # (embedding, extra decoder inputs, {block: output})
            k: (*(e if isinstance(e, tuple) else (e, ())), {i: v[n] for i, v in blocks.items()})
            for n, (k, e) in enumerate(teacher_out.items())
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
        f_t, extra_t, blocks_t = None, (), {}
        if self.need_teacher:
            entries = [teacher_out[k] if k in teacher_out else self.teacher_entries[k] for k in batch.keys]
            stacked = ImageFeatures.stack([(e, x) for e, x, _ in entries])
            f_t, extra_t = stacked.embed, stacked.extra
            if self.capture_t:
                blocks_t = {
                    i: _channels_first(torch.stack([b[i] for _, _, b in entries]).to(f_t.dtype)) for i in self.capture_t
                }
        if self.student_frozen:
            extra_s = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_s)
            extra_t = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_t)
            blocks_t = {i: blocks_t[i] for i in self.blocks}
            return EncoderFeatures(f_t, f_t, blocks_t, dict(blocks_t), extra_t, extra_s)
        extra_t = extra_t + tuple(blocks_t[i] for i in self.decoder_blocks_t)
        encoder = self.student.image_encoder
        captured: dict[int, torch.Tensor] = {}
        extra_s: tuple[torch.Tensor, ...] = ()
        if self.depth:
            h = torch.stack([prefix_out[k] if k in prefix_out else self.prefix_entries[k] for k in batch.keys])
            f_s = encoder_suffix(encoder, h, self.depth, self.checkpoint, self.capture_s, captured)
        elif not _is_vit(encoder) and self.decoder_blocks_s:  # TinyViT whose layers the decoder reads (HQ-SAM)
            f_s, captured = encoder_block_outputs(encoder, batch.images, self.capture_s)
        elif not _is_vit(encoder):  # MobileSAM's TinyViT, SAM2's Hiera: run whole (hooks: the distiller's blocks)
            with captured_block_outputs(encoder, self.capture_s) as captured:
                encoded = self.student_backbone.encode(batch.images)
            f_s, extra_s = encoded.embed, encoded.extra
        else:
            x = encoder_prefix(encoder, batch.images, 0)
            f_s = encoder_suffix(encoder, x, 0, self.checkpoint, self.capture_s, captured)
        extra_s = extra_s + tuple(_channels_first(captured[i]) for i in self.decoder_blocks_s)
        blocks_s = {i: _channels_first(captured[i]) if i in captured else blocks_t[i] for i in self.blocks}
        blocks_t = {i: blocks_t[i] for i in self.blocks}
        return EncoderFeatures(f_t, f_s, blocks_t, blocks_s, extra_t, extra_s)
