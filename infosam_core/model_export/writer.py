"""One call for every export format: ``export_model(model, fmt, out)`` -- what `infosam export-model` and the
app's "Export model…" run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from infosam_core.model_export.formats import ONNX_FORMAT, check_format, method_name
from infosam_core.models.protocols import SamLike


@dataclass
class ModelExport:
    """What was written: the format, the paths, and a one-line summary for people."""

    fmt: str
    paths: list[Path]
    summary: str


def export_model(model: SamLike | nn.Module, fmt: str, out: str | Path, single_mask: bool = True) -> ModelExport:
    """Write ``model`` as ``fmt`` (``sam`` / ``sam2``: the checkpoint file ``out``; ``onnx``: the folder ``out``).
    Raises ExportFormatError (the format does not apply), ImportError (ONNX without the ``export`` extra),
    OnnxCheckError, CheckpointError or OSError."""
    check_format(model, fmt)
    if fmt == ONNX_FORMAT:
        from infosam_core.model_export.onnx_files import export_onnx
        from infosam_core.models.registry import find_family

        family = find_family(model)
        if family is not None and family.name == "sam2":
            from infosam_core.model_export.sam2_onnx import export_sam2_onnx

            result = export_sam2_onnx(model, out, single_mask=single_mask)  # type: ignore[arg-type]
        else:
            result = export_onnx(model, out, single_mask=single_mask)
        return ModelExport(
            fmt,
            [result.encoder, result.decoder, result.config],
            f"Wrote {result.encoder.name}, {result.decoder.name} and {result.config.name} to {result.config.parent} "
            f"(onnxruntime vs torch: encoder {result.encoder_max_diff:.1e}, decoder {result.decoder_max_diff:.1e})",
        )
    from infosam_core.model_export.merge import save_merged_checkpoint

    path = save_merged_checkpoint(model, out, fmt)
    return ModelExport(fmt, [path], f"Wrote a {fmt} checkpoint ({method_name(model)} merged) to {path}")
