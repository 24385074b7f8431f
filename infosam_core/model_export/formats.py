"""Which export formats apply to a model, and why the others do not.

* ``sam`` -- a plain state dict in Meta's segment-anything layout (SAM ViT-B/L/H, the bundled tiny SAM, MobileSAM
  ``vit_t``), for stock ``segment_anything`` / ``mobile_sam`` / micro-sam;
* ``sam2`` -- SAM2's ``{"model": state_dict}`` checkpoint, for stock ``sam2``;
* ``onnx`` -- the image encoder and the prompt encoder + mask decoder as ONNX files (segment-anything's ONNX
  interface), for X-AnyLabeling, CVAT, Label Studio and onnxruntime: SAM ViT-B/L, the tiny SAM and MobileSAM
  (ViT-H's 2.5 GB encoder with its weights in ``encoder.onnx.data``, ONNX's external data), and SAM2 with the
  SAM2 ONNX interface (:mod:`.sam2_onnx`).

A checkpoint format needs the adapted weights to *merge* into the base model's own parameters: LoRA
(``W + scale * B A`` into each ``qkv``), BitFit (biases), decoder-only (decoder weights) and a model without an
adapter. Methods that add modules the base model lacks (Adapter, AdaptFormer, SU-SAM, ConvLoRA's experts,
HQ-SAM's token and fusion layers) cannot merge: they export as ONNX, whose graph carries the added modules
(the ONNX files are checked with onnxruntime against torch) -- all but HQ-SAM (its decoder reads encoder blocks, outside SAM's ONNX decoder interface) and ConvLoRA (its
per-image expert choice is control flow that tracing would freeze).
A model trained with a distiller exports without it (the distiller's parts only served training).
"""

from __future__ import annotations

from torch import nn

from infosam_core.models.hq_decoder import HqMaskDecoder
from infosam_core.models.protocols import SamLike
from infosam_core.models.registry import find_family
from infosam_core.peft.convlora import ConvLoraLinear
from infosam_core.peft.lora import LoraLinear
from infosam_core.peft.state import peft_state_of

SAM_FORMAT, SAM2_FORMAT, ONNX_FORMAT = "sam", "sam2", "onnx"
FORMATS: tuple[str, ...] = (SAM_FORMAT, SAM2_FORMAT, ONNX_FORMAT)
#: a short description of each format, for menus and help texts
FORMAT_TITLES = {
    SAM_FORMAT: "SAM checkpoint (.pth, segment-anything / MobileSAM / micro-sam)",
    SAM2_FORMAT: "SAM2 checkpoint (.pt, sam2)",
    ONNX_FORMAT: "ONNX (encoder + decoder, onnxruntime / X-AnyLabeling / CVAT)",
}
#: the checkpoint format of each backbone family (its name -> format)
_CHECKPOINT_FORMAT = {"sam": SAM_FORMAT, "mobile_sam": SAM_FORMAT, "sam2": SAM2_FORMAT}


class ExportFormatError(ValueError):
    """A format that does not apply to this model; the message says why and which formats do."""


def method_name(model: SamLike | nn.Module) -> str:
    """The model's PEFT method (``none`` without an adapter)."""
    state = peft_state_of(model)
    return state.method if state is not None else "none"


def _subject(method: str) -> str:
    return "the base model (no adapter)" if method == "none" else f"PEFT method {method!r}"


def merge_problem(model: SamLike | nn.Module) -> str | None:
    """Why the model's weights cannot merge into the base model's parameters (None when they can)."""
    state = peft_state_of(model)
    if isinstance(getattr(model, "mask_decoder", None), HqMaskDecoder):
        return "its mask decoder is HQ-SAM's (an HQ output token and feature fusion that SAM's decoder lacks)"
    if state is None or not state.added:
        return None
    modules = dict(model.named_modules())
    for name in state.added:
        owner, _, leaf = name.rpartition(".")
        if not (type(modules.get(owner)) is LoraLinear and leaf in ("lora_A", "lora_B")):
            return f"PEFT method {state.method!r} adds modules the base model does not have (e.g. {name})"
    return None


