"""The interface every distiller implements, and what a training step hands it.

A distiller is an ``nn.Module`` that turns one training step's teacher and student outputs into loss terms.
It owns its trainable parts (InfoSAM's relation module, VID's regressors, ...); the trainer attaches it to
the student as ``student.distiller`` so its parameters train, save and load with the PEFT parameters. The
trainer never branches on a distiller's name: it builds one through :func:`~infosam_core.distill.registry.make_distiller`
and adds ``weight * DistillLoss.total`` to the segmentation loss.

Teacher = the frozen pre-trained SAM (only run under ``no_grad``); student = SAM + PEFT in training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class DistillInputs:
    """One training step's outputs, for B samples with one prompt each.

    ``teacher_embeddings`` / ``student_embeddings``: image-encoder outputs (B, C, h, w); the teacher's carry no
    gradient, the student's carry it through the student's trainable encoder parts.
    ``student_token``: the mask decoder's single-mask output token (B, C); ``student_logits``: the low-res
    single-mask logits (B, 1, 4h, 4w); ``masks``: the ground truth (B, 1, S, S) at the model's input size.
    The teacher's decoder outputs cost a decoder pass, so they are computed on first use (no grad) and kept
    for the step: :meth:`teacher_token` and :meth:`teacher_logits`.
    """

    teacher_embeddings: torch.Tensor
    student_embeddings: torch.Tensor
    student_token: torch.Tensor
    student_logits: torch.Tensor
    masks: torch.Tensor
    decode_teacher: Callable[[bool], tuple[torch.Tensor | None, torch.Tensor]]  # (with logits?) -> (logits, token)
    _memo: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def teacher_token(self) -> torch.Tensor:
        """The teacher's single-mask output token (B, C) for the same prompts (no grad)."""
        if "token" not in self._memo:
            _, self._memo["token"] = self.decode_teacher(False)
        return self._memo["token"]

    def teacher_logits(self) -> torch.Tensor:
        """The teacher's low-res single-mask logits (B, 1, 4h, 4w) for the same prompts (no grad)."""
        if "logits" not in self._memo:
            logits, token = self.decode_teacher(True)
            self._memo["logits"], self._memo["token"] = logits, token
        return self._memo["logits"]


@dataclass
class DistillLoss:
    """``total``: the distiller's loss (its own term weights applied); ``terms``: each term, unweighted, by
    name (reported in progress and history, e.g. ``{"l_r": ..., "l_d": ...}``)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class Distiller(nn.Module):
    """Base class. Subclasses set the class attributes and implement :meth:`forward`.

    ``term_names``: the names of the terms :meth:`forward` reports (fixed per method, so progress plots and
    history columns are known before the first step). ``min_batch_size``: batch statistics (InfoSAM's and
    PKT's B x B matrices) need at least 2 samples.
    """

    name: ClassVar[str] = ""
    term_names: ClassVar[tuple[str, ...]] = ()
    min_batch_size: ClassVar[int] = 1

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def forward(self, inputs: DistillInputs) -> DistillLoss:  # pragma: no cover - abstract
        raise NotImplementedError
