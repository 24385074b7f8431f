"""What differs between backbone families when *training*, behind one small interface, so that the trainer
(:mod:`infosam_core.training.trainer`), its encoder cache and its batches never branch on a family.

The prediction-time counterpart is :mod:`infosam_core.inference.backends`. A :class:`TrainingBackbone` is
bound to one model (the student or the frozen teacher) and gives:

* ``input_size`` -- the encoder's square input side S;
* ``resize(image)`` -- an RGB uint8 (H, W, 3) image to the encoder's input frame, done once per sample
  (the mask follows with :func:`~infosam_core.data.masks.resize_mask` to the same shape, and prompts are
  drawn in that frame). Normalisation and padding to (S, S) are the model's own ``preprocess``;
* ``encode(images) -> ImageFeatures`` -- the whole image encoder on normalised (B, 3, S, S) input;
* ``decode(features, prompts) -> (low-res logits (B, 1, 4h, 4w), IoU (B, 1), mask token (B, C))`` -- B images
  with one prompt each (a box or one point: :class:`PromptBatch`), always the single-mask output;
* ``mask_token(features, prompts) -> (B, C)`` -- only that output's token (the teacher's share for InfoSAM).
* ``frozen_prefix_depth()``, ``encode_prefix(images, depth, capture)`` and ``encode_from(x, depth, capture,
  checkpoint)`` -- what the trainer's encoder cache runs, one path for every family: the leading blocks
  without a trainable parameter (their output is cached per image; 0 where the family runs its encoder whole)
  and the rest of the encoder from there, capturing the outputs of the feature blocks ``capture`` (channels
  last, by block index) for distillers and decoders. ``encode_from`` returns the family's extra decoder inputs
  but not the decoder's encoder-block inputs (the cache appends those from the captured outputs).

:class:`ImageFeatures` is the image embedding plus ``extra``: per-image decoder inputs besides the embedding
(SAM2's two high-resolution feature maps; empty for SAM). The encoder cache stores and stacks them row by row
without knowing what they are, and the decoder gets them back in the same order -- the way for any family
whose decoder reads more than the embedding (e.g. an early encoder block's output, as HQ-SAM's decoder does).

Each backbone family (:mod:`infosam_core.models.family`) chooses its implementation: :class:`SamTrainingBackbone`
here is segment-anything's ``Sam`` with its encoder run whole (MobileSAM), and the base of the SAM ViT's
backbone (:mod:`infosam_core.models.sam`, which adds the cached frozen prefix); SAM2's is in
:mod:`infosam_core.models.sam2`. :class:`SamTrainingBackbone` encodes with a longest-side resize, prompts as
``SamPredictor`` encodes them (a box = 2 corner tokens, a point = the point + SAM's padding token, so both
kinds stack in one batch) and the batched decoder of :mod:`infosam_core.models.batched_decoder` (token
``hs[:, 1]``). A decoder that reads encoder blocks (HQ-SAM's, ``decoder_blocks``) gets their outputs as the
extra inputs (channels first; the HQ mask and the HQ token come back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from segment_anything.modeling import PromptEncoder, Sam
from torch import nn

from infosam_core.models.batched_decoder import decode, mask_token
from infosam_core.models.decoder_features import captured_block_outputs, decoder_encoder_blocks
from infosam_core.models.transforms import ResizeLongestSide


class PromptBatch(Protocol):
    """One prompt per sample, in the encoder's input frame: ``boxes`` (B, 4) XYXY, ``points`` (B, 1, 2) xy,
    ``labels`` (B, 1), ``is_box`` (B,) bool (which of the two each sample uses). ``training.batches.Batch`` is one."""

    boxes: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    is_box: torch.Tensor


@dataclass
class ImageFeatures:
    """A batch's image-encoder output: ``embed`` (B, C, h, w) and ``extra``, the other per-image decoder inputs
    (B, ...) each (SAM2: ``high_res_feats`` (B, 32, 4h, 4w) and (B, 64, 2h, 2w); SAM: none)."""

    embed: torch.Tensor
    extra: tuple[torch.Tensor, ...] = ()

    def rows(self, index: torch.Tensor | Sequence[int]) -> ImageFeatures:
        """The features of the rows ``index`` (in that order)."""
        return ImageFeatures(self.embed[index], tuple(e[index] for e in self.extra))

    def unbind(self) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        """Per image: (embed (C, h, w), extra tensors without the batch dimension)."""
        return [(self.embed[n], tuple(e[n] for e in self.extra)) for n in range(self.embed.shape[0])]

    @staticmethod
    def stack(items: Sequence[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]) -> ImageFeatures:
        """The inverse of :meth:`unbind` (extra tensors cast to the embedding's dtype)."""
        embed = torch.stack([e for e, _ in items])
        count = len(items[0][1]) if items else 0
        extra = tuple(torch.stack([x[i] for _, x in items]).to(embed.dtype) for i in range(count))
        return ImageFeatures(embed, extra)


class TrainingBackbone(Protocol):
    """What the trainer needs from a model family (see the module docstring)."""

    input_size: int

    @property
    def model(self) -> nn.Module:
        """The model the backbone runs (read-only here, so that a family's backbone may hold its own model class)."""
        ...

    def resize(self, image: np.ndarray) -> np.ndarray: ...

    def encode(self, images: torch.Tensor) -> ImageFeatures: ...

    def frozen_prefix_depth(self) -> int: ...

    def encode_prefix(
        self, images: torch.Tensor, depth: int, capture: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]: ...

    def encode_from(
        self, x: torch.Tensor, depth: int, capture: tuple[int, ...] = (), checkpoint: bool = False
    ) -> tuple[ImageFeatures, dict[int, torch.Tensor]]: ...

    def decode(
        self, features: ImageFeatures, prompts: PromptBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def mask_token(self, features: ImageFeatures, prompts: PromptBatch) -> torch.Tensor: ...


def encode_prompts(prompt_encoder: PromptEncoder, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """segment-anything's sparse (B, 2, C) and dense (B, C, h, w) prompt embeddings: a box gives 2 corner
    tokens, a point gives the point plus segment-anything's padding token, so both kinds stack in one batch."""
    sparse_box, dense = prompt_encoder(points=None, boxes=prompts.boxes, masks=None)
    sparse_point, _ = prompt_encoder(points=(prompts.points, prompts.labels), boxes=None, masks=None)
    sparse = torch.where(prompts.is_box[:, None, None], sparse_box, sparse_point)
    return sparse, dense


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(..., h, w, D) block output -> (..., D, h, w)."""
    return x.movedim(-1, -3)


class WholeEncoderPass:
    """The encoder-cache members of a family whose encoder runs whole (no cached frozen prefix)."""

    def frozen_prefix_depth(self) -> int:
        """0: the encoder has no prefix to cache."""
        return 0

    def encode_prefix(
        self, images: torch.Tensor, depth: int, capture: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        raise ValueError(f"{type(self).__name__} runs its encoder whole: it has no frozen prefix")


class SamTrainingBackbone(WholeEncoderPass):
    """segment-anything's ``Sam`` with its encoder run whole (see the module docstring); ``feature_blocks``: the
    encoder's feature blocks (its family's)."""

    def __init__(self, model: Sam, feature_blocks: Sequence[nn.Module]) -> None:
        self.model = model
        self.feature_blocks = feature_blocks
        self.input_size = int(model.image_encoder.img_size)
        self._transform = ResizeLongestSide(self.input_size)
        self.image_pe = model.prompt_encoder.get_dense_pe()  # (1, C, h, w): a buffer's function, computed once
        #: encoder blocks the decoder reads (HQ-SAM's: the first global-attention block); their outputs are the
        #: extra decoder inputs, (B, D, h, w) each, in this order
        self.decoder_blocks = decoder_encoder_blocks(model.mask_decoder)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Longest side to S (as ``SamPredictor``); ``preprocess`` pads bottom / right."""
        return np.ascontiguousarray(self._transform.apply_image(image))

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        features, captured = self.encode_from(images, 0, self.decoder_blocks)
        return ImageFeatures(features.embed, tuple(channels_first(captured[i]) for i in self.decoder_blocks))

    def encode_from(
        self, x: torch.Tensor, depth: int, capture: tuple[int, ...] = (), checkpoint: bool = False
    ) -> tuple[ImageFeatures, dict[int, torch.Tensor]]:
        """The whole encoder on images ``x`` (``depth`` 0), capturing the feature blocks ``capture``."""
        if depth:
            raise ValueError(f"{type(self).__name__} runs its encoder whole: depth must be 0, got {depth}")
        with captured_block_outputs(self.feature_blocks, capture) as captured:
            embed = self.model.image_encoder(x)
        return ImageFeatures(embed), captured

    def _blocks(self, features: ImageFeatures) -> dict[int, torch.Tensor]:
        return dict(zip(self.decoder_blocks, features.extra))

    def decode(self, features: ImageFeatures, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse, dense = encode_prompts(self.model.prompt_encoder, prompts)
        return decode(self.model.mask_decoder, features.embed, self.image_pe, sparse, dense, self._blocks(features))

    def mask_token(self, features: ImageFeatures, prompts: PromptBatch) -> torch.Tensor:
        sparse, dense = encode_prompts(self.model.prompt_encoder, prompts)
        return mask_token(self.model.mask_decoder, features.embed, self.image_pe, sparse, dense, self._blocks(features))
