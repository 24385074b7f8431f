"""Prompts drawn on the device for pretraining: noisy boxes, points, corrective clicks (SAM's interactive recipe)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptBatch:
    """Prompts for the K objects of one scene, in model-input pixel coordinates."""

    coords: torch.Tensor | None  # (K, N, 2) x, y
    labels: torch.Tensor | None  # (K, N) 1 = foreground, 0 = background
    boxes: torch.Tensor | None  # (K, 4) x0, y0, x1, y1

    def select(self, index: torch.Tensor) -> PromptBatch:
        """The prompts of the objects ``index`` (a (K',) long tensor)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return PromptBatch(pick(self.coords), pick(self.labels), pick(self.boxes))

    def with_point(self, coords: torch.Tensor, labels: torch.Tensor) -> PromptBatch:
        if self.coords is None:
            return PromptBatch(coords[:, None], labels[:, None], self.boxes)
        assert self.labels is not None  # points always come with their labels
        return PromptBatch(
            torch.cat([self.coords, coords[:, None]], 1), torch.cat([self.labels, labels[:, None]], 1), self.boxes
        )


def noisy_boxes(masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Tight boxes of (K, H, W) masks with SAM's noise: std 10% of the side, at most 20 px."""
    k, h, w = masks.shape
    ys = masks.any(2)
    xs = masks.any(1)
    ar_y = torch.arange(h, dtype=torch.float32, device=masks.device)
    ar_x = torch.arange(w, dtype=torch.float32, device=masks.device)
    y0 = torch.where(ys, ar_y, float(h)).amin(1)
    y1 = torch.where(ys, ar_y, -1.0).amax(1)
    x0 = torch.where(xs, ar_x, float(w)).amin(1)
    x1 = torch.where(xs, ar_x, -1.0).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1)
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1).clamp(min=1)
    noise = (torch.randn(k, 4, generator=gen).to(masks.device) * 0.1 * side).clamp(-20, 20)
    boxes = boxes + noise
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    return boxes


def sample_points(region: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random pixel of each (K, H, W) region -> (K, 2) x, y and a (K,) bool 'found'.

    An empty region gives a uniformly random pixel of the image. Draws the r-th pixel of the region (r uniform
    below its size) through a running count; ``torch.multinomial`` over every pixel took 20x longer.
    """
    k, h, w = region.shape
    flat = region.flatten(1)
    running = flat.to(torch.int32).cumsum(1, dtype=torch.int32)
    counts = running[:, -1]
    found = counts > 0
    u = torch.rand(k, generator=gen).to(region.device)
    size = torch.where(found, counts, torch.full_like(counts, h * w))
    rank = (u * size).long().clamp(max=size.long() - 1)  # 0 .. size-1
    in_region = torch.searchsorted(running, (rank + 1)[:, None].to(torch.int32)).squeeze(1)
    idx = torch.where(found, in_region, rank)
    return torch.stack([(idx % w).float(), (idx // w).float()], 1), found


def corrective_point(pred: torch.Tensor, gt: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A click on the error of ``pred`` vs ``gt`` (both (K,H,W) bool): positive on a miss, negative on a spill."""
    error = pred ^ gt
    coords, found = sample_points(error, gen)
    fg_coords, _ = sample_points(gt, gen)
    coords = torch.where(found[:, None], coords, fg_coords)
    x, y = coords[:, 0].long(), coords[:, 1].long()
    labels = gt[torch.arange(gt.shape[0], device=gt.device), y, x].long()
    return coords, labels
