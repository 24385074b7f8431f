"""segment-anything's resize to the encoder's input size, safe for very thin images.

``ResizeLongestSide`` scales the longest side to the encoder's size and rounds the other: a 1 x 5000 px
image became 0 x 256 px ("height and width must be > 0"). Here the short side is at least 1 px; the
coordinate transforms use the same shape, so prompts and masks stay aligned.
"""

from __future__ import annotations

from segment_anything.utils import transforms as sa_transforms


class ResizeLongestSide(sa_transforms.ResizeLongestSide):
    """segment-anything's transform with every side of the resized image >= 1 px."""

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        newh, neww = sa_transforms.ResizeLongestSide.get_preprocess_shape(oldh, oldw, long_side_length)
        return max(1, newh), max(1, neww)
