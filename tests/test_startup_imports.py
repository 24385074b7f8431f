"""Start-up cost: a command imports no torchvision (its ``ops`` import ``torch._dynamo``, 2.3 s of a 7.7 s
``infosam predict`` on a 2-core VM), while the resize stays segment-anything's bit for bit and segment-anything's
package names keep working (``infosam_core.segment_anything_import``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide as ReferenceResize

from infosam_core.models.transforms import ResizeLongestSide

REPO = Path(__file__).resolve().parents[1]
COINS = REPO / "resources" / "samples" / "coins.png"


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


@pytest.mark.parametrize("shape", [(303, 384, 3), (384, 303, 3), (50, 77, 3), (1024, 1024, 3), (7, 1, 3)])
def test_resize_is_segment_anythings_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    ours, reference = ResizeLongestSide(256), ReferenceResize(256)
    resized = ours.apply_image(image)
    assert resized.flags.writeable and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, reference.apply_image(image))
    coords = rng.uniform(0, max(shape[:2]), (5, 3, 2))
    np.testing.assert_array_equal(ours.apply_coords(coords, shape[:2]), reference.apply_coords(coords, shape[:2]))
    boxes = rng.uniform(0, max(shape[:2]), (4, 4))
    np.testing.assert_array_equal(ours.apply_boxes(boxes, shape[:2]), reference.apply_boxes(boxes, shape[:2]))
    boxes_t = torch.as_tensor(boxes)
    torch.testing.assert_close(
        ours.apply_boxes_torch(boxes_t, shape[:2]), reference.apply_boxes_torch(boxes_t, shape[:2]), rtol=0, atol=0
    )
    assert ours.apply_coords(coords, shape[:2]) is not coords


def test_a_very_thin_image_keeps_one_pixel():
    # segment-anything's rounds 1 x 5000 to 0 x 256 ("height and width must be > 0")
    assert ReferenceResize.get_preprocess_shape(1, 5000, 256) == (0, 256)
    assert ResizeLongestSide.get_preprocess_shape(1, 5000, 256) == (1, 256)
    assert ResizeLongestSide(256).apply_image(np.zeros((1, 5000, 3), np.uint8)).shape == (1, 256, 3)


def test_predict_and_refusals_import_no_torchvision(tmp_path):
    code = f"""
import sys
from infosam_core.cli import main
assert main(["predict", {str(COINS)!r}, "--point", "100,100", "--out", "mask.png", "--precision", "float32"]) == 0
try:
    code = main(["info", "--checkpoint", "missing.pth"])
except SystemExit as stop:
    code = stop.code
assert code == 2, code
print(sorted(m for m in sys.modules if m.split(".")[0] == "torchvision" or m.startswith("torch._dynamo")))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert (tmp_path / "mask.png").stat().st_size > 0


def test_segment_anythings_package_names_still_work_after_the_core(tmp_path):
    code = """
import infosam_core.inference.predictor  # registers segment_anything with its __init__ deferred
import sys
import threading
import segment_anything
assert "torchvision" not in sys.modules
found = []
threads = [threading.Thread(target=lambda: found.append(segment_anything.SamPredictor)) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.predictor import SamPredictor as Defined
import segment_anything.modeling
assert SamPredictor is Defined and segment_anything.SamPredictor is Defined and found == [Defined] * 4
assert callable(segment_anything.build_sam) and set(sam_model_registry) >= {"vit_b", "vit_l", "vit_h", "default"}
assert segment_anything.SamAutomaticMaskGenerator.__module__ == "segment_anything.automatic_mask_generator"
print("ok")
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
