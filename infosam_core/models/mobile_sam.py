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

sam-hq's "Light HQ-SAM" checkpoint ``sam_hq_vit_tiny.pth`` (a plain state dict of sam-hq's ``vit_tiny``: the
same TinyViT + SAM's decoder parts + HQ-SAM's, which read TinyViT's ``layers[1]`` output) loads as MobileSAM
with :class:`~infosam_core.models.hq_decoder.HqMaskDecoder`, checked the same way.

``mobile_sam`` imports ``timm`` (not declared by the package; this project declares it) and re-registers
timm's ``tiny_vit_*`` entries, with warnings that are silenced here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from infosam_core.models.checkpoints import check_state_matches, load_state_dict_file
from infosam_core.models.hq_decoder import add_hq_decoder, has_hq_tensors
from infosam_core.models.sam import SamArchitecture, sam_with_encoder

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
        add_hq_decoder(sam, torch.Generator())  # initial values are overwritten (and the global RNG untouched)
        expected, what = sam.state_dict(), "HQ-SAM vit_t (sam-hq's vit_tiny)"
    check_state_matches(state, expected, checkpoint, what)
    sam.load_state_dict(state)
    sam.checkpoint_path = str(checkpoint)
    return sam.eval()  # after loading: refreshes TinyViT's cached attention biases
