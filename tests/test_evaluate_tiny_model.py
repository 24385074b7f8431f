"""The model card's evaluation script (scripts/evaluate_tiny_model.py): its per-kind breakdown of box mIoU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_tiny_model.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("evaluate_tiny_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_object_kinds_counts_pieces_with_8_connectivity_and_fill_of_the_inclusive_box(script):
    mask = np.zeros((40, 40), dtype=bool)
    mask[0:10, 0:10] = True  # 100 px
    mask[10:20, 10:20] = True  # touches the first square at one corner only: 8-connected to it
    kinds = script.object_kinds(mask)
    assert kinds == {"area": 200, "pieces": 1, "box_fill": pytest.approx(200 / 400)}

    mask[10:20, 10:20] = False
    mask[30:35, 30:40] = True  # 50 px, well apart
    kinds = script.object_kinds(mask)
    assert kinds["pieces"] == 2
    assert kinds["box_fill"] == pytest.approx(150 / (40 * 35))


def test_box_by_kind_splits_the_objects_and_leaves_out_empty_groups(script):
    ious = [0.9, 0.5, 0.7]
    kinds = [
        {"area": 100, "pieces": 1, "box_fill": 0.8},
        {"area": 2500, "pieces": 3, "box_fill": 0.2},
        {"area": 399, "pieces": 1, "box_fill": 0.4},
    ]
    groups = script.box_by_kind(ious, kinds)
    assert groups["area_lt_400"]["objects"] == 2
    assert groups["area_lt_400"]["box_miou"] == pytest.approx(0.8)
    assert groups["area_ge_2000"]["box_miou"] == pytest.approx(0.5)
    assert "area_400_2000" not in groups
    assert groups["several_pieces"]["objects"] == 1
    assert groups["fill_ge_0.4"]["box_miou"] == pytest.approx(0.8)  # 0.4 itself counts as >= 40 %
    assert groups["fill_lt_0.4"]["box_miou"] == pytest.approx(0.5)


def test_evaluate_set_breakdown_is_consistent_with_the_overall_figure(script, tiny_sam):
    from infosam_core.data.reference_sets import synthetic_heldout
    from infosam_core.inference.predictor import Predictor

    result = script.evaluate_set(Predictor(tiny_sam, cache_size=2), synthetic_heldout(2), min_area=100)
    assert result["objects"] > 0
    assert 0.0 <= result["box_best_of_3_miou"] <= 1.0
    assert 0.0 <= result["point_iou_head_error"] <= 1.0
    assert result["point_miou"] <= result["point_best_of_3_miou"]
    assert result["box_miou_by_logit_threshold"]["0"] == pytest.approx(result["box_miou"])  # SAM's threshold
    assert set(result["box_miou_by_logit_threshold"]) == {"-1", "0", "1"}
    # per object IoU <= precision and IoU <= recall, so the same holds for the means
    assert result["box_miou"] <= result["box_precision"] <= 1.0
    assert result["box_miou"] <= result["box_recall"] <= 1.0
    groups = result["box_by_kind"]
    for partition in (
        ("area_lt_400", "area_400_2000", "area_ge_2000"),
        ("one_piece", "several_pieces"),
        ("fill_lt_0.4", "fill_ge_0.4"),
    ):
        present = [groups[name] for name in partition if name in groups]
        assert sum(g["objects"] for g in present) == result["objects"]
        weighted = sum(g["objects"] * g["box_miou"] for g in present) / result["objects"]
        assert weighted == pytest.approx(result["box_miou"])


def test_model_card_table_shows_the_figures_in_results_json():
    """The card's table is edited by hand; it must match what the script wrote (``--write-card``)."""
    import json

    models = SCRIPT.parents[1] / "resources" / "models"
    results = json.loads((models / "sam_tiny.results.json").read_text())
    rows = {
        "held-out synthetic scenes": results["synthetic_heldout"],
        "same, all objects": results["synthetic_heldout_all_sizes"],
        "scikit-image `coins`": results["coins"],
    }
    card = (models / "MODEL_CARD.md").read_text()
    for start, figures in rows.items():
        line = next(row for row in card.splitlines() if row.startswith(f"| {start}"))
        cells = [cell.replace("*", "").strip() for cell in line.strip("|").split("|")]
        assert int(cells[1]) == figures["objects"], line
        assert float(cells[2]) == round(figures["box_miou"], 3), line
        assert float(cells[3]) == round(figures["point_miou"], 3), line


def test_choose_checkpoint_takes_the_best_box_miou_and_breaks_a_tie_on_the_point_miou(script):
    figures = {
        "last": {"box_miou": 0.848, "point_miou": 0.780},
        "ema": {"box_miou": 0.849, "point_miou": 0.770},
    }
    assert script.choose_checkpoint(figures) == "ema"
    figures["last"]["box_miou"] = 0.849
    assert script.choose_checkpoint(figures) == "last"
    with pytest.raises(ValueError):
        script.choose_checkpoint({})


def test_validation_scenes_are_not_the_held_out_scenes():
    """Checkpoints are chosen on the validation scenes so that the reported held-out figure is not."""
    from infosam_core.data.reference_sets import HELDOUT_SEED, VALIDATION_SEED, synthetic_heldout, synthetic_validation

    assert VALIDATION_SEED != HELDOUT_SEED
    validation, heldout = synthetic_validation(2), synthetic_heldout(2)
    assert np.array_equal(validation[0].image, synthetic_validation(1)[0].image)  # reproducible
    for a in validation:
        for b in heldout:
            assert not np.array_equal(a.image, b.image)


def test_validation_choice_records_each_candidate_and_the_chosen_weights(script, tmp_path, tiny_sam):
    import copy

    import torch

    from infosam_core.models.checkpoints import save_sam_weights
    from infosam_core.models.fingerprint import model_fingerprint
    from infosam_core.models.registry import load_sam

    sam = copy.deepcopy(tiny_sam)  # the fixture is shared by the whole session
    first = save_sam_weights(sam, tmp_path / "first.safetensors").resolve()
    with torch.no_grad():  # a second, different candidate: the mask decoder's hypernetwork scaled down
        for parameter in sam.mask_decoder.output_hypernetworks_mlps.parameters():
            parameter.mul_(0.5)
    second = save_sam_weights(sam, tmp_path / "second.safetensors").resolve()
    choice = script.validation_choice([first, second], images=2, min_area=100)  # scene 0: only small objects
    figures = choice["candidates"]
    assert set(figures) == {str(first), str(second)}
    assert figures[str(first)]["fingerprint"] != figures[str(second)]["fingerprint"]
    assert figures[str(first)]["objects"] == figures[str(second)]["objects"] > 0
    assert choice["chosen"] == script.choose_checkpoint(figures)
    assert model_fingerprint(load_sam("tiny", Path(choice["chosen"]))) == figures[choice["chosen"]]["fingerprint"]
