"""The SAM2 backbone (Ravi et al. 2024, "SAM 2: Segment Anything in Images and Videos"), for images.

Model types are named after Meta's checkpoint files: ``sam2.1_hiera_tiny|small|base_plus|large`` and
``sam2_hiera_tiny|small|base_plus|large``. The classes are Meta's, from the ``sam2`` package (imported only
when a SAM2 model type is used; install with ``SAM2_BUILD_CUDA=0 pip install --no-build-isolation
sam2==1.1.0`` after torch). The model is built from the package's own YAML config with OmegaConf and
``hydra.utils.instantiate`` -- not through Hydra's global config search, which ``import sam2`` sets up and
which fails when anything else initialised Hydra first -- with the options ``build_sam2`` sets by default
(``apply_postprocessing=True``: dynamic multimask via stability in the decoder), so it predicts what
``SAM2ImagePredictor(build_sam2(...))`` predicts.

:class:`Sam2Model` is SAM2's image path only, with the parts under segment-anything's names, so the
predictor, PEFT and the trainer see the same layout as for SAM:

* ``image_encoder`` (:class:`Sam2ImageEncoder`): Hiera ``trunk`` + FPN ``neck`` (Meta's ``image_encoder``),
  plus the decoder's ``conv_s0`` / ``conv_s1`` and ``no_mem_embed``, which SAM2 applies when an image is
  embedded (``SAM2Base.forward_image`` and ``SAM2ImagePredictor.set_image``). Output
  :class:`Sam2Features`: ``image_embed`` (B, 256, 64, 64) and ``high_res_feats`` [(B, 32, 256, 256),
  (B, 64, 128, 128)];
* ``prompt_encoder`` = Meta's ``sam_prompt_encoder`` (same API as segment-anything's);
* ``mask_decoder`` = Meta's ``sam_mask_decoder`` (without ``conv_s0/conv_s1``, see above); it returns
  (masks, iou, sam output tokens, object score logits).

The memory attention / memory encoder (video tracking) are not kept. Checkpoints: Meta's files
(``{"model": state_dict}``) are read with ``weights_only=True``, checked key by key against the full SAM2
model, and loaded before the image parts are taken out.

Mask token for InfoSAM. SAM2's decoder orders its output tokens ``[obj_score, iou, mask_0 .. mask_3]``
(SAM2.1 and SAM2 alike: ``pred_obj_scores`` is on in every config), so the transformer's output
``hs[:, 2]`` is the single-mask output token (mask 0), the analogue of SAM's ``hs[:, 1]``; that is the token
used (:func:`sam2_decode` returns it). ``use_multimask_token_for_obj_ptr`` only changes which tokens SAM2
hands to its video memory (the three multimask tokens when ``multimask_output``), not the masks.
Preprocessing differs from SAM's: a plain resize to 1024 x 1024 (aspect ratio not kept, no padding) and
ImageNet mean / std on [0, 1] pixels (:func:`sam2_preprocess`).

Training (PEFT + distillation through the same ``Trainer`` as SAM): what differs is in
:class:`Sam2TrainingBackbone` -- the plain resize, boxes as two points
labelled 2 and 3 (plus SAM2's padding point), the decoder's ``predict_masks`` with the high-resolution
features and always mask output 0 (the ``dynamic_multimask_via_stability`` replacement is for interactive
prediction only), and the token ``hs[:, 2]`` above. ``conv_s0`` / ``conv_s1`` belong to ``image_encoder``
here and are not trained by ``train_decoder`` (they shape the cached features; a decoder-only student's
features stay the teacher's). Hiera's blocks are what PEFT adapts (``image_encoder.trunk.blocks``); VID and ReviewKD
distil their stage outputs (the last block of each stage, per-level widths), IBD and SemCKD (one width and grid
for every level) do not apply.
``build_sam2_base(model_type, image_size=256)`` builds a smaller-input model for fast tests.

Prediction (:class:`Sam2Backend`): plain resize to 1024 x 1024, boxes as two labelled points, the
high-resolution features passed to the decoder, logits clamped to [-32, 32] -- as ``SAM2ImagePredictor``.
:data:`FAMILY` is what the rest of the core asks about these models
(:class:`~infosam_core.models.family.BackboneFamily`): ``image_encoder.trunk.blocks`` are the blocks PEFT
adapts (through hooks), decoders and distillers index; the encoder runs whole in training (no cached prefix).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infosam_core.models.checkpoints import block_count, check_state_matches, load_state_dict_file
from infosam_core.models.decoder_features import captured_block_outputs
from infosam_core.models.family import BackboneFamily, BlockGeometry
from infosam_core.models.protocols import SamLike
from infosam_core.models.training_backbone import ImageFeatures, PromptBatch, WholeEncoderPass

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

#: model type -> (config inside the sam2 package, Meta's checkpoint file name)
SAM2_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
    "sam2_hiera_tiny": ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    "sam2_hiera_small": ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt"),
    "sam2_hiera_base_plus": ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt"),
    "sam2_hiera_large": ("configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
}

#: (patch-embedding channels, trunk blocks) -> size name, to say which model a checkpoint is
_HIERA_SIZES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SINGLE_MASK_TOKEN_INDEX = 2  # hs[:, 2]: after the object-score and IoU tokens

#: our SAM2 model's state-dict key prefixes -> Meta's ``SAM2Base`` names (the merged-checkpoint export)
SAM2_META_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("image_encoder.trunk.", "image_encoder.trunk."),
    ("image_encoder.neck.", "image_encoder.neck."),
    ("image_encoder.conv_s0.", "sam_mask_decoder.conv_s0."),
    ("image_encoder.conv_s1.", "sam_mask_decoder.conv_s1."),
    ("image_encoder.no_mem_embed", "no_mem_embed"),
    ("prompt_encoder.", "sam_prompt_encoder."),
    ("mask_decoder.", "sam_mask_decoder."),
)
SAM2_INSTALL_HINT = "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0"


@dataclass
class Sam2Features:
    """What SAM2 keeps per image: ``image_embed`` (B, 256, 64, 64) and ``high_res_feats`` [(B, 32, 256, 256),
    (B, 64, 128, 128)] (already through ``conv_s0`` / ``conv_s1``)."""

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor]


def _require_sam2() -> None:
    try:
        import sam2  # noqa: F401 - its import sets up Hydra; the config files live in the package
    except ImportError as exc:
        raise ImportError(
            f"SAM2 model types need the sam2 package ({exc}). Install it after torch with `{SAM2_INSTALL_HINT}`."
        ) from None


def build_sam2_base(model_type: str, image_size: int | None = None) -> SAM2Base:
    """Meta's full ``SAM2Base`` for ``model_type`` (random weights, eval mode), configured as ``build_sam2`` does.

    ``image_size`` (a multiple of 64; default the config's 1024) changes the input side only -- the weights'
    shapes do not depend on it (Hiera interpolates its position embedding; the embedding grid is
    ``image_size // 16``). Meta's checkpoints are trained at 1024: smaller sizes are for fast tests."""
    if model_type not in SAM2_MODEL_TYPES:
        raise ValueError(f"unknown SAM2 model type {model_type!r}; choose one of {', '.join(SAM2_MODEL_TYPES)}")
    _require_sam2()
    import importlib.resources

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config_name = SAM2_MODEL_TYPES[model_type][0]
    config = OmegaConf.load(str(importlib.resources.files("sam2") / config_name))
    if image_size is not None:
        if image_size <= 0 or image_size % 64:
            raise ValueError(f"image_size must be a positive multiple of 64, got {image_size}")
        config.model.image_size = image_size
    # what build_sam2(..., apply_postprocessing=True) adds
    config.model.sam_mask_decoder_extra_args = {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }
    OmegaConf.resolve(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = instantiate(config.model, _recursive_=True)
    return model.eval()


class Sam2ImageEncoder(nn.Module):
    """SAM2's image embedding (see the module docstring): (B, 3, 1024, 1024) -> :class:`Sam2Features`."""

    def __init__(self, base: SAM2Base) -> None:
        super().__init__()
        self.trunk = base.image_encoder.trunk
        self.neck = base.image_encoder.neck
        self.scalp: int = base.image_encoder.scalp
        self.conv_s0 = base.sam_mask_decoder.conv_s0
        self.conv_s1 = base.sam_mask_decoder.conv_s1
        self.no_mem_embed: nn.Parameter = base.no_mem_embed  # (1, 1, 256), added to the 64x64 level
        self.img_size: int = base.image_size

    def forward(self, x: torch.Tensor) -> Sam2Features:
        features, _ = self.neck(self.trunk(x))
        if self.scalp > 0:
            features = features[: -self.scalp]
        high_res = [self.conv_s0(features[0]), self.conv_s1(features[1])]
        embed = features[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
        return Sam2Features(embed, high_res)


class Sam2Model(nn.Module):
    """SAM2 for images, with segment-anything's part names (see the module docstring)."""

    image_format = "RGB"
    mask_threshold = 0.0
    pixel_mean: torch.Tensor  # buffers, registered in __init__
    pixel_std: torch.Tensor

    def __init__(self, base: SAM2Base, model_type: str) -> None:
        super().__init__()
        self.image_encoder = Sam2ImageEncoder(base)
        self.prompt_encoder = base.sam_prompt_encoder
        decoder = base.sam_mask_decoder
        del decoder.conv_s0, decoder.conv_s1  # applied at embedding time: they belong to image_encoder here
        self.mask_decoder = decoder
        mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(-1, 1, 1) * 255
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.model_type = model_type
        self.checkpoint_path: str | None = None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, 3, 1024, 1024) pixels in [0, 255] that are already resized to 1024 x 1024."""
        return (x - self.pixel_mean) / self.pixel_std


def sam2_preprocess(model: Sam2Model, image: np.ndarray) -> torch.Tensor:
    """(1, 3, 1024, 1024) normalised input for an RGB uint8 (H, W, 3) image, on the model's device: the same
    operations as ``SAM2Transforms`` -- ToTensor ([0, 1]), torchvision's ``Resize((1024, 1024))`` (aspect ratio
    not kept, no padding), ImageNet ``Normalize``."""
    from torchvision.transforms.functional import normalize, resize, to_tensor

    size = model.image_encoder.img_size
    x = normalize(resize(to_tensor(image), [size, size]), list(IMAGENET_MEAN), list(IMAGENET_STD))
    return x[None].to(model.device)


def sam2_decode(
    model: Sam2Model,
    features: Sam2Features,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask_output: bool,
    repeat_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's decoder call as ``SAM2ImagePredictor`` makes it: low-res logits (B, C, 256, 256), IoU (B, C)."""
    low_res, iou, _, _ = model.mask_decoder(
        image_embeddings=features.image_embed,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=repeat_image,
        high_res_features=features.high_res_feats,
    )
    return low_res, iou


def sam2_prompt_points(
    points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SAM2's prompt layout: a box (B, 4) becomes two points labelled 2 and 3, placed before the clicks."""
    if boxes is None:
        if points is None:
            return None
        assert labels is not None  # points come with their labels
        return points, labels
    box_points = boxes.reshape(-1, 2, 2)
    box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(boxes.shape[0], 1)
    if points is None:
        return box_points, box_labels
    assert labels is not None  # points come with their labels
    return torch.cat([box_points, points], dim=1), torch.cat([box_labels, labels.to(torch.int)], dim=1)


def guess_sam2_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which SAM2 model type a state dict holds (None when it is not a SAM2 one), from its keys and shapes."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(patch, torch.Tensor) or patch.dim() < 1 or "sam_mask_decoder.iou_token.weight" not in state:
        return None
    blocks = block_count(state, "image_encoder.trunk.blocks.")
    if blocks is None:
        return None
    size = _HIERA_SIZES.get((int(patch.shape[0]), blocks))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{version}_hiera_{size}"


def load_sam2(model_type: str, checkpoint: Path | None) -> Sam2Model:
    """SAM2 ``model_type`` with the weights of ``checkpoint`` (Meta's ``{"model": state_dict}`` file or a plain
    state dict), or random weights with a warning; every unusable file is a :class:`CheckpointError`."""
    base = build_sam2_base(model_type)
    if checkpoint is None:
        warnings.warn(
            f"no checkpoint given for {model_type}: the model is randomly initialised and will not segment "
            f"anything useful. Pass Meta's checkpoint file ({SAM2_MODEL_TYPES[model_type][1]}).",
            stacklevel=2,
        )
    else:
        state = load_state_dict_file(checkpoint)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        check_state_matches(state, base.state_dict(), checkpoint, f"SAM2 {model_type}")
        base.load_state_dict(state)
    model = Sam2Model(base, model_type).eval()
    model.checkpoint_path = str(checkpoint) if checkpoint is not None else None
    return model


def sam2_postprocess(masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (B, C, 256, 256) -> logits at the image's size, as ``SAM2Transforms.postprocess_masks``
    without hole filling (off by default in ``SAM2ImagePredictor``)."""
    return F.interpolate(masks.float(), tuple(original_size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------- prediction and training
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
    """:class:`Sam2Model` at prediction time (see the module docstring)."""

    def __init__(self, model: Sam2Model) -> None:
        self.model = model
        self.transform = Sam2Transform(model.image_encoder.img_size)

    def encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
        x = sam2_preprocess(self.model, rgb)
        features = self.model.image_encoder(x)
        return features.image_embed, tuple(features.high_res_feats), (x.shape[-2], x.shape[-1])

    def decode(self, features, extra, points, boxes, mask_input, multimask_output):
        coords, labels = points if points is not None else (None, None)
        prompt_points = sam2_prompt_points(coords, labels, boxes)
        sparse, dense = self.model.prompt_encoder(points=prompt_points, boxes=None, masks=mask_input)
        repeat = prompt_points is not None and prompt_points[0].shape[0] > 1
        return sam2_decode(self.model, Sam2Features(features, list(extra)), sparse, dense, multimask_output, repeat)

    def postprocess(self, low_res, input_size, original_size):
        return sam2_postprocess(low_res, original_size), torch.clamp(low_res, -32.0, 32.0)


class Sam2TrainingBackbone(WholeEncoderPass):
    """:class:`Sam2Model` when training (see the module docstring and
    :class:`~infosam_core.models.training_backbone.TrainingBackbone`)."""

    TOKEN_INDEX = 2  # hs[:, 2]: mask output 0, after the object-score and IoU tokens

    def __init__(self, model: Sam2Model) -> None:
        self.model = model
        self.feature_blocks = FAMILY.feature_blocks(model.image_encoder)
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

    def encode_from(
        self, x: torch.Tensor, depth: int, capture: tuple[int, ...] = (), checkpoint: bool = False
    ) -> tuple[ImageFeatures, dict[int, torch.Tensor]]:
        """The whole encoder on images ``x`` (``depth`` 0), capturing the Hiera blocks ``capture``."""
        if depth:
            raise ValueError(f"SAM2's encoder runs whole: depth must be 0, got {depth}")
        with captured_block_outputs(self.feature_blocks, capture) as captured:
            features = self.encode(x)
        return features, captured

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


# ------------------------------------------------------------------------------------ SAM2's video model
def share_image_path(video: Any, model: Sam2Model) -> None:
    """Make Meta's video model ``video`` (a ``SAM2Base``) use ``model``'s image path: the Hiera trunk, FPN neck,
    high-resolution convolutions, ``no_mem_embed``, prompt encoder and mask decoder (an adapted model propagates
    with its adapted encoder and decoder)."""
    encoder = model.image_encoder
    video.image_encoder.trunk = encoder.trunk
    video.image_encoder.neck = encoder.neck
    video.high_res_convs = nn.ModuleList([encoder.conv_s0, encoder.conv_s1])
    video.no_mem_embed = encoder.no_mem_embed
    video.sam_prompt_encoder = model.prompt_encoder
    video.sam_mask_decoder = model.mask_decoder


def shares_image_path(video: Any, model: Sam2Model) -> bool:
    """Whether ``video`` still uses ``model``'s image path (:func:`share_image_path`; the model's parts were not
    replaced since)."""
    encoder = model.image_encoder
    return (
        video.image_encoder.trunk is encoder.trunk
        and video.image_encoder.neck is encoder.neck
        and video.sam_mask_decoder is model.mask_decoder
        and video.sam_prompt_encoder is model.prompt_encoder
        and video.no_mem_embed is encoder.no_mem_embed
    )


# --------------------------------------------------------------------------------------------- the family
class Sam2Family(BackboneFamily):
    """SAM2's Hiera (see the module docstring)."""

    name = "sam2"
    encoder_name = "SAM2's Hiera"
    uniform_blocks = False
    video_memory = True

    def owns(self, model: SamLike | nn.Module) -> bool:
        return isinstance(model, Sam2Model)

    def guess_model_type(self, state: Mapping[str, torch.Tensor]) -> str | None:
        return guess_sam2_type(state)

    def load(self, model_type: str, checkpoint: Path | None) -> SamLike:
        return load_sam2(model_type, checkpoint)

    def encoder_blocks(self, encoder: nn.Module) -> list[nn.Module]:
        return list(_image_encoder(encoder).trunk.blocks)

    def feature_blocks(self, encoder: nn.Module) -> Sequence[nn.Module]:
        return _image_encoder(encoder).trunk.blocks

    def block_geometry(self, encoder: nn.Module) -> BlockGeometry:
        """Block i outputs ``blocks[i].dim_out`` channels; the patch embedding has stride 4 and each q-pooling
        block (the first of stages 2-4) multiplies the stride by its ``q_stride``; ``stage_ends``: the last block
        of each stage (Hiera-tiny 0, 2, 9, 11 -- widths 96, 192, 384, 768 on grids S/4, S/8, S/16, S/32)."""
        trunk = _image_encoder(encoder).trunk
        stride = int(trunk.patch_embed.proj.stride[0])
        widths, strides = [], []
        for block in trunk.blocks:
            if block.q_stride:
                stride *= int(block.q_stride[0])
            widths.append(int(block.dim_out))
            strides.append(stride)
        return BlockGeometry(
            width=int(trunk.patch_embed.proj.out_channels),
            depth=len(trunk.blocks),
            global_blocks=tuple(i for i, b in enumerate(trunk.blocks) if b.window_size == 0),
            block_widths=tuple(widths),
            block_strides=tuple(strides),
            stage_ends=tuple(int(i) for i in trunk.stage_ends),
        )

    def prediction_backend(self, model: SamLike | nn.Module) -> Sam2Backend:
        return Sam2Backend(cast(Sam2Model, model))

    def training_backbone(self, model: SamLike | nn.Module) -> Sam2TrainingBackbone:
        return Sam2TrainingBackbone(cast(Sam2Model, model))


def _image_encoder(encoder: nn.Module) -> Sam2ImageEncoder:
    """``encoder`` as what the family's models have (:class:`Sam2Model`'s ``image_encoder``)."""
    return cast(Sam2ImageEncoder, encoder)


#: the SAM2 family (model types sam2.1_hiera_* and sam2_hiera_*)
FAMILY = Sam2Family()
