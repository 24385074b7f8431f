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

:class:`ImageFeatures` is the image embedding plus ``extra``: per-image decoder inputs besides the embedding
(SAM2's two high-resolution feature maps; empty for SAM). The encoder cache stores and stacks them row by row
without knowing what they are, and the decoder gets them back in the same order -- the way for any family
whose decoder reads more than the embedding (e.g. an early encoder block's output, as HQ-SAM's decoder does).

Families (chosen by the model's type in :func:`training_backbone_for`, as ``inference.backends.backend_for``):

* :class:`SamTrainingBackbone` -- segment-anything's ``Sam`` (SAM ViT-B/L/H, the bundled tiny model,
  MobileSAM): longest-side resize, prompts as ``SamPredictor`` encodes them (a box = 2 corner tokens, a point
  = the point + SAM's padding token, so both kinds stack in one batch), the batched decoder of
  :mod:`infosam_core.models.batched_decoder` (token ``hs[:, 1]``). A decoder that reads encoder blocks
  (HQ-SAM's, ``decoder_blocks``) gets their outputs as the extra inputs (channels first; the HQ mask and the
  HQ token come back).
* :class:`Sam2TrainingBackbone` -- :class:`~infosam_core.models.sam2.Sam2Model`: plain resize to S x S
  (aspect ratio not kept, no padding; ``SAM2Transforms``' bilinear, anti-aliased resize, rounded to uint8),
  ImageNet mean / std (``Sam2Model.preprocess``); a box goes in as two points labelled 2 and 3 and SAM2's
  prompt encoder then adds one padding point (3 tokens), a point gets the padding point (2 tokens) -- as
  ``SAM2ImagePredictor`` does -- so boxes and points are decoded as two sub-batches (an extra padding token
  would change a point's result) and put back in batch order; the decoder's ``predict_masks`` with the
  high-resolution features, mask output 0 always (no ``dynamic_multimask_via_stability`` replacement), and
  its token ``hs[:, 2]`` (token order [object score, IoU, mask 0..3]; see :mod:`infosam_core.models.sam2`).

Adding a family for training = a class with these members and one line in :func:`training_backbone_for`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from segment_anything.modeling import PromptEncoder
from torch import nn

from infosam_core.models.batched_decoder import decode, mask_token
from infosam_core.models.decoder_features import decoder_encoder_blocks, encode_with_blocks
from infosam_core.models.sam2 import Sam2Model
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

    model: nn.Module
    input_size: int

    def resize(self, image: np.ndarray) -> np.ndarray: ...

    def encode(self, images: torch.Tensor) -> ImageFeatures: ...

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


class SamTrainingBackbone:
    """segment-anything's ``Sam`` (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
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
        return ImageFeatures(*encode_with_blocks(self.model.image_encoder, images, self.decoder_blocks))

    def _blocks(self, features: ImageFeatures) -> dict[int, torch.Tensor]:
        return dict(zip(self.decoder_blocks, features.extra))

    def decode(self, features: ImageFeatures, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse, dense = encode_prompts(self.model.prompt_encoder, prompts)
        return decode(self.model.mask_decoder, features.embed, self.image_pe, sparse, dense, self._blocks(features))

    def mask_token(self, features: ImageFeatures, prompts: PromptBatch) -> torch.Tensor:
        sparse, dense = encode_prompts(self.model.prompt_encoder, prompts)
        return mask_token(self.model.mask_decoder, features.embed, self.image_pe, sparse, dense, self._blocks(features))


class Sam2TrainingBackbone:
    """:class:`~infosam_core.models.sam2.Sam2Model` (see the module docstring)."""

    TOKEN_INDEX = 2  # hs[:, 2]: mask output 0, after the object-score and IoU tokens

    def __init__(self, model: Sam2Model) -> None:
        self.model = model
        self.input_size = int(model.image_encoder.img_size)
        self.image_pe = model.prompt_encoder.get_dense_pe()

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Plain bilinear (anti-aliased) resize to S x S on [0, 1] floats, as ``SAM2Transforms``, rounded to uint8."""
        from torchvision.transforms.functional import resize, to_tensor

        x = resize(to_tensor(np.ascontiguousarray(image)), [self.input_size, self.input_size])
        return np.ascontiguousarray((x * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        out = self.model.image_encoder(images)
        return ImageFeatures(out.image_embed, tuple(out.high_res_feats))

    def _groups(self, prompts: PromptBatch):
        """(rows, prompt embeddings) for the box rows and the point rows (skipping an empty group)."""
        groups = []
        is_box = prompts.is_box
        for use_box in (True, False):
            rows = torch.nonzero(is_box == use_box).flatten()
            if rows.numel() == 0:
                continue
            if use_box:
                points = prompts.boxes[rows].reshape(-1, 2, 2)
                labels = torch.tensor([[2, 3]], dtype=torch.int, device=points.device).expand(rows.numel(), 2)
            else:
                points, labels = prompts.points[rows], prompts.labels[rows].to(torch.int)
            sparse, dense = self.model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            groups.append((rows, sparse, dense))
        return groups

    @staticmethod
    def _in_batch_order(groups_rows: list[torch.Tensor], parts: list[torch.Tensor]) -> torch.Tensor:
        if len(parts) == 1:
            return parts[0]
        order = torch.cat(groups_rows)
        return torch.cat(parts)[torch.argsort(order)]

    def decode(self, features: ImageFeatures, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask output 0 of ``sam_mask_decoder.predict_masks`` (what ``mask_decoder(..., multimask_output=False)``
        gives without the dynamic multimask replacement): logits (B, 1, 4h, 4w), IoU (B, 1), token (B, C)."""
        rows_list, logits, ious, tokens = [], [], [], []
        for rows, sparse, dense in self._groups(prompts):
            part = features.rows(rows)
            masks, iou, mask_tokens, _ = self.model.mask_decoder.predict_masks(
                image_embeddings=part.embed,
                image_pe=self.image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=list(part.extra),
            )
            rows_list.append(rows)
            logits.append(masks[:, :1])
            ious.append(iou[:, :1])
            tokens.append(mask_tokens[:, 0])
        return (
            self._in_batch_order(rows_list, logits),
            self._in_batch_order(rows_list, ious),
            self._in_batch_order(rows_list, tokens),
        )

    def mask_token(self, features: ImageFeatures, prompts: PromptBatch) -> torch.Tensor:
        """Only the token ``hs[:, 2]`` (B, C): the two-way transformer, no upscaling (the high-resolution
        features enter only the upscaling, so they are not read)."""
        d = self.model.mask_decoder
        rows_list, tokens = [], []
        for rows, sparse, dense in self._groups(prompts):
            output_tokens = torch.cat([d.obj_score_token.weight, d.iou_token.weight, d.mask_tokens.weight], dim=0)
            output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
            src = features.embed[rows] + dense
            pos_src = self.image_pe.expand(src.shape[0], -1, -1, -1)
            hs, _ = d.transformer(src, pos_src, torch.cat((output_tokens, sparse), dim=1))
            rows_list.append(rows)
            tokens.append(hs[:, self.TOKEN_INDEX])
        return self._in_batch_order(rows_list, tokens)


def training_backbone_for(model: nn.Module) -> TrainingBackbone:
    """The training backbone of ``model``'s family."""
    return Sam2TrainingBackbone(model) if isinstance(model, Sam2Model) else SamTrainingBackbone(model)
