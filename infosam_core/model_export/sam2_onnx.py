"""ONNX export of SAM2 models (adapted or not): the image encoder and the prompt encoder + mask decoder, with the
interface the SAM2 ONNX consumers read (samexporter's, which X-AnyLabeling loads), checked with onnxruntime.

``export_sam2_onnx(model, folder)`` writes ``folder/encoder.onnx``, ``folder/decoder.onnx`` and ``folder/onnx.json``:

* ``encoder.onnx``: input ``image`` (1, 3, S, S) float32: the RGB image resized to S x S (aspect ratio not kept,
  as SAM2's own transforms), scaled to [0, 1] and normalised with ImageNet's mean / std. Outputs
  ``high_res_feats_0`` (1, 32, S/4, S/4), ``high_res_feats_1`` (1, 64, S/8, S/8) (after the decoder's ``conv_s0`` /
  ``conv_s1``) and ``image_embed`` (1, 256, S/16, S/16) (with SAM2's no-memory embedding added), S = 1024 for
  Meta's models.
* ``decoder.onnx``: inputs ``image_embed``, ``high_res_feats_0``, ``high_res_feats_1``, ``point_coords`` (1, N, 2)
  in the S x S frame (``x * S / W``, ``y * S / H``; a box is two points labelled 2 and 3), ``point_labels`` (1, N)
  (1 object, 0 background, 2 / 3 box corners, -1 padding), ``mask_input`` (1, 1, S/4, S/4), ``has_mask_input``
  (1,); outputs ``masks`` (1, C, S/4, S/4) low-resolution logits (upsample bilinearly to the image's size and
  threshold at 0) and ``iou_predictions`` (1, C): C = 3 (the multimask outputs), or 1 with ``single_mask`` (SAM2's
  own choice: output 0 unless it is unstable, then the best-scored of the three).

Every PEFT method's added modules run inside the traced graphs. Both files are run with onnxruntime against the
torch model after writing (:class:`~infosam_core.model_export.onnx_files.OnnxCheckError` when they differ).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infosam_core.io.atomic import write_json_atomic
from infosam_core.model_export.formats import method_name
from infosam_core.model_export.onnx_files import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    OPSET,
    OnnxCheckError,
    OnnxExport,
    _export,
    _max_diff,
    require_onnx,
)
from infosam_core.models.sam2 import IMAGENET_MEAN, IMAGENET_STD, Sam2Model

ENCODER_OUTPUTS = ("high_res_feats_0", "high_res_feats_1", "image_embed")
DECODER_INPUTS = (
    "image_embed",
    "high_res_feats_0",
    "high_res_feats_1",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
)


class Sam2EncoderGraph(nn.Module):
    """Normalised (1, 3, S, S) image -> (high_res_feats_0, high_res_feats_1, image_embed)."""

    def __init__(self, model: Sam2Model) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.encoder(image)
        return features.high_res_feats[0], features.high_res_feats[1], features.image_embed


class Sam2DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with an explicit mask switch (``has_mask_input``) instead of Python branches."""

    def __init__(self, model: Sam2Model, single_mask: bool) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.single_mask = single_mask

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.prompt_encoder
        sparse = encoder._embed_points(point_coords, point_labels, pad=True)  # SAM2's own padding point (0, 0, -1)
        has_mask = has_mask_input.reshape(1, 1, 1, 1)
        dense = has_mask * encoder.mask_downscaling(mask_input) + (1 - has_mask) * encoder.no_mask_embed.weight.reshape(
            1, -1, 1, 1
        )
        masks, iou, _, _ = self.mask_decoder(
            image_embeddings=image_embed,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=not self.single_mask,
            repeat_image=False,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        return masks, iou


def sam2_encoder_input(model: Sam2Model, rgb: np.ndarray) -> torch.Tensor:
    """The encoder's input for an RGB uint8 (H, W, 3) image (what a consumer computes before ``encoder.onnx``)."""
    from infosam_core.models.sam2 import sam2_preprocess

    return sam2_preprocess(model, rgb).cpu()


def sam2_decoder_inputs(model: Sam2Model, num_points: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example decoder inputs (also the trace's): random features, points, a mask input in use."""
    g = torch.Generator().manual_seed(seed)
    size = int(model.image_encoder.img_size)
    grid = size // 16
    dim = int(model.prompt_encoder.embed_dim)
    return {
        "image_embed": torch.randn(1, dim, grid, grid, generator=g),
        "high_res_feats_0": torch.randn(1, dim // 8, 4 * grid, 4 * grid, generator=g),
        "high_res_feats_1": torch.randn(1, dim // 4, 2 * grid, 2 * grid, generator=g),
        "point_coords": torch.rand(1, num_points, 2, generator=g) * size,
        "point_labels": torch.tensor([[2.0, 3.0, 1.0, 0.0, 1.0, 0.0][:num_points]]),
        "mask_input": torch.randn(1, 1, 4 * grid, 4 * grid, generator=g),
        "has_mask_input": torch.tensor([1.0]),
    }


def export_sam2_onnx(model: Sam2Model, folder: str | Path, single_mask: bool = True, check: bool = True) -> OnnxExport:
    """Write a SAM2 model as ``encoder.onnx`` + ``decoder.onnx`` + ``onnx.json`` in ``folder`` (module docstring),
    then run both with onnxruntime against the torch model (``check``)."""
    onnx, _ = require_onnx()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model.device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    size = int(model.image_encoder.img_size)
    encoder, decoder = folder / ENCODER_FILE, folder / DECODER_FILE
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _export(
            Sam2EncoderGraph(model).eval(),
            (example,),
            encoder,
            input_names=["image"],
            output_names=list(ENCODER_OUTPUTS),
        )
        inputs = sam2_decoder_inputs(model)
        _export(
            Sam2DecoderGraph(model, single_mask).eval(),
            tuple(inputs.values()),
            decoder,
            input_names=list(DECODER_INPUTS),
            output_names=["masks", "iou_predictions"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        )
    for path in (encoder, decoder):
        onnx.checker.check_model(str(path))
    enc_diff, dec_diff = check_sam2_onnx(model, folder, single_mask) if check else (float("nan"), float("nan"))
    config = folder / CONFIG_FILE
    write_json_atomic(config, sam2_onnx_description(model, single_mask))
    return OnnxExport(encoder, decoder, config, enc_diff, dec_diff)


def sam2_onnx_description(model: Sam2Model, single_mask: bool) -> dict[str, Any]:
    """What ``onnx.json`` says for a SAM2 export."""
    size = int(model.image_encoder.img_size)
    grid = size // 16
    return {
        "format": "infosam-onnx-sam2",
        "model_type": str(model.model_type),
        "peft_method": method_name(model),
        "opset": OPSET,
        "encoder": {
            "file": ENCODER_FILE,
            "input": "image",
            "input_layout": f"(1, 3, {size}, {size}) float32, RGB",
            "input_size": size,
            "resize": f"to {size} x {size}, aspect ratio not kept (SAM2's transforms)",
            "normalise": "pixels / 255, then (x - mean) / std",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "outputs": list(ENCODER_OUTPUTS),
        },
        "decoder": {
            "file": DECODER_FILE,
            "interface": "SAM2 image decoder as samexporter / X-AnyLabeling read it",
            "inputs": list(DECODER_INPUTS),
            "point_coords": f"(1, N, 2) x * {size} / width, y * {size} / height; a box = points labelled 2, 3",
            "point_labels": "(1, N): 1 object, 0 background, 2 / 3 box corners, -1 padding",
            "mask_input_shape": [1, 1, 4 * grid, 4 * grid],
            "outputs": ["masks", "iou_predictions"],
            "masks": f"(1, C, {4 * grid}, {4 * grid}) logits: upsample bilinearly to the image's size, threshold 0",
            "single_mask": single_mask,
        },
    }


def check_sam2_onnx(model: Sam2Model, folder: Path, single_mask: bool, tolerance: float = 1e-3) -> tuple[float, float]:
    """Run ``folder``'s SAM2 encoder and decoder with onnxruntime and compare them with ``model``: the largest
    absolute differences (image embedding and high-resolution features; mask logits); OnnxCheckError when one
    exceeds ``tolerance`` times the reference's scale (at least 1)."""
    _, ort = require_onnx()
    size = int(model.image_encoder.img_size)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.log_severity_level = 3  # Hiera's window padding gives a shape-merge warning that is not an error
    enc = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want_features = [t.numpy() for t in Sam2EncoderGraph(model).eval()(image)]
        inputs = sam2_decoder_inputs(model, num_points=5, seed=3)
        for name, value in zip(ENCODER_OUTPUTS, want_features):
            inputs[name] = torch.from_numpy(value)
        want_masks = Sam2DecoderGraph(model, single_mask).eval()(**inputs)[0].numpy()
    features = enc.run(None, {"image": image.numpy()})
    masks = dec.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    diffs = (max(_max_diff(a, b) for a, b in zip(features, want_features)), _max_diff(masks, want_masks))
    refs = (max(float(np.abs(f).max()) for f in want_features), float(np.abs(want_masks).max()))
    for what, diff, ref in zip(("encoder", "decoder"), diffs, refs):
        if not diff <= tolerance * max(1.0, ref):
            raise OnnxCheckError(
                f"{folder / (ENCODER_FILE if what == 'encoder' else DECODER_FILE)}: onnxruntime's output differs "
                f"from the torch model's by {diff:.3g}; this model does not export faithfully"
            )
    return diffs


__all__ = ["export_sam2_onnx", "check_sam2_onnx", "sam2_onnx_description", "sam2_encoder_input"]
