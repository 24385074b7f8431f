"""The torch device a model runs on, from a setting: ``auto`` is CUDA when present, else the CPU."""

from __future__ import annotations

import torch

AUTO_DEVICE = "auto"


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` when a CUDA GPU is available, else ``cpu``; any other name as ``torch.device``."""
    if name == AUTO_DEVICE:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
