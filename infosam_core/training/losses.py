"""Segmentation losses on mask logits.

* SAM's recipe (pretraining): focal + dice on the mask, MSE between predicted and actual IoU.
* The InfoSAM paper's "structure loss": edge-weighted BCE + edge-weighted soft IoU. The reference code's
  BCE term silently reduced to an unweighted mean (deprecated ``reduce=`` argument); here it is weighted
  as intended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss per mask: (N, H, W) logits and {0,1} targets -> (N,) mean over pixels."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask: (N, H, W) -> (N,)."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return 1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of thresholded masks per sample: (N, H, W) -> (N,), no gradient. Empty vs empty is 1."""
    with torch.no_grad():
        pred = logits.flatten(1) > 0
        gt = target.flatten(1) > 0.5
        inter = (pred & gt).sum(1).float()
        union = (pred | gt).sum(1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def structure_loss(logits: torch.Tensor, target: torch.Tensor, kernel_size: int = 31) -> torch.Tensor:
    """Edge-weighted BCE + edge-weighted IoU (the paper's segmentation loss), mean over the batch.

    ``logits`` and ``target`` are (N, 1, H, W); the weight is ``1 + 5 |avgpool_k(gt) - gt|``.
    """
    weight = 1 + 5 * torch.abs(F.avg_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2) - target)
    wbce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weight * wbce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum(dim=(2, 3))
    union = ((prob + target) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()
