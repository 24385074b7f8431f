"""The first-run "Getting started" hint: shown once, with the keys the app binds, dismissed for good."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from infosam_app.getting_started import GettingStarted, app_state_path, getting_started_steps
from infosam_app.shortcuts import SHORTCUTS

pytestmark = pytest.mark.gui


def test_hint_names_the_real_keys_and_stays_dismissed(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    text = " ".join(getting_started_steps())
    for action in ("accept", "clear", "toggle_label", "toggle_mode", "next_image", "refine", "toggle_model"):
        assert f"<b>{SHORTCUTS[action][0][0]}</b>" in text, action
    hint = GettingStarted()
    qtbot.addWidget(hint)
    assert not hint.isHidden() and "Getting started" in hint.text.text()
    hint.dismiss_btn.click()
    assert hint.isHidden() and app_state_path().is_file()
    assert str(tmp_path / "xdg") in str(app_state_path())  # the user's data folder, not a project
    again = GettingStarted()
    qtbot.addWidget(again)
    assert again.isHidden()
    app_state_path().write_text("{garbage")  # a damaged file: the hint simply shows again
    third = GettingStarted()
    qtbot.addWidget(third)
    assert not third.isHidden()


def test_the_studio_shows_the_hint_on_first_run(studio):
    assert not studio.getting_started.isHidden()
    assert studio.tabs.currentIndex() == 0
