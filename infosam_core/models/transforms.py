"""Resize to the encoder's input size (longest side), and the same scaling for prompt coordinates.

The transform segment-anything's ``ResizeLongestSide`` applies, with the same results (the parity test holds it
to segment-anything's bit for bit), written here for two reasons:

* a very thin image keeps every side >= 1 px: segment-anything rounds the short side, so a 1 x 5000 px image
  became 0 x 256 px ("height and width must be > 0"); the coordinate transforms use the same shape, so prompts
  and masks stay aligned;
* no torchvision: segment-anything's resizes through ``torchvision.transforms.functional``, and importing
  torchvision imports ``torch._dynamo`` (its ``ops`` need it), 2.3 s of a 7.7 s ``infosam predict`` on a 2-core
  VM (``benchmarks/bench_cli_start.py``). The image is resized by Pillow, as torchvision does for a
  NumPy image (bilinear, Pillow's antialiasing filter).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ResizeLongestSide:
    """Scale an (H, W, C) uint8 image so that its longest side is ``target_length`` (aspect ratio kept,
    the other side rounded, at least 1 px), and (x, y) coordinates and XYXY boxes with it."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(height, width) of an ``oldh`` x ``oldw`` image resized to ``long_side_length`` on its longest side."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = int(oldh * scale + 0.5), int(oldw * scale + 0.5)
        return max(1, newh), max(1, neww)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) (or (H, W)) uint8 -> (h, w, 3) uint8 at the encoder's size (bilinear, antialiased)."""
        height, width = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        pixels = np.ascontiguousarray(image)
        return np.array(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))

    def _scale(self, original_size: tuple[int, ...]) -> tuple[float, float]:
        old_h, old_w = original_size[0], original_size[1]
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        return new_w / old_w, new_h / old_h

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(..., 2) (x, y) pixels of an image of ``original_size`` (H, W) -> pixels of the resized image
        (a new float64 array)."""
        sx, sy = self._scale(original_size)
        out = np.array(coords, dtype=float)
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(B, 4) (or (4,)) XYXY boxes -> (B, 4) in the resized image's pixels."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """As :meth:`apply_coords` for a tensor (a new float32 tensor on the same device)."""
        sx, sy = self._scale(original_size)
        out = coords.to(torch.float, copy=True)
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """As :meth:`apply_boxes` for a tensor: (B, 4) XYXY -> (B, 4) float32."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
