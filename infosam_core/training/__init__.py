"""Fine-tuning: settings (:mod:`.config`), the trainer and its phases (:mod:`.trainer`), what it reports
(:mod:`.results`), batches (:mod:`.batches`), the encoder cache (:mod:`.encoder_cache`), losses and schedules;
:mod:`.pretraining` holds the recipe that made the bundled tiny SAM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infosam_core.lazy_exports import lazy_getattr

if TYPE_CHECKING:
    from infosam_core.training.config import PRESETS, TrainConfig
    from infosam_core.training.results import TrainingError, TrainProgress, TrainResult
    from infosam_core.training.trainer import Trainer, train

# name -> the module it comes from, imported on first use (PEP 562): importing a light submodule such as
# :mod:`.defaults` (the CLI parser does) then imports no torch
_LAZY = {
    "PRESETS": "infosam_core.training.config",
    "TrainConfig": "infosam_core.training.config",
    "TrainingError": "infosam_core.training.results",
    "TrainProgress": "infosam_core.training.results",
    "TrainResult": "infosam_core.training.results",
    "Trainer": "infosam_core.training.trainer",
    "train": "infosam_core.training.trainer",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["PRESETS", "TrainConfig", "TrainProgress", "TrainResult", "Trainer", "TrainingError", "train"]
