"""Builders shared by several test modules: toy models, small samples and datasets, short training configs,
the torchrun launcher. Imported as ``from helpers import ...`` (pytest puts tests/ on sys.path: the test
files and conftest.py sit in a folder without ``__init__.py``). Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import ModuleType

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from skimage import draw

from infosam_core.data.datasets import SegmentationSample
from infosam_core.models.sam import PIXEL_MEAN, PIXEL_STD
from infosam_core.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
WORLD = 2  # processes in the torchrun / DDP tests


# --- models ---------------------------------------------------------------------------------------------------


def micro_sam(seed: int = 0) -> Sam:
    """SAM's classes at toy sizes (64 px input, 8x8 grid, 32-d): training steps in milliseconds."""
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=64,
            patch_size=8,
            embed_dim=32,
            depth=4,
            num_heads=2,
            mlp_ratio=4,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1, 3),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=4),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    sam.model_type = "micro"
    return sam.eval()


def hq_package() -> ModuleType:
    """The reference package ``segment_anything_hq`` (the test skips without it), imported without its warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's registry overwrites, FutureWarnings
        return pytest.importorskip("segment_anything_hq")


# --- samples, datasets, configs -------------------------------------------------------------------------------


def disc_samples(n: int, size: int = 48, seed: int = 0) -> list[SegmentationSample]:
    """``n`` images of ``size`` x ``size + 8`` with one bright disk each, at a random place, as their masks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(0, 120, (size, size + 8, 3), dtype=np.uint8)
        mask = np.zeros((size, size + 8), bool)
        rr, cc = draw.disk(
            (rng.integers(15, size - 15), rng.integers(15, size - 7)), rng.integers(6, 12), shape=mask.shape
        )
        mask[rr, cc] = True
        image[mask] += 100
        out.append(SegmentationSample(image, mask, f"d{i}"))
    return out


def square_samples() -> list[SegmentationSample]:
    """Two 64x64 images, each with one bright rectangle as its mask (training-step tests)."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(2):
        image = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), bool)
        mask[10:40, 12 + i : 44] = True
        image[mask] += 100
        samples.append(SegmentationSample(image, mask, f"s{i}"))
    return samples


def write_ellipse_dataset(
    root: Path, ellipses: Sequence[tuple[int, int, int, int]], shape: tuple[int, int] = (48, 64)
) -> Path:
    """An ``infosam train --data`` folder at ``root`` (images/, masks/ of PNGs ``im{i}.png``): one dark noisy
    image of ``shape`` per ellipse ``(row, col, row_radius, col_radius)``, the ellipse bright, and its mask."""
    rng = np.random.default_rng(0)
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    for i, (row, col, row_radius, col_radius) in enumerate(ellipses):
        image = rng.integers(0, 90, (*shape, 3), dtype=np.uint8)
        mask = np.zeros(shape, np.uint8)
        rr, cc = draw.ellipse(row, col, row_radius, col_radius, shape=mask.shape)
        mask[rr, cc] = 255
        image[mask > 0] += 140
        iio.imwrite(root / "images" / f"im{i}.png", image)
        iio.imwrite(root / "masks" / f"im{i}.png", mask)
    return root


def quick(**kw) -> TrainConfig:
    """A TrainConfig of one epoch in batches of two, plus ``kw``."""
    kw.setdefault("epochs", 1)
    kw.setdefault("batch_size", 2)
    return TrainConfig(**kw)


# --- several processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_train_args(out: Path, data: Path, device: str = "cpu") -> list[str]:
    """The compared command: adapter (decoder frozen) + InfoSAM, global batch 4, 2 steps, float32."""
    return [
        "train",
        "--data",
        str(data),
        "--peft",
        "adapter",
        "--peft-option",
        "train_decoder=false",
        "--distill",
        "infosam",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--device",
        device,
        "--no-bf16",
        "--out",
        str(out),
    ]


def torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node WORLD -m infosam_core ARGS`` from the repository, output captured."""
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(WORLD), "--master-addr", "127.0.0.1"]
    launcher += ["--master-port", str(free_port()), "-m", "infosam_core"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def adapter_tensors(out: Path) -> Path:
    """The tensors file an ``infosam train --out`` folder's adapter.json names (saves are all-or-nothing)."""
    from infosam_core.adapter_files.checkpoint import tensors_path_of

    json_path = out / "adapter.json"
    return tensors_path_of(json_path, json.loads(json_path.read_text()))


def head_only_method(name: str = "test_head_only"):
    """A PEFT method as a plug-in would add one (for :func:`~infosam_core.peft.registry.register_peft_method`):
    only the mask decoder's IoU head trains, ``scale`` (bounded) multiplies nothing, it only has to be checked."""
    from dataclasses import dataclass, field

    from infosam_core.options import bounds
    from infosam_core.peft.common import PeftConfig
    from infosam_core.peft.method import PeftMethod

    @dataclass
    class HeadOnlyConfig(PeftConfig):
        train_decoder: bool = False
        scale: float = field(default=1.0, metadata=bounds(0.0, 10.0))

    def inject(sam, config, generator=None) -> None:
        sam.mask_decoder.iou_prediction_head.requires_grad_(True)

    return PeftMethod(name, HeadOnlyConfig, inject, "the IoU head only (a test plug-in)", "Head only (test)")
