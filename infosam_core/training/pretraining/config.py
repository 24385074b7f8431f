"""Settings of a pretraining run of the bundled tiny SAM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infosam_core.data.synthetic import SceneConfig


@dataclass
class PretrainConfig:
    out_dir: Path = Path("runs/pretrain")
    model_type: str = "tiny"
    steps: int = 1800
    images_per_step: int = 4
    masks_per_image: int = 4
    corrective_clicks: int = 1
    p_corrective: float = 0.5
    lr: float = 4e-4
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    warmup_steps: int = 60
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # exponential moving average of the weights, saved beside them; 0 = off
    p_box: float = 0.5
    pixel_loss: str = "balanced_bce"  # "balanced_bce" (from scratch), "bce" (calibrated logits), "focal" (SAM's)
    supervise_all_iou: bool = True  # single point: the IoU head learns all three masks' IoU, not the best's only
    p_pad: float = 0.3
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 20
    time_budget_s: float | None = None
    resume: bool = True
    init_weights: Path | None = None  # start from these weights (e.g. the bundled model) instead of random
    threads: int | None = None
    device: str = "cpu"  # "cuda" on a GPU machine
    data_workers: int = 0  # processes drawing scenes ahead of the model (0: drawn in the training process)
    scene: SceneConfig = field(default_factory=SceneConfig)
