"""InfoSAM's relation maps: where, for a prompted object, the relation module sees the image relate to the mask.

The relation map of an image = its relation vector r = R(z_i, z_m) (:meth:`InfosamDistiller.relation_vectors`:
image embedding z_i (C, h, w) and the decoder's single-mask token z_m for a prompt) reshaped to the embedding
grid (h, w) and cropped to the image's valid (unpadded) area: SAM resizes the longest side to the input
size and pads the rest, so an (H, W) image fills ceil(h * H' / S) x ceil(w * W' / S) cells, H' x W' the
resized size and S the input size (tiny: S = 256, grid 32 x 32). r has unit L2 norm over all h*w cells.
The prompt is the ground truth's tight box (no jitter), so teacher and student see the same prompt.

* :func:`relation_maps` -> :class:`RelationMapPair` (teacher's and student's map of one sample);
  :func:`relation_maps_for_box` for any image and box (the app: the current box, or the whole image);
* :func:`relation_figure` draws image | teacher map | student map | histogram of both maps' values per
  sample (the paper's figure), as PNG bytes (matplotlib's Agg canvas: no display, thread-safe);
* :class:`RelationMapRecorder` is a trainer epoch-end callback writing one figure per epoch
  (``infosam train --relation-maps N``);
* :func:`upsample_map` brings a map to the image's pixels (the app's overlay).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infosam_core.data.datasets import SegmentationSample
from infosam_core.data.prompt_sampling import box_from_mask
from infosam_core.distill.base import distiller_of
from infosam_core.distill.infosam import InfosamDistiller
from infosam_core.io.atomic import write_bytes_atomic
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of


class RelationMapError(ValueError):
    """The model has no relation module (it was not adapted with InfoSAM)."""


@dataclass
class RelationMapPair:
    """One sample's maps, each (rows, cols) float32 over the valid grid cells; ``image`` the RGB input."""

    name: str
    image: np.ndarray
    teacher: np.ndarray
    student: np.ndarray


def has_relation_module(model: SamLike) -> bool:
    """Whether ``model`` carries a distiller with relation vectors (InfoSAM)."""
    return isinstance(distiller_of(model), InfosamDistiller)


