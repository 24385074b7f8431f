"""The interface every distiller implements, and what a training step hands it.

A distiller is an ``nn.Module`` that turns one training step's teacher and student outputs into loss terms.
It owns its trainable parts (InfoSAM's relation module, VID's regressors, ...); the trainer attaches it to
the student as ``student.distiller`` so its parameters train, save and load with the PEFT parameters. The
trainer never branches on a distiller's name: it builds one through :func:`~infosam_core.distill.registry.make_distiller`
and adds ``weight * DistillLoss.total`` to the segmentation loss.

Teacher = the frozen pre-trained SAM (only run under ``no_grad``); student = SAM + PEFT in training.

Multi-level methods (VID, IBD, SemCKD, ReviewKD) also read image-encoder block outputs: a distiller lists
the block indices it needs in ``encoder_blocks`` (set in its ``__init__``); the trainer's encoder cache then
hands the teacher's (cached per image and flip, like its embeddings) and the student's (captured during the
student's forward) as ``DistillInputs.teacher_features`` / ``student_features``. The indices are into the
encoder's feature blocks (its backbone family's): a ViT's blocks all have one width and grid, SAM2's Hiera
blocks differ per stage (:class:`ModelDims`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import family_of
from infosam_core.options import Options


def loss_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the precision losses are computed in: float32 (from bf16 / fp16 under autocast), or float64
    kept as it is (so a gradient check in double precision stays exact)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


@dataclass
class DistillInputs:
    """One training step's outputs, for B samples with one prompt each.

    ``teacher_embeddings`` / ``student_embeddings``: image-encoder outputs (B, C, h, w); the teacher's carry no
    gradient, the student's carry it through the student's trainable encoder parts.
    ``student_token``: the mask decoder's single-mask output token (B, C); ``student_logits``: the low-res
    single-mask logits (B, 1, 4h, 4w); ``masks``: the ground truth (B, 1, S, S) at the model's input size.
    The teacher's decoder outputs cost a decoder pass, so they are computed on first use (no grad) and kept
    for the step: :meth:`teacher_token` and :meth:`teacher_logits`.

    ``gather``: with several processes (``torchrun``) each holds b = B / W of the global batch's rows;
    ``gather(x)`` turns a per-process (b, ...) tensor into the global (B, ...) one, in the same row order as a
    one-process run, **keeping the gradient** to this process's rows. A batch-statistic loss (InfoSAM's and
    PKT's B x B matrices) gathers what it compares across samples and computes the same value on every
    process; per-sample losses do not gather. In one process it is the identity, so a distiller that calls it
    needs no other code for distribution (the trainer's gradient averaging makes the result match a
    one-process run; see :mod:`infosam_core.training.distributed`).
    """

    teacher_embeddings: torch.Tensor
    student_embeddings: torch.Tensor
    student_token: torch.Tensor
    student_logits: torch.Tensor
    masks: torch.Tensor
    decode_teacher: Callable[[bool], tuple[torch.Tensor | None, torch.Tensor]]  # (with logits?) -> (logits, token)
    gather: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda tensor: tensor, repr=False)
    _memo: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # Image-encoder block outputs by block index, (B, D, h, w) channels first (D, h, w per block on Hiera), for
    # the blocks the distiller lists in ``Distiller.encoder_blocks`` (empty otherwise); the teacher's carry no
    # gradient. A block inside the student's frozen leading blocks gives the same tensor on both sides (no
    # gradient either).
    teacher_features: dict[int, torch.Tensor] = field(default_factory=dict)
    student_features: dict[int, torch.Tensor] = field(default_factory=dict)
    # Where training is: the optimiser step (0-based) and the epoch (1-based), for distillers that warm up
    # (InfoSAM's ``warmup_steps``, ReviewKD's ``warmup_epochs``).
    step: int = 0
    epoch: int = 1

    def teacher_token(self) -> torch.Tensor:
        """The teacher's single-mask output token (B, C) for the same prompts (no grad)."""
        if "token" not in self._memo:
            _, self._memo["token"] = self.decode_teacher(False)
        return self._memo["token"]

    def teacher_logits(self) -> torch.Tensor:
        """The teacher's low-res single-mask logits (B, 1, 4h, 4w) for the same prompts (no grad)."""
        if "logits" not in self._memo:
            logits, token = self.decode_teacher(True)
            assert logits is not None  # asked for with logits
            self._memo["logits"], self._memo["token"] = logits, token
        return self._memo["logits"]


