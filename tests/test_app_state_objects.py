"""Object edits, proposal review and "Suggest next" ranking of the app's state, without Qt: the acceptance
rule, the per-image undo stack on a real project, the proposals' bookkeeping and the uncertainty ranking."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imsave

from infosam_app.state import ObjectEdits, ProposalReview, UncertaintyRanking
from infosam_app.state import ranking as ranking_module
from infosam_app.state.object_edits import MIN_OBJECT_PX, NotAcceptable, acceptable, free_pixels
from infosam_app.state.proposal_review import label_at, proposal_prompts
from infosam_app.state.ranking import images_to_rank, rank_images
from infosam_core.annotation.project import Project, ProjectError
from infosam_core.annotation.records import ObjectPrompts
from infosam_core.inference.automatic import AutomaticConfig, Proposal

SHAPE = (20, 20)


def _project(tmp_path, n: int) -> Project:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        imsave(folder / f"img{i}.png", np.full(SHAPE, 40 * i + 10, np.uint8), check_contrast=False)
    project = Project.create(tmp_path / "project")
    project.add_images([folder])
    return project


def _rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[r0:r1, c0:c1] = True
    return mask


P = ObjectPrompts(points=[[1.0, 1.0, 1]])


def test_acceptance_rule_counts_only_free_pixels():
    labels = np.zeros(SHAPE, np.uint16)
    labels[:10] = 1  # object 1 covers the top half
    top, straddling = _rect(0, 10, 0, 10), _rect(5, 15, 0, 10)
    assert free_pixels(None, top) == 100 and free_pixels(labels, top) == 0
    assert free_pixels(labels, top, replace_id=1) == 100  # the refined object frees its own pixels
    assert free_pixels(labels, straddling) == 50
    assert not acceptable(labels, top) and acceptable(labels, top, replace_id=1)
    assert acceptable(labels, straddling)
    assert not acceptable(None, np.zeros(SHAPE, bool))  # empty
    sliver = _rect(9, 11, 0, MIN_OBJECT_PX // 2 + 1)  # a few free pixels only
    assert not acceptable(labels, sliver)


def test_accept_refuse_replace_delete_and_undo_per_image(tmp_path):
    project = _project(tmp_path, 2)
    a, b = (e.key for e in project.images)
    edits = ObjectEdits()
    first = edits.accept(project, a, _rect(0, 10, 0, 10), P, model="tiny")
    assert first.id == 1 and edits.depth(a) == 1 and edits.depth(b) == 0
    with pytest.raises(NotAcceptable, match="0 of the mask's 100 pixels"):
        edits.accept(project, a, _rect(0, 10, 0, 10), P)  # lies on object 1: nothing saved, nothing recorded
    assert set(project.annotations(a).objects) == {1} and edits.depth(a) == 1
    replaced = edits.accept(project, a, _rect(0, 5, 0, 20), P, replace_id=1)
    assert replaced.id == 1 and project.annotations(a).labels[0:5].all() and edits.depth(a) == 2
    other = edits.accept(project, b, _rect(10, 20, 10, 20), P)
    assert other.id == 1 and edits.depth(b) == 1
    assert edits.delete(project, a, 7) is None and edits.depth(a) == 2  # no such object: nothing recorded
    assert edits.delete(project, a, 1).id == 1 and not project.annotations(a).objects
    assert edits.undo(project, a).kind == "delete"
    assert (project.annotations(a).labels == 1).sum() == 5 * 20  # the replaced shape is back
    assert edits.undo(project, a).kind == "replace"
    assert np.array_equal(project.annotations(a).labels == 1, _rect(0, 10, 0, 10))  # the first shape
    assert edits.undo(project, a).kind == "add" and not project.annotations(a).objects
    assert edits.undo(project, a) is None  # nothing left on image a ...
    assert set(project.annotations(b).objects) == {1}  # ... and image b was never touched


def test_category_change_is_saved_recorded_and_undone(tmp_path):
    project = _project(tmp_path, 1)
    key = project.images[0].key
    cell = project.add_category("cell").id
    edits = ObjectEdits()
    obj = edits.accept(project, key, _rect(0, 10, 0, 10), P)
    assert obj.category == 1
    assert edits.set_category(project, key, obj.id, cell).category == cell
    assert Project.open(project.root).annotations(key).objects[obj.id].category == cell  # saved at once
    assert edits.set_category(project, key, obj.id, cell) is None  # no change: nothing recorded
    assert edits.set_category(project, key, 9, cell) is None and edits.depth(key) == 2
    with pytest.raises(ProjectError):
        edits.set_category(project, key, obj.id, 42)  # not a category of the project
    assert edits.depth(key) == 2
    assert edits.undo(project, key).kind == "category"
    assert Project.open(project.root).annotations(key).objects[obj.id].category == 1
    assert np.array_equal(project.annotations(key).labels == obj.id, _rect(0, 10, 0, 10))  # shape untouched


def test_accept_many_skips_covered_masks_and_is_one_undo_step(tmp_path):
    project = _project(tmp_path, 1)
    key = project.images[0].key
    edits = ObjectEdits()
    items = [(_rect(0, 10, 0, 10), P), (_rect(0, 10, 0, 10), P), (_rect(10, 20, 0, 20), P)]
    added, error = edits.accept_many(project, key, items)
    assert error is None and [o.id for o in added] == [1, 2]  # the duplicate is covered by the first: skipped
    assert edits.depth(key) == 1
    action = edits.undo(project, key)
    assert action.kind == "add_many" and action.object_ids == (1, 2) and not project.annotations(key).objects
    added, error = edits.accept_many(project, key, [])
    assert added == [] and error is None and edits.depth(key) == 0


def test_accept_many_stops_at_a_failed_save_and_keeps_what_was_saved(tmp_path, monkeypatch):
    project = _project(tmp_path, 1)
    key = project.images[0].key
    edits = ObjectEdits()
    real_add = project.add_object
    calls = []

    def add_or_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ProjectError("disk full")
        return real_add(*args, **kwargs)

    monkeypatch.setattr(project, "add_object", add_or_fail)
    items = [(_rect(0, 5, 0, 20), P), (_rect(5, 10, 0, 20), P), (_rect(10, 15, 0, 20), P)]
    added, error = edits.accept_many(project, key, items)
    assert [o.id for o in added] == [1] and isinstance(error, ProjectError) and len(calls) == 2
    assert edits.undo(project, key).object_ids == (1,)


def _proposal(mask: np.ndarray, iou: float, point=(1.0, 2.0)) -> Proposal:
    return Proposal(mask=mask, predicted_iou=iou, stability=0.9, point=point, box=(0, 0, 1, 1))


def test_proposal_review_reject_take_and_label_image():
    review = ProposalReview()
    assert review.empty and not review.acceptable_for(None)
    low, high = _proposal(_rect(0, 10, 0, 10), 0.5, (3.0, 4.0)), _proposal(_rect(5, 15, 5, 15), 0.9)
    review.set([low, high], "k")
    assert review.acceptable_for("k") and not review.acceptable_for("other")
    labels = review.label_image(SHAPE)
    assert labels[7, 7] == 2  # the better-scored proposal on top where they overlap
    assert labels[0, 0] == 1 and labels[19, 19] == 0
    assert label_at(labels, 0, 0) == 0 and label_at(labels, 19, 19) is None and label_at(labels, 99, 0) is None
    assert [m.tolist() for m, _ in review.items()] == [low.mask.tolist(), high.mask.tolist()]
    assert proposal_prompts(low) == ObjectPrompts(points=[[3.0, 4.0, 1]])
    assert not review.reject(5) and review.take(-1) is None
    assert review.take(0) is low and review.proposals == [high]
    assert review.reject(0) and review.proposals == [] and not review.empty  # still the proposals of "k"
    review.clear()
    assert review.empty and review.key is None


def test_ranking_orders_by_uncertainty_keeps_ties_in_project_order_and_skips_annotated(tmp_path):
    project = _project(tmp_path, 4)
    keys = [e.key for e in project.images]
    names = [e.name for e in project.images]
    ranking = UncertaintyRanking()
    assert ranking.suggested(None) == [] and ranking.best_index(project) is None
    ranking.update({keys[0]: 0.2, keys[1]: 0.7, keys[2]: 0.7}, counts={})
    assert ranking.suggested(project) == [(names[1], 0.7), (names[2], 0.7), (names[0], 0.2)]
    assert [ranking.rank_of(project, k) for k in keys] == [3, 1, 2, None]
    assert ranking.best_index(project) == 1
    project.add_object(keys[1], _rect(0, 10, 0, 10), P)  # annotated since: no longer suggested
    assert ranking.suggested(project)[0][0] == names[2] and ranking.rank_of(project, keys[1]) is None
    ranking.update({keys[3]: 0.9}, counts=project.object_counts())
    assert keys[1] not in ranking.uncertainty and ranking.best_index(project) == 3
    ranking.record(keys[0], 1.0)
    assert ranking.rank_of(project, keys[0]) == 1


def test_rank_images_scores_each_readable_image_and_skips_missing_files(tmp_path, monkeypatch):
    project = _project(tmp_path, 3)
    keys = [e.key for e in project.images]
    project.add_object(keys[0], _rect(0, 10, 0, 10), P)
    project.image_path(project.images[2]).unlink()  # a moved file: not ranked
    todo = images_to_rank(project, project.object_counts())
    assert [k for k, _ in todo] == [keys[1]]

    class _Result:
        def __init__(self, rgb):
            self.uncertainty = float(rgb.mean()) / 255

    monkeypatch.setattr(ranking_module, "segment_all", lambda predictor, rgb, config: _Result(rgb))
    reports = []
    config = AutomaticConfig()
    scores = rank_images(None, todo, config, report=reports.append)
    assert list(scores) == [keys[1]] and 0 < scores[keys[1]] < 1 and reports == [(1, 1)]
    assert rank_images(None, todo, config, should_stop=lambda: True) == {}  # cancelled before the first
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    skipped: list[str] = []  # an unreadable image is skipped and named; the others are still ranked (issue 30)
    scores = rank_images(None, [(keys[1], broken), (keys[1], todo[0][1])], config, skipped=skipped)
    assert list(scores) == [keys[1]] and len(skipped) == 1 and skipped[0].startswith("broken.png: not a readable")
