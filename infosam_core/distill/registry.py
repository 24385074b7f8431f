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

from infosam_core.distill import ibd, infosam, logit, mobilesam, pkd, pkt, reviewkd, semckd, tinysam, vid
from infosam_core.distill.base import Distiller, ModelDims

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
    "logit": DistillerSpec(
        "logit", logit.LogitConfig, logit.LogitDistiller, "Hinton KD on the mask logits (per-pixel binary KL, T=3)"
    ),
    "pkd": DistillerSpec("pkd", pkd.PkdConfig, pkd.PkdDistiller, "Pearson-correlation KD on the image embeddings"),
    "pkt": DistillerSpec(
        "pkt", pkt.PktConfig, pkt.PktDistiller, "probabilistic knowledge transfer: batch cosine affinities, KL"
    ),
    "ibd": DistillerSpec(
        "ibd", ibd.IbdConfig, ibd.IbdDistiller, "information-bottleneck distillation: soft labels + attention features"
    ),
    "vid": DistillerSpec(
        "vid", vid.VidConfig, vid.VidDistiller, "variational information distillation on encoder blocks"
    ),
    "semckd": DistillerSpec(
        "semckd",
        semckd.SemckdConfig,
        semckd.SemckdDistiller,
        "semantic calibration: student levels attend over teacher levels",
    ),
    "reviewkd": DistillerSpec(
        "reviewkd",
        reviewkd.ReviewkdConfig,
        reviewkd.ReviewkdDistiller,
        "knowledge review: fused levels, hierarchical context loss",
    ),
    "tinysam": DistillerSpec(
        "tinysam",
        tinysam.TinysamConfig,
        tinysam.TinysamDistiller,
        "TinySAM: L1 on embeddings, tokens and hard-weighted mask logits (relation_module=true adds InfoSAM's RM)",
    ),
    "mobilesam": DistillerSpec(
        "mobilesam",
        mobilesam.MobilesamConfig,
        mobilesam.MobilesamDistiller,
        "MobileSAM: MSE between image embeddings (relation_module=true adds InfoSAM's RM)",
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


def batch_size_problem(name: str, options: dict[str, Any], batch_size: int) -> str | None:
    """Why distiller ``name`` with ``options`` cannot train with ``batch_size`` (None when it can, or for
    ``none``)."""
    if name == NO_DISTILLATION:
        return None
    spec = DISTILLERS[name]
    return spec.distiller_cls.batch_size_problem(make_distiller_config(name, options), batch_size)


def make_distiller(
    name: str, options: dict[str, Any], dims: ModelDims | int, generator: torch.Generator | None = None
) -> Distiller | None:
    """The distiller ``name`` with ``options`` for a model of dimensions ``dims`` (:meth:`ModelDims.of`;
    an int is taken as the embedding width of a ViT-B-shaped SAM); None for ``none``."""
    if name == NO_DISTILLATION:
        if options:
            raise ValueError(f"distiller options {sorted(options)} given without a distiller (--distill none)")
        return None
    config = make_distiller_config(name, options)
    if isinstance(dims, int):
        dims = ModelDims(embed_dim=dims)
    cls = DISTILLERS[name].distiller_cls
    if cls.reads_encoder_blocks and not dims.encoder_depth:
        raise ValueError(
            f"distiller {name!r} distils the outputs of the image encoder's blocks; this model's encoder "
            f"({dims.encoder_name}) has no block outputs the trainer captures for distillers (ViT and SAM2's Hiera "
            "do; MobileSAM's TinyViT does not). Choose a distiller that reads the image embedding, mask token or "
            f"logits: {', '.join(distillers_for(dims))}."
        )
    if cls.uniform_blocks_only and not dims.uniform_blocks:
        raise ValueError(
            f"distiller {name!r} needs encoder blocks of one width and one grid (ViT blocks: its modules relate "
            f"every distilled level to every other); this model's encoder ({dims.encoder_name}) has stages of "
            f"different widths and grids. Distillers that apply to it: {', '.join(distillers_for(dims))}."
        )
    return cls(config, dims, generator)


def distillers_for(dims: ModelDims) -> tuple[str, ...]:
    """The distillers that apply to a model of dimensions ``dims``: the single-level ones everywhere, the
    block-reading ones where the encoder has blocks (and, for IBD / SemCKD, one width and grid)."""
    return tuple(
        n
        for n, spec in DISTILLERS.items()
        if not spec.distiller_cls.reads_encoder_blocks
        or (dims.encoder_depth and (dims.uniform_blocks or not spec.distiller_cls.uniform_blocks_only))
    )
