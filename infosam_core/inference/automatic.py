"""Segment everything: SAM's automatic mask generation on a :class:`Predictor`'s (cached) embedding.

The recipe is segment-anything's ``SamAutomaticMaskGenerator`` (Kirillov et al., *Segment Anything*,
ICCV 2023, section 7.1 / appendix), for the whole image (no crop layers):

1. **Grid prompts.** ``points_per_side``^2 single foreground points on a regular grid over the image
   (``segment_anything.utils.amg.build_point_grid``), run through the decoder in batches of
   ``points_per_batch`` prompts with three candidate masks each (``multimask_output=True``), on one
   image embedding (the predictor's cache: a second call on the same image costs no encoder pass).
2. **Predicted-IoU filter.** Keep candidates whose predicted IoU exceeds ``pred_iou_thresh``.
3. **Stability filter.** ``stability = |logits > t + o| / |logits > t - o|`` (the IoU of the masks
   thresholded ``o = stability_score_offset`` logits above and below the mask threshold ``t``);
   keep candidates with ``stability >= stability_score_thresh``.
4. **Non-maximum suppression** on the masks' bounding boxes (``torchvision.ops.batched_nms``, boxes with
   IoU above ``box_nms_thresh`` suppressed, higher predicted IoU wins).
5. Optional: drop masks covering more than ``max_mask_fraction`` of the image (SAM keeps them; on
   microscopy they are the background) and remove islands and holes smaller than
   ``min_mask_region_area`` pixels (then NMS again, as SAM's ``postprocess_small_regions`` does).

Everything goes through the :class:`~infosam_core.inference.predictor.Predictor` API (``set_image``,
``transform``, ``predict_torch``), so any backbone the predictor serves works here, base or adapted.

:func:`proposals_to_labels` turns the proposals into one label image (overlaps go to the higher
predicted IoU). :attr:`AutomaticResult.uncertainty` scores how unsure the model is about an image
(``1 - mean over grid points of the best candidate's min(predicted IoU, stability)``, the stability of its
low-resolution logits; a candidate the IoU filter drops counts its predicted IoU) to suggest which image to
annotate next.

Speed: the predicted-IoU filter runs before any mask is brought to the image's size
(``Predictor.predict_low_res_torch`` with ``keep_prompts``): the decoder upscales the masks of the prompts with
a candidate above the filter only (a quarter of them on the nucleus sample), and only the candidates the filter
keeps are brought to the image's size and scored for stability; the proposals are those of filtering every
upscaled mask, to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score

from infosam_core.inference.predictor import Predictor

#: the largest prompt grid (n x n point prompts): 256^2 = 65536 prompts, 64 times SAM's default 32 x 32
MAX_POINTS_PER_SIDE = 256

_MAX_BATCH_LOGIT_BYTES = 256 * 2**20  # a batch's full-resolution logits (prompts x 3 x H x W float32) at most


@dataclass(frozen=True)
class AutomaticConfig:
    """Options of automatic mask generation; the defaults are ``SamAutomaticMaskGenerator``'s.

    points_per_side: grid of ``n x n`` point prompts over the image.
    points_per_batch: prompts per decoder call (lowered automatically so that one batch's
        full-resolution logits stay under 256 MB).
    pred_iou_thresh: keep candidates whose predicted IoU is above this (0 disables).
    stability_score_thresh: keep candidates whose stability is at least this (0 disables).
    stability_score_offset: the logit offset ``o`` of the stability score.
    box_nms_thresh: box IoU above which the lower-scored of two masks is dropped.
    min_mask_region_area: remove islands and holes smaller than this (pixels; 0 disables).
    max_mask_fraction: drop masks covering more than this fraction of the image (1 keeps all).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    max_mask_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.points_per_side <= MAX_POINTS_PER_SIDE:
            raise ValueError(
                f"points_per_side must be in [1, {MAX_POINTS_PER_SIDE}] (a grid of n x n prompts per image; SAM "
                f"uses 32), got {self.points_per_side}"
            )
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "max_mask_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")

    @classmethod
    def for_model(cls, model_type: str, **overrides: Any) -> AutomaticConfig:
        """Defaults for ``model_type``: SAM's for the SAM backbones, :data:`TINY_DEFAULTS` for ``tiny``
        (256 px input, a less confident IoU head: 16 x 16 prompts, lower filters, small-region clean-up
        and no masks over half the image)."""
        base = TINY_DEFAULTS if model_type == "tiny" else cls()
        return replace(base, **overrides)


