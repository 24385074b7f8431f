"""The Export panel's "Export model…" (headless GUI): the formats offered follow the adapted model's PEFT method,
and the merged checkpoint written in the background loads into stock segment-anything with strict=True."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("onnxruntime")

from infosam_app.state.models import ModelInfo
from infosam_core.models.sam import build_sam
from infosam_core.peft.registry import apply_peft

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _adapted(tiny_sam, method: str):
    model = copy.deepcopy(tiny_sam)
    apply_peft(model, method, generator=torch.Generator().manual_seed(0))
    if method == "lora":
        with torch.no_grad():
            model.image_encoder.blocks[0].attn.qkv.lora_B.normal_(generator=torch.Generator().manual_seed(1))
    return model


def _install(studio, qtbot, model, method: str) -> None:
    s = studio.session
    s.set_adapted(model, ModelInfo(f"{method} adapter", "CPU", "tiny"), activate=False)
    qtbot.waitUntil(lambda: s.has_adapted and s.sams["adapted"] is model, timeout=60_000)


def test_export_model_offers_the_formats_of_the_method_and_writes_in_the_background(studio, qtbot, tiny_sam, tmp_path):
    panel = studio.export_panel
    assert not panel.model_btn.isEnabled()  # no adapted model yet
    lora = _adapted(tiny_sam, "lora")
    _install(studio, qtbot, lora, "lora")
    formats = [panel.model_format_combo.itemData(i) for i in range(panel.model_format_combo.count())]
    assert formats == ["sam", "onnx"] and panel.model_btn.isEnabled()

    out = tmp_path / "exported" / "lora_sam.pth"
    task = panel.export_model(out, "sam")
    assert task is not None
    qtbot.waitUntil(lambda: task.is_done and "Wrote a sam checkpoint" in panel.result_label.text(), timeout=60_000)
    stock = build_sam("tiny")
    stock.load_state_dict(torch.load(out, map_location="cpu", weights_only=True), strict=True)
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(stock.state_dict()[key], tiny_sam.state_dict()[key])  # LoRA merged in

    _install(studio, qtbot, _adapted(tiny_sam, "adapter"), "adapter")
    formats = [panel.model_format_combo.itemData(i) for i in range(panel.model_format_combo.count())]
    assert formats == ["onnx"]  # an Adapter cannot merge into SAM's weights
    folder = tmp_path / "onnx"
    task = panel.export_model(folder)
    qtbot.waitUntil(lambda: task.is_done and "onnx.json" in panel.result_label.text(), timeout=120_000)
    assert {p.name for p in folder.iterdir()} >= {"encoder.onnx", "decoder.onnx", "onnx.json"}
