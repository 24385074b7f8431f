"""The segment-anything backbone family (SAM ViT-B/L/H and the bundled tiny SAM, same classes): architectures
by name, building a model (random weights), loading a checkpoint into one, checked, and :data:`FAMILY`, what
the rest of the core asks about these models (:class:`~infosam_core.models.family.BackboneFamily`).

Everything that knows the ViT's layout is here: its ``blocks`` are what PEFT adapts (segment-anything
``Block`` s, which methods replace by wrappers), what decoders and distillers index (every block is the ViT's
width on one grid; the global-attention blocks are those with ``window_size == 0``) and what HQ-SAM's decoder
reads (the first global-attention block). Prediction: :class:`SamBackend` (shared with MobileSAM), a
longest-side resize + padding and the decoder called as ``SamPredictor`` calls it. Training:
:class:`VitTrainingBackbone`, whose frozen leading blocks (:func:`frozen_prefix_depth`) the trainer's encoder
cache runs once per image (:func:`encoder_prefix`) and the rest every step (:func:`encoder_suffix`, with
optional activation checkpointing).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.utils.checkpoint
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block
from torch import nn

from infosam_core.models.checkpoints import CheckpointError, block_count, check_state_matches, load_state_dict_file
from infosam_core.models.decoder_features import decoder_encoder_blocks, encode_with_blocks
from infosam_core.models.family import BackboneFamily, BlockGeometry
from infosam_core.models.fused_attention import use_fused_attention
from infosam_core.models.hq_decoder import add_hq_decoder, has_hq_tensors
from infosam_core.models.protocols import SamLike
from infosam_core.models.training_backbone import ImageFeatures, SamTrainingBackbone
from infosam_core.models.transforms import ResizeLongestSide

PIXEL_MEAN = (123.675, 116.28, 103.53)


PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamArchitecture:
    """Sizes of one SAM variant. All variants share segment-anything's classes."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_depth: int = 2

    @property
    def image_embedding_size(self) -> int:
        return self.image_size // self.patch_size


ARCHITECTURES: dict[str, SamArchitecture] = {
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    # The bundled model: 256 px input, 8 px patches -> a 32x32 embedding grid (SAM's is 64x64),
    # 128x128 low-res masks. ~5 M parameters; runs interactively on a 2-core CPU.
    "tiny": SamArchitecture(
        encoder_embed_dim=128,
        encoder_depth=4,
        encoder_num_heads=4,
        encoder_global_attn_indexes=(1, 3),
        image_size=256,
        patch_size=8,
        window_size=8,
        decoder_mlp_dim=512,
    ),
}


def build_sam(model_type: str) -> Sam:
    """A randomly initialised SAM of the given type (no weights loaded), in eval mode."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {', '.join(ARCHITECTURES)}")
    a = ARCHITECTURES[model_type]
    return sam_with_encoder(ImageEncoderViT(**vit_encoder_args(a)), a, model_type)


def vit_encoder_args(a: SamArchitecture) -> dict:
    """The keyword arguments of segment-anything's ``ImageEncoderViT`` for architecture ``a`` (as its
    ``build_sam`` passes them; packages with a copy of that class, such as sam-hq's, take the same)."""
    return dict(
        depth=a.encoder_depth,
        embed_dim=a.encoder_embed_dim,
        img_size=a.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=a.encoder_num_heads,
        patch_size=a.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=a.encoder_global_attn_indexes,
        window_size=a.window_size,
        out_chans=a.prompt_embed_dim,
    )


def sam_with_encoder(encoder: torch.nn.Module, a: SamArchitecture, model_type: str) -> Sam:
    """segment-anything's :class:`Sam` around ``encoder`` (any module mapping (B, 3, S, S) to (B, 256, S/16, S/16)
    with an ``img_size`` attribute), with the prompt encoder and mask decoder of architecture ``a``; eval mode."""
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim,
            image_embedding_size=(a.image_embedding_size, a.image_embedding_size),
            input_image_size=(a.image_size, a.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth,
                embedding_dim=a.prompt_embed_dim,
                mlp_dim=a.decoder_mlp_dim,
                num_heads=8,
            ),
            transformer_dim=a.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    sam.model_type = model_type  # read by fingerprints and adapter files
    use_fused_attention(sam)  # the encoder's and decoder's attention as one kernel (same results, faster)
    return sam.eval()