#: SAM's recipe for the bundled tiny model: its predicted IoUs and stabilities run lower than SAM's
#: (SAM's 0.88 / 0.95 keep 1 % of the nuclei), and its 256 px input sees a quarter of SAM's resolution
#: per side, so 16 x 16 prompts (one per 16 input pixels, as SAM's 32 x 32 at 1024 px is one per 32).
#: Chosen on 4 DSB 2018 nucleus images outside the learning curve's held-out set: stability 0.7 / 0.8 /
#: 0.9 at predicted IoU 0.5 gave F1@0.5 0.32 / 0.35 / 0.44 (precision 0.29 / 0.33 / 0.58).
TINY_DEFAULTS = AutomaticConfig(
    points_per_side=16,
    pred_iou_thresh=0.6,
    stability_score_thresh=0.9,
    min_mask_region_area=8,
    max_mask_fraction=0.5,
)


@dataclass
class Proposal:
    """One proposed object: ``mask`` (H, W) bool in image pixels, its scores and the prompt that made it."""

    mask: np.ndarray
    predicted_iou: float
    stability: float
    point: tuple[float, float]  # (x, y) pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive max, as SAM's batched_mask_to_box)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class AutomaticResult:
    """The proposals for one image (highest predicted IoU first) and the image's uncertainty in [0, 1]."""

    proposals: list[Proposal]
    image_size: tuple[int, int]
    uncertainty: float
    config: AutomaticConfig = field(default_factory=AutomaticConfig)

    def labels(self) -> np.ndarray:
        """The proposals as one (H, W) uint16/uint32 label image (see :func:`proposals_to_labels`)."""
        return proposals_to_labels(self.proposals, self.image_size)


def point_grid(points_per_side: int, image_size: tuple[int, int]) -> np.ndarray:
    """(n^2, 2) prompt points (x, y) in pixels of an image of ``image_size = (H, W)`` (SAM's grid)."""
    height, width = image_size
    return build_point_grid(points_per_side) * np.array([[width, height]], dtype=np.float64)


