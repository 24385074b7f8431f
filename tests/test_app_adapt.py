"""'Adapt to my data' in the studio, headless: train a few steps in the background, hot-swap the student,
compare Base / Adapted, cancel and continue, errors, export the adapter and load it back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("napari")

from infosam_app.testing import prompt_until_mask
from infosam_app.workers import TaskKind

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _accept_on(qtbot, widget, indices):
    s, c = widget.session, widget.prompts
    for i in indices:
        s.show_image(i)
        qtbot.waitUntil(lambda i=i: s.index == i and s.embedding_ready, timeout=30_000)
        assert prompt_until_mask(c) is not None
        assert c.accept() is not None


def _wait_done(qtbot, panel, timeout=240_000):
    qtbot.waitUntil(lambda: not panel.controller.running, timeout=timeout)


def _predict_with(session, name, prompts):
    masks, _, _ = session.predictors[name].predict(
        point_coords=prompts.point_coords(),
        point_labels=prompts.point_labels(),
        box=prompts.box_array(),
        multimask_output=False,
    )
    return masks[0]


def test_adapt_hot_swap_compare_export_and_load(studio, qtbot, tmp_path):
    s, c, panel = studio.session, studio.prompts, studio.adapt_panel
    _accept_on(qtbot, studio, [0])
    # one object is not enough: the panel says so and nothing starts
    assert not panel.start()
    assert "at least 2" in panel.info_label.text()
    _accept_on(qtbot, studio, [1, 2])

    # on the bundled tiny model the default is plain PEFT, marked recommended (issue 31: InfoSAM measured no better)
    assert panel.distill_combo.currentData() == "none"
    assert panel.distill_combo.currentText() == "None (plain PEFT) (recommended)"
    assert panel.distill_combo.itemText(panel.distill_combo.findData("infosam")) == "InfoSAM"
    panel.distill_combo.setCurrentIndex(panel.distill_combo.findData("infosam"))  # this test adapts with InfoSAM
    listed = [panel.distill_combo.itemData(i) for i in range(panel.distill_combo.count())]
    assert listed[:2] == ["infosam", "none"] and {"vid", "mobilesam", "tinysam"} <= set(listed)  # advanced choices
    # the long "Advanced: ..." entries must not widen the dock (they did: the panel was clipped on the right)
    assert panel.distill_combo.minimumSizeHint().width() < 300 and panel.minimumSizeHint().width() < 460
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("lora"))
    panel.max_steps = 3
    # prompts on the canvas while training: they are re-predicted with the student when it is swapped in
    h, w = s.rgb.shape[:2]
    c.set_box(2, 2, w - 3, h - 3)
    base_mask = c.mask.copy()
    seen = []
    panel.controller.progress.connect(seen.append)
    # a high learning rate so that three steps visibly change the masks
    settings = panel.settings()
    settings.lr = 5e-3
    assert panel.controller.start(settings)
    assert panel.cancel_btn.isEnabled() and not panel.start_btn.isEnabled()
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: s.active == "adapted" and s.embedding_ready, timeout=60_000)

    result = panel.controller.last_result
    assert result.steps == 3 and not result.cancelled and result.config.distill == "infosam"
    assert sorted({p.step for p in seen}) == [1, 2, 3] and panel.progress_bar.value() == 100
    assert panel.plot.point_count() == 3 * 3  # seg, L_r and L_d per step
    assert studio.adapted_radio.isChecked() and studio.adapted_radio.isEnabled()
    run_dir = panel.controller.last_adapter_path.parent
    assert run_dir.parent == s.project.adapters_dir
    meta = json.loads((run_dir / "adapter.json").read_text())
    assert panel.controller.last_adapter_path == run_dir / "adapter.json" and (run_dir / meta["tensors_file"]).is_file()
    assert (run_dir / "history.json").is_file()

    # the preview was recomputed with the adapted model for the same prompts
    prompts = c.current_prompts()
    adapted_mask = c.mask.copy()
    np.testing.assert_array_equal(adapted_mask, _predict_with(s, "adapted", prompts))
    # the toggle (key C) switches back to the base model for the same prompts, and forth again
    c.toggle_model()
    qtbot.waitUntil(lambda: s.active == "base" and s.embedding_ready, timeout=30_000)
    np.testing.assert_array_equal(c.mask, base_mask)
    assert studio.base_radio.isChecked()
    assert not np.array_equal(base_mask, adapted_mask), "three steps at lr 5e-3 should change the mask"
    studio.adapted_radio.setChecked(True)
    qtbot.waitUntil(lambda: s.active == "adapted" and s.embedding_ready, timeout=30_000)
    np.testing.assert_array_equal(c.mask, adapted_mask)

    # export the adapter, load it back: the same masks for the same prompts
    out = studio.export_panel.export_adapter(tmp_path / "exported" / "my_adapter.safetensors")
    assert out.is_file() and out.with_suffix(".json").is_file()
    s.set_active("base")
    qtbot.waitUntil(lambda: s.active == "base" and s.embedding_ready, timeout=30_000)
    old_adapted = s.sams["adapted"]
    panel.load_peft_checkpoint(str(out))
    qtbot.waitUntil(
        lambda: s.sams.get("adapted") is not old_adapted and s.active == "adapted" and s.embedding_ready, timeout=60_000
    )
    np.testing.assert_array_equal(c.mask, adapted_mask)


def test_cancel_keeps_adapter_and_continue(studio, qtbot):
    s, panel = studio.session, studio.adapt_panel
    _accept_on(qtbot, studio, [0, 1])
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("decoder"))
    panel.distill_combo.setCurrentIndex(panel.distill_combo.findData("none"))
    panel.epochs_spin.setValue(1000)
    steps = []
    panel.controller.progress.connect(lambda p: steps.append(p.step))
    assert panel.start()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=120_000)
    assert s.tasks.is_running(TaskKind.TRAINING)
    loaded = []
    s.load_model("tiny", on_done=loaded.append)  # the run uses the base model: no swap while it runs
    assert loaded == [False] and "adaptation run uses the current model" in s.last_error
    panel.cancel_btn.click()
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: not s.tasks.is_running(TaskKind.TRAINING), timeout=30_000)
    result = panel.controller.last_result
    assert result.cancelled and result.stop_reason == "cancelled" and 1 <= result.steps < 1000
    qtbot.waitUntil(lambda: s.active == "adapted", timeout=30_000)
    assert "Cancelled" in panel.info_label.text()
    assert panel.controller.last_adapter_path.is_file()  # the adapter so far is saved
    assert panel.continue_btn.isEnabled()

    first = s.sams["adapted"]
    panel.max_steps = 2
    assert panel.start(continue_run=True)
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: s.sams["adapted"] is not first, timeout=30_000)
    cont = panel.controller.last_result
    assert not cont.cancelled and cont.steps == 2 and cont.config.peft == "decoder"
    assert panel.controller.last_adapter_path.parent.name.endswith("-continued")


def test_training_error_keeps_previous_model_and_offers_last_good_adapter(studio, qtbot, monkeypatch):
    import infosam_core.training.trainer as train_module
    from infosam_core.training.config import TrainConfig

    s, c, panel = studio.session, studio.prompts, studio.adapt_panel
    _accept_on(qtbot, studio, [0, 1])
    panel.low_memory_check.setChecked(True)  # 'Low memory' = activation checkpointing in the trainer
    settings = panel.settings()
    assert settings.low_memory
    settings.method, settings.distill, settings.max_steps = "decoder", "none", 4
    real, calls = train_module.structure_loss, {"n": 0}

    def diverging(logits, target, **kw):  # the loss of the third step is NaN
        calls["n"] += 1
        loss = real(logits, target, **kw)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "structure_loss", diverging)
    errors = []
    panel.controller.failed.connect(errors.append)
    assert panel.controller.start(settings)
    _wait_done(qtbot, panel)
    assert errors and "previous model stays in use" in errors[0] and "not finite" in errors[0]
    assert "step 2" in panel.info_label.text() and "Continue" in panel.info_label.text()
    assert not s.has_adapted and s.active == "base"
    assert panel.start_btn.isEnabled()
    c.add_point(10, 10)  # still usable
    assert c.mask is not None
    # the last good adapter (2 steps) is on disk, and Continue trains it further at a 10x lower rate
    saved = panel.controller.last_adapter_path
    assert saved.is_file() and panel.continue_btn.isEnabled()
    monkeypatch.setattr(train_module, "structure_loss", real)
    panel.max_steps = 1
    assert panel.start(continue_run=True)
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: s.active == "adapted", timeout=30_000)
    cont = panel.controller.last_result
    assert cont.steps == 1 and cont.config.lr == pytest.approx(TrainConfig().lr / 10)
    assert cont.config.grad_checkpoint


def test_invalid_learning_rate_is_refused_with_a_message(studio, qtbot):
    s, panel = studio.session, studio.adapt_panel
    _accept_on(qtbot, studio, [0, 1])
    settings = panel.settings()
    settings.method, settings.distill, settings.max_steps, settings.lr = "decoder", "none", 2, float("nan")
    errors = []
    panel.controller.failed.connect(errors.append)
    assert panel.controller.start(settings)
    _wait_done(qtbot, panel)
    assert errors and "lr" in errors[0] and "previous model stays in use" in errors[0]
    assert not s.has_adapted and not panel.continue_btn.isEnabled()


def test_hq_sam_from_the_method_combo_trains_and_predicts(studio, qtbot):
    """HQ-SAM is offered, trains, is swapped in, and its single mask per prompt serves every candidate."""
    s, c, panel = studio.session, studio.prompts, studio.adapt_panel
    _accept_on(qtbot, studio, [0, 1])
    index = panel.method_combo.findData("hq_sam")
    assert index >= 0
    panel.method_combo.setCurrentIndex(index)
    panel.max_steps = 2
    settings = panel.settings()
    assert settings.method == "hq_sam"
    assert panel.controller.start(settings)
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: s.active == "adapted" and s.embedding_ready, timeout=60_000)
    assert panel.controller.last_result.steps == 2 and s.sams["adapted"].peft_state.method == "hq_sam"
    h, w = s.rgb.shape[:2]
    c.add_point(w / 2, h / 2, positive=True)  # one click: multimask candidates
    qtbot.waitUntil(lambda: c.mask is not None, timeout=30_000)
    for _ in range(3):  # cycling the candidates of a one-mask model stays on its mask, without an error
        c.next_candidate()
        assert c.mask is not None


def test_method_choices_are_the_peft_registry_in_order():
    """The Adapt panel's methods are read from the PEFT registry: its order (the paper's setup first), its titles;
    the distillers from theirs (the recommended one first, then none)."""
    from infosam_app.state.method_choices import default_distiller, distill_choices, distill_label, method_choices
    from infosam_core.distill.registry import DISTILLERS
    from infosam_core.peft.registry import PEFT_METHODS

    offered = method_choices()
    assert [c.name for c in offered] == list(PEFT_METHODS)
    assert [c.text for c in offered][:3] == ["Adapter", "LoRA", "BitFit"]
    assert all(c.tooltip == PEFT_METHODS[c.name].description for c in offered)
    distillers = [c.name for c in distill_choices()]
    assert distillers[:2] == ["infosam", "none"] and sorted(distillers[2:]) == sorted(set(DISTILLERS) - {"infosam"})
    assert distill_choices()[0].text == "InfoSAM (recommended)"  # a model without a measured default
    tiny = {c.name: c.text for c in distill_choices("tiny")}
    assert tiny["infosam"] == "InfoSAM" and tiny["none"] == "None (plain PEFT) (recommended)"
    assert [c.name for c in distill_choices("tiny")] == distillers  # the order stays: only the mark moves
    assert (default_distiller("tiny"), default_distiller("vit_b"), default_distiller()) == (
        "none",
        "infosam",
        "infosam",
    )
    assert (distill_label("infosam"), distill_label("vid"), distill_label("none")) == (" + InfoSAM", " + vid", "")


@pytest.fixture
def head_only_registered():
    """A PEFT method registered at run time (as a plug-in would), removed again after the test."""
    from helpers import head_only_method

    from infosam_core.peft.registry import register_peft_method, unregister_peft_method

    method = register_peft_method(head_only_method())
    yield method
    unregister_peft_method(method.name)


def test_a_peft_method_registered_at_run_time_is_offered_without_an_app_change(head_only_registered, studio):
    from infosam_app.state.method_choices import method_choices

    assert ("Head only (test)", "test_head_only") in [(c.text, c.name) for c in method_choices()]
    combo = studio.adapt_panel.method_combo
    index = combo.findData("test_head_only")
    assert index == combo.count() - 1 and combo.itemText(index) == "Head only (test)"
    combo.setCurrentIndex(index)
    assert studio.adapt_panel.settings().method == "test_head_only"


@pytest.mark.gui
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_app_adapts_on_the_gpu_and_predicts_with_the_result(studio, qtbot):
    """'Adapt to my data' with the app's own settings (device auto): the run uses the GPU, the adapted model is
    swapped in and the canvas's prompts are predicted with it."""
    s, c, panel = studio.session, studio.prompts, studio.adapt_panel
    _accept_on(qtbot, studio, [0, 1])
    panel.max_steps = 2
    assert panel.controller.start(panel.settings())
    _wait_done(qtbot, panel)
    qtbot.waitUntil(lambda: s.active == "adapted" and s.embedding_ready, timeout=60_000)
    result = panel.controller.last_result
    assert result.steps == 2 and result.stop_reason in ("completed", "max_steps")
    assert s.infos["adapted"].device.startswith("GPU")
    h, w = s.rgb.shape[:2]
    c.set_box(2, 2, w - 3, h - 3)
    qtbot.waitUntil(lambda: c.mask is not None, timeout=30_000)