def guess_model_type(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which SAM variant a state dict belongs to, from its shapes (None when it is not a SAM)."""
    pos = state_dict.get("image_encoder.pos_embed")
    if not isinstance(pos, torch.Tensor):
        return None
    depth = block_count(state_dict, "image_encoder.blocks.")
    for name, a in ARCHITECTURES.items():
        grid = a.image_embedding_size
        if tuple(pos.shape) == (1, grid, grid, a.encoder_embed_dim) and depth == a.encoder_depth:
            return name
    return None


def load_segment_anything(model_type: str, checkpoint: Path | None) -> Sam:
    """SAM ``model_type`` (segment-anything's classes) with the weights of ``checkpoint`` (random without one,
    with a warning): checked against the architecture first, every failure a :class:`CheckpointError`.

    An HQ-SAM checkpoint (sam-hq's ``sam_hq_vit_b.pth``: SAM's weights + the HQ decoder's parts) gives SAM with
    :class:`~infosam_core.models.hq_decoder.HqMaskDecoder` (predicting as sam-hq's ``SamPredictor`` with
    ``hq_token_only=False``; set ``sam.mask_decoder.hq_token_only`` to change that)."""
    sam = build_sam(model_type)
    if checkpoint is None:
        warnings.warn(
            f"no checkpoint given for {model_type}: the model is randomly initialised and will not segment "
            "anything useful. Pass the SAM checkpoint file (e.g. sam_vit_b_01ec64.pth).",
            stacklevel=2,
        )
        sam.checkpoint_path = None
        return sam
    path = checkpoint
    state = load_state_dict_file(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = sam.state_dict()
    if guess_model_type(state) is None and len(set(expected) - set(state)) > len(expected) // 2:
        missing = sorted(set(expected) - set(state))
        raise CheckpointError(
            f"{path}: not a SAM checkpoint ({len(missing)} of {len(expected)} SAM weights missing, e.g. "
            f"{missing[0]!r}). Give a segment-anything checkpoint such as sam_vit_b_01ec64.pth."
        )
    what = f"SAM {model_type}"
    if has_hq_tensors(state):  # an HQ-SAM checkpoint (sam-hq's sam_hq_vit_b.pth): SAM + the HQ decoder's parts
        # initial values are overwritten (and the global RNG untouched)
        add_hq_decoder(sam, FAMILY.hq_feature_block(sam.image_encoder), torch.Generator())
        expected, what = sam.state_dict(), f"HQ-SAM {model_type}"
    check_state_matches(state, expected, path, what)
    sam.load_state_dict(state)
    sam.checkpoint_path = str(path)
    return sam.eval()


# ----------------------------------------------------------------------------------------- the ViT's blocks
def is_vit_encoder(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is a segment-anything ``ImageEncoderViT`` (or a copy of that class: ``blocks`` and
    ``pos_embed``)."""
    return isinstance(getattr(encoder, "blocks", None), nn.ModuleList) and hasattr(encoder, "pos_embed")


def first_global_block(encoder: ImageEncoderViT) -> int:
    """Index of the first global-attention block (``window_size == 0``) of a segment-anything ViT encoder."""
    for i, block in enumerate(encoder.blocks):
        if getattr(block, "window_size", None) == 0:
            return i
    raise ValueError("HQ-SAM: this ViT encoder has no global-attention block (window_size == 0)")


def encoder_width(encoder: ImageEncoderViT) -> int:
    """D, the ViT's embedding width (channels of every block's output)."""
    return int(encoder.patch_embed.proj.out_channels)


def frozen_prefix_depth(encoder: ImageEncoderViT) -> int:
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


def encoder_prefix(
    encoder: ImageEncoderViT,
    x: torch.Tensor,
    depth: int,
    capture: tuple[int, ...] = (),
    features: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Patch + position embedding and blocks[:depth] of an ``ImageEncoderViT``: (B, 3, S, S) -> (B, h, w, D).

    Block ``i`` in ``capture`` (and < ``depth``) has its output (B, h, w, D) put in ``features[i]``.
    """
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for i, block in enumerate(encoder.blocks[:depth]):
        x = block(x)
        if features is not None and i in capture:
            features[i] = x
    return x


def encoder_suffix(
    encoder: ImageEncoderViT,
    x: torch.Tensor,
    depth: int,
    checkpoint: bool = False,
    capture: tuple[int, ...] = (),
    features: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """blocks[depth:] and the neck: (B, h, w, D) -> image embeddings (B, C, h, w).

    ``checkpoint``: activation (gradient) checkpointing per block -- only each block's input is kept for the
    backward pass and the block is recomputed there: much less memory (ViT-B at 1024 px) for ~1/3 more time.
    Block ``i`` in ``capture`` (and >= ``depth``) has its output (B, h, w, D) put in ``features[i]``.
    """
    checkpoint = checkpoint and torch.is_grad_enabled()
    for i, block in enumerate(encoder.blocks[depth:], start=depth):
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpoint else block(x)
        if features is not None and i in capture:
            features[i] = x
    return encoder.neck(x.permute(0, 3, 1, 2))


# ------------------------------------------------------------------------------- prediction and training
class SamBackend:
    """segment-anything's ``Sam`` at prediction time (SAM ViT-B/L/H, the bundled tiny model, MobileSAM):
    longest-side resize + padding, the decoder called as ``SamPredictor`` calls it. A decoder that declares
    ``encoder_blocks`` (HQ-SAM's, :mod:`~infosam_core.models.hq_decoder`) gets those feature blocks' outputs,
    captured at encode time and returned as the extra features -- so they are cached with the embedding -- and
    passed to it as ``encoder_features`` (sam-hq's ``SamPredictor`` does the same with ``interm_features``).
    ``feature_blocks``: the encoder's feature blocks (its family's)."""

    def __init__(self, model: Sam, feature_blocks: Sequence[nn.Module]) -> None:
        self.model = model
        self.feature_blocks = feature_blocks
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    def encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        input_image = torch.as_tensor(self.transform.apply_image(rgb), device=self.model.device)
        input_image = input_image.permute(2, 0, 1).contiguous()[None, :, :, :]
        features, extra = self.encode_input(self.model.preprocess(input_image))
        return features, extra, (input_image.shape[-2], input_image.shape[-1])

    def encode_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The embedding of preprocessed (1, 3, S, S) input and the outputs of the feature blocks the decoder
        reads, channels first."""
        blocks = decoder_encoder_blocks(self.model.mask_decoder)
        return encode_with_blocks(self.model.image_encoder, self.feature_blocks, x, blocks)

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


class VitTrainingBackbone(SamTrainingBackbone):
    """:class:`~infosam_core.models.training_backbone.SamTrainingBackbone` with the ViT's cached frozen prefix:
    the encoder runs as :func:`encoder_prefix` + :func:`encoder_suffix`, block outputs taken as they pass."""

    def frozen_prefix_depth(self) -> int:
        return frozen_prefix_depth(self.model.image_encoder)

    def encode_prefix(
        self, images: torch.Tensor, depth: int, capture: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        captured: dict[int, torch.Tensor] = {}
        return encoder_prefix(self.model.image_encoder, images, depth, capture, captured), captured

    def encode_from(
        self, x: torch.Tensor, depth: int, capture: tuple[int, ...] = (), checkpoint: bool = False
    ) -> tuple[ImageFeatures, dict[int, torch.Tensor]]:
        """The encoder from block ``depth`` (``x``: the prefix's output; images when ``depth`` is 0)."""
        encoder = self.model.image_encoder
        captured: dict[int, torch.Tensor] = {}
        if not depth:
            x = encoder_prefix(encoder, x, 0)
        return ImageFeatures(encoder_suffix(encoder, x, depth, checkpoint, capture, captured)), captured


# --------------------------------------------------------------------------------------------- the family
class SamFamily(BackboneFamily):
    """segment-anything's SAM ViT-B/L/H and the bundled tiny SAM (see the module docstring)."""

    name = "sam"
    encoder_name = "ViT"

    def owns(self, model: SamLike | nn.Module) -> bool:
        return isinstance(model, Sam) and is_vit_encoder(model.image_encoder)

    def guess_model_type(self, state: Mapping[str, torch.Tensor]) -> str | None:
        return guess_model_type(state)

    def load(self, model_type: str, checkpoint: Path | None) -> SamLike:
        return load_segment_anything(model_type, checkpoint)

    def encoder_blocks(self, encoder: nn.Module) -> list[nn.Module]:
        return list(_vit(encoder).blocks)

    def is_vit_block(self, block: nn.Module) -> bool:
        return isinstance(block, Block)

    def replace_encoder_block(self, encoder: nn.Module, index: int, block: nn.Module) -> None:
        _vit(encoder).blocks[index] = block

    def feature_blocks(self, encoder: nn.Module) -> Sequence[nn.Module]:
        return _vit(encoder).blocks

    def block_geometry(self, encoder: nn.Module) -> BlockGeometry:
        blocks = _vit(encoder).blocks
        return BlockGeometry(
            width=encoder_width(encoder),
            depth=len(blocks),
            global_blocks=tuple(i for i, b in enumerate(blocks) if getattr(b, "window_size", 0) == 0),
        )

    def hq_feature_block(self, encoder: nn.Module) -> tuple[int, int]:
        return first_global_block(encoder), encoder_width(encoder)

    def prediction_backend(self, model: SamLike | nn.Module) -> SamBackend:
        sam = cast(Sam, model)
        return SamBackend(sam, self.feature_blocks(sam.image_encoder))

    def training_backbone(self, model: SamLike | nn.Module) -> VitTrainingBackbone:
        sam = cast(Sam, model)
        return VitTrainingBackbone(sam, self.feature_blocks(sam.image_encoder))


def _vit(encoder: nn.Module) -> ImageEncoderViT:
    """``encoder`` as what the family's models have: a segment-anything ``ImageEncoderViT`` (or a copy of that
    class, see :func:`is_vit_encoder`)."""
    return cast(ImageEncoderViT, encoder)


#: the segment-anything ViT family (model types tiny, vit_b, vit_l, vit_h)
FAMILY = SamFamily()
