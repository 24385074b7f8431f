"""Decoder-only fine-tuning: nothing is added; only the mask decoder trains (``train_decoder`` must stay on)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infosam_core.models.protocols import SamLike
from infosam_core.peft.common import PeftConfig
from infosam_core.peft.method import PeftMethod


@dataclass
class DecoderConfig(PeftConfig):
    pass


def inject(sam: SamLike, config: DecoderConfig, generator: torch.Generator | None = None) -> None:
    if not config.train_decoder:
        raise ValueError("peft method 'decoder' with train_decoder=False would train nothing")


METHOD = PeftMethod("decoder", DecoderConfig, inject, "mask decoder only", "Decoder-only")
