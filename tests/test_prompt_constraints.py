"""scripts/prompt_constraints.py measures what it says: a model that ignores prompts scores badly, one that obeys
them scores well, and the bundled tiny model gives figures in range on two held-out scenes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from infosam_core.data.reference_sets import InstanceImage

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prompt_constraints.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("prompt_constraints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _scene() -> InstanceImage:
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 10:30] = 1
    labels[40:60, 35:60] = 2
    return InstanceImage("square", np.zeros((64, 64, 3), np.uint8), labels)


class _Fake:
    """A predictor that either ignores the prompts (the whole image) or obeys them (the object itself)."""

    def __init__(self, scene: InstanceImage, obey: bool):
        self.scene, self.obey = scene, obey

    def set_image(self, image):
        pass

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        labels = self.scene.labels
        if self.obey and box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            mask = np.zeros(labels.shape, bool)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        elif self.obey and point_labels is not None and len(point_labels) > 1:
            x, y = point_coords[0]
            mask = labels == labels[int(y), int(x)]
        else:  # one point: a mask spilling over everything (so that a negative point is tried)
            mask = np.ones(labels.shape, bool)
        n = 3 if multimask_output else 1
        return np.repeat(mask[None], n, 0), np.linspace(0.9, 0.5, n), None


def test_ignoring_and_obeying_models_are_told_apart(script):
    scene = _scene()
    ignoring = script.measure(_Fake(scene, obey=False), [scene], min_area=10).summary()
    obeying = script.measure(_Fake(scene, obey=True), [scene], min_area=10).summary()
    assert ignoring["objects"] == obeying["objects"] == 2 and ignoring["negative_cases"] == 2
    assert ignoring["negative_pixel_kept_rate"] == 1.0 and ignoring["spill_left_mean"] == 1.0
    assert ignoring["box_outside_fraction_mean"] > 0.5 and ignoring["box_spilling_rate"] == 1.0
    assert obeying["negative_pixel_kept_rate"] == 0.0 and obeying["spill_left_mean"] == 0.0
    assert obeying["iou_with_negative_point"] == 1.0
    assert obeying["box_outside_fraction_mean"] == 0.0 and obeying["box_spilling_rate"] == 0.0


@pytest.mark.slow
def test_tiny_model_figures_are_in_range(script, tiny_sam):
    from infosam_core.data.reference_sets import synthetic_heldout
    from infosam_core.inference.predictor import Predictor

    summary = script.measure(Predictor(tiny_sam, cache_size=1), synthetic_heldout(2)).summary()
    assert summary["images"] == 2 and summary["objects"] > 0
    assert 0.0 <= summary["box_outside_fraction_mean"] <= 1.0 and 0.0 <= summary["box_spilling_rate"] <= 1.0
    if summary["negative_cases"]:
        assert 0.0 <= summary["negative_pixel_kept_rate"] <= 1.0 and summary["spill_left_mean"] >= 0.0
