import math

import pytest
import torch

from infosam_core.cli import main
from infosam_core.data.synthetic import SceneConfig
from infosam_core.models.registry import load_sam
from infosam_core.training.pretraining.config import PretrainConfig
from infosam_core.training.pretraining.losses import pixel_loss_per_mask
from infosam_core.training.pretraining.pretrainer import Pretrainer, decode_prompts
from infosam_core.training.pretraining.prompt_sampler import PromptBatch, corrective_point, noisy_boxes, sample_points
from infosam_core.training.pretraining.scenes import SceneStream


def small_config(tmp_path, **kw):
    settings = dict(
        out_dir=tmp_path,
        steps=2,
        images_per_step=1,
        masks_per_image=2,
        warmup_steps=1,
        checkpoint_every=1,
        log_every=1,
        scene=SceneConfig(max_objects=4),
        p_corrective=1.0,
    )
    return PretrainConfig(**{**settings, **kw})


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


def test_sample_points_draws_uniformly_inside_each_region():
    gen = torch.Generator().manual_seed(0)
    regions = torch.zeros(3, 5, 7, dtype=torch.bool)
    regions[0, 1, 2] = regions[0, 3, 4] = regions[0, 4, 6] = True  # three pixels
    regions[1, :, 3] = True  # one column
    hits = torch.zeros(3, 5, 7)
    for _ in range(3000):
        coords, found = sample_points(regions, gen)
        assert found.tolist() == [True, True, False]
        x, y = coords[:, 0].long(), coords[:, 1].long()
        hits[torch.arange(3), y, x] += 1
    assert not hits[:2][~regions[:2]].any()  # never outside a non-empty region
    assert torch.allclose(hits[0][regions[0]], torch.full((3,), 1000.0), rtol=0.15)  # each ~1/3
    assert torch.allclose(hits[1][regions[1]], torch.full((5,), 600.0), rtol=0.2)  # each ~1/5
    assert (hits[2] > 0).sum() > 30  # an empty region: any pixel of the image (35)


@pytest.mark.slow
def test_pretrain_steps_checkpoint_and_resume(tmp_path):
    trainer = Pretrainer(small_config(tmp_path))
    before = {k: v.clone() for k, v in trainer.sam.state_dict().items()}
    weights = trainer.run()
    assert trainer.step == 2 and all(math.isfinite(h["loss"]) for h in trainer.history)
    assert all(0.0 <= h["data_wait"] <= 1.0 for h in trainer.history)  # logged share of time spent on scenes
    after = trainer.sam.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    sam = load_sam("tiny", weights)  # the written file is a valid tiny checkpoint
    assert sam.model_type == "tiny"
    resumed = Pretrainer(small_config(tmp_path, resume=True))
    resumed.try_resume()
    assert resumed.step == 2


@pytest.mark.slow
def test_pretrain_keeps_an_exponential_moving_average_of_the_weights(tmp_path):
    trainer = Pretrainer(small_config(tmp_path, steps=1, ema_decay=0.75))
    trainer.run()
    first = {k: v.clone() for k, v in trainer.sam.state_dict().items()}
    averaged = trainer.ema.module.state_dict()
    assert all(torch.equal(first[k], averaged[k]) for k in first)  # the first update copies the weights
    trainer.config.steps = 2
    weights = trainer.run()
    second = trainer.sam.state_dict()
    averaged = trainer.ema.module.state_dict()
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], second[k])]
    assert changed
    for k in changed:  # 0.75 x the average so far + 0.25 x the new weights
        torch.testing.assert_close(averaged[k], 0.75 * first[k] + 0.25 * second[k])
    assert weights == trainer.ema_weights_path() and trainer.weights_path().exists()
    from_file = load_sam("tiny", weights).state_dict()
    k = changed[0]
    torch.testing.assert_close(from_file[k], averaged[k], atol=2e-3, rtol=2e-3)  # stored in fp16
    assert not torch.equal(load_sam("tiny", trainer.weights_path()).state_dict()[k], from_file[k])
    resumed = Pretrainer(small_config(tmp_path, ema_decay=0.75))
    resumed.try_resume()
    assert all(torch.equal(resumed.ema.module.state_dict()[k], averaged[k]) for k in averaged)
    assert Pretrainer(small_config(tmp_path / "plain", steps=1, ema_decay=0.0)).run().name == "sam_tiny.safetensors"
    with pytest.raises(ValueError, match="ema_decay"):
        Pretrainer(small_config(tmp_path, ema_decay=1.0))


@pytest.mark.parametrize("kind, ratio", [("balanced_bce", 49.0), ("bce", 1.0)])
def test_pixel_loss_weighs_object_pixels_as_documented(kind, ratio):
    """An object covering 2 % of the image: balanced BCE pulls an object pixel 49 x harder than a background
    pixel (which biases the logits towards spilling over), plain BCE pulls every pixel alike."""
    target = torch.zeros(1, 10, 50)
    target[0, 0, :10] = 1.0  # 10 of 500 pixels
    logits = torch.zeros_like(target, requires_grad=True)
    pixel_loss_per_mask(logits, target, kind).sum().backward()
    grad = logits.grad[0].abs()
    assert grad[0, 0] / grad[5, 5] == pytest.approx(ratio, rel=1e-4)
    with pytest.raises(ValueError, match="pixel loss must be one of"):
        pixel_loss_per_mask(logits, target, "dice")


