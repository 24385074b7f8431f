import math

import pytest
import torch

from infosam_core.cli import main
from infosam_core.models import load_sam
from infosam_core.pretrain import PretrainConfig, Pretrainer, corrective_point, noisy_boxes
from infosam_core.synthetic import SceneConfig


def small_config(tmp_path, **kw):
    return PretrainConfig(
        out_dir=tmp_path, steps=2, images_per_step=1, masks_per_image=2, warmup_steps=1, checkpoint_every=1,
        log_every=1, scene=SceneConfig(max_objects=4), p_corrective=1.0, **kw,
    )


def test_boxes_and_corrective_clicks():
    gen = torch.Generator().manual_seed(0)
    gt = torch.zeros(2, 32, 32, dtype=torch.bool)
    gt[0, 5:10, 8:20] = True
    gt[1, 20:30, 2:6] = True
    boxes = noisy_boxes(gt, gen)
    assert boxes.shape == (2, 4)
    assert abs(boxes[0, 0] - 8) <= 2 and abs(boxes[0, 3] - 9) <= 2  # noise: 10% of the side
    pred = torch.zeros_like(gt)
    pred[0, 5:10, 8:14] = True  # misses the right part of object 0 -> a positive click there
    pred[1] = gt[1]
    pred[1, 0:3, 0:3] = True  # spills over for object 1 -> a negative click on the spill
    coords, labels = corrective_point(pred, gt, gen)
    x0, y0 = coords[0].long().tolist()
    assert gt[0, y0, x0] and not pred[0, y0, x0] and labels[0] == 1
    x1, y1 = coords[1].long().tolist()
    assert pred[1, y1, x1] and not gt[1, y1, x1] and labels[1] == 0


@pytest.mark.slow
def test_pretrain_steps_checkpoint_and_resume(tmp_path):
    trainer = Pretrainer(small_config(tmp_path))
    before = {k: v.clone() for k, v in trainer.sam.state_dict().items()}
    weights = trainer.run()
    assert trainer.step == 2 and all(math.isfinite(h["loss"]) for h in trainer.history)
    after = trainer.sam.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    sam = load_sam("tiny", weights)  # the written file is a valid tiny checkpoint
    assert sam.model_type == "tiny"
    resumed = Pretrainer(small_config(tmp_path, resume=True))
    resumed.try_resume()
    assert resumed.step == 2


def test_pretrain_cli_registered():
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0
