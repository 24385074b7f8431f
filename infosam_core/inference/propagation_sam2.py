"""SAM2's own video propagation (its memory bank) over an in-memory stack, for a :class:`Sam2Model`.

:class:`~infosam_core.models.sam2.Sam2Model` keeps SAM2's image path only. Propagation needs the rest of
Meta's model: the memory encoder, memory attention, object pointers and their embeddings. :func:`video_predictor`
builds ``sam2``'s :class:`SAM2VideoPredictor` from the model type's config with what ``build_sam2_video_predictor``
sets (``apply_postprocessing``), and **shares** the image path's modules with the given model (Hiera encoder, FPN
neck, ``conv_s0`` / ``conv_s1``, ``no_mem_embed``, prompt encoder, mask decoder): an adapted model propagates with
its adapted encoder and decoder. The memory parts are read from the model's checkpoint file (Meta's file holds
them), or from ``memory_state`` (a state dict in Meta's names); a model without either gets random memory weights
with a warning.

Frames: the stack's planes (RGB uint8 with the stack's contrast) resized and normalised exactly as
``sam2.utils.misc.load_video_frames`` does for JPEG frames (Pillow resize to ``image_size`` x ``image_size``,
/255, ImageNet mean / std), without writing lossy JPEGs; the inference state is the one ``init_state`` builds.
Then ``add_new_points_or_box`` on the prompted frame and ``propagate_in_video`` forward, then backward
(``reverse=True``): the masks are sam2's (logits > 0 at the stack's size). SAM2 carries the object through every
frame; where its object score says the object is absent, the mask is empty.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infosam_core.inference.propagation_records import (
    BACKWARD,
    PlaneSource,
    ProgressFn,
    PropagationConfig,
    PropagationResult,
    SlicePrompt,
    StopFn,
)
from infosam_core.models.sam2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAM2_MODEL_TYPES,
    Sam2Model,
    share_image_path,
    shares_image_path,
)

if TYPE_CHECKING:
    from sam2.sam2_video_predictor import SAM2VideoPredictor

#: Meta's key prefixes that belong to the image path (shared with the Sam2Model), not to the memory parts
_IMAGE_PATH_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")

#: what ``build_sam2_video_predictor(..., apply_postprocessing=True)`` adds to the model config
VIDEO_OPTIONS: dict[str, Any] = {"binarize_mask_from_pts_for_mem_enc": True, "fill_hole_area": 8}


def _video_predictor_class() -> type:
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    class SharedImagePathVideoPredictor(SAM2VideoPredictor):
        """sam2's video predictor whose ``conv_s0`` / ``conv_s1`` live with the shared image encoder (our
        Sam2Model keeps them there) instead of inside the mask decoder; everything else is sam2's."""

        high_res_convs: torch.nn.ModuleList

        def forward_image(self, img_batch: torch.Tensor) -> dict[str, Any]:
            backbone_out = self.image_encoder(img_batch)
            if self.use_high_res_features_in_sam:
                backbone_out["backbone_fpn"][0] = self.high_res_convs[0](backbone_out["backbone_fpn"][0])
                backbone_out["backbone_fpn"][1] = self.high_res_convs[1](backbone_out["backbone_fpn"][1])
            return backbone_out

    return SharedImagePathVideoPredictor


