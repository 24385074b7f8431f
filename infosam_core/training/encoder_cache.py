"""Caching what does not change during fine-tuning: the teacher's image embeddings and the student's frozen leading encoder blocks."""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from segment_anything.modeling import Sam

from infosam_core.training.batches import Batch


def frozen_prefix_depth(encoder: torch.nn.Module) -> int:
    """How many leading ViT blocks (with the patch and position embeddings) have no trainable parameter.

    Their output never changes during training, so it can be cached per image like the teacher's embedding
    (the ``adapter`` method leaves blocks 0 and 1 frozen: 2 of 12 blocks at ViT-B, 2 of 4 at tiny).
    """
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


def encoder_prefix(encoder: torch.nn.Module, x: torch.Tensor, depth: int) -> torch.Tensor:
    """Patch + position embedding and blocks[:depth] of an ``ImageEncoderViT``: (B, 3, S, S) -> (B, h, w, D)."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks[:depth]:
        x = block(x)
    return x


def encoder_suffix(encoder: torch.nn.Module, x: torch.Tensor, depth: int, checkpoint: bool = False) -> torch.Tensor:
    """blocks[depth:] and the neck: (B, h, w, D) -> image embeddings (B, C, h, w).

    ``checkpoint``: activation (gradient) checkpointing per block -- only each block's input is kept for the
    backward pass and the block is recomputed there: much less memory (ViT-B at 1024 px) for ~1/3 more time.
    """
    checkpoint = checkpoint and torch.is_grad_enabled()
    for block in encoder.blocks[depth:]:
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpoint else block(x)
    return encoder.neck(x.permute(0, 3, 1, 2))


class EncoderCache:
    """Per (image key, flip variant): the teacher's image embedding and the student's frozen-prefix output.

    ``teacher`` is the frozen pre-trained model (or the student itself when there is no distillation: then
    only a frozen encoder's embeddings are taken from it); ``student`` the model in training. The frozen prefix
    (:func:`frozen_prefix_depth`) is computed once with the student's own (frozen, hence unchanged base)
    blocks and shared by both encoders: a new image costs one prefix, one teacher suffix and one student
    suffix; a cached image costs the student suffix only. With ``enabled=False`` (benchmarks: the
    reference code's behaviour) both encoders run in full every step. Entries stop being added once they
    would exceed ``max_bytes`` (teacher embeddings first: they save the most).
    """

    def __init__(
        self, teacher: Sam, student: Sam, need_teacher: bool, enabled: bool, max_bytes: float, checkpoint: bool = False
    ) -> None:
        self.teacher, self.student = teacher, student
        self.checkpoint = checkpoint  # activation checkpointing of the student's trainable blocks
        self.student_frozen = not any(p.requires_grad for p in student.image_encoder.parameters())
        self.need_teacher = need_teacher or self.student_frozen
        self.depth = 0 if self.student_frozen or not enabled else frozen_prefix_depth(student.image_encoder)
        self.enabled, self.max_bytes = enabled, max_bytes
        self.teacher_entries: dict[tuple[int, int], torch.Tensor] = {}
        self.prefix_entries: dict[tuple[int, int], torch.Tensor] = {}
        self.bytes = 0
        self.teacher_images = 0  # images the teacher encoder ran on (tests and benchmarks read it)

    def _store(self, entries: dict, key: tuple[int, int], value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.enabled and self.bytes + size <= self.max_bytes:
            entries[key] = value.clone()  # not a view: a view would keep its whole batch tensor alive
            self.bytes += size

    @torch.no_grad()
    def _fill(self, batch: Batch) -> tuple[dict, dict]:
        """Run the encoders on the batch's images that are not cached (each distinct key once).

        Returns this batch's fresh teacher embeddings and prefix features, by key (stored too, within budget).
        """
        rows = {}  # key -> first row of the batch with that key
        for i, k in enumerate(batch.keys):
            rows.setdefault(k, i)
        need_t = [k for k in rows if self.need_teacher and k not in self.teacher_entries]
        need_p = [k for k in rows if self.depth and k not in self.prefix_entries]
        run = [k for k in rows if k in need_t or k in need_p]
        teacher_out: dict[tuple[int, int], torch.Tensor] = {}
        prefix_out: dict[tuple[int, int], torch.Tensor] = {}
        if not run:
            return teacher_out, prefix_out
        if self.depth:
            h = encoder_prefix(self.student.image_encoder, batch.images[[rows[k] for k in run]], self.depth)
            prefix_out = dict(zip(run, h))
            if need_t:
                t = encoder_suffix(self.teacher.image_encoder, torch.stack([prefix_out[k] for k in need_t]), self.depth)
                teacher_out = dict(zip(need_t, t))
        else:
            teacher_out = dict(zip(need_t, self.teacher.image_encoder(batch.images[[rows[k] for k in need_t]])))
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
        teacher_out, prefix_out = self._fill(batch)
        f_t = None
        if self.need_teacher:
            f_t = torch.stack([teacher_out[k] if k in teacher_out else self.teacher_entries[k] for k in batch.keys])
        if self.student_frozen:
            return f_t, f_t
        encoder = self.student.image_encoder
        if self.depth:
            h = torch.stack([prefix_out[k] if k in prefix_out else self.prefix_entries[k] for k in batch.keys])
            return f_t, encoder_suffix(encoder, h, self.depth, self.checkpoint)
        return f_t, encoder_suffix(encoder, encoder_prefix(encoder, batch.images, 0), 0, self.checkpoint)
