"""What a PEFT method did to a model (``sam.peft_state``), its parameter counts, and the tensors training changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from infosam_core.models.protocols import SamLike

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


@dataclass
class PeftState:
    """What :func:`apply_peft` did to a model, stored as ``sam.peft_state``."""

    method: str
    options: dict[str, Any]
    base_model_type: str
    base_fingerprint: str
    added: list[str]  # parameter names the method added
    trainable: list[str]  # every parameter name left trainable (added + base parameters such as the decoder)


def peft_state_of(model: SamLike | nn.Module) -> PeftState | None:
    """What :func:`apply_peft` did to ``model`` (``model.peft_state``); None for a model without a PEFT method."""
    state = getattr(model, "peft_state", None)
    if state is not None and not isinstance(state, PeftState):
        raise TypeError(f"model.peft_state is a {type(state).__name__}, not a PeftState")
    return state


def set_peft_state(model: SamLike | nn.Module, state: PeftState) -> None:
    """Record ``state`` on ``model`` as ``model.peft_state`` (a plain attribute: not saved in the state dict)."""
    setattr(model, "peft_state", state)  # noqa: B010 - nn.Module's typed __setattr__ takes tensors and modules only


@dataclass
class PeftReport:
    """Trainable parameter counts. ``parts`` maps a part name to (trainable, total): the base model's
    ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder`` (without the added modules), ``added``
    (the injected modules) and any other sub-module attached to the model (e.g. ``distiller``)."""

    method: str
    options: dict[str, Any]
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def image_encoder(self) -> int:
        return self.parts.get("image_encoder", (0, 0))[0]

    @property
    def prompt_encoder(self) -> int:
        return self.parts.get("prompt_encoder", (0, 0))[0]

    @property
    def mask_decoder(self) -> int:
        return self.parts.get("mask_decoder", (0, 0))[0]

    @property
    def added(self) -> int:
        return self.parts.get("added", (0, 0))[0]

    @property
    def total_trainable(self) -> int:
        return sum(t for t, _ in self.parts.values())

    @property
    def total_parameters(self) -> int:
        return sum(n for _, n in self.parts.values())

    @classmethod
    def from_model(cls, model: SamLike | nn.Module) -> PeftReport:
        state = peft_state_of(model)
        added = set(state.added) if state else set()
        parts: dict[str, list[int]] = {p: [0, 0] for p in PARTS}
        parts["added"] = [0, 0]
        for name, param in model.named_parameters():
            part = "added" if name in added else name.split(".", 1)[0]
            counts = parts.setdefault(part, [0, 0])
            counts[0] += param.numel() if param.requires_grad else 0
            counts[1] += param.numel()
        return cls(
            state.method if state else "none",
            dict(state.options) if state else {},
            {k: (v[0], v[1]) for k, v in parts.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "options": self.options,
            "trainable": {k: t for k, (t, _) in self.parts.items()},
            "total_trainable": self.total_trainable,
            "total_parameters": self.total_parameters,
        }

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        lines = [f"PEFT {self.method} ({opts})", f"  {'part':<16}{'trainable':>14}{'of':>14}"]
        for name, (t, n) in self.parts.items():
            lines.append(f"  {name + (' modules' if name == 'added' else ''):<16}{t:>14,}{n:>14,}")
        total, n = self.total_trainable, self.total_parameters
        lines.append(f"  {'total':<16}{total:>14,}{n:>14,}  ({100 * total / max(n, 1):.2f}% trainable)")
        return "\n".join(lines)


def trained_state(model: SamLike) -> dict[str, torch.Tensor]:
    """The tensors training changes: the PEFT state's trainable parameters and the distiller's own parts
    (``distiller.*``, e.g. InfoSAM's relation module)."""
    state = peft_state_of(model)
    if state is None:
        raise ValueError("the model has no PEFT method applied: nothing of it is trained")
    names = set(state.trainable)
    return {k: v for k, v in model.state_dict().items() if k in names or k.startswith("distiller.")}


#: top-level sub-module -> the part it is reported as by :func:`parameter_parts`
PART_TITLES = {
    "image_encoder": "image encoder",
    "prompt_encoder": "prompt encoder",
    "mask_decoder": "mask decoder",
    "distiller": "relation module",
}


@dataclass
class PartCounts:
    """Parameters of one part of a model: ``trainable`` (of which ``added`` by the PEFT method) and ``total``."""

    trainable: int = 0
    added: int = 0
    total: int = 0


def parameter_parts(model: SamLike | nn.Module) -> dict[str, PartCounts]:
    """Parameter counts by part (image encoder, prompt encoder, mask decoder, relation module -- the distiller's
    own parts --, other), each parameter counted in the part it sits in (an HQ-SAM token added to the decoder
    counts in the mask decoder, as trainable and added), plus ``"total"``; like peft's
    ``print_trainable_parameters`` by part."""
    state = peft_state_of(model)
    added = set(state.added) if state else set()
    parts = {title: PartCounts() for title in (*PART_TITLES.values(), "other", "total")}
    for name, param in model.named_parameters():
        for title in (PART_TITLES.get(name.split(".", 1)[0], "other"), "total"):
            counts = parts[title]
            counts.total += param.numel()
            counts.trainable += param.numel() if param.requires_grad else 0
            counts.added += param.numel() if name in added else 0
    return parts


def format_parameter_parts(parts: dict[str, PartCounts]) -> str:
    """:func:`parameter_parts` as a table (parts without parameters are left out)."""
    lines = [f"  {'part':<16}{'trainable':>14}{'added':>14}{'of':>14}"]
    for title, c in parts.items():
        if c.total or title == "total":
            lines.append(f"  {title:<16}{c.trainable:>14,}{c.added:>14,}{c.total:>14,}")
    total = parts["total"]
    lines.append(f"  trainable: {100 * total.trainable / max(total.total, 1):.4f}% of all parameters")
    return "\n".join(lines)