def build_video_base(model_type: str, image_size: int, target: str | None = None) -> SAM2VideoPredictor:
    """sam2's ``SAM2VideoPredictor`` for ``model_type`` at ``image_size`` (random weights, eval mode), configured as
    ``build_sam2_video_predictor(..., apply_postprocessing=True)``; ``target`` another class path to build."""
    import importlib.resources

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from infosam_core.models.sam2 import _require_sam2

    if model_type not in SAM2_MODEL_TYPES:
        raise ValueError(f"unknown SAM2 model type {model_type!r}; choose one of {', '.join(SAM2_MODEL_TYPES)}")
    _require_sam2()
    config = OmegaConf.load(str(importlib.resources.files("sam2") / SAM2_MODEL_TYPES[model_type][0]))
    config.model._target_ = target or "sam2.sam2_video_predictor.SAM2VideoPredictor"
    config.model.image_size = image_size
    config.model.sam_mask_decoder_extra_args = {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }
    for key, value in VIDEO_OPTIONS.items():
        config.model[key] = value
    OmegaConf.resolve(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = instantiate(config.model, _recursive_=True)
    return model.eval()


def memory_state_of(model: Sam2Model) -> dict[str, torch.Tensor] | None:
    """The memory parts of the model's checkpoint file (Meta's names), or None when it was built without one."""
    if not model.checkpoint_path:
        return None
    from infosam_core.models.checkpoints import load_state_dict_file

    state = load_state_dict_file(Path(model.checkpoint_path))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


#: the video predictor built for a model (its memory parts read once per checkpoint), while the model lives
_VIDEO_PREDICTORS: weakref.WeakKeyDictionary[Sam2Model, tuple[str | None, SAM2VideoPredictor]] = (
    weakref.WeakKeyDictionary()
)


def video_predictor(model: Sam2Model, memory_state: Mapping[str, torch.Tensor] | None = None) -> SAM2VideoPredictor:
    """A ``SAM2VideoPredictor`` sharing ``model``'s image path (see the module docstring), its memory parts from
    ``memory_state`` or the model's checkpoint. Without ``memory_state`` the predictor is kept for the model (the
    checkpoint is read once) and rebuilt when the model's parts or checkpoint changed."""
    if memory_state is None:
        cached = _VIDEO_PREDICTORS.get(model)
        if cached is not None and cached[0] == model.checkpoint_path and shares_image_path(cached[1], model):
            return cached[1].to(model.device).eval()
    video = _build_video_predictor(model, memory_state)
    if memory_state is None:
        _VIDEO_PREDICTORS[model] = (model.checkpoint_path, video)
    return video


def _build_video_predictor(model: Sam2Model, memory_state: Mapping[str, torch.Tensor] | None) -> SAM2VideoPredictor:
    cls = _video_predictor_class()
    image_size = int(model.image_encoder.img_size)
    # build the plain predictor, then take its class: hydra needs an importable target
    video = build_video_base(model.model_type, image_size)
    video.__class__ = cls
    if memory_state is None:
        memory_state = memory_state_of(model)
    if memory_state is None:
        warnings.warn(
            f"{model.model_type} has no checkpoint file: SAM2's memory encoder and attention are random; "
            "propagation will not follow the object. Load Meta's checkpoint.",
            stacklevel=2,
        )
    else:
        memory = {k: v for k, v in memory_state.items() if not k.startswith(_IMAGE_PATH_PREFIXES)}
        own = {k for k in video.state_dict() if not k.startswith(_IMAGE_PATH_PREFIXES)}
        missing = sorted(own - set(memory))
        if missing:
            raise ValueError(
                f"the checkpoint lacks SAM2's memory parts ({', '.join(missing[:3])}, ...): propagation needs Meta's "
                "full checkpoint file"
            )
        video.load_state_dict(memory, strict=False)
    share_image_path(video, model)
    return video.to(model.device).eval()


def frames_tensor(stack: PlaneSource, image_size: int) -> torch.Tensor:
    """(N, 3, S, S) float32 frames as ``load_video_frames`` makes them from JPEG files (Pillow resize, /255,
    ImageNet mean / std), from the stack's RGB planes."""
    from PIL import Image

    images = torch.zeros(stack.n_planes, 3, image_size, image_size, dtype=torch.float32)
    for n in range(stack.n_planes):
        resized = np.array(Image.fromarray(stack.rgb(n)).convert("RGB").resize((image_size, image_size)))
        images[n] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    images -= torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return images


def init_stack_state(video: SAM2VideoPredictor, images: torch.Tensor, height: int, width: int) -> dict[str, Any]:
    """The inference state ``SAM2VideoPredictor.init_state`` builds, for frames already in memory."""
    device = video.device
    state: dict[str, Any] = {
        "images": images.to(device),
        "num_frames": len(images),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    with torch.inference_mode():
        video._get_image_feature(state, frame_idx=0, batch_size=1)
    return state


def add_prompt(video: SAM2VideoPredictor, state: dict[str, Any], frame: int, prompt: SlicePrompt, obj_id: int = 1):
    """``add_new_points_or_box`` with pixel prompts (sam2 normalises them by the frames' size)."""
    return video.add_new_points_or_box(
        state,
        frame_idx=frame,
        obj_id=obj_id,
        points=prompt.points.astype(np.float32) if prompt.points is not None else None,
        labels=prompt.labels.astype(np.int32) if prompt.labels is not None else None,
        box=prompt.box.astype(np.float32) if prompt.box is not None else None,
    )


def propagate_sam2(
    model: Sam2Model,
    stack: PlaneSource,
    start: int,
    prompt: SlicePrompt,
    config: PropagationConfig | None = None,
    memory_state: Mapping[str, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> PropagationResult:
    """SAM2's video propagation of the object ``prompt`` marks on slice ``start`` (see the module docstring)."""
    config = config or PropagationConfig()
    if not 0 <= start < stack.n_planes:
        raise ValueError(f"slice {start} is outside the stack's {stack.n_planes} planes (0..{stack.n_planes - 1})")
    began = time.perf_counter()
    video = video_predictor(model, memory_state)
    height, width = stack.plane_shape
    state = init_stack_state(video, frames_tensor(stack, video.image_size), height, width)
    n = stack.n_planes
    masks = np.zeros((n, height, width), dtype=bool)
    result = PropagationResult(masks, start, engine="sam2")
    with torch.inference_mode(), warnings.catch_warnings():
        # sam2 without its CUDA extension skips hole filling (a no-op at fill_hole_area's size) and says so per frame
        warnings.filterwarnings("ignore", message=r"cannot import name '_C'")
        _, _, logits = add_prompt(video, state, start, prompt)
        masks[start] = (logits[0, 0] > 0).cpu().numpy()
        budget, done = n - 1, 0
        for direction in config.directions:
            result.stopped[direction] = "end of the stack"
            for frame, _, frame_logits in video.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=config.max_planes, reverse=direction == BACKWARD
            ):
                masks[frame] = (frame_logits[0, 0] > 0).cpu().numpy()
                if frame != start:
                    done += 1
                    if progress is not None:
                        progress(done, budget)
                if should_stop is not None and should_stop():
                    result.stopped[direction] = "cancelled"
                    break
            if result.stopped[direction] == "cancelled":
                break
    outputs = state["output_dict_per_obj"][0]
    for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
        for frame, out in outputs[kind].items():
            result.scores[int(frame)] = float(torch.sigmoid(out["object_score_logits"]).reshape(-1)[0])
    result.seconds = time.perf_counter() - began
    return result
