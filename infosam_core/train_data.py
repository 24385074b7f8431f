"""Training batches: resizing once, flip augmentation, the paper's per-sample prompts, batched prompt encoding.

Samples are resized once (longest side = the model's input size, as ``SamPredictor``) and kept as uint8;
each step flips the chosen ones, normalises and pads them with SAM's own ``preprocess`` (normalise, then
pad bottom/right), and draws one prompt per sample from the flipped, resized mask -- in input-frame pixels,
so the box jitter (5 px) is measured at the model's input resolution, as the reference code did at 1024.

Flip variants: 0 = none, 1 = horizontal, 2 = vertical, 3 = both. An (image, variant) pair is the key of
:class:`EncoderCache`, which holds the teacher's embeddings and the student's frozen-prefix features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from segment_anything.modeling import PromptEncoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide

from infosam_core.data import SegmentationSample
from infosam_core.prompts import box_from_mask, point_from_mask


@dataclass
class PreparedSample:
    """A sample resized for the model: ``image`` uint8 (h, w, 3) and ``mask`` bool (h, w), max(h, w) = input size.

    ``image_key`` identifies the image: samples that share one image array (several objects of one image)
    share the key, hence the cached embeddings.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str
    image_key: int


@dataclass
class Batch:
    """One training batch on the training device.

    images: (B, 3, S, S) float, normalised and padded; masks: (B, 1, S, S) float {0, 1};
    boxes: (B, 4) XYXY; points: (B, 1, 2) xy; labels: (B, 1); is_box: (B,) bool (which prompt each uses);
    keys: (image key, flip variant) per sample -- the encoder cache's key.
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    is_box: torch.Tensor
    keys: list[tuple[int, int]]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (anti-aliased when shrinking) resize of a bool mask, thresholded at 0.5: -> bool ``shape``."""
    if mask.shape == shape:
        return mask.astype(bool, copy=True)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy() >= 0.5


def prepare_samples(samples: list[SegmentationSample], image_size: int, drop_empty: bool = True) -> list[PreparedSample]:
    """Resize every image once (samples sharing an image array share the result). Samples whose mask is empty
    (no prompt can be drawn) are dropped with a warning."""
    transform = ResizeLongestSide(image_size)
    prepared, empty = [], []
    resized: dict[int, tuple[int, np.ndarray]] = {}  # id(original array) -> (image key, resized image)
    for s in samples:
        if id(s.image) not in resized:
            resized[id(s.image)] = (len(resized), np.ascontiguousarray(transform.apply_image(s.image)))
        key, image = resized[id(s.image)]
        mask = resize_mask(s.mask, image.shape[:2])
        if drop_empty and not mask.any():
            empty.append(s.name)
            continue
        prepared.append(PreparedSample(image, mask, s.name, key))
    if empty:
        warnings.warn(
            f"{len(empty)} sample(s) have an empty mask and are skipped for training: {', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''}",
            stacklevel=3,
        )
    return prepared


def flip_variants(hflip: bool, vflip: bool) -> list[int]:
    """The flip variants augmentation draws from: [0] plus 1 (h), 2 (v), 3 (both) when enabled."""
    return [v for v in range(4) if (not v & 1 or hflip) and (not v & 2 or vflip)]


def apply_flip(array: np.ndarray, variant: int) -> np.ndarray:
    if variant & 1:
        array = array[:, ::-1]
    if variant & 2:
        array = array[::-1]
    return np.ascontiguousarray(array)


def make_batch(
    sam: Sam,
    samples: list[PreparedSample],
    keys: list[tuple[int, int]],
    rng: np.random.Generator,
    p_box: float = 0.5,
    jitter: int = 5,
) -> Batch:
    """Flip, normalise, pad and prompt the samples ``keys`` = [(sample index, flip variant), ...] on ``sam``'s
    device. ``Batch.keys`` are (image key, flip variant): what identifies the encoder input."""
    device = sam.pixel_mean.device
    size = sam.image_encoder.img_size
    images, masks, boxes, points, labels, is_box, image_keys = [], [], [], [], [], [], []
    for index, variant in keys:
        s = samples[index]
        image_keys.append((s.image_key, variant))
        image, mask = apply_flip(s.image, variant), apply_flip(s.mask, variant)
        x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()
        images.append(sam.preprocess(x))
        m = torch.zeros(1, 1, size, size)
        m[0, 0, : mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask)
        masks.append(m)
        use_box = bool(rng.random() < p_box)
        box = box_from_mask(mask, rng, jitter) if use_box else np.zeros(4)
        point, label = (np.zeros((1, 2)), np.ones(1)) if use_box else point_from_mask(mask, rng)
        boxes.append(box)
        points.append(point)
        labels.append(label)
        is_box.append(use_box)
    return Batch(
        images=torch.cat(images),
        masks=torch.cat(masks).to(device),
        boxes=torch.as_tensor(np.stack(boxes), dtype=torch.float32, device=device),
        points=torch.as_tensor(np.stack(points), dtype=torch.float32, device=device),
        labels=torch.as_tensor(np.stack(labels), dtype=torch.int64, device=device),
        is_box=torch.as_tensor(is_box, device=device),
        keys=image_keys,
    )


def encode_prompts(prompt_encoder: PromptEncoder, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse (B, 2, C) and dense (B, C, h, w) prompt embeddings: a box gives 2 corner tokens, a point gives
    the point plus segment-anything's padding token, so both kinds stack in one batch."""
    sparse_box, dense = prompt_encoder(points=None, boxes=batch.boxes, masks=None)
    sparse_point, _ = prompt_encoder(points=(batch.points, batch.labels), boxes=None, masks=None)
    sparse = torch.where(batch.is_box[:, None, None], sparse_box, sparse_point)
    return sparse, dense


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

    def __init__(self, teacher: Sam, student: Sam, need_teacher: bool, enabled: bool, max_bytes: float,
                 checkpoint: bool = False) -> None:
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
