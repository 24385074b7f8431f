"""The distillers by name: ``--distill NAME`` and ``--distill-option KEY=VALUE`` resolve here.

Adding a distiller = one module with an options dataclass (an :class:`~infosam_core.options.Options`: types
and bounds on its fields) and a :class:`~infosam_core.distill.base.Distiller` subclass that names itself once
(``name``, ``config_cls``, ``description``), plus its class in :data:`DISTILLER_CLASSES`;
:func:`register_distiller` adds one at run time. ``none`` (plain PEFT) is not a distiller: :func:`make_distiller`
returns None for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from infosam_core.distill import ibd, infosam, logit, mobilesam, pkd, pkt, reviewkd, semckd, tinysam, vid
from infosam_core.distill.base import Distiller, ModelDims
from infosam_core.options import OptionError, Options

NO_DISTILLATION = "none"


@dataclass(frozen=True)
class DistillerSpec:
    """One registry entry, read from a :class:`Distiller` subclass's class attributes (:meth:`of`): its name,
    options dataclass, the class itself (built as ``distiller_cls(config, dims, generator)``), a one-line
    description (shown in ``--help`` and the app), the title the app shows and whether the app recommends it."""

    name: str
    config_cls: type[Options]
    distiller_cls: type[Distiller]
    description: str
    title: str = ""
    recommended: bool = False

    @classmethod
    def of(cls, distiller_cls: type[Distiller]) -> DistillerSpec:
        return cls(
            distiller_cls.name,
            distiller_cls.config_cls,
            distiller_cls,
            distiller_cls.description,
            distiller_cls.title,
            distiller_cls.recommended,
        )

    @property
    def label(self) -> str:
        """What a person reads: the title, else the name."""
        return self.title or self.name


DISTILLER_CLASSES: tuple[type[Distiller], ...] = (
    infosam.InfosamDistiller,
    logit.LogitDistiller,
    pkd.PkdDistiller,
    pkt.PktDistiller,
    ibd.IbdDistiller,
    vid.VidDistiller,
    semckd.SemckdDistiller,
    reviewkd.ReviewkdDistiller,
    tinysam.TinysamDistiller,
    mobilesam.MobilesamDistiller,
)
DISTILLERS: dict[str, DistillerSpec] = {}  # name -> entry, in registration order


def register_distiller(distiller_cls: type[Distiller]) -> DistillerSpec:
    """Add ``distiller_cls`` (its ``name``, ``config_cls`` and ``description`` set) to :data:`DISTILLERS`;
    ValueError for a missing or taken name."""
    name = distiller_cls.name
    if not name or not name.isidentifier() or name == NO_DISTILLATION:
        raise ValueError(f"distiller name {name!r}: use a lowercase identifier other than {NO_DISTILLATION!r}")
    if name in DISTILLERS:
        raise ValueError(f"distiller {name!r} is registered already")
    if not (isinstance(distiller_cls.config_cls, type) and issubclass(distiller_cls.config_cls, Options)):
        raise ValueError(f"distiller {name!r}: config_cls must be an Options dataclass")
    DISTILLERS[name] = spec = DistillerSpec.of(distiller_cls)
    return spec


def unregister_distiller(name: str) -> None:
    """Remove the distiller ``name`` (e.g. one a test registered); KeyError when it is not registered."""
    del DISTILLERS[name]


for _distiller_cls in DISTILLER_CLASSES:
    register_distiller(_distiller_cls)


def distiller_names() -> tuple[str, ...]:
    """Every accepted ``--distill`` value: ``none`` first, then the registry's."""
    return (NO_DISTILLATION, *DISTILLERS)


def recommended_distiller() -> str:
    """The distiller the app offers first (InfoSAM): the registered one marked ``recommended``."""
    return next((n for n, spec in DISTILLERS.items() if spec.recommended), NO_DISTILLATION)


def make_distiller_config(name: str, options: Mapping[str, Any]) -> Options:
    """The options dataclass of distiller ``name`` from raw options (see
    :meth:`~infosam_core.options.Options.parse`: text or JSON values, types, finite numbers, bounds);
    :class:`~infosam_core.options.OptionError` (a ValueError) naming the distiller and the option otherwise."""
    if name not in DISTILLERS:
        raise OptionError(None, f"unknown distiller {name!r}; choose one of {', '.join(distiller_names())}")
    return DISTILLERS[name].config_cls.parse(options, owner=f"distiller {name!r}")


def options_for_batch(name: str, options: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """``options`` with the distiller's ``batch_size`` option (SemCKD's: its attention is built for the batch) set
    to ``batch_size`` -- the batch each process trains on -- when the options do not name it; a distiller without
    that option gets ``options`` unchanged."""
    spec = DISTILLERS.get(name)
    if spec is None or "batch_size" in options:
        return dict(options)
    if "batch_size" not in {f.name for f in dataclasses.fields(spec.config_cls)}:
        return dict(options)
    return {**options, "batch_size": batch_size}


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
    lacking = encoder_mismatch(name, dims)
    if lacking == "block_levels":
        raise ValueError(
            f"distiller {name!r} distils the outputs of the image encoder's blocks; this model's encoder "
            f"({dims.encoder_name}) has no block outputs the trainer captures for distillers (ViT and SAM2's Hiera "
            "do; MobileSAM's TinyViT does not). Choose a distiller that reads the image embedding, mask token or "
            f"logits: {', '.join(distillers_for(dims))}."
        )
    if lacking == "uniform_blocks":
        raise ValueError(
            f"distiller {name!r} needs encoder blocks of one width and one grid (ViT blocks: its modules relate "
            f"every distilled level to every other); this model's encoder ({dims.encoder_name}) has stages of "
            f"different widths and grids. Distillers that apply to it: {', '.join(distillers_for(dims))}."
        )
    return cls(config, dims, generator)


class EncoderTraits(Protocol):
    """What decides which distillers apply to an image encoder: a built model's :class:`ModelDims`, or a model
    type's :class:`~infosam_core.models.family.BackboneFamily` (before any model is built)."""

    @property
    def block_levels(self) -> bool:
        """The trainer captures the encoder's block outputs for multi-level distillers."""
        ...

    @property
    def uniform_blocks(self) -> bool:
        """Every block has one width and one grid."""
        ...


def encoder_mismatch(name: str, encoder: EncoderTraits) -> Literal["block_levels", "uniform_blocks"] | None:
    """What distiller ``name`` needs that ``encoder`` lacks -- ``"block_levels"`` (it reads encoder block outputs)
    or ``"uniform_blocks"`` (IBD, SemCKD: blocks of one width and grid) -- or None when it applies. The one rule
    for which distillers apply where (:func:`distillers_for`, :func:`make_distiller`, the experiment plans)."""
    cls = DISTILLERS[name].distiller_cls
    if cls.reads_encoder_blocks and not encoder.block_levels:
        return "block_levels"
    if cls.uniform_blocks_only and not encoder.uniform_blocks:
        return "uniform_blocks"
    return None


def distillers_for(encoder: EncoderTraits) -> tuple[str, ...]:
    """The distillers that apply to ``encoder`` (a model's :class:`ModelDims` or a model type's family): the
    single-level ones everywhere, the block-reading ones where the trainer captures block outputs (and, for
    IBD / SemCKD, the blocks have one width and grid)."""
    return tuple(n for n in DISTILLERS if encoder_mismatch(n, encoder) is None)
