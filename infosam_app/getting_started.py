"""The first-run "Getting started" hint at the top of the Annotate tab: the loop in five lines with the real
keys (read from :data:`infosam_app.shortcuts.SHORTCUTS`), dismissed with "Got it" and not shown again.

Whether it was dismissed is remembered per user in ``app.json`` beside the projects folder
(:func:`infosam_core.annotation.project.default_projects_dir`'s parent; ``XDG_DATA_HOME`` on Linux), never in
a project.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from infosam_app.shortcuts import SHORTCUTS
from infosam_core.annotation.project import default_projects_dir
from infosam_core.io.atomic import write_json_atomic

APP_STATE_NAME = "app.json"


def _key(action: str) -> str:
    return SHORTCUTS[action][0][0]


def getting_started_steps() -> list[str]:
    """The loop, one line per step, with the keys bound in the app."""
    return [
        "Add images: <b>Images…</b> or <b>Folder…</b> (a project is made for you; everything is saved at once).",
        f"Click an object: a green point, the cyan mask follows. <b>{_key('toggle_label')}</b> toggles the next "
        f"point positive / negative (red), <b>{_key('toggle_mode')}</b> switches to a box, "
        f"<b>{_key('next_candidate')}</b> shows SAM's other masks.",
        f"<b>{_key('accept')}</b> accepts the mask as an object; <b>{_key('clear')}</b> clears the prompts; "
        f"<b>{_key('undo')}</b> undoes; <b>{_key('refine')}</b> refines and <b>{_key('delete')}</b> deletes the "
        "object under the mouse.",
        f"<b>{_key('next_image')}</b> / <b>{_key('previous_image')}</b>: next / previous image. "
        "<b>Segment all</b> proposes every object of an image.",
        f"After a few objects: <b>Adapt</b> tab → <b>Adapt to my data</b>; <b>{_key('toggle_model')}</b> compares "
        "Base and Adapted on the same prompts.",
    ]


def app_state_path() -> Path:
    return default_projects_dir().parent / APP_STATE_NAME


def hint_dismissed() -> bool:
    try:
        state = json.loads(app_state_path().read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("getting_started_dismissed") is True


def remember_dismissed() -> None:
    path = app_state_path()
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):
        state = {}
    state["getting_started_dismissed"] = True
    with contextlib.suppress(OSError):  # a read-only home: the hint comes back next time, nothing worse
        write_json_atomic(path, state)


class GettingStarted(QFrame):
    """The hint; hidden from the start when it was dismissed before."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("getting_started")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        steps = "".join(f"<li>{s}</li>" for s in getting_started_steps())
        self.text = QLabel(f"<b>Getting started</b><ol style='margin-left:-20px'>{steps}</ol>")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.text)
        row = QHBoxLayout()
        row.addStretch(1)
        self.dismiss_btn = QPushButton("Got it")
        self.dismiss_btn.setToolTip("Hide this hint (the keys stay listed at the bottom of this tab)")
        self.dismiss_btn.clicked.connect(self.dismiss)
        row.addWidget(self.dismiss_btn)
        lay.addLayout(row)
        self.setVisible(not hint_dismissed())

    def dismiss(self) -> None:
        self.hide()
        remember_dismissed()
