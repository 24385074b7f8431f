"""The distillers by name: ``--distill NAME`` and ``--distill-option KEY=VALUE`` resolve here.

Adding a distiller = a module with an options dataclass and a :class:`~infosam_core.distill.base.Distiller`
subclass, plus one :class:`DistillerSpec` line in :data:`DISTILLERS`. ``none`` (plain PEFT) is not a
distiller: :func:`make_distiller` returns None for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from infosam_core.distill import infosam
from infosam_core.distill.base import Distiller

NO_DISTILLATION = "none"


@dataclass(frozen=True)
class DistillerSpec:
    """One registry entry: the options dataclass, the :class:`Distiller` subclass (built as
    ``distiller_cls(config, embed_dim, generator)``) and a one-line description (shown in ``--help`` and the
    app)."""

    name: str
    config_cls: type
    distiller_cls: type[Distiller]
    description: str


DISTILLERS: dict[str, DistillerSpec] = {
    "infosam": DistillerSpec(
        "infosam",
        infosam.InfosamConfig,
        infosam.InfosamDistiller,
        "InfoSAM: relation compression (L_r) + relation distillation (L_d)",
    ),
}


def distiller_names() -> tuple[str, ...]:
    """Every accepted ``--distill`` value: ``none`` first, then the registry's."""
    return (NO_DISTILLATION, *DISTILLERS)


def make_distiller_config(name: str, options: dict[str, Any]) -> Any:
    """Validate ``options`` for distiller ``name``: unknown keys, wrong types and non-finite numbers raise
    ValueError naming the valid options."""
    if name not in DISTILLERS:
        raise ValueError(f"unknown distiller {name!r}; choose one of {', '.join(distiller_names())}")
    cls = DISTILLERS[name].config_cls
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for distiller {name!r}; valid: {', '.join(valid)}")
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"distiller option {key}={value} must be a finite number")
    return cls(**options)


def make_distiller(
    name: str, options: dict[str, Any], embed_dim: int, generator: torch.Generator | None = None
) -> Distiller | None:
    """The distiller ``name`` with ``options`` for features of ``embed_dim`` channels; None for ``none``."""
    if name == NO_DISTILLATION:
        if options:
            raise ValueError(f"distiller options {sorted(options)} given without a distiller (--distill none)")
        return None
    config = make_distiller_config(name, options)
    return DISTILLERS[name].distiller_cls(config, embed_dim, generator)
