"""Training batches: resizing once, flip augmentation, the paper's per-sample prompts, batched prompt encoding.

Samples are resized once (as the model's family resizes: SAM's longest side = the model's input size, as
``SamPredictor``; SAM2's plain resize to S x S -- :meth:`TrainingBackbone.resize
<infosam_core.models.training_backbone.TrainingBackbone.resize>`) and kept as uint8; each step flips the chosen
ones, normalises and pads them with the model's own ``preprocess`` (SAM: normalise, then pad bottom/right),
and draws one prompt per sample from the flipped, resized mask -- in input-frame pixels, so the box jitter
(5 px) is measured at the model's input resolution, as the reference code did at 1024. The prompts are
encoded by the family's backbone (:mod:`infosam_core.models.training_backbone`).

Randomness is a pure function of (seed, epoch, sample index): the epoch's order comes from
:func:`epoch_order` and each sample's flip and prompt from its own generator (:func:`sample_rng`), so a
sample gets the same augmentation however the global batch is split over processes.

Flip variants: 0 = none, 1 = horizontal, 2 = vertical, 3 = both. An (image, variant) pair is the key of
:class:`EncoderCache`, which holds the teacher's embeddings and the student's frozen-prefix features.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.checkpoint

from infosam_core.data.datasets import SegmentationSample
from infosam_core.data.masks import resize_mask
from infosam_core.data.prompt_sampling import box_from_mask, point_from_mask
from infosam_core.models.protocols import SamLike
from infosam_core.models.transforms import ResizeLongestSide


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


def prepare_samples(
    samples: list[SegmentationSample],
    image_size: int,
    drop_empty: bool = True,
    resize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[PreparedSample]:
    """Resize every image once (samples sharing an image array share the result) with ``resize`` (the model
    family's, :meth:`TrainingBackbone.resize <infosam_core.models.training_backbone.TrainingBackbone.resize>`;
    default: SAM's longest side to ``image_size``), each mask to its image's shape. Samples whose mask is empty
    (no prompt can be drawn) are dropped with a warning."""
    if resize is None:
        transform = ResizeLongestSide(image_size)
        resize = transform.apply_image
    prepared, empty = [], []
    resized: dict[int, tuple[int, np.ndarray]] = {}  # id(original array) -> (image key, resized image)
    for s in samples:
        if id(s.image) not in resized:
            resized[id(s.image)] = (len(resized), np.ascontiguousarray(resize(s.image)))
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


_ORDER_STREAM, _SAMPLE_STREAM = 0, 1  # first seed word: keeps the two kinds of generators apart


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` samples in ``epoch`` (a permutation, the same in every process)."""
    return np.random.default_rng([_ORDER_STREAM, seed, epoch]).permutation(n)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s flip variant and prompt in ``epoch``."""
    return np.random.default_rng([_SAMPLE_STREAM, seed, epoch, index])


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
    sam: SamLike,
    samples: list[PreparedSample],
    keys: list[tuple[int, int]],
    rng: np.random.Generator | Sequence[np.random.Generator],
    p_box: float = 0.5,
    jitter: int = 5,
) -> Batch:
    """Flip, normalise, pad and prompt the samples ``keys`` = [(sample index, flip variant), ...] on ``sam``'s
    device. ``rng``: one generator for all prompts, or one per key (:func:`sample_rng`, as training does).
    ``Batch.keys`` are (image key, flip variant): what identifies the encoder input."""
    device = sam.device
    size = sam.image_encoder.img_size
    rngs = [rng] * len(keys) if isinstance(rng, np.random.Generator) else list(rng)
    if len(rngs) != len(keys):
        raise ValueError(f"make_batch: {len(keys)} samples but {len(rngs)} generators")
    images, masks, boxes, points, labels, is_box, image_keys = [], [], [], [], [], [], []
    for (index, variant), generator in zip(keys, rngs):
        s = samples[index]
        image_keys.append((s.image_key, variant))
        image, mask = apply_flip(s.image, variant), apply_flip(s.mask, variant)
        x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()
        images.append(sam.preprocess(x))
        m = torch.zeros(1, 1, size, size)
        m[0, 0, : mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask)
        masks.append(m)
        use_box = bool(generator.random() < p_box)
        box = box_from_mask(mask, generator, jitter) if use_box else np.zeros(4)
        point, label = (np.zeros((1, 2)), np.ones(1)) if use_box else point_from_mask(mask, generator)
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
