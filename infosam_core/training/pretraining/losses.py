"""SAM's pretraining losses: per-mask pixel loss (BCE variants or focal) + dice + IoU-head MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infosam_core.training.losses import dice_loss, mask_iou, sigmoid_focal_loss

PIXEL_LOSSES = ("balanced_bce", "bce", "focal")


def check_pixel_loss(kind: str) -> None:
    """Raise ValueError naming the choices unless ``kind`` is one of :data:`PIXEL_LOSSES`."""
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"pixel loss must be one of {', '.join(PIXEL_LOSSES)}, not {kind!r}")


def pixel_loss_per_mask(logits: torch.Tensor, target: torch.Tensor, kind: str = "balanced_bce") -> torch.Tensor:
    """The pixel term of the mask loss, (N, H, W) logits and {0,1} targets -> (N,).

    ``kind``: "balanced_bce" (object and background pixels weigh half each), "bce" (every pixel alike) or
    "focal" (SAM's 20 x focal).
    """
    check_pixel_loss(kind)
    if kind == "focal":
        return 20.0 * sigmoid_focal_loss(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    if kind == "bce":
        return bce.mean(1)
    fg = target.flatten(1)  # balanced_bce
    n_fg = fg.sum(1).clamp(min=1)
    n_bg = (1 - fg).sum(1).clamp(min=1)
    return 0.5 * (bce * fg).sum(1) / n_fg + 0.5 * (bce * (1 - fg)).sum(1) / n_bg


def mask_losses(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, pixel_loss: str = "balanced_bce"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-mask losses: the pixel term (:func:`pixel_loss_per_mask`) + dice; and the IoU-prediction MSE.

    logits (K, M, H, W), iou_pred (K, M), target (K, H, W) -> segmentation loss (K, M), IoU-prediction loss
    (K, M), actual IoU (K, M).
    """
    k, m = logits.shape[:2]
    flat_logits = logits.flatten(0, 1)
    flat_target = target[:, None].expand(-1, m, -1, -1).flatten(0, 1)
    pixel = pixel_loss_per_mask(flat_logits, flat_target, pixel_loss)
    seg = pixel + dice_loss(flat_logits, flat_target)
    actual = mask_iou(flat_logits, flat_target)
    iou_loss = F.mse_loss(iou_pred.flatten(), actual, reduction="none")
    return seg.view(k, m), iou_loss.view(k, m), actual.view(k, m)
