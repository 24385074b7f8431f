"""The app's inference options (issue 29): the encoder precision preference and the project's embedding store."""

from __future__ import annotations

import json
import shutil

import pytest

from infosam_app.state import inference_options as options
from infosam_app.state.models import ModelInfo, ModelSet, make_predictor
from infosam_core.annotation.project import Project


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # never the user's real preferences
    return tmp_path / "xdg"


def test_precision_preference_is_remembered_and_checked(user_data):
    assert options.load_precision_preference() == "auto"  # nothing saved yet
    options.save_precision_preference("int8")
    assert options.load_precision_preference() == "int8"
    state = json.loads(options.app_preferences_path().read_text())
    assert state["precision"] == "int8"
    with pytest.raises(ValueError, match="auto, float32, bfloat16, int8"):
        options.save_precision_preference("fp16")
    options.app_preferences_path().write_text('{"precision": "fp64", "getting_started_dismissed": true}')
    assert options.load_precision_preference() == "auto"  # an unknown value is not used
    options.save_precision_preference("float32")  # the other preferences in the file stay
    assert json.loads(options.app_preferences_path().read_text()) == {
        "precision": "float32",
        "getting_started_dismissed": True,
    }


def test_model_set_switches_every_predictor_without_an_encoder_pass(tiny_sam, monkeypatch):
    models = ModelSet()
    base, adapted = make_predictor(tiny_sam, None), make_predictor(tiny_sam, None, precision="float32")
    models.install_base(tiny_sam, base, ModelInfo("tiny", "CPU", "tiny"))
    models.install_adapted(tiny_sam, adapted, ModelInfo("tiny", "CPU", "tiny"))
    base.set_image(__import__("numpy").zeros((32, 32, 3), "uint8"))
    models.mark_embedded("base", "k", base)
    passes = []
    monkeypatch.setattr(base, "_encode", lambda *a: passes.append(a))
    models.set_precision("int8")
    assert base.precision == adapted.precision == "int8" and not passes  # re-embedded later, in the background
    assert not models.is_embedded("base", "k") and base.embedding is None
    assert options.precision_text(base) == "int8 (chosen)"
    with pytest.raises(ValueError, match="auto, float32"):
        models.set_precision("fp16")
    assert base.precision == "int8"


def test_store_setting_is_saved_in_the_project_relative_when_inside(tmp_path):
    project = Project.open_or_create(tmp_path / "proj")
    assert options.store_setting(project) is None and options.open_project_store(project) == (None, None)
    options.remember_store(project, tmp_path / "proj" / "stores" / "e.zarr")
    reopened = Project.open(tmp_path / "proj")
    assert reopened.settings["embedding_store"] == "stores/e.zarr"
    assert options.store_setting(reopened) == reopened.root / "stores" / "e.zarr"
    options.remember_store(reopened, tmp_path / "elsewhere.zarr")
    assert Project.open(tmp_path / "proj").settings["embedding_store"] == str((tmp_path / "elsewhere.zarr").resolve())
    store, problem = options.open_project_store(Project.open(tmp_path / "proj"))  # no such folder
    assert store is None and "elsewhere.zarr" in problem and "infosam embed" in problem
    options.remember_store(reopened, None)
    assert "embedding_store" not in Project.open(tmp_path / "proj").settings


@pytest.mark.gui
def test_studio_answers_stored_images_with_no_encoder_pass(studio, qtbot, tmp_path, tiny_sam, capsys):
    from infosam_core.cli import main

    s, panel = studio.session, studio.model_panel
    assert "precision: float32 (auto" in panel.info_label.text() or "precision: bfloat16 (auto" in (
        panel.info_label.text()
    )
    store = tmp_path / "store.zarr"
    assert main(["embed", str(tmp_path / "images"), "--out", str(store), "--device", "cpu"]) == 0
    assert "3 embeddings added" in capsys.readouterr().out

    passes = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *a: passes.append(1))
    try:

        def show_fresh(index):  # nothing in the app's memory or disk caches
            qtbot.waitUntil(lambda: not s.tasks.running, timeout=30_000)
            s.models.forget_embeddings(clear_caches=True)
            shutil.rmtree(s.embedding_cache_dir, ignore_errors=True)
            s.show_image(index)
            qtbot.waitUntil(lambda: s.index == index and s.embedding_ready, timeout=30_000)

        assert s.set_embedding_store(store)
        assert "3 embeddings" in panel.store_label.text()
        s.prefetch_enabled = False
        for i in (1, 2, 0):
            show_fresh(i)
        assert passes == []  # every image came from the store
        studio.prompts.add_point(50, 40)
        assert studio.prompts.mask is not None

        # the setting is the project's: reopening finds the store; a missing store is one message, no crash
        root = s.project.root
        s.open_project(root)
        assert s.embedding_store is not None and s.embedding_store.path == store
        store.rename(tmp_path / "moved.zarr")
        s.open_project(root)
        assert s.embedding_store is None and "store.zarr" in s.last_error and "infosam embed" in s.last_error
        show_fresh(1)
        assert len(passes) >= 1  # without the store the encoder runs (the count above could have failed)

        # the precision preference: applied to the predictor and shown
        assert not s.set_precision("fp16") and "auto, float32, bfloat16, int8" in s.last_error
        assert s.set_precision("int8")
        qtbot.waitUntil(lambda: s.embedding_ready, timeout=30_000)
        assert s.predictor.precision == "int8" and "precision: int8 (chosen)" in panel.info_label.text()
        assert options.load_precision_preference() == "int8"
        assert panel.precision_combo.currentData() == "int8"
    finally:
        hook.remove()