def checkpoint_format(model: SamLike | nn.Module) -> str | None:
    """The base model's own checkpoint format (``sam`` or ``sam2``; None for a family without one)."""
    family = find_family(model) if isinstance(model, nn.Module) else None
    return _CHECKPOINT_FORMAT.get(family.name) if family is not None else None


def onnx_problem(model: SamLike | nn.Module) -> str | None:
    """Why the model cannot be exported as ONNX here (None when it can)."""
    family = find_family(model) if isinstance(model, nn.Module) else None
    if family is None or family.name not in ("sam", "mobile_sam", "sam2"):
        return "ONNX export covers SAM, the tiny SAM, MobileSAM and SAM2"
    if isinstance(getattr(model, "mask_decoder", None), HqMaskDecoder):
        return "HQ-SAM's decoder reads encoder blocks, which SAM's ONNX decoder interface does not carry"
    if any(isinstance(m, ConvLoraLinear) for m in model.modules()):
        return (
            "ConvLoRA picks an expert per image with data-dependent control flow, which a traced graph fixes to "
            "the example's choice"
        )
    return None


def formats_for(model: SamLike | nn.Module) -> list[str]:
    """The formats that apply to ``model``, in :data:`FORMATS` order."""
    out = []
    own = checkpoint_format(model)
    if own is not None and merge_problem(model) is None:
        out.append(own)
    if onnx_problem(model) is None:
        out.append(ONNX_FORMAT)
    return out


def check_format(model: SamLike | nn.Module, fmt: str) -> None:
    """Raise :class:`ExportFormatError` (one line: the method, why, the formats that apply) unless ``fmt``
    applies to ``model``."""
    if fmt not in FORMATS:
        raise ExportFormatError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    applies = formats_for(model)
    if fmt in applies:
        return
    method = method_name(model)
    own = checkpoint_format(model)
    if fmt == ONNX_FORMAT:
        why = onnx_problem(model)
    elif own != fmt:
        why = f"the base model ({getattr(model, 'model_type', '?')}) is not a {fmt} model (its format is {own})"
    else:
        why = f"the weights cannot merge into the base model: {merge_problem(model)}"
    hint = f"use --format {' or '.join(applies)}" if applies else "no export format applies"
    raise ExportFormatError(f"cannot export {_subject(method)} as {fmt}: {why}; {hint}")


#: methods whose trained weights merge into the base model's parameters (what :func:`merge_problem` finds on a
#: built model; used to refuse a format from an adapter's description before the base model is read)
MERGING_METHODS = ("none", "lora", "bitfit", "decoder")
#: methods whose models do not export as ONNX (see :func:`onnx_problem`)
NO_ONNX_METHODS = ("hq_sam", "convlora")


def precheck_format(method: str, model_type: str, fmt: str) -> None:
    """:func:`check_format` from an adapter's method and the base model type alone (nothing loaded): the same
    one-line ExportFormatError for the cases these decide; the check on the built model still follows."""
    from infosam_core.models.registry import MODELS

    if fmt not in FORMATS:
        raise ExportFormatError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = MODELS.get(model_type)
    own = _CHECKPOINT_FORMAT.get(spec.family.name) if spec is not None else None
    applies = [f for f in (own,) if f is not None and method in MERGING_METHODS]
    if own in (SAM_FORMAT, SAM2_FORMAT) and method not in NO_ONNX_METHODS:
        applies.append(ONNX_FORMAT)
    if fmt in applies:
        return
    hint = f"use --format {' or '.join(applies)}" if applies else "no export format applies"
    if fmt == ONNX_FORMAT:
        why = "ONNX export covers SAM, the tiny SAM, MobileSAM and SAM2, and neither HQ-SAM nor ConvLoRA"
    elif own != fmt:
        why = f"the base model ({model_type}) is not a {fmt} model (its format is {own})"
    else:
        why = "its weights cannot merge into the base model (it adds modules the base model does not have)"
    raise ExportFormatError(f"cannot export {_subject(method)} as {fmt}: {why}; {hint}")
