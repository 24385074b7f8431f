"""Prompt sampling from masks (training / evaluation protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_core.data.prompt_sampling import (
    box_from_mask,
    eval_prompt,
    point_from_mask,
    points5_from_mask,
    points_from_mask,
    training_prompt,
)


def _rect_mask(shape=(50, 60), y0=10, y1=30, x0=20, x1=45) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


def test_tight_box_is_inclusive_xyxy():
    box = box_from_mask(_rect_mask())
    assert box.shape == (4,) and box.dtype == np.float64
    np.testing.assert_array_equal(box, [20, 10, 45, 30])


def test_box_of_single_pixel():
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[2, 3] = 255
    np.testing.assert_array_equal(box_from_mask(mask, rng=np.random.default_rng(0)), [3, 2, 3, 2])


def test_jitter_is_bounded_and_seeded():
    mask = _rect_mask()
    tight = box_from_mask(mask)
    boxes = np.array([box_from_mask(mask, np.random.default_rng(s), jitter=5) for s in range(200)])
    delta = boxes - tight
    assert np.abs(delta).max() == 5 and (delta != 0).any()
    assert set(np.unique(delta)) <= set(range(-5, 6))
    np.testing.assert_array_equal(box_from_mask(mask, 7), box_from_mask(mask, 7))


def test_jitter_capped_by_half_the_box_size():
    mask = _rect_mask(y0=10, y1=13, x0=20, x1=40)  # h = 3 -> at most 1 px per side
    tight = box_from_mask(mask)
    for s in range(100):
        box = box_from_mask(mask, np.random.default_rng(s), jitter=5)
        assert np.abs(box - tight).max() <= 1
        assert box[2] >= box[0] and box[3] >= box[1]


def test_jitter_is_clipped_to_the_image():
    mask = np.ones((20, 30), dtype=bool)
    for s in range(50):
        box = box_from_mask(mask, np.random.default_rng(s), jitter=5)
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= 29 and box[3] <= 19


def test_point_is_foreground():
    mask = _rect_mask()
    for s in range(30):
        coords, labels = point_from_mask(mask, np.random.default_rng(s))
        assert coords.shape == (1, 2) and coords.dtype == np.float64
        assert labels.tolist() == [1]
        x, y = coords[0].astype(int)
        assert mask[y, x]


def test_points5():
    mask = _rect_mask()
    coords, labels = points5_from_mask(mask, np.random.default_rng(0))
    assert coords.shape == (5, 2) and labels.tolist() == [1, 1, 0, 0, 0]
    inside = mask[coords[:, 1].astype(int), coords[:, 0].astype(int)]
    assert inside.tolist() == [True, True, False, False, False]
    assert len({tuple(c) for c in coords[:2]}) == 2  # distinct


def test_points_when_no_background():
    coords, labels = points_from_mask(np.ones((4, 4), dtype=bool), 0, n_fg=2, n_bg=3)
    assert labels.tolist() == [1, 1] and coords.shape == (2, 2)


def test_points_with_tiny_mask_repeat():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = True
    coords, _ = points_from_mask(mask, 0, n_fg=2, n_bg=0)
    np.testing.assert_array_equal(coords, [[1, 1], [1, 1]])


@pytest.mark.parametrize(
    "fn", [lambda m: box_from_mask(m), lambda m: point_from_mask(m, 0), lambda m: points5_from_mask(m, 0)]
)
def test_empty_mask_raises(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((8, 8), dtype=bool))


def test_non_2d_mask_raises():
    with pytest.raises(ValueError, match="2-D"):
        box_from_mask(np.ones((2, 8, 8), dtype=bool))


def test_training_prompt_mixes_boxes_and_points():
    rng = np.random.default_rng(42)
    prompts = [training_prompt(_rect_mask(), rng) for _ in range(200)]
    n_box = sum("box" in p for p in prompts)
    assert 70 < n_box < 130
    point = next(p for p in prompts if "point_coords" in p)
    assert set(point) == {"point_coords", "point_labels"}


def test_eval_prompt_protocols_and_seeding():
    mask = _rect_mask()
    assert set(eval_prompt(mask, 0, "box")) == {"box"}
    np.testing.assert_array_equal(eval_prompt(mask, 3, "box")["box"], eval_prompt(mask, 3, "box")["box"])
    assert eval_prompt(mask, 0, "points5")["point_labels"].tolist() == [1, 1, 0, 0, 0]
    assert eval_prompt(mask, 0, "point")["point_coords"].shape == (1, 2)
    with pytest.raises(ValueError, match="protocol"):
        eval_prompt(mask, 0, "scribble")


def test_prompts_feed_the_predictor(random_tiny_sam):
    from infosam_core.inference.predictor import Predictor

    mask = _rect_mask()
    predictor = Predictor(random_tiny_sam)
    predictor.set_image(np.zeros((50, 60, 3), dtype=np.uint8))
    for protocol in ("box", "point", "points5"):
        masks, scores, _ = predictor.predict(**eval_prompt(mask, 0, protocol), multimask_output=False)
        assert masks.shape == (1, 50, 60) and scores.shape == (1,)