def segment_all(
    predictor: Predictor,
    image: np.ndarray | None = None,
    config: AutomaticConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    points: np.ndarray | None = None,
) -> AutomaticResult:
    """Propose every object of ``image`` (or of the predictor's current image when None).

    ``points``: the prompt points, (N, 2) as (x, y) pixels (default: the config's ``points_per_side`` grid over
    the whole image; tiled segment-all prompts only a tile's inner region).

    ``progress(done, total)`` is called after every batch of prompts; ``should_stop()`` is polled
    before every batch (a stopped run returns the proposals found so far). Sets ``image`` as the
    predictor's current image (embedding from its cache when possible).
    """
    config = config or AutomaticConfig()
    if image is not None:
        predictor.set_image(image)
    if not predictor.is_image_set or predictor.original_size is None:
        raise RuntimeError("segment_all needs an image: pass one or call predictor.set_image first")
    height, width = (int(s) for s in predictor.original_size)
    if points is None:
        points = point_grid(config.points_per_side, (height, width))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    per_prompt_bytes = 3 * height * width * 4
    batch = max(1, min(config.points_per_batch, _MAX_BATCH_LOGIT_BYTES // per_prompt_bytes))
    threshold = predictor.model.mask_threshold

    kept_masks: list[torch.Tensor] = []
    kept_iou: list[torch.Tensor] = []
    kept_stability: list[torch.Tensor] = []
    kept_points: list[np.ndarray] = []
    confidence: list[torch.Tensor] = []  # per grid point: best candidate's min(predicted IoU, stability)
    for start in range(0, len(points), batch):
        if should_stop is not None and should_stop():
            break
        chunk = points[start : start + batch]
        coords = torch.as_tensor(predictor.transform.apply_coords(chunk, (height, width)), device=predictor.device)
        labels = torch.ones(len(chunk), dtype=torch.int, device=predictor.device)
        iou_thresh = config.pred_iou_thresh
        keep_prompts = _any_above(iou_thresh) if iou_thresh > 0 else None
        low_res, iou_preds = predictor.predict_low_res_torch(
            coords[:, None, :], labels[:, None], multimask_output=True, keep_prompts=keep_prompts
        )
        candidates = iou_preds.shape[1]
        # the candidates whose low-res logits were computed: every candidate of the prompts kept
        prompt_rows = (
            keep_prompts(iou_preds).nonzero()[:, 0]
            if keep_prompts is not None
            else torch.arange(len(iou_preds), device=iou_preds.device)
        )
        computed = (prompt_rows[:, None] * candidates + torch.arange(candidates, device=prompt_rows.device)).flatten()
        low_res, iou_preds = low_res.flatten(0, 1), iou_preds.flatten(0, 1).float()
        # uncertainty: a candidate the IoU filter drops counts its predicted IoU; one it keeps, min(IoU,
        # stability of its low-res logits)
        passing = iou_preds[computed] > iou_thresh if iou_thresh > 0 else torch.ones_like(computed, dtype=torch.bool)
        low_res_stability = calculate_stability_score(low_res, threshold, config.stability_score_offset).float()
        low_res_stability = torch.nan_to_num(low_res_stability, nan=0.0)  # 0/0: no pixel above the low threshold
        score = iou_preds.clone()
        score[computed[passing]] = torch.minimum(iou_preds[computed[passing]], low_res_stability[passing])
        confidence.append(score.clamp(0, 1).view(-1, candidates).amax(dim=1).cpu())
        # filters: predicted IoU first (no mask needed), then stability on the image-size logits of those kept
        keep_index, low_res = computed[passing], low_res[passing]
        if len(keep_index):
            logits = predictor.upscale_logits(low_res[:, None])[:, 0]
        else:
            logits = low_res.new_zeros((0, height, width))
        stability = calculate_stability_score(logits, threshold, config.stability_score_offset).float()
        stability = torch.nan_to_num(stability, nan=0.0)
        if config.stability_score_thresh > 0:
            stable = stability >= config.stability_score_thresh
            logits, stability, keep_index = logits[stable], stability[stable], keep_index[stable]
        masks = logits > threshold
        if config.max_mask_fraction < 1.0 and len(masks):
            small_enough = masks.flatten(1).sum(1) <= config.max_mask_fraction * height * width
            masks, stability, keep_index = masks[small_enough], stability[small_enough], keep_index[small_enough]
        kept_masks.append(masks.cpu())
        kept_iou.append(iou_preds[keep_index].cpu())
        kept_stability.append(stability.cpu())
        kept_points.append(np.repeat(chunk, candidates, axis=0)[keep_index.cpu().numpy()])
        if progress is not None:
            progress(min(start + batch, len(points)), len(points))

    uncertainty = 1.0 - float(torch.cat(confidence).mean()) if confidence else 1.0
    if not kept_masks or sum(len(m) for m in kept_masks) == 0:
        return AutomaticResult([], (height, width), uncertainty, config)
    masks = torch.cat(kept_masks)
    iou = torch.cat(kept_iou)
    stab = torch.cat(kept_stability)
    pts = np.concatenate(kept_points)
    nonempty = masks.flatten(1).any(1)
    masks, iou, stab, pts = masks[nonempty], iou[nonempty], stab[nonempty], pts[nonempty.numpy()]
    order = _nms(masks, iou, config.box_nms_thresh)
    masks, iou, stab, pts = masks[order], iou[order], stab[order], pts[order.numpy()]

    if config.min_mask_region_area > 0 and len(masks):
        cleaned = [_remove_small_regions(m.numpy(), config.min_mask_region_area) for m in masks]
        masks = torch.from_numpy(np.stack(cleaned))
        nonempty = masks.flatten(1).any(1)
        masks, iou, stab, pts = masks[nonempty], iou[nonempty], stab[nonempty], pts[nonempty.numpy()]
        if len(masks):
            order = _nms(masks, iou, config.box_nms_thresh)
            masks, iou, stab, pts = masks[order], iou[order], stab[order], pts[order.numpy()]

    boxes = batched_mask_to_box(masks) if len(masks) else torch.zeros(0, 4)
    proposals = [
        Proposal(
            mask=masks[i].numpy(),
            predicted_iou=float(iou[i]),
            stability=float(stab[i]),
            point=(float(pts[i][0]), float(pts[i][1])),
            box=_xyxy(boxes[i]),
        )
        for i in range(len(masks))
    ]
    return AutomaticResult(proposals, (height, width), uncertainty, config)


def _any_above(threshold: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Prompts (rows of predicted IoUs) with at least one candidate above ``threshold``."""

    def keep(iou: torch.Tensor) -> torch.Tensor:
        return (iou > threshold).any(dim=1)

    return keep


def _xyxy(box: torch.Tensor) -> tuple[int, int, int, int]:
    """A (4,) box tensor as whole-pixel (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (int(v) for v in box.tolist())
    return x0, y0, x1, y1


def _nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept by box NMS (highest score first), as SAM's generator does it."""
    from torchvision.ops import batched_nms  # imported here: torchvision's import costs 2.3 s (torch._dynamo)

    boxes = batched_mask_to_box(masks).float()
    return batched_nms(boxes, scores, torch.zeros(len(boxes)), iou_threshold=iou_threshold)


def _remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Fill holes smaller than ``min_area`` pixels, then drop islands smaller than it (SAM's order).

    A mask whose islands are all small keeps its largest one (as segment-anything does).
    """
    holes, n_holes = ndimage.label(~mask)
    if n_holes:
        sizes = np.bincount(holes.ravel())
        small = np.flatnonzero(sizes < min_area)
        small = small[small != 0]
        if len(small):
            mask = mask | np.isin(holes, small)
    islands, n_islands = ndimage.label(mask)
    if n_islands:
        sizes = np.bincount(islands.ravel())
        sizes[0] = 0
        small = np.flatnonzero(sizes < min_area)
        small = small[small != 0]
        if len(small) == n_islands:  # all small: keep the largest
            small = small[small != int(np.argmax(sizes))]
        if len(small):
            mask = mask & ~np.isin(islands, small)
    return mask


def proposals_to_labels(proposals: list[Proposal], image_size: tuple[int, int]) -> np.ndarray:
    """One label image (0 background, 1..N objects) from proposals; overlaps go to the higher predicted IoU.

    Proposals are painted in increasing predicted IoU, so each pixel ends with its best-scored proposal;
    a proposal left with no pixel of its own gets no label, and labels are consecutive from 1.
    """
    height, width = image_size
    dtype = np.uint16 if len(proposals) < 65536 else np.uint32
    labels = np.zeros((height, width), dtype=dtype)
    order = sorted(range(len(proposals)), key=lambda i: proposals[i].predicted_iou)
    for rank, index in enumerate(order, start=1):
        labels[proposals[index].mask] = rank
    present = np.unique(labels)
    present = present[present != 0]
    lookup = np.zeros(len(proposals) + 1, dtype=dtype)
    lookup[present] = np.arange(1, len(present) + 1, dtype=dtype)
    return lookup[labels]
