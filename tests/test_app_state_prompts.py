"""The prompt state of the object being drawn (infosam_app.state.prompts), without Qt: history and undo,
point/box mode, next label, candidate choice and cycling, decoder-output cache, what an accept saves."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_app.state.prompts import (
    BEST_CANDIDATE,
    PromptState,
    candidate_order,
    candidate_text,
    default_candidate,
    prompts_from_layers,
)
from infosam_core.annotation.records import ObjectPrompts


def _point(x: float, y: float, label: int = 1) -> list[float]:
    return [float(x), float(y), label]


def test_layers_to_prompts_swaps_axes_drops_outside_points_and_clips_the_box():
    points_rc = np.array([[2.0, 3.0], [50.0, 1.0], [4.0, 6.0]])  # (row, col); the second lies below the image
    box_rc = np.array([[-5.0, 1.0], [-5.0, 30.0], [8.0, 30.0], [8.0, 1.0]])
    prompts = prompts_from_layers(points_rc, np.array([1, 1, 0]), box_rc, (10, 20), candidate=2)
    assert prompts.points == [[3.0, 2.0, 1], [6.0, 4.0, 0]]
    assert prompts.box == [1.0, 0.0, 19.0, 8.0]  # x0, y0, x1, y1 clipped to the 10 x 20 image
    assert prompts.candidate == 2
    assert prompts_from_layers(points_rc, None, None, None).points[1] == [1.0, 50.0, 1]  # no shape: all kept
    flat = np.array([[3.0, 1.0], [3.0, 9.0]])  # a box with no height is no box
    assert prompts_from_layers(np.empty((0, 2)), None, flat, (10, 20)).box is None


def test_default_candidate_and_cycling_order():
    one_point = ObjectPrompts(points=[_point(1, 1)])
    several = ObjectPrompts(points=[_point(1, 1), _point(2, 2, 0)])
    boxed = ObjectPrompts(points=[_point(1, 1)], box=[0, 0, 4, 4])
    assert default_candidate(one_point) == BEST_CANDIDATE
    assert default_candidate(several) is None and default_candidate(boxed) is None
    assert candidate_order(one_point) == [0, 1, 2] and candidate_order(several) == [None, 0, 1, 2]
    assert candidate_text(None) == "single output" and candidate_text(0) == "1"


def test_history_records_changes_once_and_undo_walks_back():
    state = PromptState()
    assert state.undo() is None  # nothing to undo: the caller undoes an object change instead
    first = ObjectPrompts(points=[_point(1, 1)])
    second = ObjectPrompts(points=[_point(1, 1), _point(5, 5, 0)])
    state.prompts_changed(first)
    state.prompts_changed(ObjectPrompts(points=[_point(1, 1)], candidate=1))  # same prompts: not recorded again
    state.prompts_changed(second)
    state.prompts_changed(ObjectPrompts(points=[_point(7, 7)]), record=False)
    assert len(state.history) == 2
    assert state.undo().points == first.points
    assert state.auto_candidate
    assert state.undo() == ObjectPrompts()  # back to no prompt
    assert state.undo() is None


def test_candidate_follows_prompts_unless_chosen_or_kept():
    state = PromptState()
    one = ObjectPrompts(points=[_point(1, 1)])
    state.prompts_changed(one)
    assert state.candidate == BEST_CANDIDATE and state.output_kind(one) == "multi"
    masks = np.stack([np.full((2, 2), i) for i in range(3)])  # mask k is filled with k
    picked = state.pick_mask(masks, np.array([0.1, 0.9, 0.5]))
    assert state.candidate == 1 and (picked == 1).all()  # the best-scoring one, resolved with the scores
    assert state.next_candidate(one) and state.candidate == 2 and not state.auto_candidate
    assert state.next_candidate(one) and state.candidate == 0  # wraps around
    assert state.output_kind(one) == "multi" and state.candidate == 0  # the user's choice is kept
    two = ObjectPrompts(points=[_point(1, 1), _point(3, 3)])
    state.prompts_changed(two)
    assert state.candidate is None and state.output_kind(two) == "single"
    assert (state.pick_mask(masks, np.zeros(1)) == 0).all()  # the single output
    assert state.next_candidate(two) and state.candidate == 0
    assert not state.next_candidate(ObjectPrompts())  # no prompt: nothing to cycle
    saved = ObjectPrompts(points=[_point(1, 1), _point(3, 3)], candidate=2)
    state.prompts_changed(saved, keep_candidate=True)  # saved prompts brought back (refine)
    assert state.candidate == 2 and not state.auto_candidate
    assert (state.pick_mask(masks, np.ones(3)) == 2).all()
    assert (state.pick_mask(masks[:1], np.ones(1)) == 0).all()  # a one-mask decoder (HQ-SAM)


def test_decoder_outputs_are_cached_per_model_and_embedding():
    state = PromptState()
    masks, scores = np.zeros((1, 2, 2), bool), np.ones(1)
    assert state.cached_output("single", ("m", "e1")) is None
    state.store_output("single", masks, scores)
    assert state.cached_output("single", ("m", "e1"))[0] is masks
    assert state.cached_output("multi", ("m", "e1")) is None
    assert state.cached_output("single", ("m", "e2")) is None  # another image: stale
    state.store_output("single", masks, scores)
    state.prompts_changed(ObjectPrompts(points=[_point(0, 0)]))
    assert state.cached_output("single", ("m", "e2")) is None  # new prompts: decoded again


def test_mode_label_clear_and_pending_accept():
    state = PromptState()
    assert state.mode == "points" and state.toggle_mode() == "box" and state.toggle_mode() == "points"
    state.set_mode("box")
    assert state.mode == "box"
    with pytest.raises(ValueError):
        state.set_mode("lasso")
    assert state.next_label == 1 and state.toggle_label() == 0 and state.toggle_label() == 1
    prompts = ObjectPrompts(points=[_point(1, 1)])
    assert state.pending_accept(prompts) is None  # no preview yet
    state.prompts_changed(prompts)
    state.mask = np.ones((2, 2), bool)
    state.refine_id = 3
    pending = state.pending_accept(prompts)
    assert pending.replace_id == 3 and pending.prompts is prompts and pending.mask is state.mask
    state.clear()
    assert state.refine_id is None and not state.history and state.candidate is None
    assert state.mask is not None  # the preview is the caller's to clear
    state.reset_for_image()
    assert state.mask is None and state.pending_accept(prompts) is None
