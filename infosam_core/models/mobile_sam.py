"""The MobileSAM backbone (Zhang et al. 2023, "Faster Segment Anything"): model type ``vit_t``.

MobileSAM is SAM with its ViT image encoder replaced by a TinyViT (5.7 M parameters, distilled from SAM
ViT-H); the prompt encoder and mask decoder are SAM's, unchanged (same classes, keys and shapes as ViT-B's).
The model is therefore segment-anything's :class:`Sam` around MobileSAM's own ``TinyViT`` class (from the
``mobilesam-mirror`` package, module ``mobile_sam``), so the predictor, the interactive decoder, PEFT and
training work on it as on SAM. MobileSAM's ``SamPredictor`` is segment-anything's with cosmetic changes,
and the parity test compares against it.

Checkpoint: MobileSAM's ``mobile_sam.pt`` is a plain state dict (``torch.save(model.state_dict())``,
including the unused ImageNet classifier head ``image_encoder.norm_head`` / ``image_encoder.head``); it is
read with ``weights_only=True`` and checked key by key before loading.

TinyViT caches its attention biases (``Attention.ab``) when switched to eval mode, so the model is put in
eval mode *after* the weights are loaded (MobileSAM's own builder does it before, leaving the cache stale
until the next ``.eval()``); anyone changing the weights in place must call ``.eval()`` again.

:data:`FAMILY` is what the rest of the core asks about these models: PEFT adapts the attention blocks of
TinyViT's stages 2-4 (``layers[1:]``; ``layers[0]`` is convolutional) through hooks; decoders index the four
stages ``layers`` (HQ-SAM reads ``layers[1]``); the trainer does not capture block outputs for multi-level
distillers (``block_levels`` off). Prediction and training use segment-anything's ``Sam`` code
(:class:`~infosam_core.models.sam.SamBackend`,
:class:`~infosam_core.models.training_backbone.SamTrainingBackbone`), the encoder run whole.

sam-hq's "Light HQ-SAM" checkpoint ``sam_hq_vit_tiny.pth`` (a plain state dict of sam-hq's ``vit_tiny``: the
same TinyViT + SAM's decoder parts + HQ-SAM's, which read TinyViT's ``layers[1]`` output) loads as MobileSAM
with :class:`~infosam_core.models.hq_decoder.HqMaskDecoder`, checked the same way.

``mobile_sam`` imports ``timm`` (not declared by the package; this project declares it) and re-registers
timm's ``tiny_vit_*`` entries, with warnings that are silenced here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from segment_anything.modeling import Sam
from torch import nn

from infosam_core.models.checkpoints import check_state_matches, load_state_dict_file
from infosam_core.models.family import BackboneFamily, BlockGeometry
from infosam_core.models.hq_decoder import add_hq_decoder, has_hq_tensors
from infosam_core.models.protocols import SamLike
from infosam_core.models.sam import SamArchitecture, SamBackend, sam_with_encoder
from infosam_core.models.training_backbone import SamTrainingBackbone

if TYPE_CHECKING:
    from mobile_sam.modeling.tiny_vit_sam import TinyViT

#: MobileSAM's prompt encoder and decoder are SAM's at 1024 px (ViT-B sizes for the decoder)
MOBILE_SAM_ARCHITECTURE = SamArchitecture(
    encoder_embed_dim=0, encoder_depth=0, encoder_num_heads=0, encoder_global_attn_indexes=()
)


def _tiny_vit_class() -> type[torch.nn.Module]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm's deprecated import paths and registry overwrites
            from mobile_sam.modeling.tiny_vit_sam import TinyViT
    except ImportError as exc:
        raise ImportError(
            f"MobileSAM (model type vit_t) needs the packages mobilesam-mirror and timm ({exc}). "
            "Install them with `pip install mobilesam-mirror==1.0.0 timm`."
        ) from None
    return TinyViT


def build_mobile_sam() -> Sam:
    """A randomly initialised MobileSAM (``vit_t``) in eval mode: MobileSAM's TinyViT configuration
    (embed dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7) + SAM's prompt encoder
    and mask decoder."""
    tiny_vit = _tiny_vit_class()
    encoder = tiny_vit(
        img_size=1024,
        in_chans=3,
        num_classes=1000,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    return sam_with_encoder(encoder, MOBILE_SAM_ARCHITECTURE, "vit_t")


def guess_mobile_sam_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"vit_t"`` when a state dict holds MobileSAM's TinyViT encoder with SAM's decoder (MobileSAM's own file or
    sam-hq's ``vit_tiny``), None otherwise."""
    tiny_vit = any(k.startswith("image_encoder.layers.") for k in state)
    return "vit_t" if tiny_vit and "mask_decoder.iou_token.weight" in state else None


