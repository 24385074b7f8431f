"""Parameter-efficient fine-tuning (PEFT) of SAM: one module per method behind a registry.

``apply_peft(sam, method, **options) -> PeftReport`` freezes every parameter, injects the method's modules
(in place), makes the method's trainable parameters (and, by default, the whole mask decoder) trainable,
and records what it did in ``sam.peft_state`` (:class:`PeftState`), which :mod:`infosam_core.adapter_io`
uses to save only the trained tensors and to rebuild the method on load.

Methods (:data:`PEFT_METHODS`): ``decoder`` (decoder only), ``bitfit`` (encoder-block biases), ``lora``
(on every ``attn.qkv``), ``adapter`` (series adapters in blocks[2:], the paper's setup), ``adaptformer``
(parallel MLP bottleneck). Every method is the identity at step 0 (zero-initialised up projections or
B matrices), and injected modules wrap or replace base modules without renaming base weights. Adding a
method = adding a module with a dataclass ``*Config(PeftConfig)`` and ``inject(sam, config, generator)``,
then one registry line here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from segment_anything.modeling import Sam
from torch import nn

from infosam_core.peft import adapter, adaptformer, bitfit, decoder, lora
from infosam_core.peft._common import PeftConfig


@dataclass(frozen=True)
class PeftMethod:
    """One registry entry: the options dataclass and the injection function."""

    name: str
    config_cls: type[PeftConfig]
    inject: Callable[[Sam, Any, torch.Generator | None], None]
    description: str


PEFT_METHODS: dict[str, PeftMethod] = {
    "decoder": PeftMethod("decoder", decoder.DecoderConfig, decoder.inject, "mask decoder only"),
    "bitfit": PeftMethod("bitfit", bitfit.BitFitConfig, bitfit.inject, "encoder-block biases + decoder"),
    "lora": PeftMethod("lora", lora.LoraConfig, lora.inject, "LoRA on every attn.qkv + decoder"),
    "adapter": PeftMethod("adapter", adapter.AdapterConfig, adapter.inject, "series adapters in blocks[2:] + norms + decoder"),
    "adaptformer": PeftMethod("adaptformer", adaptformer.AdaptFormerConfig, adaptformer.inject, "parallel MLP bottleneck + decoder"),
}

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


@dataclass
class PeftReport:
    """Trainable parameter counts. ``parts`` maps a part name to (trainable, total): the base model's
    ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder`` (without the added modules), ``added``
    (the injected modules) and any other sub-module attached to the model (e.g. ``relation``)."""

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
    def from_model(cls, model: nn.Module) -> "PeftReport":
        state: PeftState | None = getattr(model, "peft_state", None)
        added = set(state.added) if state else set()
        parts: dict[str, list[int]] = {p: [0, 0] for p in PARTS}
        parts["added"] = [0, 0]
        for name, param in model.named_parameters():
            part = "added" if name in added else name.split(".", 1)[0]
            counts = parts.setdefault(part, [0, 0])
            counts[0] += param.numel() if param.requires_grad else 0
            counts[1] += param.numel()
        return cls(state.method if state else "none", dict(state.options) if state else {},
                   {k: (v[0], v[1]) for k, v in parts.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "options": self.options,
                "trainable": {k: t for k, (t, _) in self.parts.items()},
                "total_trainable": self.total_trainable, "total_parameters": self.total_parameters}

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        lines = [f"PEFT {self.method} ({opts})", f"  {'part':<16}{'trainable':>14}{'of':>14}"]
        for name, (t, n) in self.parts.items():
            lines.append(f"  {name + (' modules' if name == 'added' else ''):<16}{t:>14,}{n:>14,}")
        total, n = self.total_trainable, self.total_parameters
        lines.append(f"  {'total':<16}{total:>14,}{n:>14,}  ({100 * total / max(n, 1):.2f}% trainable)")
        return "\n".join(lines)


def make_config(method: str, options: dict[str, Any]) -> PeftConfig:
    """The method's options dataclass from keyword options; clear errors for unknown methods or options."""
    if method not in PEFT_METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; choose one of {', '.join(PEFT_METHODS)}")
    cls = PEFT_METHODS[method].config_cls
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for PEFT method {method!r}; valid: {', '.join(names)}")
    return cls(**options)


def apply_peft(
    sam: Sam,
    method: str,
    *,
    generator: torch.Generator | None = None,
    base_fingerprint: str | None = None,
    **options: Any,
) -> PeftReport:
    """Freeze ``sam``, inject PEFT ``method`` in place, and return the trainable-parameter report.

    ``options`` are the method's config fields (e.g. ``rank=4`` for LoRA, ``train_decoder=False``).
    ``generator`` seeds the new modules' random initialisation without touching the global RNG.
    ``base_fingerprint`` (the base weights' :func:`~infosam_core.models.model_fingerprint`) is computed
    when not given. Raises ValueError for an unknown method or option, or a model that is already adapted.
    """
    from infosam_core.models import model_fingerprint

    if getattr(sam, "peft_state", None) is not None:
        raise ValueError(
            f"this model already has PEFT method {sam.peft_state.method!r} applied; start from the base model"
        )
    config = make_config(method, options)
    base_fingerprint = base_fingerprint or model_fingerprint(sam)
    before = {name for name, _ in sam.named_parameters()}
    sam.requires_grad_(False)
    PEFT_METHODS[method].inject(sam, config, generator)
    if config.train_decoder:
        sam.mask_decoder.requires_grad_(True)
    params = dict(sam.named_parameters())
    sam.peft_state = PeftState(  # type: ignore[attr-defined]
        method=method,
        options=dataclasses.asdict(config),
        base_model_type=str(getattr(sam, "model_type", "unknown")),
        base_fingerprint=base_fingerprint,
        added=sorted(set(params) - before),
        trainable=sorted(name for name, p in params.items() if p.requires_grad),
    )
    return PeftReport.from_model(sam)


__all__ = ["PEFT_METHODS", "PeftConfig", "PeftMethod", "PeftReport", "PeftState", "apply_peft", "make_config"]
