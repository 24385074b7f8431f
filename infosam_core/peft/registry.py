"""Parameter-efficient fine-tuning (PEFT) of SAM: one module per method behind a registry.

``apply_peft(sam, method, **options) -> PeftReport`` freezes every parameter, injects the method's modules
(in place), makes the method's trainable parameters (and, by default, the whole mask decoder) trainable,
and records what it did in ``sam.peft_state`` (:class:`PeftState`), which :mod:`infosam_core.peft.checkpoint`
uses to save only the trained tensors and to rebuild the method on load.

Methods (:data:`PEFT_METHODS`): ``decoder`` (decoder only), ``bitfit`` (encoder-block biases), ``lora``
(on every ``attn.qkv``), ``adapter`` (series adapters in blocks[2:], the paper's setup), ``adaptformer``
(parallel MLP bottleneck), ``convlora`` (LoRA with convolutional experts, a load-balancing loss through
``auxiliary_loss()``), ``su_sam`` (SU-SAM's adapters), ``hq_sam`` (HQ-SAM's output token and feature fusion in
the decoder; SAM frozen). Every method but ``hq_sam`` (which adds an output) is the identity at step 0
(zero-initialised up projections or B matrices), and injected modules wrap or replace base modules without renaming base weights. Adding a
method = adding a module with a dataclass ``*Config(PeftConfig)`` and ``inject(sam, config, generator)``,
then one registry line here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from segment_anything.modeling import Sam

from infosam_core.peft import adapter, adaptformer, bitfit, convlora, decoder_only, hq_sam, lora, su_sam
from infosam_core.peft.common import PeftConfig
from infosam_core.peft.state import PeftReport, PeftState


@dataclass(frozen=True)
class PeftMethod:
    """One registry entry: the options dataclass and the injection function."""

    name: str
    config_cls: type[PeftConfig]
    inject: Callable[[Sam, Any, torch.Generator | None], None]
    description: str


PEFT_METHODS: dict[str, PeftMethod] = {
    "decoder": PeftMethod("decoder", decoder_only.DecoderConfig, decoder_only.inject, "mask decoder only"),
    "bitfit": PeftMethod("bitfit", bitfit.BitFitConfig, bitfit.inject, "encoder-block biases + decoder"),
    "lora": PeftMethod("lora", lora.LoraConfig, lora.inject, "LoRA on every attn.qkv + decoder"),
    "adapter": PeftMethod(
        "adapter", adapter.AdapterConfig, adapter.inject, "series adapters in blocks[2:] + norms + decoder"
    ),
    "adaptformer": PeftMethod(
        "adaptformer", adaptformer.AdaptFormerConfig, adaptformer.inject, "parallel MLP bottleneck + decoder"
    ),
    "convlora": PeftMethod(
        "convlora", convlora.ConvLoraConfig, convlora.inject, "LoRA with a mixture of conv experts (ConvLoRA) + decoder"
    ),
    "su_sam": PeftMethod(
        "su_sam", su_sam.SuSamConfig, su_sam.inject, "SU-SAM adapters (series / parallel / mixed) + decoder"
    ),
    "hq_sam": PeftMethod(
        "hq_sam", hq_sam.HqSamConfig, hq_sam.inject, "HQ-SAM: HQ output token + early-feature fusion (SAM frozen)"
    ),
}


def make_config(method: str, options: dict[str, Any]) -> PeftConfig:
    """The method's options dataclass from keyword options, validated (types, finite numbers, bounds);
    ValueError naming the method or option otherwise."""
    if method not in PEFT_METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; choose one of {', '.join(PEFT_METHODS)}")
    cls = PEFT_METHODS[method].config_cls
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for PEFT method {method!r}; valid: {', '.join(names)}"
        )
    config = cls(**options)
    config.validate()
    return config


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
    ``base_fingerprint`` (the base weights' :func:`~infosam_core.models.fingerprint.model_fingerprint`) is computed
    when not given. Raises ValueError for an unknown method or option, or a model that is already adapted.
    """
    from infosam_core.models.fingerprint import model_fingerprint

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
    sam.peft_state = PeftState(
        method=method,
        options=dataclasses.asdict(config),
        base_model_type=str(getattr(sam, "model_type", "unknown")),
        base_fingerprint=base_fingerprint,
        added=sorted(set(params) - before),
        trainable=sorted(name for name, p in params.items() if p.requires_grad),
    )
    return PeftReport.from_model(sam)
