"""Fine-tuning: settings (:mod:`.config`), the trainer and its phases (:mod:`.trainer`), what it reports
(:mod:`.results`), batches (:mod:`.batches`), the encoder cache (:mod:`.encoder_cache`), losses and schedules;
:mod:`.pretraining` holds the recipe that made the bundled tiny SAM."""

from infosam_core.training.config import PRESETS, TrainConfig
from infosam_core.training.results import TrainingError, TrainProgress, TrainResult
from infosam_core.training.trainer import Trainer, train

__all__ = ["PRESETS", "TrainConfig", "TrainProgress", "TrainResult", "Trainer", "TrainingError", "train"]
