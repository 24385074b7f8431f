"""Train and save a run (infosam_core.training.runs): the files of a finished run, a cancelled run's partial
adapter, a failed run's last good weights carried by RunFailedError, and a run that writes nothing."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import disc_samples, micro_sam, quick

import infosam_core.training.trainer as train_module
from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
from infosam_core.peft.state import trained_state
from infosam_core.training.results import TrainingError
from infosam_core.training.runs import RunFailedError, train_and_save


@pytest.fixture(scope="module")
def base():
    return micro_sam()


@pytest.fixture(scope="module")
def samples():
    return disc_samples(4)


def _same_weights(a, b) -> bool:
    got, want = trained_state(a), trained_state(b)
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_finished_run_leaves_adapter_and_history(base, samples, tmp_path):
    folder = tmp_path / "run"
    saved = train_and_save(quick(peft="decoder", distill="none"), base, samples, folder, facts={"n": 4})
    files = saved.files
    assert files is not None and not saved.partial and saved.result.stop_reason == "completed"
    assert (
        files.folder == folder and files.adapter == folder / "adapter.json" and files.history == folder / "history.json"
    )
    assert files.tensors.parent == folder and files.tensors.name.startswith("adapter.") and files.tensors.is_file()
    history = json.loads(files.history.read_text())
    assert history["steps"] == 2 and history["n"] == 4 and history["error"] is None
    assert json.loads(files.adapter.read_text())["summary"] == history  # the adapter carries the same summary
    assert _same_weights(load_peft_checkpoint(base, files.adapter), saved.result.model)


def test_a_cancelled_run_leaves_a_loadable_partial_adapter_and_says_so(base, samples, tmp_path):
    steps = []
    saved = train_and_save(
        quick(peft="decoder", distill="none", epochs=20),
        base,
        samples,
        tmp_path / "run",
        progress=lambda p: steps.append(p.step),
        should_stop=lambda: len(steps) >= 2,
    )
    assert saved.partial and saved.result.cancelled and saved.result.steps == 2
    assert saved.files is not None
    history = json.loads(saved.files.history.read_text())
    assert history["cancelled"] is True and history["stop_reason"] == "cancelled" and history["steps"] == 2
    assert _same_weights(load_peft_checkpoint(base, saved.files.adapter), saved.result.model)


def _nan_at_step(monkeypatch, bad_call: int) -> None:
    real, calls = train_module.structure_loss, {"n": 0}

    def flaky(logits, target, **kw):
        calls["n"] += 1
        loss = real(logits, target, **kw)
        return loss * float("nan") if calls["n"] == bad_call else loss

    monkeypatch.setattr(train_module, "structure_loss", flaky)


def test_a_failed_run_saves_its_last_good_weights_and_raises_them(base, samples, tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 2)
    with pytest.raises(RunFailedError, match="not finite") as info:
        train_and_save(quick(peft="decoder", distill="none", max_steps=5), base, samples, tmp_path / "run")
    error = info.value
    assert isinstance(error, TrainingError) and error.saved_step == 1 and error.result is not None
    assert error.files.adapter == tmp_path / "run" / "adapter.json"
    history = json.loads(error.files.history.read_text())
    assert history["steps"] == 1 and "not finite" in history["error"]
    assert _same_weights(load_peft_checkpoint(base, error.files.adapter), error.result.model)


def test_a_run_failing_before_any_step_or_without_a_folder_writes_nothing(base, samples, tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 1)
    with pytest.raises(TrainingError) as info:
        train_and_save(quick(peft="decoder", distill="none", max_steps=5), base, samples, tmp_path / "run")
    assert not isinstance(info.value, RunFailedError) and not (tmp_path / "run").exists()
    monkeypatch.undo()
    saved = train_and_save(quick(peft="decoder", distill="none", max_steps=1), base, samples, None)
    assert saved.files is None and saved.result.steps == 1 and list(tmp_path.iterdir()) == []
