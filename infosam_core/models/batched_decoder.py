"""segment-anything's ``MaskDecoder.predict_masks`` for training batches (one implementation for fine-tuning,
distillation and pretraining), exposing the output tokens.

``MaskDecoder.forward`` repeats each image embedding once per prompt (``repeat_interleave``), so a batch of
B images with one prompt each cannot go through it, and it does not return the transformer's output tokens.
:func:`decode` runs the same computation for B images x 1 prompt and returns the single-mask output
(mask token 0) with its token, ``hs[:, 1, :]``, which InfoSAM relates to the image features;
:func:`decode_all` gives all four outputs (single-mask + three multimask) for B prompts on B embeddings.

Other decoders: a decoder module that defines ``batched_decode`` / ``batched_mask_token`` (HQ-SAM's,
:class:`~infosam_core.models.hq_decoder.HqMaskDecoder`) runs its own; :func:`decode` and :func:`mask_token`
dispatch to them and hand over ``encoder_features`` (the outputs of the encoder blocks the decoder declares,
:mod:`~infosam_core.models.decoder_features`). Such a decoder returns the mask it is trained on and the token
that makes that mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from segment_anything.modeling import MaskDecoder


def decode(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    encoder_features: Mapping[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Single-mask decoding of B images with one prompt each.

    Arguments:
      image_embeddings: (B, C, h, w) from the image encoder
      image_pe: (1, C, h, w) dense positional encoding (``prompt_encoder.get_dense_pe()``)
      sparse_prompt_embeddings: (B, N, C)
      dense_prompt_embeddings: (B, C, h, w)
      encoder_features: block index -> (B, D, h, w), for decoders that declare ``encoder_blocks``
    Returns:
      low-res mask logits (B, 1, 4h, 4w), predicted IoU (B, 1), mask token (B, C) -- equal to what
      ``decoder(..., multimask_output=False)`` gives image by image (HQ-SAM: its HQ mask and HQ token).
    """
    if hasattr(decoder, "batched_decode"):
        return decoder.batched_decode(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, encoder_features or {}
        )
    masks, iou, tokens = _decode(
        decoder, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, outputs=1
    )
    return masks, iou, tokens[:, 0]


def decode_all(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All four mask outputs for B prompts, prompt b on ``image_embeddings[b]`` (same arguments as :func:`decode`).

    Returns low-res logits (B, 4, 4h, 4w) and IoU predictions (B, 4); output 0 is the single-mask output,
    1..3 the multimask ones.
    """
    masks, iou, _ = _decode(
        decoder,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        outputs=decoder.num_mask_tokens,
    )
    return masks, iou


def mask_token(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    encoder_features: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Only the single-mask output's token (B, C) of :func:`decode`: the two-way transformer without the mask
    upscaling and hypernetwork (what the frozen teacher contributes to InfoSAM; ~40% of a decoder pass less)."""
    if hasattr(decoder, "batched_mask_token"):
        return decoder.batched_mask_token(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, encoder_features or {}
        )
    hs, _ = _two_way(decoder, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
    return hs[:, 1, :]


def _decode(
    d: MaskDecoder, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, outputs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``outputs`` mask outputs: logits (B, outputs, 4h, 4w), IoU (B, outputs), tokens (B, outputs, C)."""
    hs, src = _two_way(d, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
    b, c, h, w = image_embeddings.shape
    tokens = hs[:, 1 : 1 + outputs, :]
    upscaled = d.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack([d.output_hypernetworks_mlps[i](tokens[:, i, :]) for i in range(outputs)], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, outputs, h, w)
    iou_pred = d.iou_prediction_head(hs[:, 0, :])[:, :outputs]
    return masks, iou_pred, tokens


def _two_way(d: MaskDecoder, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
    tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], dim=0)
    tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
    tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
    return d.transformer(src, pos_src, tokens)
