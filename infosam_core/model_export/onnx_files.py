"""ONNX export: the image encoder and the prompt encoder + mask decoder, with segment-anything's ONNX interface,
checked with onnxruntime, plus a JSON describing the preprocessing.

``export_onnx(model, folder)`` writes ``folder/encoder.onnx``, ``folder/decoder.onnx`` and ``folder/onnx.json``:

* ``encoder.onnx``: input ``input_image`` (1, 3, h, w) float32, RGB in [0, 255], resized so that its longest side
  is the model's input size S (segment-anything's ``ResizeLongestSide``; h, w <= S, either dynamic); the graph
  normalises with the model's pixel mean / std and pads bottom / right to S x S, as ``Sam.preprocess``.
  Output ``image_embeddings`` (1, 256, S/16, S/16) (the tiny SAM: S = 256, 32 x 32).
  An encoder of 2 GB or more (SAM ViT-H) keeps its weights in ``encoder.onnx.data`` beside the graph (ONNX's
  external data; onnxruntime and ``onnx.load`` read it from the graph's folder): copy both files.
* ``decoder.onnx``: segment-anything's ``SamOnnxModel`` (the graph of ``scripts/export_onnx_model.py``; its
  crop to the unpadded size kept dynamic, see :func:`decoder_graph`) on the adapted model: inputs ``image_embeddings``, ``point_coords`` (1, N, 2) in the model's input frame (pixel
  coordinates times S / longest side), ``point_labels`` (1, N) (1 object, 0 background, 2 / 3 box corners,
  -1 padding: add a point (0, 0) labelled -1 when there is no box, as SAM's ONNX example does),
  ``mask_input`` (1, 1, S/4, S/4), ``has_mask_input`` (1,), ``orig_im_size`` (2,) float (H, W); outputs
  ``masks`` (1, C, H, W) logits, ``iou_predictions`` (1, C), ``low_res_masks`` (1, C, S/4, S/4). C = 1 with
  ``single_mask`` (SAM's script default: its heuristic picks one of the four), else 4 (output 0 = the
  single-mask output, 1-3 = the multimask outputs).

Every PEFT method's added modules are part of the traced graphs (they run inside the encoder's blocks or the
decoder). After writing, both files are run with onnxruntime on a test input and compared with the torch model
(:class:`OnnxCheckError` when they differ). ``onnx`` and ``onnxruntime`` are the optional ``export`` extra,
imported only here.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from infosam_core.io.atomic import atomic_path, write_json_atomic
from infosam_core.model_export.formats import ONNX_FORMAT, check_format, method_name

ENCODER_FILE, DECODER_FILE, CONFIG_FILE = "encoder.onnx", "decoder.onnx", "onnx.json"
#: a graph whose weights reach this many bytes keeps them in ``<file>.data`` beside it (ONNX's external data:
#: a protobuf file cannot exceed 2 GiB; SAM ViT-H's encoder holds 2.5 GB), as onnxruntime reads them
EXTERNAL_DATA_BYTES = 2**31 - 2**26
OPSET = 17  # segment-anything's export script's default
INSTALL_HINT = "pip install 'infosam-studio[export]' (onnx and onnxruntime)"


class OnnxCheckError(RuntimeError):
    """The exported ONNX files do not compute what the torch model computes."""


@dataclass
class OnnxExport:
    """The files written and the largest differences onnxruntime showed against the torch model."""

    encoder: Path
    decoder: Path
    config: Path
    encoder_max_diff: float
    decoder_max_diff: float


def require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``, or ImportError with the install line."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxruntime ({exc}); install them: {INSTALL_HINT}") from None
    return onnx, onnxruntime


class EncoderGraph(nn.Module):
    """``input_image`` (1, 3, h, w) RGB [0, 255], longest side resized to S -> ``image_embeddings``."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        return self.model.image_encoder(self.model.preprocess(input_image))


def decoder_graph(model: Sam, single_mask: bool) -> nn.Module:
    """segment-anything's ``SamOnnxModel`` on ``model``, with its crop to the pre-padding size kept a graph
    operation: the released ``mask_postprocessing`` slices with ``int(...)`` bounds, which the tracer freezes to
    the example's ``orig_im_size`` (every other image size then gets wrongly scaled masks)."""
    from segment_anything.utils.onnx import SamOnnxModel

    class SamDecoderOnnx(SamOnnxModel):
        def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
            size = (self.img_size, self.img_size)
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks[..., : prepadded[0], : prepadded[1]]  # tensor bounds: dynamic in the graph
            h, w = orig_im_size.to(torch.int64)[0], orig_im_size.to(torch.int64)[1]
            size_hw: Any = (h, w)  # tensors, not ints: the output size stays an input of the graph
            return F.interpolate(masks, size=size_hw, mode="bilinear", align_corners=False)

    return SamDecoderOnnx(model, return_single_mask=single_mask).eval()


