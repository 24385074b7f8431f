"""A synthetic "segment anything" data engine: images with many objects and exact instance masks.

Used to pretrain the bundled tiny SAM (``infosam pretrain``) and, with a domain shift, in tests. A scene is
a textured background with 3..14 objects painted in random order (later ones occlude earlier ones):
ellipses, rotated rectangles, random polygons and smooth blobs, each filled with a crop of one of
scikit-image's bundled photographs (tinted), a flat colour with noise or a shaded gradient. Then, at
random: blur, gamma/contrast change, noise, grayscale, a "fluorescence" look (bright objects on a dark
background) or inversion. ``skimage.data.coins`` is never used: it is held out for evaluation.

Everything is driven by a ``numpy.random.Generator`` so a seed gives the same scenes on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage import draw
from skimage.transform import rescale

TEXTURE_SOURCES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "text",
    "retina",
    "rocket",
    "cell",
    "clock",
    "colorwheel",
)


@dataclass(frozen=True)
class SceneConfig:
    """What scenes look like. Sizes are in pixels of the square output image."""

    image_size: int = 256
    min_objects: int = 3
    max_objects: int = 14
    min_radius: float = 5.0
    max_radius: float = 70.0
    min_visible_area: int = 24
    p_gray: float = 0.3
    p_fluorescence: float = 0.15
    p_invert: float = 0.05
    p_blur: float = 0.3
    p_noise: float = 0.5


@lru_cache(maxsize=1)
def texture_bank() -> tuple[np.ndarray, ...]:
    """scikit-image's bundled photographs as float32 RGB in [0, 1], at most 512 px (loaded once)."""
    bank = []
    for name in TEXTURE_SOURCES:
        img = getattr(skdata, name)()
        img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(float(img.max()), 1.0))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        scale = 512 / max(img.shape[:2])
        if scale < 1:
            img = rescale(img, scale, channel_axis=2, anti_aliasing=True).astype(np.float32)
        bank.append(np.ascontiguousarray(img))
    return tuple(bank)