def test_pretrain_refuses_an_unknown_pixel_loss(tmp_path, capsys):
    assert main(["pretrain", "--pixel-loss", "l2", "--out", str(tmp_path)]) == 2
    assert "balanced_bce, bce, focal" in capsys.readouterr().err


@pytest.mark.parametrize("supervise_all_iou", [True, False])
def test_single_point_trains_the_best_mask_and_every_iou_prediction(tmp_path, supervise_all_iou):
    """One point: the segmentation loss reaches only the best of the three masks; the IoU head learns all
    three IoUs (it ranks them at inference) unless supervise_all_iou is off."""
    trainer = Pretrainer(small_config(tmp_path, supervise_all_iou=supervise_all_iou, corrective_clicks=0))
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["iou_pred"] = output

    trainer.sam.mask_decoder.iou_prediction_head.register_forward_hook(keep)
    x, targets = trainer.make_batch()
    embeddings = trainer.sam.image_encoder(x)
    gt = targets[0][:1]
    losses, _, _ = trainer._first_and_corrective(embeddings[:1], gt, False, torch.tensor([False]))
    torch.cat(losses).mean().backward()
    iou_grad = captured["iou_pred"].grad[0]
    assert iou_grad[0] == 0  # the single-mask output is not used for a lone point
    assert (iou_grad[1:] != 0).sum() == (3 if supervise_all_iou else 1)
    hyper = trainer.sam.mask_decoder.output_hypernetworks_mlps
    grads = [hyper[m].layers[-1].weight.grad for m in (1, 2, 3)]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) == 1  # the best mask's alone


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_pretrain_on_a_missing_gpu_says_so(tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU.*--device cpu"):
        Pretrainer(small_config(tmp_path, device="cuda"))
    with pytest.raises(ValueError, match="data_workers"):
        Pretrainer(small_config(tmp_path, data_workers=-1))
    assert main(["pretrain", "--device", "cuda", "--out", str(tmp_path)]) == 2  # a message, not a traceback


def test_pretrain_cli_registered():
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("kind", ["box", "points", "points+mask"])
def test_decode_prompts_matches_segment_anything_per_image(kind):
    """Prompts on different images in one call give what MaskDecoder.predict_masks gives image by image."""
    torch.manual_seed(0)
    sam = load_sam("tiny").eval()
    emb_size = sam.prompt_encoder.image_embedding_size
    embeddings = torch.randn(2, 256, *emb_size)
    k = 3  # objects per image
    gen = torch.Generator().manual_seed(1)
    s = sam.image_encoder.img_size
    boxes = coords = labels = masks = None
    if kind == "box":
        xy = torch.rand(2 * k, 2, generator=gen) * s / 2
        boxes = torch.cat([xy, xy + s / 3], 1)
    else:
        coords = torch.rand(2 * k, 2, 2, generator=gen) * s
        labels = torch.tensor([[1, 0]] * (2 * k))
        if kind == "points+mask":
            masks = torch.randn(2 * k, 1, 4 * emb_size[0], 4 * emb_size[1], generator=gen)
    prompts = PromptBatch(coords, labels, boxes)
    owner = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        low, iou = decode_prompts(sam, embeddings[owner], prompts, masks)
        for img in range(2):
            idx = (owner == img).nonzero()[:, 0]
            sub = prompts.select(idx)
            points = (sub.coords, sub.labels) if sub.coords is not None else None
            sub_masks = None if masks is None else masks[idx]
            sparse, dense = sam.prompt_encoder(points=points, boxes=sub.boxes, masks=sub_masks)
            ref_low, ref_iou = sam.mask_decoder.predict_masks(
                embeddings[img : img + 1], sam.prompt_encoder.get_dense_pe(), sparse, dense
            )
            assert low.shape[1] == 4 and iou.shape == (2 * k, 4)
            torch.testing.assert_close(low[idx], ref_low, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(iou[idx], ref_iou, atol=1e-5, rtol=1e-5)


def test_scene_stream_workers_draw_different_reproducible_scenes():
    from torch.utils.data import DataLoader

    stream = SceneStream(SceneConfig(max_objects=4), masks_per_image=2, p_pad=0.5, seed=3, start_step=0)

    def first(n_workers, count=4):
        loader = DataLoader(stream, batch_size=None, num_workers=n_workers)
        it = iter(loader)
        return [next(it) for _ in range(count)]

    a, b = first(2), first(2)
    for (img_a, hw_a, t_a), (img_b, hw_b, t_b) in zip(a, b):
        assert torch.equal(img_a, img_b) and hw_a == hw_b and torch.equal(t_a, t_b)  # same seed, same scenes
    assert not torch.equal(a[0][0], a[1][0])  # worker 0 and worker 1 draw different scenes
    for image, (h, w), target in a:
        assert image.dtype == torch.uint8 and image.shape == (3, 256, 256)
        assert target.dtype == torch.bool and 1 <= target.shape[0] <= 2
        assert target.flatten(1).any(1).all()  # every chosen object is visible
        assert not target[:, h:, :].any() and not target[:, :, w:].any()  # nothing in the padding


@pytest.mark.slow
def test_pretrain_with_data_workers(tmp_path):
    trainer = Pretrainer(small_config(tmp_path, data_workers=2, images_per_step=2))
    trainer.run()
    assert trainer.step == 2 and all(math.isfinite(h["loss"]) for h in trainer.history)
