"""What differs between backbone families at prediction time, behind one small interface, so that
:class:`~infosam_core.inference.predictor.Predictor` does not branch on the family anywhere else.

A backend gives the predictor four things: ``transform`` (prompt coordinates from image pixels to the
encoder's input frame; segment-anything's ``apply_coords`` / ``apply_boxes`` API), ``encode`` (an RGB image
-> its features, extra features and input size), ``decode`` (prompts -> low-res logits and IoU) and
``postprocess`` (low-res logits -> logits at the image's size).

Each backbone family makes its model's backend (:meth:`~infosam_core.models.family.BackboneFamily.prediction_backend`,
found by :func:`backend_for`): segment-anything's ``Sam`` (SAM ViT-B/L/H, the bundled tiny model, MobileSAM)
uses :class:`~infosam_core.models.sam.SamBackend` -- longest-side resize + padding, the decoder called as
``SamPredictor`` calls it, the outputs of the encoder blocks a decoder reads (HQ-SAM's) cached with the
embedding -- and SAM2 :class:`~infosam_core.models.sam2.Sam2Backend` -- plain resize to 1024 x 1024, boxes as
two labelled points, the high-resolution features passed to the decoder, logits clamped to [-32, 32], as
``SAM2ImagePredictor``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from infosam_core.models.decoder_features import decoder_encoder_blocks
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of


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


def embedding_fingerprint(model: SamLike) -> str:
    """What an image's cached features depend on besides the image: the encoder's weights
    (:func:`~infosam_core.models.fingerprint.model_fingerprint`) and, for a decoder that reads encoder blocks,
    which blocks (``_b2`` for HQ-SAM at ViT-B) -- so an embedding cached without them (the base SAM, same
    encoder) is never handed to a decoder that needs them."""
    blocks = decoder_encoder_blocks(model.mask_decoder)
    return model_fingerprint(model.image_encoder) + "".join(f"_b{i}" for i in blocks)


def backend_for(model: SamLike) -> Backend:
    """The backend of ``model``'s family."""
    return family_of(model).prediction_backend(model)