@dataclass
class DistillLoss:
    """``total``: the distiller's loss (its own term weights applied); ``terms``: each term, unweighted, by
    name (reported in progress and history, e.g. ``{"l_r": ..., "l_d": ...}``); ``diagnostics``: values that
    are not minimised, reported beside the terms (InfoSAM's ``rel_cos_s``, the collapse indicator; no
    gradient)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelDims:
    """What a distiller needs to know about the SAM it is built for.

    ``embed_dim``: channels of the image embedding and of the decoder tokens (256 for every SAM);
    ``encoder_dim``: width of the ViT blocks (768 ViT-B, 128 tiny); ``encoder_depth``: number of blocks;
    ``global_blocks``: indices of the global-attention blocks (ViT-B 2, 5, 8, 11; tiny 1, 3).

    Encoders whose blocks differ in width and grid (SAM2's Hiera) also give, per block, ``block_widths`` (the
    channels of its output) and ``block_strides`` (input pixels per cell of its output grid), and
    ``stage_ends`` (the last block of each stage: Hiera-tiny 0, 2, 9, 11 -- widths 96, 192, 384, 768 on grids
    S/4, S/8, S/16, S/32), which ``blocks="global"`` then names. Empty for a ViT: every block is
    ``encoder_dim`` wide on one grid. ``encoder_name`` names the encoder in messages.
    """

    embed_dim: int = 256
    encoder_dim: int = 768
    encoder_depth: int = 12
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    block_widths: tuple[int, ...] = ()
    block_strides: tuple[int, ...] = ()
    stage_ends: tuple[int, ...] = ()
    encoder_name: str = "ViT"

    @classmethod
    def of(cls, sam: SamLike) -> ModelDims:
        """The dimensions of a model, from its backbone family's block geometry
        (:meth:`~infosam_core.models.family.BackboneFamily.block_geometry`). A family whose block outputs the
        trainer does not capture (MobileSAM's TinyViT) gives depth 0: only single-level distillers apply."""
        embed_dim = sam.prompt_encoder.embed_dim
        family = family_of(sam)
        geometry = family.block_geometry(sam.image_encoder)
        if not family.block_levels or not geometry.depth:
            return cls(
                embed_dim=embed_dim,
                encoder_dim=embed_dim,
                encoder_depth=0,
                global_blocks=(),
                encoder_name=family.encoder_name,
            )
        return cls(
            embed_dim=embed_dim,
            encoder_dim=geometry.width,
            encoder_depth=geometry.depth,
            global_blocks=geometry.global_blocks,
            block_widths=geometry.block_widths,
            block_strides=geometry.block_strides,
            stage_ends=geometry.stage_ends,
            encoder_name=family.encoder_name,
        )

    def width(self, block: int) -> int:
        """Channels of block ``block``'s output."""
        return self.block_widths[block] if self.block_widths else self.encoder_dim

    @property
    def block_levels(self) -> bool:
        """The trainer captures block outputs of this encoder for multi-level distillers (depth > 0)."""
        return self.encoder_depth > 0

    @property
    def uniform_blocks(self) -> bool:
        """Every block gives the same width on the same grid (a ViT's blocks; not Hiera's stages)."""
        return len(set(self.block_widths)) <= 1 and len(set(self.block_strides)) <= 1

    def block_indices(self, spec: Any) -> tuple[int, ...]:
        """Resolve a ``blocks`` option: ``"global"`` (the global-attention blocks of a ViT; Hiera's stage ends),
        ``"all"``, an index, a list of indices or a comma-separated string (``"2,5,8,11"``); negative indices
        count from the end."""
        if not self.encoder_depth:
            raise ValueError(
                f"this image encoder ({self.encoder_name}) has no block outputs to distil: choose a single-level "
                "distiller (one that reads the image embedding, mask token or logits)"
            )
        if spec == "global" and self.stage_ends:
            return self.stage_ends
        if spec == "global" and not self.global_blocks:
            raise ValueError("this encoder has no global-attention block: give blocks=... (e.g. blocks=all)")
        if spec == "global":
            return self.global_blocks
        if spec == "all":
            return tuple(range(self.encoder_depth))
        if isinstance(spec, str):
            try:
                spec = [int(p) for p in spec.replace(" ", "").split(",") if p]
            except ValueError:
                raise ValueError(f"blocks={spec!r}: use 'global', 'all' or block indices such as '2,5,8,11'") from None
        items = [spec] if isinstance(spec, int) else list(spec)
        out = []
        for i in items:
            if not isinstance(i, int) or not -self.encoder_depth <= i < self.encoder_depth:
                raise ValueError(f"blocks: {i!r} is not a block index of this encoder (depth {self.encoder_depth})")
            out.append(i % self.encoder_depth)
        if not out:
            raise ValueError("blocks: give at least one block index")
        return tuple(sorted(set(out)))


class Distiller(nn.Module):
    """Base class. Subclasses set the class attributes and implement :meth:`forward`.

    ``name``: the distiller's one name (``--distill NAME``, the registry key, the adapter file's ``name``),
    written only here; ``config_cls``: its options dataclass (an :class:`~infosam_core.options.Options`, built
    as ``distiller_cls(config, dims, generator)``); ``description``: one line for ``--help`` and the app;
    ``title``: how the app names it (the name when empty); ``recommended``: the app offers it first.

    ``term_names``: the names of the terms :meth:`forward` reports (fixed per method and options, so progress
    plots and history columns are known before the first step; an instance may extend it in ``__init__``).
    ``diagnostic_names``: the names of :attr:`DistillLoss.diagnostics` :meth:`forward` reports (fixed like
    ``term_names``).
    ``min_batch_size``: batch statistics (InfoSAM's and PKT's B x B matrices) need at least 2 samples.
    ``encoder_blocks``: the image-encoder blocks whose outputs :meth:`forward` reads (see the module docstring).
    ``reads_encoder_blocks``: the method distils encoder block outputs, so it applies only to encoders whose
    blocks the trainer captures (SAM ViT, the tiny model, SAM2's Hiera; not MobileSAM's TinyViT).
    ``uniform_blocks_only``: the method also needs every distilled block to have one width and one grid (IBD's
    and SemCKD's cross-level modules), so it applies to ViT blocks, not to Hiera's stages.
    :func:`~infosam_core.distill.registry.make_distiller` refuses a method where it does not apply.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[Options]] = Options
    description: ClassVar[str] = ""
    title: ClassVar[str] = ""
    recommended: ClassVar[bool] = False
    term_names: tuple[str, ...] = ()
    diagnostic_names: tuple[str, ...] = ()
    min_batch_size: ClassVar[int] = 1
    reads_encoder_blocks: ClassVar[bool] = False
    uniform_blocks_only: ClassVar[bool] = False
    encoder_blocks: tuple[int, ...] = ()

    def __init__(self, config: Any, dims: Any = None, generator: torch.Generator | None = None) -> None:
        """Subclasses are built as ``cls(config, dims, generator)`` (``dims``: :class:`ModelDims`) and pass
        ``config`` on; the base keeps only ``config``."""
        super().__init__()
        self.config = config

    @classmethod
    def batch_size_problem(cls, config: Any, batch_size: int) -> str | None:
        """Why ``batch_size`` cannot train this distiller with ``config`` (None when it can)."""
        if batch_size < cls.min_batch_size:
            return (
                f"distiller {cls.name!r} needs batch_size >= {cls.min_batch_size}: its losses compare the samples "
                "of a batch (B x B matrices) and are exactly 0 for a single sample. Use a batch size of 2 or more "
                "(the paper uses 4), or distill='none'."
            )
        return None

    def forward(self, inputs: DistillInputs) -> DistillLoss:  # pragma: no cover - abstract
        raise NotImplementedError


def distiller_of(model: SamLike | nn.Module) -> Distiller | None:
    """The distiller attached to ``model`` (``model.distiller``, see the module docstring); None without one."""
    distiller = getattr(model, "distiller", None)
    if distiller is not None and not isinstance(distiller, Distiller):
        raise TypeError(f"model.distiller is a {type(distiller).__name__}, not a Distiller")
    return distiller


def set_distiller(model: SamLike | nn.Module, distiller: Distiller | None) -> None:
    """Attach ``distiller`` to ``model`` as ``model.distiller`` (a sub-module: its parameters train, save and load
    with the model's), or detach it (None)."""
    setattr(model, "distiller", distiller)  # noqa: B010 - nn.Module.__setattr__ registers the sub-module


MAX_BLOCK_INDEX = 4096  # no encoder has more blocks; bounds a ``blocks`` option before any model is known


def check_blocks_option(value: Any) -> Any:
    """A ``blocks`` option as given, once its form is valid: ``"global"``, ``"all"``, an index, a list of
    indices or a comma-separated string of them (``"2,5,8,11"``); ValueError otherwise. Whether the indices
    exist is checked against the model by :meth:`ModelDims.block_indices`."""
    if value in ("global", "all"):
        return value
    items = value
    if isinstance(value, str):
        try:
            items = [int(p) for p in value.replace(" ", "").split(",") if p]
        except ValueError:
            raise ValueError(
                f"must be 'global', 'all' or block indices such as '2,5,8,11', got {value!r:.40}"
            ) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"must be 'global', 'all' or block indices such as '2,5,8,11', got {value!r:.40}")
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not -MAX_BLOCK_INDEX <= i < MAX_BLOCK_INDEX:
            raise ValueError(f"must list block indices (integers, |i| < {MAX_BLOCK_INDEX}), got {i!r:.40}")
    return value
