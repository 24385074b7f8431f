"""Segment all in the studio, headless: proposals, accept all, reject, refine, undo, propose on open, suggest."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_core.annotation.project import Project
from infosam_core.inference.automatic import AutomaticConfig

pytestmark = pytest.mark.gui

LOOSE = AutomaticConfig(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5, max_mask_fraction=0.5)


def _propose(qtbot, proposals):
    assert proposals.segment_all()
    qtbot.waitUntil(lambda: not proposals.running, timeout=60_000)
    assert proposals.proposals, "the model proposed nothing on the synthetic image"


@pytest.mark.slow
def test_segment_all_reject_accept_all_undo_and_refine(studio, qtbot, tmp_path, monkeypatch):
    s, p = studio.session, studio.proposals
    monkeypatch.setattr(p, "config", lambda: LOOSE)  # small grid and loose filters: fast, several proposals
    _propose(qtbot, p)
    layer = s.layers.proposals
    assert layer is not None and layer.name == "proposals" and layer.data.shape == s.rgb.shape[:2]
    n = len(p.proposals)
    assert set(np.unique(layer.data)) - {0} <= set(range(1, n + 1))

    # reject one with a click on it
    target = p.proposals[0]
    rows, cols = np.nonzero(layer.data == 1)
    assert p.index_at(cols[0], rows[0]) == 0
    assert p.reject(p.index_at(cols[0], rows[0]))
    assert len(p.proposals) == n - 1 and all(q is not target for q in p.proposals)

    # accept all: objects like any other, saved at once
    objects = p.accept_all()
    assert objects and not p.proposals and not layer.data.any()
    counts = Project.open(tmp_path / "proj").object_counts()
    assert counts[s.key] == len(objects)
    assert s.layers.objects.data.max() == max(o.id for o in objects)
    assert p.objects.session.project.annotations(s.key).objects[objects[0].id].prompts.points

    # one undo removes them all (and is saved)
    studio.prompts.undo()
    assert Project.open(tmp_path / "proj").object_counts().get(s.key, 0) == 0
    assert not s.layers.objects.data.any()

    # refine one: its point becomes the prompt, more prompts and Enter make it an object
    _propose(qtbot, p)
    n = len(p.proposals)
    assert p.refine(0)
    assert len(p.proposals) == n - 1
    prompts = studio.prompts.current_prompts()
    assert len(prompts.points) == 1 and prompts.points[0][2] == 1
    h, w = s.rgb.shape[:2]
    studio.prompts.add_point(w - 2, h - 2, positive=False)  # a correction: background in a corner
    qtbot.waitUntil(lambda: studio.prompts.mask is not None, timeout=30_000)
    obj = studio.prompts.accept()
    assert obj is not None and obj.prompts.points[1][2] == 0
    assert Project.open(tmp_path / "proj").object_counts()[s.key] == 1


@pytest.mark.slow
def test_propose_on_open_and_suggest_next(studio, qtbot, monkeypatch):
    s, p = studio.session, studio.proposals
    monkeypatch.setattr(p, "config", lambda: LOOSE)
    studio.proposals_panel.on_open_box.setChecked(True)  # the shown image has no objects: proposes now
    qtbot.waitUntil(lambda: p.key == s.key and not p.running, timeout=60_000)
    s.show_image(1)
    qtbot.waitUntil(lambda: s.index == 1 and p.key == s.key and not p.running, timeout=60_000)
    assert p.proposals

    assert p.suggest_next()
    qtbot.waitUntil(lambda: p.suggest_task is None, timeout=60_000)
    ranked = p.suggested()
    assert len(ranked) == 3 and all(0 <= u <= 1 for _, u in ranked)
    assert [u for _, u in ranked] == sorted((u for _, u in ranked), reverse=True)
    rows = [studio.image_panel.count_text(i) for i in range(3)]
    assert sum("★1" in r for r in rows) == 1 and all("★" in r for r in rows)
    assert p.show_suggested()
    qtbot.waitUntil(lambda: s.entry.name == ranked[0][0], timeout=30_000)
