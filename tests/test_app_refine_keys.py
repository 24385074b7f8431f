"""R refines only the accepted object under the mouse (never one over a proposal or the labels layer's
selection); Escape ends a refine and its status text; undo texts say what was undone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_core.annotation.records import ObjectPrompts
from infosam_core.inference.automatic import Proposal

pytestmark = pytest.mark.gui


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_r_over_a_proposal_touches_no_object_and_escape_clears_refining(studio, qtbot):
    s, c, p = studio.session, studio.prompts, studio.proposals
    h, w = s.rgb.shape[:2]
    obj = c.objects.accept(_disk((h, w), 20, 20, 8), ObjectPrompts(points=[[20.0, 20.0, 1]]))
    assert obj is not None and obj.id == 1
    s.layers.objects.selected_label = 1  # what R used to fall back to
    proposal_mask = _disk((h, w), h - 20, w - 20, 10)
    p.set_proposals(
        [Proposal(mask=proposal_mask, predicted_iou=0.9, stability=0.9, point=(w - 20, h - 20), box=(0, 0, 1, 1))],
        s.key,
    )
    before = s.project.annotations(s.key).labels.copy()

    s.viewer.cursor.position = (h - 20, w - 20)  # over the proposal, not over object 1
    assert c.object_under_cursor() is None and c.proposal_under_cursor()
    assert not c.refine()
    assert c.refine_id is None and c.prompt_count == 0
    assert "proposal" in studio.status_label.text()
    np.testing.assert_array_equal(s.project.annotations(s.key).labels, before)

    s.viewer.cursor.position = (h // 2, 5)  # the background: nothing either
    assert not c.refine() and c.refine_id is None

    s.viewer.cursor.position = (20, 20)  # over object 1: R refines it
    assert c.refine()
    assert c.refine_id == 1 and "Refining object 1" in studio.status_label.text()
    assert "refining object 1" in studio.prompt_state_label.text()
    c.clear()  # Escape
    assert c.refine_id is None
    assert "Refining" not in studio.status_label.text() and "refining" not in studio.prompt_state_label.text()
    np.testing.assert_array_equal(s.project.annotations(s.key).labels, before)


def test_undo_texts_and_plurals(studio, qtbot):
    s, c, p = studio.session, studio.prompts, studio.proposals
    h, w = s.rgb.shape[:2]
    masks = [_disk((h, w), 15, 15, 6), _disk((h, w), 15, 45, 6), _disk((h, w), 45, 15, 6)]
    p.set_proposals(
        [Proposal(mask=m, predicted_iou=0.9, stability=0.9, point=(15, 15), box=(0, 0, 1, 1)) for m in masks[:1]],
        s.key,
    )
    assert "1 proposal:" in studio.proposals_panel.state_label.text()
    added = p.accept_all()
    assert len(added) == 1 and "Accepted 1 proposal as" in studio.status_label.text()
    assert studio.image_panel.count_text(s.index).endswith("—  1 object")
    p.set_proposals(
        [Proposal(mask=m, predicted_iou=0.9, stability=0.9, point=(15, 15), box=(0, 0, 1, 1)) for m in masks[1:]],
        s.key,
    )
    ids = [o.id for o in p.accept_all()]
    c.undo()
    text = studio.status_label.text()
    assert "add_many" not in text and f"2 accepted proposals (objects {ids[0]}–{ids[1]})" in text
    c.undo()
    assert "Undone: the 1 accepted proposal (object 1)." in studio.status_label.text()
