"""What the core uses from a model of any backbone family: :class:`SamLike`.

segment-anything's ``Sam`` (SAM ViT-B/L/H, the bundled tiny model, MobileSAM) and our
:class:`~infosam_core.models.sam2.Sam2Model` share no base class beyond ``nn.Module``; both provide the parts
and methods below under the same names, and every function that takes "a model" of any family is annotated
with :class:`SamLike`. ``Sam`` stays in annotations only where the code builds or requires segment-anything's
class (``Sam.postprocess_masks``, for one, is not in SAM2's model).

The parts are typed ``Any``: they are the families' own classes (segment-anything's and Meta's ``sam2``,
neither of which ships type information), their attributes and call signatures differ (SAM2's decoder takes
the high-resolution features and returns four values), and what they share (``image_encoder.img_size``,
``prompt_encoder.get_dense_pe()``, ``prompt_encoder.mask_input_size``, ...) is read from them as is.
A model's PEFT and distiller parts are read through :func:`~infosam_core.peft.state.peft_state_of` and
:func:`~infosam_core.distill.base.distiller_of`, not as attributes of this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on


@runtime_checkable
class SamLike(Protocol):
    """A promptable segmentation model with segment-anything's part names (see the module docstring).
    ``isinstance(model, SamLike)`` checks that every member is there (not their types)."""

    training: bool

    @property
    def image_encoder(self) -> Any:
        """(B, 3, S, S) preprocessed pixels -> the image's features (an ``nn.Module``; ``img_size`` = S)."""
        ...

    @property
    def prompt_encoder(self) -> Any:
        """Points, boxes and mask inputs -> sparse and dense prompt embeddings (an ``nn.Module``)."""
        ...

    @property
    def mask_decoder(self) -> Any:
        """Image features and prompt embeddings -> mask logits and predicted IoUs (an ``nn.Module``)."""
        ...

    @property
    def image_format(self) -> str:
        """The channel order the model expects ("RGB")."""
        ...

    @property
    def mask_threshold(self) -> float:
        """Mask logits above it are foreground."""
        ...

    @property
    def device(self) -> torch.device: ...

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, 3, S, S) pixels in [0, 255] (segment-anything also pads them to S x S)."""
        ...

    # the nn.Module methods the core calls on a whole model
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def named_modules(
        self, memo: set[nn.Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Module]]: ...

    def state_dict(self, *, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def train(self, mode: bool = True) -> Self: ...

    def eval(self) -> Self: ...

    def requires_grad_(self, requires_grad: bool = True) -> Self: ...

    def to(self, device: torch.device | str | int | None = ..., dtype: torch.dtype | None = ...) -> Self: ...

    def float(self) -> Self: ...

    def half(self) -> Self: ...
