"""What differs between backbone families at prediction time, behind one small interface, so that
:class:`~infosam_core.inference.predictor.Predictor` does not branch on the family anywhere else.

A backend gives the predictor four things: ``transform`` (prompt coordinates from image pixels to the
encoder's input frame; segment-anything's ``apply_coords`` / ``apply_boxes`` API), ``encode`` (an RGB image
-> its features, extra features and input size), ``decode`` (prompts -> low-res logits and IoU) and
``postprocess`` (low-res logits -> logits at the image's size).

* :class:`SamBackend` -- segment-anything's ``Sam`` (SAM ViT-B/L/H, the bundled tiny model, MobileSAM):
  longest-side resize + padding, the decoder called as ``SamPredictor`` calls it. A decoder that declares
  ``encoder_blocks`` (HQ-SAM's, :mod:`~infosam_core.models.hq_decoder`) gets those blocks' outputs, captured
  at encode time and returned as the extra features -- so they are cached with the embedding -- and passed
  to it as ``encoder_features`` (sam-hq's ``SamPredictor`` does the same with ``interm_features``).
* :class:`Sam2Backend` -- :class:`~infosam_core.models.sam2.Sam2Model`: plain resize to 1024 x 1024,
  boxes as two labelled points, the high-resolution features passed to the decoder, logits clamped to
  [-32, 32] -- as ``SAM2ImagePredictor``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from infosam_core.models.decoder_features import decoder_encoder_blocks, encode_with_blocks
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.sam2 import Sam2Features, Sam2Model, sam2_decode, sam2_postprocess, sam2_preprocess
from infosam_core.models.sam2 import sam2_prompt_points as _sam2_prompt_points
from infosam_core.models.transforms import ResizeLongestSide


class PromptTransform(Protocol):
    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray: ...

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray: ...


class Backend(Protocol):
    transform: PromptTransform

    def encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]: ...

    def decode(
        self,
        features: torch.Tensor,
        extra: tuple[torch.Tensor, ...],
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def postprocess(
        self, low_res: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask logits at the image's size, the low-res logits to return)."""
        ...


class SamBackend:
    """segment-anything's ``Sam`` (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    def encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        input_image = torch.as_tensor(self.transform.apply_image(rgb), device=self.model.device)
        input_image = input_image.permute(2, 0, 1).contiguous()[None, :, :, :]
        blocks = decoder_encoder_blocks(self.model.mask_decoder)
        features, extra = encode_with_blocks(self.model.image_encoder, self.model.preprocess(input_image), blocks)
        return features, extra, tuple(input_image.shape[-2:])

    def decode(self, features, extra, points, boxes, mask_input, multimask_output):
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        more = {"encoder_features": extra} if decoder_encoder_blocks(self.model.mask_decoder) else {}
        return self.model.mask_decoder(
            image_embeddings=features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            **more,
        )

    def postprocess(self, low_res, input_size, original_size):
        return self.model.postprocess_masks(low_res, input_size, original_size), low_res


class Sam2Transform:
    """SAM2's prompt coordinates: ``x / W * 1024``, ``y / H * 1024`` (the image is resized without keeping its
    aspect ratio)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        h, w = original_size
        coords = np.array(coords, dtype=np.float32, copy=True)
        coords[..., 0] = coords[..., 0] / w
        coords[..., 1] = coords[..., 1] / h
        return coords * self.size

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)


class Sam2Backend:
    """:class:`~infosam_core.models.sam2.Sam2Model` (see the module docstring)."""

    def __init__(self, model: Sam2Model) -> None:
        self.model = model
        self.transform = Sam2Transform(model.image_encoder.img_size)

    def encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        x = sam2_preprocess(self.model, rgb)
        features = self.model.image_encoder(x)
        return features.image_embed, tuple(features.high_res_feats), tuple(x.shape[-2:])

    def decode(self, features, extra, points, boxes, mask_input, multimask_output):
        coords, labels = points if points is not None else (None, None)
        prompt_points = _sam2_prompt_points(coords, labels, boxes)
        sparse, dense = self.model.prompt_encoder(points=prompt_points, boxes=None, masks=mask_input)
        repeat = prompt_points is not None and prompt_points[0].shape[0] > 1
        return sam2_decode(self.model, Sam2Features(features, list(extra)), sparse, dense, multimask_output, repeat)

    def postprocess(self, low_res, input_size, original_size):
        return sam2_postprocess(low_res, original_size), torch.clamp(low_res, -32.0, 32.0)


def embedding_fingerprint(model: nn.Module) -> str:
    """What an image's cached features depend on besides the image: the encoder's weights
    (:func:`~infosam_core.models.fingerprint.model_fingerprint`) and, for a decoder that reads encoder blocks,
    which blocks (``_b2`` for HQ-SAM at ViT-B) -- so an embedding cached without them (the base SAM, same
    encoder) is never handed to a decoder that needs them."""
    blocks = decoder_encoder_blocks(model.mask_decoder)
    return model_fingerprint(model.image_encoder) + "".join(f"_b{i}" for i in blocks)


def backend_for(model: nn.Module) -> Backend:
    """The backend of ``model``'s family."""
    return Sam2Backend(model) if isinstance(model, Sam2Model) else SamBackend(model)
