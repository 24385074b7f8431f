"""Load a model with its adapter (infosam_core.adapter_files.loading): one function, one kind of error
(ValueErrors naming the file and the fix)."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_sam

import infosam_core.adapter_files.loading as loading
from infosam_core.adapter_files.checkpoint import PeftCheckpointError, save_peft_checkpoint
from infosam_core.adapter_files.loading import load_model_with_adapter
from infosam_core.models.checkpoints import CheckpointError
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import trained_state


def test_the_bundled_model_with_its_adapter_on_the_cpu(tmp_path):
    adapted = load_model_with_adapter("tiny", device="cpu")
    apply_peft(adapted, "bitfit")
    with torch.no_grad():
        next(iter(trained_state(adapted).values())).add_(0.5)
    save_peft_checkpoint(adapted, tmp_path / "ad")
    for model_type in ("tiny", "auto"):
        model = load_model_with_adapter(model_type, None, tmp_path / "ad", device="cpu")
        assert model.peft_state.method == "bitfit" and not model.training
        assert next(model.parameters()).device.type == "cpu"
        got, want = trained_state(model), trained_state(adapted)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_an_adapter_for_another_model_type_is_refused_before_the_model_is_read(tmp_path, monkeypatch):
    other = micro_sam()
    other.model_type = "vit_b"  # as if trained on SAM ViT-B
    apply_peft(other, "bitfit")
    save_peft_checkpoint(other, tmp_path / "ad")

    def no_loading(*a, **k):
        raise AssertionError("the base model was read before the adapter was checked")

    monkeypatch.setattr(loading, "load_sam", no_loading)
    with pytest.raises(PeftCheckpointError) as info:
        load_model_with_adapter("tiny", None, tmp_path / "ad")
    message = str(info.value)
    assert str(tmp_path / "ad.json") in message and "made for another base model (SAM vit_b)" in message
    assert "SAM tiny" in message and "model type vit_b" in message and len(message.splitlines()) == 1


def test_a_missing_adapter_file_or_model_file_names_the_file(tmp_path):
    with pytest.raises(PeftCheckpointError, match=r"nope\.json: adapter description not found"):
        load_model_with_adapter("tiny", None, tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"missing\.pth: file not found"):
        load_model_with_adapter("vit_b", tmp_path / "missing.pth", None)
    for error in (PeftCheckpointError, CheckpointError, loading.ModelDeviceError):
        assert issubclass(error, ValueError)  # callers catch ValueError once