def _device(model: SamLike | torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _embedding_and_token(
    sam: SamLike, image: np.ndarray, box: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(1, C, h, w) image embedding and (1, C) single-mask token of ``sam`` for ``box`` (XYXY, image pixels),
    as training computes them (the model family's :class:`~infosam_core.models.training_backbone.TrainingBackbone`),
    and the image's size in the encoder's input frame."""
    device = _device(sam)
    backbone = family_of(sam).training_backbone(sam)
    resized = backbone.resize(image)
    x = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None].float()
    features = backbone.encode(sam.preprocess(x))
    (h, w), (rh, rw) = image.shape[:2], resized.shape[:2]
    scaled = np.asarray(box, dtype=np.float64) * np.array([rw / w, rh / h, rw / w, rh / h])
    prompts = _BoxPrompt(torch.as_tensor(scaled[None], dtype=torch.float32, device=device))
    return features.embed, backbone.mask_token(features, prompts), (rh, rw)


class _BoxPrompt:
    """One box prompt per image (a :class:`~infosam_core.models.training_backbone.PromptBatch`)."""

    def __init__(self, boxes: torch.Tensor) -> None:
        n, device = boxes.shape[0], boxes.device
        self.boxes = boxes
        self.points = torch.zeros(n, 1, 2, device=device)
        self.labels = torch.ones(n, 1, dtype=torch.int64, device=device)
        self.is_box = torch.ones(n, dtype=torch.bool, device=device)


def valid_cells(image_shape: tuple[int, int], input_size: int, grid: tuple[int, int]) -> tuple[int, int]:
    """How many embedding rows and columns an (H, W) image covers (the rest is padding)."""
    h, w = image_shape
    scale = input_size / max(h, w)
    rows = math.ceil(grid[0] * round(h * scale) / input_size)
    cols = math.ceil(grid[1] * round(w * scale) / input_size)
    return max(1, min(rows, grid[0])), max(1, min(cols, grid[1]))


@torch.no_grad()
def relation_maps_for_box(
    teacher: SamLike, student: SamLike, image: np.ndarray, box: np.ndarray, name: str = ""
) -> RelationMapPair:
    """The teacher's and the student's relation maps of an RGB uint8 ``image`` (H, W, 3) prompted with ``box``
    (XYXY, image pixels), both through the student's relation module (``student.distiller``). Leaves both
    models' modes as they were. :class:`RelationMapError` when the student has no relation module."""
    distiller = distiller_of(student)
    if not isinstance(distiller, InfosamDistiller):
        raise RelationMapError("this model has no InfoSAM relation module: adapt it with the InfoSAM distiller")
    modes = [(m, m.training) for m in (teacher, student)]
    try:
        teacher.eval()
        student.eval()
        box = np.asarray(box, dtype=np.float64)
        f_t, tok_t, _ = _embedding_and_token(teacher, image, box)
        f_s, tok_s, input_shape = _embedding_and_token(student, image, box)
        grid = (int(f_t.shape[-2]), int(f_t.shape[-1]))
        rows, cols = valid_cells(input_shape, student.image_encoder.img_size, grid)  # SAM: the unpadded part
        maps = []
        for f, tok in ((f_t, tok_t), (f_s, tok_s)):
            rel = distiller.relation_vectors(f.to(_device(distiller)), tok.to(_device(distiller)))
            maps.append(rel.reshape(grid)[:rows, :cols].float().cpu().numpy())
    finally:
        for model, mode in modes:
            model.train(mode)
    return RelationMapPair(name, image, maps[0], maps[1])


def relation_maps(teacher: SamLike, student: SamLike, sample: SegmentationSample) -> RelationMapPair:
    """:func:`relation_maps_for_box` of a sample, prompted with its mask's tight box."""
    if not sample.mask.any():
        raise ValueError(f"{sample.name}: empty mask, no prompt to draw the relation map for")
    return relation_maps_for_box(teacher, student, sample.image, box_from_mask(sample.mask), sample.name)


def upsample_map(relation_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A relation map (rows, cols) brought to an (H, W) image by bilinear interpolation, float32."""
    t = torch.as_tensor(relation_map, dtype=torch.float32)[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def relation_figure(pairs: list[RelationMapPair], title: str = "") -> bytes:
    """PNG bytes: one row per pair: image | teacher map | student map | histogram of both maps' values."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not pairs:
        raise ValueError("no relation maps to draw")
    fig = Figure(figsize=(12, 3 * len(pairs)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pairs), 4, squeeze=False)
    for row, pair in zip(axes, pairs):
        vmin = float(min(pair.teacher.min(), pair.student.min()))
        vmax = float(max(pair.teacher.max(), pair.student.max()))
        row[0].imshow(pair.image)
        row[0].set_title(pair.name[:24], fontsize=9)
        for ax, values, who in ((row[1], pair.teacher, "teacher"), (row[2], pair.student, "student")):
            im = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{who} relation map", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        bins = np.linspace(vmin, vmax, 41) if vmax > vmin else 10
        row[3].hist(pair.teacher.ravel(), bins=bins, alpha=0.6, label="teacher", color="tab:blue")
        row[3].hist(pair.student.ravel(), bins=bins, alpha=0.6, label="student", color="tab:orange")
        row[3].set_title("values", fontsize=9)
        row[3].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def pick_samples(samples: list[SegmentationSample], n: int) -> list[SegmentationSample]:
    """``n`` fixed samples with a non-empty mask, evenly spaced over the list (the same every epoch)."""
    usable = [s for s in samples if s.mask.any()]
    if n <= 0 or not usable:
        return []
    idx = np.linspace(0, len(usable) - 1, min(n, len(usable))).round().astype(int)
    return [usable[i] for i in dict.fromkeys(idx.tolist())]


class RelationMapRecorder:
    """Trainer epoch-end callback: ``OUT/epoch_001.png``, ... with the relation maps of ``n`` fixed samples
    (:func:`pick_samples`). Does nothing for a student without a relation module."""

    def __init__(self, out_dir: str | Path, samples: list[SegmentationSample], n: int) -> None:
        self.out_dir = Path(out_dir)
        self.samples = pick_samples(samples, n)
        self.written: list[Path] = []

    def __call__(self, trainer, epoch: int) -> None:
        if not self.samples or not has_relation_module(trainer.student):
            return
        pairs = [relation_maps(trainer.teacher, trainer.student, s) for s in self.samples]
        png = relation_figure(pairs, f"epoch {epoch}")
        self.written.append(write_bytes_atomic(self.out_dir / f"epoch_{epoch:03d}.png", png))
