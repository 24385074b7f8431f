"""HQ-SAM's mask decoder (Ke et al., NeurIPS 2023, "Segment Anything in High Quality", arXiv 2306.01567):
SAM's mask decoder plus a High-Quality output token whose mask is made from SAM's decoder features fused
with early ViT features.

With C = the decoder's width (256), D = the width of the early encoder feature, an image embedding
F (B, C, h, w) and that early feature V (B, D, h, w) -- at a segment-anything ViT the output of the encoder's
*first global-attention block* (block 2 at ViT-B/L/H: the first block with ``window_size == 0``, read from
the encoder; D = the ViT's width, 768 at ViT-B), at MobileSAM's TinyViT the output of its second stage
after its downsample (64 x 64 tokens, D = 160; what sam-hq's ``vit_tiny`` reads). The model's backbone
family says which (:meth:`~infosam_core.models.family.BackboneFamily.hq_feature_block`):

    hq_features = embedding_encoder(F) + compress_vit_feat(V)                           (B, C/8, 4h, 4w)
    tokens      = [iou, mask_0..3, hf_token, prompt tokens]  -> SAM's two-way transformer -> hs, src
    U           = output_upscaling(src)                                                 (B, C/8, 4h, 4w)
    m_k         = hypernet_k(hs[:, 1+k]) . U                     k = 0..3 (SAM's four masks)
    m_hq        = hf_mlp(hs[:, 5]) . (embedding_maskfeature(U) + hq_features)           (the HQ mask)

``compress_vit_feat``: ConvT(D->C, 2x2 s2), LayerNorm2d, GELU, ConvT(C->C/8, 2x2 s2); ``embedding_encoder``:
ConvT(C->C/4), LayerNorm2d, GELU, ConvT(C/4->C/8); ``embedding_maskfeature``: Conv3x3(C/8->C/4), LayerNorm2d,
GELU, Conv3x3(C/4->C/8); ``hf_mlp``: a 3-layer MLP C->C->C->C/8 like SAM's hypernetworks; ``hf_token``: one
C-vector. Added parameters: 1,071,104 at ViT-B (D = 768), 1,333,248 at ViT-L, 1,595,392 at ViT-H,
415,744 at the bundled tiny model (D = 128), 448,512 at MobileSAM ``vit_t`` (D = 160; sam-hq's ``vit_tiny``).
The parts keep the names and layouts of the reference ``segment-anything-hq`` package
(``mask_decoder.hf_token.weight``, ``mask_decoder.hf_mlp.layers.{0,1,2}``,
``mask_decoder.compress_vit_feat.{0,1,3}``, ``mask_decoder.embedding_encoder.{0,1,3}``,
``mask_decoder.embedding_maskfeature.{0,1,3}``), so sam-hq checkpoints map 1:1, and SAM's parts keep
theirs (``mask_decoder.transformer.*``, ...).

Outputs (as sam-hq's ``MaskDecoderHQ``):

* prediction (:meth:`HqMaskDecoder.forward`): one mask per prompt. SAM's part is mask 0
  (``multimask_output=False``) or the best of masks 1..3 by predicted IoU (``multimask_output=True``); the
  returned logits are ``m_sam + m_hq`` (``hq_token_only=False``, sam-hq's predictor default, which its
  authors recommend for objects like COCO's) or ``m_hq`` (``hq_token_only=True``, for thin structures);
  the IoU is SAM's for the chosen mask (the HQ token has no IoU head).
* training (:meth:`HqMaskDecoder.batched_decode`, :mod:`~infosam_core.models.batched_decoder`): the HQ
  mask ``m_hq`` alone -- HQ-SAM's training loss is on it -- with SAM's IoU 0 and the HQ token's output
  ``hs[:, 5]`` as the mask token (the token that makes the trained mask; InfoSAM relates it to the
  image features).

The decoder declares the encoder blocks it reads (:attr:`HqMaskDecoder.encoder_blocks`, indices into the
encoder's feature blocks: a ViT's blocks, TinyViT's stages, see :mod:`~infosam_core.models.decoder_features`);
whoever runs the encoder captures their outputs (prediction: the backend at encode time, cached with the embedding;
training: the encoder cache) and passes them as ``encoder_features``, channels first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from infosam_core.models.initialization import seeded_init_

#: the HQ parts' sub-module names inside the mask decoder (sam-hq's names)
HQ_PARTS = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")
#: a key every sam-hq checkpoint has (how a loader recognises one)
HQ_MARKER_KEY = "mask_decoder.hf_token.weight"
#: SAM's decoder parts the HQ decoder shares (same modules, same state-dict keys)
SAM_PARTS = ("transformer", "iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps")


class HqMaskDecoder(nn.Module):
    """SAM's mask decoder with HQ-SAM's parts (see the module docstring). Built around an existing
    ``MaskDecoder``: its modules are kept under the same names (the same objects, not copies)."""

    # SAM's parts (:data:`SAM_PARTS`), set from ``base`` by name
    transformer: nn.Module
    iou_token: nn.Embedding
    mask_tokens: nn.Embedding
    output_upscaling: nn.Sequential
    output_hypernetworks_mlps: nn.ModuleList

    def __init__(
        self,
        base: MaskDecoder,
        vit_dim: int,
        encoder_block: int,
        generator: torch.Generator | None = None,
        hq_token_only: bool = False,
    ) -> None:
        super().__init__()
        for name in SAM_PARTS:
            setattr(self, name, getattr(base, name))
        self.iou_prediction_head = base.iou_prediction_head
        self.transformer_dim = c = base.transformer_dim
        self.num_multimask_outputs = base.num_multimask_outputs
        self.num_mask_tokens = base.num_mask_tokens  # SAM's four (sam-hq counts five: + the HQ token)
        #: encoder blocks whose outputs :meth:`forward` needs as ``encoder_features`` (channels first)
        self.encoder_blocks: tuple[int, ...] = (encoder_block,)
        self.hq_token_only = hq_token_only
        device, dtype = base.iou_token.weight.device, base.iou_token.weight.dtype
        with torch.device("meta"):  # built without the global RNG, initialised below from ``generator``
            self.hf_token = nn.Embedding(1, c)
            self.hf_mlp = MLP(c, c, c // 8, 3)
            self.compress_vit_feat = nn.Sequential(
                nn.ConvTranspose2d(vit_dim, c, kernel_size=2, stride=2),
                LayerNorm2d(c),
                nn.GELU(),
                nn.ConvTranspose2d(c, c // 8, kernel_size=2, stride=2),
            )
            self.embedding_encoder = nn.Sequential(
                nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
                LayerNorm2d(c // 4),
                nn.GELU(),
                nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            )
            self.embedding_maskfeature = nn.Sequential(
                nn.Conv2d(c // 8, c // 4, 3, 1, 1),
                LayerNorm2d(c // 4),
                nn.GELU(),
                nn.Conv2d(c // 4, c // 8, 3, 1, 1),
            )
        for name in HQ_PARTS:
            part = getattr(self, name).to_empty(device=device).to(dtype)
            _init_default_(part, generator)
            setattr(self, name, part)

    def hq_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The HQ parts' parameters, named as in the decoder's state dict."""
        return [(n, p) for n, p in self.named_parameters() if n.split(".", 1)[0] in HQ_PARTS]

    # ----------------------------------------------------------------------------------------- running
    def _features(self, encoder_features: Sequence[torch.Tensor] | Mapping[int, torch.Tensor]) -> torch.Tensor:
        if isinstance(encoder_features, Mapping):
            encoder_features = [encoder_features[i] for i in self.encoder_blocks if i in encoder_features]
        if len(encoder_features) < 1:
            raise ValueError(
                "the HQ-SAM decoder needs the output of encoder block "
                f"{self.encoder_blocks[0]} (encoder_features); none was given"
            )
        vit = encoder_features[0]
        return vit.to(cast(nn.ConvTranspose2d, self.compress_vit_feat[0]).weight.dtype)

    def _run(self, image_embeddings, image_pe, sparse, dense, vit_features, repeat: bool):
        """Logits of SAM's four masks + the HQ mask (B, 5, 4h, 4w), SAM's IoU (B, 4), tokens hs (B, T, C)."""
        hq_features = self.embedding_encoder(image_embeddings) + self.compress_vit_feat(vit_features)
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        tokens = torch.cat((tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
        if repeat:  # one image, N prompts (segment-anything's convention)
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
            hq_features = hq_features.expand(tokens.shape[0], -1, -1, -1)
        else:  # B images, one prompt each
            src = image_embeddings
        src = src + dense
        pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        n = self.num_mask_tokens
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        hyper = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(n)], dim=1)
        b, c, h, w = upscaled.shape
        masks_sam = (hyper @ upscaled.view(b, c, h * w)).view(b, n, h, w)
        mask_hq = (self.hf_mlp(hs[:, 1 + n]).unsqueeze(1) @ upscaled_hq.reshape(b, c, h * w)).view(b, 1, h, w)
        iou = self.iou_prediction_head(hs[:, 0])
        return torch.cat([masks_sam, mask_hq], dim=1), iou, hs

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        encoder_features: Sequence[torch.Tensor] | Mapping[int, torch.Tensor] = (),
        hq_token_only: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """sam-hq's ``MaskDecoderHQ.forward`` for one image and N prompts: (N, 1, 4h, 4w) logits, (N, 1) IoU.

        ``image_embeddings`` (1, C, h, w); ``encoder_features``: the outputs of :attr:`encoder_blocks`,
        (1, D, h, w) each; ``hq_token_only`` None = :attr:`hq_token_only`. See the module docstring.
        """
        hq_only = self.hq_token_only if hq_token_only is None else hq_token_only
        masks, iou, _ = self._run(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            self._features(encoder_features),
            repeat=True,
        )
        n = self.num_mask_tokens
        if multimask_output:
            iou, best = torch.max(iou[:, 1:n], dim=1)
            iou = iou.unsqueeze(1)
            masks_sam = masks[:, 1:n][torch.arange(masks.shape[0], device=masks.device), best].unsqueeze(1)
        else:
            iou = iou[:, :1]
            masks_sam = masks[:, :1]
        mask_hq = masks[:, n : n + 1]
        return (mask_hq if hq_only else masks_sam + mask_hq), iou

    def batched_decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        encoder_features: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B images with one prompt each, for training: the HQ mask's logits (B, 1, 4h, 4w), SAM's IoU
        prediction for mask 0 (B, 1) and the HQ token (B, C) (see the module docstring)."""
        masks, iou, hs = self._run(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            self._features(encoder_features),
            repeat=False,
        )
        n = self.num_mask_tokens
        return masks[:, n : n + 1], iou[:, :1], hs[:, 1 + n]

    def batched_mask_token(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        encoder_features: Sequence[torch.Tensor] | Mapping[int, torch.Tensor] = (),
    ) -> torch.Tensor:
        """Only the token :meth:`batched_decode` returns (B, C): the two-way transformer alone (the HQ
        features are not needed for it)."""
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        tokens = torch.cat(
            (tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1), sparse_prompt_embeddings), dim=1
        )
        src = image_embeddings + dense_prompt_embeddings
        hs, _ = self.transformer(src, image_pe.expand(src.shape[0], -1, -1, -1), tokens)
        return hs[:, 1 + self.num_mask_tokens]


def _init_default_(module: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's default initialisation of the HQ parts (what sam-hq's modules get), from ``generator``:
    Linear / Conv / ConvTranspose kaiming-uniform(a=sqrt 5) with bias uniform +-1/sqrt(fan_in), Embedding
    N(0, 1), LayerNorm2d weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            seeded_init_(m.weight, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
            if m.bias is not None:
                fan_in = nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                seeded_init_(m.bias, nn.init.uniform_, generator, a=-bound, b=bound)
        elif isinstance(m, nn.Embedding):
            seeded_init_(m.weight, nn.init.normal_, generator)
        elif isinstance(m, LayerNorm2d):
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


def add_hq_decoder(
    sam: Sam,
    feature_block: tuple[int, int],
    generator: torch.Generator | None = None,
    hq_token_only: bool = False,
) -> HqMaskDecoder:
    """Replace ``sam.mask_decoder`` by an :class:`HqMaskDecoder` around it, fusing the encoder output
    ``feature_block`` = ``(index into the feature blocks, width D)`` (the model's family says which:
    :meth:`~infosam_core.models.family.BackboneFamily.hq_feature_block`), HQ parts randomly initialised from
    ``generator``; or return the one it already has."""
    if isinstance(sam.mask_decoder, HqMaskDecoder):
        return sam.mask_decoder
    if not isinstance(sam.mask_decoder, MaskDecoder):
        raise ValueError(
            f"HQ-SAM extends segment-anything's MaskDecoder; this model's decoder is a "
            f"{type(sam.mask_decoder).__name__}"
        )
    block, width = feature_block
    sam.mask_decoder = HqMaskDecoder(sam.mask_decoder, width, block, generator, hq_token_only)
    return sam.mask_decoder


def has_hq_tensors(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict holds HQ-SAM's decoder parts (a sam-hq checkpoint)."""
    return HQ_MARKER_KEY in state
