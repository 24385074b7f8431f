"""HQ-SAM (Ke et al., NeurIPS 2023, "Segment Anything in High Quality", arXiv 2306.01567) as a PEFT method:
a High-Quality output token with its own 3-layer MLP, and a fusion of the encoder's early features (the
output of its first global-attention block; MobileSAM's TinyViT: its second stage) with the mask decoder's
features; SAM itself stays frozen.

The decoder and its formulas are :class:`~infosam_core.models.hq_decoder.HqMaskDecoder`; this module puts one
in place of ``sam.mask_decoder`` (SAM's decoder modules kept under their keys, the HQ parts added under
sam-hq's: ``mask_decoder.hf_token.weight``, ``mask_decoder.hf_mlp.*``, ``mask_decoder.compress_vit_feat.*``,
``mask_decoder.embedding_encoder.*``, ``mask_decoder.embedding_maskfeature.*``) and makes only the HQ parts
trainable (``train_decoder`` defaults to False here, as in HQ-SAM; set it to also train SAM's decoder).
Added parameters: 1,071,104 at ViT-B, 1,333,248 at ViT-L, 1,595,392 at ViT-H, 415,744 at tiny, 448,512 at
MobileSAM ``vit_t`` (sam-hq's ``vit_tiny``: "Light HQ-SAM").

* Initialisation: PyTorch's defaults, as sam-hq's training (drawn from the run's generator). The HQ mask is
  therefore not SAM's at step 0 (unlike the other methods, HQ-SAM adds an output rather than a residual).
  A model loaded from a sam-hq checkpoint (``load_sam("vit_b", "sam_hq_vit_b.pth")``,
  ``load_sam("vit_t", "sam_hq_vit_tiny.pth")``) already has an HQ decoder: its trained HQ parts are kept as
  the starting point.
* Training: the loss is on the HQ mask (HQ-SAM's training); InfoSAM's student mask token z_m is the HQ
  token's output (the token that makes that mask); the teacher (the pre-trained base) keeps SAM's ``hs[:, 1]``.
* Prediction / evaluation / segment-all: one mask per prompt, sam-hq's predictor semantics; ``hq_token_only``
  False (sam-hq's default): SAM's logits + the HQ logits; True: the HQ logits alone.

Encoders: segment-anything's ViT (tiny, ViT-B/L/H: the first global-attention block, blocks[2] at ViT-B) and
MobileSAM's TinyViT (``vit_t``: the output of its second stage, 64 x 64 x 160, as sam-hq's ``vit_tiny``). Not
defined for SAM2 (Hiera, another decoder: HQ-SAM 2 is a different model), refused with one message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam

from infosam_core.models.hq_decoder import add_hq_decoder
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import find_family
from infosam_core.peft.common import PeftConfig
from infosam_core.peft.method import PeftMethod


@dataclass
class HqSamConfig(PeftConfig):
    train_decoder: bool = False
    hq_token_only: bool = False


def inject(sam: SamLike, config: HqSamConfig, generator: torch.Generator | None = None) -> None:
    name = getattr(sam, "model_type", type(sam).__name__)
    try:
        family = find_family(sam) if isinstance(sam, Sam) else None
        feature_block = family.hq_feature_block(sam.image_encoder) if family is not None else None
    except ValueError as exc:
        raise ValueError(f"hq_sam is not available for {name}: {exc} (use tiny, vit_b/l/h or vit_t)") from None
    if feature_block is None:
        raise ValueError(
            f"hq_sam is not available for {name}: HQ-SAM extends segment-anything's SAM with a segment-anything "
            "ViT image encoder (tiny, vit_b/l/h) or MobileSAM's TinyViT (vit_t); SAM2 has no ViT global-attention "
            "blocks and another decoder"
        )
    decoder = add_hq_decoder(sam, feature_block, generator)
    decoder.hq_token_only = config.hq_token_only
    for _, param in decoder.hq_parameters():
        param.requires_grad_(True)


METHOD = PeftMethod(
    "hq_sam", HqSamConfig, inject, "HQ-SAM: HQ output token + early-feature fusion (SAM frozen)", "HQ-SAM"
)
