"""``Predictor.predict_low_res_torch(keep_prompts=...)``: the masks of the kept prompts are those of a full pass
(stock decoder, which skips the others' upscaling, and the family backend's path alike)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infosam_core.inference.predictor import Predictor


@pytest.mark.parametrize("interactive", [True, False])
def test_kept_prompts_masks_equal_the_full_pass(tiny_sam, interactive):
    predictor = Predictor(tiny_sam, precision="float32", use_interactive_decoder=interactive)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    predictor.set_image(image)
    points = torch.as_tensor(predictor.transform.apply_coords(np.mgrid[8:64:16, 8:64:16].reshape(2, -1).T, (64, 64)))
    coords, labels = points[:, None, :].float(), torch.ones(len(points), 1, dtype=torch.int)
    full, iou = predictor.predict_low_res_torch(coords, labels)
    rows = iou[:, 0] > iou[:, 0].median()
    kept, kept_iou = predictor.predict_low_res_torch(coords, labels, keep_prompts=lambda i: i[:, 0] > i[:, 0].median())
    assert 0 < int(rows.sum()) < len(rows) and kept.shape[0] == int(rows.sum())
    torch.testing.assert_close(kept_iou, iou)
    torch.testing.assert_close(kept, full[rows], rtol=1e-5, atol=1e-5)
