"""Parameter-efficient fine-tuning (PEFT) of SAM: one module per method behind a registry.

``apply_peft(sam, method, **options) -> PeftReport`` freezes every parameter, injects the method's modules
(in place), makes the method's trainable parameters (and, by default, the whole mask decoder) trainable,
and records what it did in ``sam.peft_state`` (:class:`PeftState`), which :mod:`infosam_core.adapter_files.checkpoint`
uses to save only the trained tensors and to rebuild the method on load.

Methods (:data:`PEFT_METHODS`, in the order the app offers them, the paper's setup first): ``adapter``
(series adapters in blocks[2:], the paper's setup), ``lora`` (on every ``attn.qkv``), ``bitfit`` (encoder-block
biases), ``adaptformer`` (parallel MLP bottleneck), ``decoder`` (decoder only), ``su_sam`` (SU-SAM's adapters),
``convlora`` (LoRA with convolutional experts, a load-balancing loss through ``auxiliary_loss()``), ``hq_sam``
(HQ-SAM's output token and feature fusion in the decoder; SAM frozen). Every method but ``hq_sam`` (which adds
an output) is the identity at step 0 (zero-initialised up projections or B matrices), and injected modules
wrap or replace base modules without renaming base weights.

Adding a method = one module with an options dataclass ``*Config(PeftConfig)`` (types and bounds on its
fields, see :mod:`infosam_core.options`), ``inject(sam, config, generator)`` and its registry entry
``METHOD = PeftMethod("name", ...)`` -- its name written once -- plus the module in :data:`METHOD_MODULES`.
:func:`register_peft_method` adds one at run time (a plug-in, a test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from infosam_core.models.protocols import SamLike
from infosam_core.options import OptionError
from infosam_core.peft import adapter, adaptformer, bitfit, convlora, decoder_only, hq_sam, lora, su_sam
from infosam_core.peft.common import PeftConfig
from infosam_core.peft.method import PeftMethod
from infosam_core.peft.state import PeftReport, PeftState, peft_state_of, set_peft_state

METHOD_MODULES = (adapter, lora, bitfit, adaptformer, decoder_only, su_sam, convlora, hq_sam)
PEFT_METHODS: dict[str, PeftMethod] = {}  # name -> entry, in registration order


def register_peft_method(method: PeftMethod) -> PeftMethod:
    """Add ``method`` to :data:`PEFT_METHODS` (the CLI's ``--peft`` choices are read when its parser is built;
    the app's method list when its panel is). ValueError for a name already registered."""
    if method.name in PEFT_METHODS:
        raise ValueError(f"PEFT method {method.name!r} is registered already")
    if not method.name or not method.name.isidentifier():
        raise ValueError(f"PEFT method name {method.name!r}: use a lowercase identifier such as 'lora'")
    PEFT_METHODS[method.name] = method
    return method


def unregister_peft_method(name: str) -> None:
    """Remove the method ``name`` (e.g. one a test registered); KeyError when it is not registered."""
    del PEFT_METHODS[name]


for _module in METHOD_MODULES:
    register_peft_method(_module.METHOD)


def make_config(method: str, options: Mapping[str, Any]) -> PeftConfig:
    """The method's options dataclass from raw options (see :meth:`~infosam_core.options.Options.parse`:
    text or JSON values, types, finite numbers, bounds); :class:`~infosam_core.options.OptionError` (a
    ValueError) naming the method and the option otherwise."""
    if method not in PEFT_METHODS:
        raise OptionError(None, f"unknown PEFT method {method!r}; choose one of {', '.join(PEFT_METHODS)}")
    return PEFT_METHODS[method].config_cls.parse(options, owner=f"PEFT method {method!r}")


def apply_peft(
    sam: SamLike,
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

    applied = peft_state_of(sam)
    if applied is not None:
        raise ValueError(f"this model already has PEFT method {applied.method!r} applied; start from the base model")
    config = make_config(method, options)
    base_fingerprint = base_fingerprint or model_fingerprint(sam)
    before = {name for name, _ in sam.named_parameters()}
    sam.requires_grad_(False)
    PEFT_METHODS[method].inject(sam, config, generator)
    if config.train_decoder:
        sam.mask_decoder.requires_grad_(True)
    params = dict(sam.named_parameters())
    state = PeftState(
        method=method,
        options=dataclasses.asdict(config),
        base_model_type=str(getattr(sam, "model_type", "unknown")),
        base_fingerprint=base_fingerprint,
        added=sorted(set(params) - before),
        trainable=sorted(name for name, p in params.items() if p.requires_grad),
    )
    set_peft_state(sam, state)
    return PeftReport.from_model(sam)