def load_mobile_sam(model_type: str, checkpoint: Path | None) -> Sam:
    """MobileSAM with the weights of ``checkpoint`` (MobileSAM's ``mobile_sam.pt`` or any file holding the same
    state dict; sam-hq's ``sam_hq_vit_tiny.pth`` gives MobileSAM with the HQ decoder), or random weights with a
    warning. Every unusable file is a :class:`CheckpointError`."""
    if model_type != "vit_t":
        raise ValueError(f"MobileSAM has one model type, vit_t; got {model_type!r}")
    sam = build_mobile_sam()
    if checkpoint is None:
        warnings.warn(
            "no checkpoint given for vit_t: the MobileSAM model is randomly initialised and will not segment "
            "anything useful. Pass MobileSAM's checkpoint file (mobile_sam.pt).",
            stacklevel=2,
        )
        sam.checkpoint_path = None
        return sam
    state = load_state_dict_file(checkpoint)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = sam.state_dict()
    what = "MobileSAM vit_t"
    if has_hq_tensors(state):  # sam-hq's sam_hq_vit_tiny.pth: MobileSAM + the HQ decoder's parts (Light HQ-SAM)
        # initial values are overwritten (and the global RNG untouched)
        add_hq_decoder(sam, FAMILY.hq_feature_block(sam.image_encoder), torch.Generator())
        expected, what = sam.state_dict(), "HQ-SAM vit_t (sam-hq's vit_tiny)"
    check_state_matches(state, expected, checkpoint, what)
    sam.load_state_dict(state)
    sam.checkpoint_path = str(checkpoint)
    return sam.eval()  # after loading: refreshes TinyViT's cached attention biases


#: the TinyViT stage whose output HQ-SAM fuses (sam-hq's ``vit_tiny``: ``TinyViT.forward_features`` keeps
#: ``layers[1]``'s output, after its downsample: 64 x 64 tokens of 160 channels at MobileSAM's sizes)
TINY_VIT_HQ_LAYER = 1


def is_tiny_vit(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is MobileSAM's TinyViT (stages in ``layers``, no ViT ``blocks``)."""
    layers = getattr(encoder, "layers", None)
    return isinstance(layers, nn.ModuleList) and not hasattr(encoder, "blocks") and hasattr(encoder, "neck")


class MobileSamFamily(BackboneFamily):
    """MobileSAM: TinyViT + SAM's prompt encoder and decoder (see the module docstring)."""

    name = "mobile_sam"
    encoder_name = "TinyViT"
    block_levels = False
    uniform_blocks = False

    def owns(self, model: SamLike | nn.Module) -> bool:
        return isinstance(model, Sam) and is_tiny_vit(model.image_encoder)

    def guess_model_type(self, state: Mapping[str, torch.Tensor]) -> str | None:
        return guess_mobile_sam_type(state)

    def load(self, model_type: str, checkpoint: Path | None) -> SamLike:
        return load_mobile_sam(model_type, checkpoint)

    def encoder_blocks(self, encoder: nn.Module) -> list[nn.Module]:
        """The attention blocks of every stage (stage 1 is convolutional)."""
        return [block for layer in _tiny_vit(encoder).layers for block in layer.blocks if hasattr(block, "attn")]

    def feature_blocks(self, encoder: nn.Module) -> Sequence[nn.Module]:
        """The four stages (each output: tokens (B, h*w, D) after its downsample)."""
        return _tiny_vit(encoder).layers

    def block_geometry(self, encoder: nn.Module) -> BlockGeometry:
        """Depth 0: the trainer captures no TinyViT block outputs for distillers."""
        return BlockGeometry(width=0, depth=0)

    def hq_feature_block(self, encoder: nn.Module) -> tuple[int, int]:
        """``layers[1]`` (:data:`TINY_VIT_HQ_LAYER`), D = its output channels (160 at ``vit_t``), as sam-hq's
        ``vit_tiny``."""
        layers = _tiny_vit(encoder).layers
        if len(layers) <= TINY_VIT_HQ_LAYER:
            raise ValueError(f"HQ-SAM reads TinyViT's stage {TINY_VIT_HQ_LAYER + 1}; this TinyViT has fewer stages")
        layer = layers[TINY_VIT_HQ_LAYER]
        width = layer.downsample.out_dim if layer.downsample is not None else layer.dim
        return TINY_VIT_HQ_LAYER, int(width)

    def prediction_backend(self, model: SamLike | nn.Module) -> SamBackend:
        sam = cast(Sam, model)
        return SamBackend(sam, self.feature_blocks(sam.image_encoder))

    def training_backbone(self, model: SamLike | nn.Module) -> SamTrainingBackbone:
        sam = cast(Sam, model)
        return SamTrainingBackbone(sam, self.feature_blocks(sam.image_encoder))


def _tiny_vit(encoder: nn.Module) -> TinyViT:
    """``encoder`` as what the family's models have: MobileSAM's ``TinyViT`` (see :func:`is_tiny_vit`)."""
    return cast("TinyViT", encoder)


#: the MobileSAM family (model type vit_t)
FAMILY = MobileSamFamily()
