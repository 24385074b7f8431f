"""The segment-anything backbone (SAM ViT-B/L/H and the bundled tiny SAM, same classes): architectures by
name, building a model (random weights), and loading a checkpoint into one, checked."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from infosam_core.models.checkpoints import CheckpointError, check_state_matches, load_state_dict_file
from infosam_core.models.hq_decoder import add_hq_decoder, has_hq_tensors

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
    return sam.eval()


def guess_model_type(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which SAM variant a state dict belongs to, from its shapes (None when it is not a SAM)."""
    pos = state_dict.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = 1 + max((int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks.")), default=-1)
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
        add_hq_decoder(sam, torch.Generator())  # initial values are overwritten (and the global RNG untouched)
        expected, what = sam.state_dict(), f"HQ-SAM {model_type}"
    check_state_matches(state, expected, path, what)
    sam.load_state_dict(state)
    sam.checkpoint_path = str(path)
    return sam.eval()