class SceneGenerator:
    """``generate(rng) -> (image (S,S,3) uint8, labels (S,S) int32)``, label 0 = background."""

    def __init__(self, config: SceneConfig | None = None):
        self.config = config or SceneConfig()
        self.textures = texture_bank()

    # -- fills -----------------------------------------------------------------------------------------
    def _texture_patch(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        tex = self.textures[rng.integers(len(self.textures))]
        zoom = rng.uniform(0.5, 2.0)
        ch, cw = min(tex.shape[0], max(2, int(h / zoom))), min(tex.shape[1], max(2, int(w / zoom)))
        y0 = rng.integers(0, tex.shape[0] - ch + 1)
        x0 = rng.integers(0, tex.shape[1] - cw + 1)
        crop = tex[y0 : y0 + ch, x0 : x0 + cw]
        yi = np.linspace(0, ch - 1, h).astype(np.int64)
        xi = np.linspace(0, cw - 1, w).astype(np.int64)
        patch = crop[yi][:, xi]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch.transpose(1, 0, 2) if h == w else patch[::-1]
        return patch

    def _fill(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """An (h, w, 3) float fill: tinted texture, flat colour + noise, or a shaded gradient."""
        kind = rng.choice(3, p=[0.55, 0.25, 0.2])
        color = rng.uniform(0, 1, 3).astype(np.float32)
        if kind == 0:
            patch = self._texture_patch(rng, h, w)
            mix = rng.uniform(0.0, 0.7)
            return (1 - mix) * patch + mix * color * patch.mean(axis=2, keepdims=True) * 2
        if kind == 1:
            return np.broadcast_to(color, (h, w, 3)) + rng.normal(0, rng.uniform(0.0, 0.08), (h, w, 1)).astype(
                np.float32
            )
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(h, w)
        other = rng.uniform(0, 1, 3).astype(np.float32)
        t = np.clip(r, 0, 1)[..., None]
        return (1 - t) * color + t * other

    # -- shapes ----------------------------------------------------------------------------------------
    def _shape(self, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
        """A boolean shape mask and its top-left corner in image coordinates (may lie partly outside)."""
        c = self.config
        radius = float(np.exp(rng.uniform(np.log(c.min_radius), np.log(c.max_radius))))
        size = int(np.ceil(2 * radius * 1.5)) + 3
        mask = np.zeros((size, size), dtype=bool)
        center = size / 2
        kind = rng.choice(4, p=[0.35, 0.2, 0.25, 0.2])
        if kind == 0:  # ellipse
            ry, rx = radius * rng.uniform(0.5, 1.0), radius * rng.uniform(0.5, 1.0)
            rr, cc = draw.ellipse(center, center, ry, rx, shape=mask.shape, rotation=rng.uniform(0, np.pi))
            mask[rr, cc] = True
        elif kind == 1:  # rotated rectangle
            hh, hw = radius * rng.uniform(0.3, 1.0), radius * rng.uniform(0.3, 1.0)
            a = rng.uniform(0, np.pi)
            corners = np.array([[-hh, -hw], [-hh, hw], [hh, hw], [hh, -hw]])
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            pts = corners @ rot.T + center
            rr, cc = draw.polygon(pts[:, 0], pts[:, 1], shape=mask.shape)
            mask[rr, cc] = True
        elif kind == 2:  # random star-shaped polygon
            n = rng.integers(3, 12)
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = radius * rng.uniform(0.4, 1.0, n)
            rr, cc = draw.polygon(center + radii * np.sin(angles), center + radii * np.cos(angles), shape=mask.shape)
            mask[rr, cc] = True
        else:  # smooth blob: thresholded smoothed noise inside a disc
            noise = ndi.gaussian_filter(rng.normal(size=mask.shape), sigma=max(1.0, radius / 3))
            yy, xx = np.mgrid[0:size, 0:size]
            disc = 1 - np.sqrt((yy - center) ** 2 + (xx - center) ** 2) / radius
            field = disc + noise / (noise.std() + 1e-6) * 0.35
            mask = field > 0.2
            lab, n = ndi.label(mask)
            if n > 1:  # keep the largest piece: one object, one component
                sizes = ndi.sum(mask, lab, range(1, n + 1))
                mask = lab == (1 + int(np.argmax(sizes)))
        s = c.image_size
        y0 = int(rng.integers(-size // 3, s - size // 3 * 2 + 1)) if s > size // 3 else 0
        x0 = int(rng.integers(-size // 3, s - size // 3 * 2 + 1)) if s > size // 3 else 0
        return mask, y0, x0

    # -- scene -----------------------------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        s = c.image_size
        image: np.ndarray = self._fill(rng, s, s).astype(np.float32)
        if rng.random() < 0.5:  # busy backgrounds too: a second texture layer
            image = 0.5 * image + 0.5 * self._texture_patch(rng, s, s)
        labels = np.zeros((s, s), dtype=np.int32)
        fluorescence = rng.random() < c.p_fluorescence
        if fluorescence:
            image *= rng.uniform(0.0, 0.25)
        n_objects = int(rng.integers(c.min_objects, c.max_objects + 1))
        for obj_id in range(1, n_objects + 1):
            shape, y0, x0 = self._shape(rng)
            ys, xs = slice(max(0, y0), min(s, y0 + shape.shape[0])), slice(max(0, x0), min(s, x0 + shape.shape[1]))
            sub = shape[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            if not sub.any():
                continue
            h, w = sub.shape
            fill = self._fill(rng, h, w)
            if fluorescence:
                dist = ndi.distance_transform_edt(sub)
                glow = np.clip(dist / max(dist.max(), 1.0), 0, 1) ** rng.uniform(0.2, 0.8)
                fill = (rng.uniform(0.4, 1.0) * (0.6 + 0.4 * glow))[..., None] * np.ones(3, np.float32)
            alpha = 1.0 if rng.random() < 0.8 else rng.uniform(0.6, 0.95)  # some semi-transparent objects
            region = image[ys, xs]
            # Keep objects visible: lift or darken a fill whose mean colour is close to what it covers.
            diff = fill[sub].mean(axis=0) - region[sub].mean(axis=0)
            if np.linalg.norm(diff) < 0.2:
                fill = fill + (0.3 if region[sub].mean() < 0.5 else -0.3)
            region[sub] = alpha * fill[sub] + (1 - alpha) * region[sub]
            labels[ys, xs][sub] = obj_id
        image = self._photometric(rng, image, fluorescence)
        labels = self._drop_tiny(labels)
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), labels

    def _photometric(self, rng: np.random.Generator, image: np.ndarray, fluorescence: bool) -> np.ndarray:
        c = self.config
        if rng.random() < c.p_blur:
            image = ndi.gaussian_filter(image, sigma=(rng.uniform(0.5, 1.8),) * 2 + (0,))
        image = np.clip(image, 0, 1) ** rng.uniform(0.6, 1.6)
        lo, hi = rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)
        image = lo + (hi - lo) * image
        if rng.random() < c.p_noise:
            image = image + rng.normal(0, rng.uniform(0.005, 0.06), image.shape).astype(np.float32)
        if rng.random() < c.p_gray or fluorescence:
            gray = image.mean(axis=2, keepdims=True)
            image = np.repeat(gray, 3, axis=2)
            if fluorescence and rng.random() < 0.5:  # a coloured stain channel
                image = image * rng.uniform(0.2, 1.0, 3).astype(np.float32)
        if rng.random() < c.p_invert:
            image = 1 - image
        return image

    def _drop_tiny(self, labels: np.ndarray) -> np.ndarray:
        ids, counts = np.unique(labels, return_counts=True)
        small = ids[(counts < self.config.min_visible_area) & (ids > 0)]
        if small.size:
            labels[np.isin(labels, small)] = 0
        return labels


def scene_batch(generator: SceneGenerator, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes stacked: images (n,S,S,3) uint8, labels (n,S,S) int32."""
    scenes = [generator.generate(rng) for _ in range(n)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
