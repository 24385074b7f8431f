"""Is this file an image the app can use? Checked once, when it is added to a project.

:func:`check_image_file` refuses, with the reason in words, what would otherwise fail later on every use: a
file of another kind under an image name (a text file called ``fake.jpg``), a truncated or corrupt file, an
image over the pixel limit (:func:`infosam_core.io.images.max_pixels`, checked from the header before any
pixel is decoded) and pixel layouts no model input can be made of. The file is decoded completely once
(a truncated JPEG has an intact header), then dropped; what is kept is its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infosam_core.io.images import ImageError, load_rgb


@dataclass(frozen=True)
class RefusedImage:
    """A file that was not added: its path and why (one sentence naming the fix)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


def refusal_reason(exc: Exception, path: Path) -> str:
    """An ImageError's message without the leading file path (the caller names the file)."""
    message = str(exc)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def check_image_file(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file that decodes completely within the pixel limit; ImageError
    (naming the file, the problem and the fix) otherwise."""
    path = Path(path)
    rgb = load_rgb(path)  # header + pixel limit first, then the whole decode
    return int(rgb.shape[0]), int(rgb.shape[1])


def refusal(path: str | Path) -> RefusedImage | None:
    """None for a usable image file, else a :class:`RefusedImage` saying why it is not."""
    path = Path(path)
    try:
        check_image_file(path)
    except ImageError as exc:
        return RefusedImage(path, refusal_reason(exc, path))
    except OSError as exc:
        return RefusedImage(path, f"cannot be read ({exc.strerror or exc}).")
    return None
