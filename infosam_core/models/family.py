"""A backbone family: everything that differs between the image encoders the model types are built on, in one
object per family (:class:`BackboneFamily`), so that no other module tells families apart.

Each family lives in its own module and exports one ``FAMILY`` object: :mod:`.sam` (segment-anything's SAM
ViT-B/L/H and the bundled tiny SAM), :mod:`.mobile_sam` (MobileSAM's TinyViT) and :mod:`.sam2` (SAM2's Hiera).
:class:`~infosam_core.models.registry.ModelSpec` names a model type's family, the registry builds the type
guessers from the families and :func:`~infosam_core.models.registry.family_of` finds a built model's family.
A new backbone is one module with its family plus one :class:`~infosam_core.models.registry.ModelSpec` entry.

A family says:

* which models it owns (:meth:`~BackboneFamily.owns`), which model type a state dict is
  (:meth:`~BackboneFamily.guess_model_type`) and how a model type is loaded (:meth:`~BackboneFamily.load`);
* the encoder blocks PEFT methods adapt (:meth:`~BackboneFamily.encoder_blocks`), whether a block is a
  segment-anything ViT block that methods wrap (:meth:`~BackboneFamily.is_vit_block`) and how block i is
  replaced by its wrapper (:meth:`~BackboneFamily.replace_encoder_block`); the others get hooks;
* the block list decoders and distillers index (:meth:`~BackboneFamily.feature_blocks`: their outputs are
  captured by forward hooks) and its geometry for distillers (:meth:`~BackboneFamily.block_geometry`), with the
  two flags that decide which distillers apply to a model type before any model is built: ``block_levels``
  (the trainer can capture block outputs for multi-level distillers) and ``uniform_blocks`` (every block has
  one width and grid, what IBD and SemCKD need);
* the encoder output HQ-SAM's decoder fuses (:meth:`~BackboneFamily.hq_feature_block`; None: HQ-SAM is not
  defined for the family);
* the prediction backend (:mod:`infosam_core.inference.backends`' ``Backend`` protocol) and the training
  backbone (:class:`~infosam_core.models.training_backbone.TrainingBackbone`, which also runs the encoder's
  frozen leading blocks for the trainer's encoder cache).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infosam_core.models.protocols import SamLike
from infosam_core.models.training_backbone import TrainingBackbone


@dataclass(frozen=True)
class BlockGeometry:
    """The feature blocks of one encoder as distillers see them.

    ``width``: channels of every block's output when they are all alike (a ViT's width: 768 ViT-B, 128 tiny),
    else of the patch embedding; ``depth``: number of blocks; ``global_blocks``: the global-attention blocks
    (ViT-B 2, 5, 8, 11; tiny 1, 3). Encoders whose blocks differ in width and grid (SAM2's Hiera) also give,
    per block, ``block_widths`` (output channels) and ``block_strides`` (input pixels per cell of the output
    grid), and ``stage_ends`` (the last block of each stage); empty when every block is ``width`` wide on one
    grid."""

    width: int
    depth: int
    global_blocks: tuple[int, ...] = ()
    block_widths: tuple[int, ...] = ()
    block_strides: tuple[int, ...] = ()
    stage_ends: tuple[int, ...] = ()


class BackboneFamily(ABC):
    """One backbone family (see the module docstring). Subclasses set the class attributes and implement the
    abstract methods; a family object is stateless and shared by every model it owns."""

    #: the family's name (``sam``, ``mobile_sam``, ``sam2``)
    name: str = ""
    #: the image encoder's name in messages ("ViT", "TinyViT", "SAM2's Hiera")
    encoder_name: str = ""
    #: the trainer can capture the encoder's block outputs for multi-level distillers (VID, ReviewKD, ...)
    block_levels: bool = True
    #: every feature block has one width and one grid (a stack of ViT blocks; not Hiera's stages)
    uniform_blocks: bool = True
    #: the model carries a memory of an object from frame to frame (SAM2's video predictor); stacks propagate
    #: with it instead of projecting slice to slice
    video_memory: bool = False

    def __repr__(self) -> str:
        return f"<backbone family {self.name}>"

    # ------------------------------------------------------------------------------- models and files
    @abstractmethod
    def owns(self, model: SamLike | nn.Module) -> bool:
        """Whether ``model`` is built on this family's encoder."""

    @abstractmethod
    def guess_model_type(self, state: Mapping[str, torch.Tensor]) -> str | None:
        """The model type of a state dict (tensors or meta tensors) of this family, None when it is not one."""

    @abstractmethod
    def load(self, model_type: str, checkpoint: Path | None) -> SamLike:
        """``model_type`` with the weights of ``checkpoint`` (random without one, with a warning), eval mode."""

    # ---------------------------------------------------------------------------------- encoder blocks
    @abstractmethod
    def encoder_blocks(self, encoder: nn.Module) -> list[Any]:
        """The transformer blocks PEFT methods adapt, input to output (each has an ``attn`` with ``qkv`` and
        ``proj`` Linears and an ``mlp``; typed ``Any``: the backbones' own block classes, untyped)."""

    def is_vit_block(self, block: nn.Module) -> bool:
        """Whether ``block`` is a segment-anything ViT block, which methods replace by a wrapper (the others
        get forward hooks)."""
        return False

    def replace_encoder_block(self, encoder: nn.Module, index: int, block: nn.Module) -> None:
        """Put ``block`` in place of ``encoder_blocks(encoder)[index]`` (only for ViT blocks)."""
        raise ValueError(f"{self.name}: encoder blocks are adapted in place, not replaced")

    @abstractmethod
    def feature_blocks(self, encoder: nn.Module) -> Sequence[nn.Module]:
        """The block list whose outputs decoders (``encoder_blocks`` indices) and distillers read."""

    @abstractmethod
    def block_geometry(self, encoder: nn.Module) -> BlockGeometry:
        """Widths, strides and special blocks of :meth:`feature_blocks` (depth 0 without ``block_levels``)."""

    def hq_feature_block(self, encoder: nn.Module) -> tuple[int, int] | None:
        """``(index into feature_blocks, width)`` of the output HQ-SAM's decoder fuses; None where HQ-SAM is not
        defined. ValueError when the family has one in general but this encoder lacks it."""
        return None

    # ------------------------------------------------------------------------- prediction and training
    @abstractmethod
    def prediction_backend(self, model: SamLike | nn.Module) -> Any:
        """The :class:`~infosam_core.inference.backends.Backend` (prediction) for ``model``."""

    @abstractmethod
    def training_backbone(self, model: SamLike | nn.Module) -> TrainingBackbone:
        """The :class:`~infosam_core.models.training_backbone.TrainingBackbone` for ``model``."""