def _export(module: nn.Module, args: tuple, path: Path, **kw: Any) -> None:
    """``torch.onnx.export`` to ``path`` atomically. ``module`` must be in eval mode: the exporter puts the
    module's own mode back on all its children afterwards (a new wrapper is in training mode by default, which
    would leave the model in training mode: MobileSAM's BatchNorms would then use batch statistics). A module
    whose weights reach :data:`EXTERNAL_DATA_BYTES` is written with its weights in ``<path>.data``
    (:func:`_export_with_external_data`)."""
    assert not module.training, "export wrappers in eval mode (see the docstring)"
    if _weight_bytes(module) >= EXTERNAL_DATA_BYTES:
        _export_with_external_data(module, args, path, **kw)
        return
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about shapes read as Python numbers
        torch.onnx.export(module, args, str(tmp), opset_version=OPSET, do_constant_folding=True, dynamo=False, **kw)


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _export_with_external_data(module: nn.Module, args: tuple, path: Path, **kw: Any) -> None:
    """Export into a scratch folder beside ``path`` (torch writes a large model's weights as many files), then
    gather every weight into one ``<path>.data`` file that the graph names by its bare file name, and move the
    data file and then the graph into place (a graph never points at data that is not there yet)."""
    onnx, _ = require_onnx()
    import shutil
    import tempfile

    data_name = f"{path.name}.data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        raw, gathered = Path(scratch) / "raw" / path.name, Path(scratch) / "out" / path.name
        raw.parent.mkdir()
        gathered.parent.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), opset_version=OPSET, do_constant_folding=True, dynamo=False, **kw)
        proto = onnx.load(str(raw), load_external_data=True)
        onnx.save_model(
            proto,
            str(gathered),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        del proto
        os.replace(gathered.parent / data_name, path.parent / data_name)
        os.replace(gathered, path)
        shutil.rmtree(raw.parent, ignore_errors=True)


def decoder_inputs(model: Sam, num_points: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example decoder inputs (also the trace's): random embedding, points, a mask input in use."""
    g = torch.Generator().manual_seed(seed)
    size = int(model.image_encoder.img_size)
    grid = tuple(model.prompt_encoder.image_embedding_size)
    dim = int(model.prompt_encoder.embed_dim)
    return {
        "image_embeddings": torch.randn(1, dim, *grid, generator=g),
        "point_coords": torch.rand(1, num_points, 2, generator=g) * size,
        "point_labels": torch.tensor([[1.0, 0.0, -1.0, 1.0, 2.0, 3.0][:num_points]]),
        "mask_input": torch.randn(1, 1, 4 * grid[0], 4 * grid[1], generator=g),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([float(size) * 0.75, float(size) * 1.25]),
    }


def export_onnx(model: Sam, folder: str | Path, single_mask: bool = True, check: bool = True) -> OnnxExport:
    """Write ``model`` (a SAM-family model, adapted or not) as ``encoder.onnx`` + ``decoder.onnx`` + ``onnx.json``
    in ``folder`` (module docstring), then run both with onnxruntime against the torch model (``check``).
    ExportFormatError when ONNX does not apply, ImportError without onnx / onnxruntime, OnnxCheckError when the
    files compute something else."""
    check_format(model, ONNX_FORMAT)
    onnx, _ = require_onnx()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()  # traced and checked on the CPU
    model = model.eval()
    size = int(model.image_encoder.img_size)
    encoder, decoder = folder / ENCODER_FILE, folder / DECODER_FILE
    example = torch.rand(1, 3, size, (size * 3) // 4, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        _export(
            EncoderGraph(model).eval(),
            (example,),
            encoder,
            input_names=["input_image"],
            output_names=["image_embeddings"],
            dynamic_axes={"input_image": {2: "height", 3: "width"}},
        )
        graph = decoder_graph(model, single_mask)
        inputs = decoder_inputs(model)
        _export(
            graph,
            tuple(inputs.values()),
            decoder,
            input_names=list(inputs),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        )
    for path in (encoder, decoder):
        onnx.checker.check_model(str(path))
    enc_diff, dec_diff = check_onnx(model, folder, single_mask) if check else (float("nan"), float("nan"))
    config = folder / CONFIG_FILE
    write_json_atomic(config, onnx_description(model, single_mask))
    return OnnxExport(encoder, decoder, config, enc_diff, dec_diff)


def onnx_description(model: Sam, single_mask: bool) -> dict[str, Any]:
    """What ``onnx.json`` says: the model, the encoder's preprocessing, the decoder's interface."""
    size = int(model.image_encoder.img_size)
    grid = [int(g) for g in model.prompt_encoder.image_embedding_size]
    return {
        "format": "infosam-onnx",
        "model_type": str(getattr(model, "model_type", "?")),
        "peft_method": method_name(model),
        "opset": OPSET,
        "encoder": {
            "file": ENCODER_FILE,
            "input": "input_image",
            "input_layout": "(1, 3, h, w) float32, RGB, values 0-255",
            "input_size": size,
            "resize": "longest side to input_size, aspect ratio kept (segment-anything ResizeLongestSide)",
            "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
            "pixel_std": [float(v) for v in model.pixel_std.flatten()],
            "in_graph": "normalise (x - pixel_mean) / pixel_std, then pad bottom/right with zeros to input_size",
            "output": "image_embeddings",
            "output_shape": [1, int(model.prompt_encoder.embed_dim), *grid],
        },
        "decoder": {
            "file": DECODER_FILE,
            "interface": "segment-anything SamOnnxModel (scripts/export_onnx_model.py)",
            "inputs": [
                "image_embeddings",
                "point_coords",
                "point_labels",
                "mask_input",
                "has_mask_input",
                "orig_im_size",
            ],
            "point_coords": "(1, N, 2) x, y in the resized image's pixels (coordinate * input_size / longest side)",
            "point_labels": "(1, N): 1 object, 0 background, 2 / 3 box corners, -1 padding point (0, 0) when no box",
            "mask_input_shape": [1, 1, 4 * grid[0], 4 * grid[1]],
            "orig_im_size": "(2,) float32: original height, width",
            "outputs": ["masks", "iou_predictions", "low_res_masks"],
            "single_mask": single_mask,
            "mask_threshold": 0.0,
        },
    }


def check_onnx(model: Sam, folder: Path, single_mask: bool, tolerance: float = 1e-3) -> tuple[float, float]:
    """Run ``folder``'s encoder and decoder with onnxruntime and compare them with ``model``: the largest
    absolute differences (embedding, low-res mask logits); OnnxCheckError when one exceeds ``tolerance``
    times the reference's scale (at least 1)."""
    _, ort = require_onnx()

    size = int(model.image_encoder.img_size)
    image = torch.rand(1, 3, (size * 2) // 3, size, generator=torch.Generator().manual_seed(2)) * 255
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    enc = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want_embedding = EncoderGraph(model).eval()(image).numpy()
        inputs = decoder_inputs(model, num_points=5, seed=3)
        inputs["image_embeddings"] = torch.from_numpy(want_embedding)
        inputs["orig_im_size"] = torch.tensor([float(size) * 1.5, float(size) * 0.5])  # not the trace's
        want_masks, _, want_low_res_t = decoder_graph(model, single_mask)(**inputs)
        want_low_res = want_low_res_t.numpy()
    embedding = enc.run(None, {"input_image": image.numpy()})[0]
    masks, _, low_res = dec.run(None, {k: v.numpy() for k, v in inputs.items()})
    # the masks at the original size: bilinear upscaling of logits, compared at the low-res logits' tolerance
    diffs = (
        _max_diff(embedding, want_embedding),
        max(_max_diff(low_res, want_low_res), _max_diff(masks, want_masks.numpy())),
    )
    for what, diff, ref in (("encoder", diffs[0], want_embedding), ("decoder", diffs[1], want_low_res)):
        if not diff <= tolerance * max(1.0, float(np.abs(ref).max())):
            raise OnnxCheckError(
                f"{folder / (ENCODER_FILE if what == 'encoder' else DECODER_FILE)}: onnxruntime's output differs "
                f"from the torch model's by {diff:.3g}; this model does not export faithfully"
            )
    return diffs


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.shape == b.shape else float("inf")


def read_onnx_description(folder: str | Path) -> dict[str, Any]:
    """``folder/onnx.json`` as written by :func:`export_onnx`."""
    return json.loads((Path(folder) / CONFIG_FILE).read_text("utf-8"))


__all__ = ["OnnxExport", "OnnxCheckError", "export_onnx", "check_onnx", "onnx_description"]
