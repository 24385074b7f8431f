"""Predictor: parity with segment-anything's SamPredictor, prompt checks, embedding cache, model swaps."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from infosam_core.inference.predictor import ImageEmbedding, Predictor
from infosam_core.io.images import to_rgb_uint8
from infosam_core.models.sam import build_sam

IMAGE_SHAPES = [(96, 96), (70, 130), (150, 64)]  # square, wide, tall


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


class EncoderCalls:
    """Counts forward passes of ``sam.image_encoder``."""

    def __init__(self, sam):
        self.count = 0
        self._handle = sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.count += 1

    def remove(self):
        self._handle.remove()


@pytest.fixture()
def sam():
    """A fresh random tiny SAM per test (tests modify weights)."""
    torch.manual_seed(1)
    return build_sam("tiny")


def _prompt_cases(h, w):
    mask_input = np.random.default_rng(3).normal(size=(1, 128, 128)).astype(np.float32)
    return [
        dict(point_coords=np.array([[w * 0.5, h * 0.4]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[w * 0.2, h * 0.3], [w * 0.8, h * 0.9]]), point_labels=np.array([1, 0])),
        dict(box=np.array([w * 0.1, h * 0.2, w * 0.7, h * 0.8])),
        dict(
            box=np.array([w * 0.1, h * 0.2, w * 0.7, h * 0.8]),
            point_coords=np.array([[w * 0.4, h * 0.5]]),
            point_labels=np.array([0]),
        ),
        dict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]), mask_input=mask_input),
    ]


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_parity_with_sam_predictor(random_tiny_sam, shape):
    image = _image(shape)
    reference, ours = SamPredictor(random_tiny_sam), Predictor(random_tiny_sam)
    reference.set_image(image)
    ours.set_image(image)
    assert ours.original_size == reference.original_size and ours.input_size == reference.input_size
    torch.testing.assert_close(ours.get_image_embedding(), reference.get_image_embedding(), rtol=0, atol=1e-6)
    for prompt in _prompt_cases(*shape):
        for multimask in (True, False):
            want = reference.predict(**prompt, multimask_output=multimask)
            got = ours.predict(**prompt, multimask_output=multimask)
            assert got[0].dtype == bool and got[0].shape == want[0].shape
            assert got[0].shape == ((3 if multimask else 1), *shape)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
            np.testing.assert_allclose(got[2], want[2], atol=1e-5, rtol=0)


def test_parity_return_logits_bgr_and_predict_torch(random_tiny_sam):
    image = _image((80, 100), seed=5)
    reference, ours = SamPredictor(random_tiny_sam), Predictor(random_tiny_sam)
    reference.set_image(image, image_format="BGR")
    ours.set_image(image, image_format="BGR")
    prompt = dict(point_coords=np.array([[30.0, 40.0]]), point_labels=np.array([1]), return_logits=True)
    np.testing.assert_allclose(ours.predict(**prompt)[0], reference.predict(**prompt)[0], atol=1e-5, rtol=0)
    boxes = torch.tensor([[10.0, 10.0, 200.0, 150.0], [50.0, 60.0, 120.0, 90.0]])
    got = ours.predict_torch(None, None, boxes=boxes, multimask_output=False)
    want = reference.predict_torch(None, None, boxes=boxes, multimask_output=False)
    assert got[0].shape == (2, 1, 80, 100)
    assert torch.equal(got[0], want[0])


def test_accepts_gray_and_16bit_images(random_tiny_sam):
    gray16 = np.linspace(100, 4000, 64 * 80).reshape(64, 80).astype(np.uint16)
    reference, ours = SamPredictor(random_tiny_sam), Predictor(random_tiny_sam)
    reference.set_image(to_rgb_uint8(gray16))
    ours.set_image(gray16)
    prompt = dict(box=np.array([5, 5, 60, 50]))
    np.testing.assert_array_equal(ours.predict(**prompt)[0], reference.predict(**prompt)[0])


def test_sam_predictor_api_surface(random_tiny_sam):
    predictor = Predictor(random_tiny_sam)
    assert not predictor.is_image_set and predictor.original_size is None
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=np.array([0, 0, 5, 5]))
    predictor.set_image(_image((40, 50)))
    assert predictor.is_image_set and predictor.original_size == (40, 50) and predictor.input_size == (205, 256)
    assert predictor.get_image_embedding().shape == (1, 256, 32, 32)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.embedding is None
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(_image((40, 50)), image_format="HSV")


# ------------------------------------------------------------------------------------- prompt checks
@pytest.mark.parametrize(
    "prompt,match",
    [
        (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), r"\(N, 2\)"),
        (dict(point_coords=np.zeros((2, 3)), point_labels=np.array([1, 1])), r"\(N, 2\)"),
        (dict(point_coords=np.zeros((2, 2))), "point_labels must be given"),
        (dict(point_coords=np.zeros((2, 2)), point_labels=np.array([1])), "one label per point"),
        (dict(point_coords=np.zeros((1, 2)), point_labels=np.array([7])), "foreground"),
        (
            dict(point_coords=np.zeros((1, 2)), point_labels=np.array([-1])),
            "foreground",
        ),  # SAM's internal padding label
        (dict(point_labels=np.array([1])), "without point_coords"),
        (dict(point_coords=[[np.nan, 1.0]], point_labels=[1]), "NaN"),
        (dict(point_coords=[["a", "b"]], point_labels=[1]), "numbers"),
        (dict(box=np.array([1, 2, 3])), "4 numbers"),
        (dict(box=np.zeros((2, 4))), "4 numbers"),
        (dict(box=np.array([10, 10, 5, 20])), "x0 <= x1"),
        (dict(box=np.zeros(4), mask_input=np.zeros((1, 256, 256))), r"\(1, 128, 128\)"),
    ],
)
def test_bad_prompts_raise_value_error(random_tiny_sam, prompt, match):
    predictor = Predictor(random_tiny_sam)
    predictor.set_image(_image((32, 32)))
    with pytest.raises(ValueError, match=match):
        predictor.predict(**prompt)


def test_lists_and_2d_mask_input_are_accepted(random_tiny_sam):
    predictor = Predictor(random_tiny_sam)
    predictor.set_image(_image((32, 32)))
    _, _, low_res = predictor.predict(point_coords=[[5, 6]], point_labels=[1], box=[[0, 0, 20, 20]])
    masks, _, _ = predictor.predict(point_coords=[[5, 6]], point_labels=[1], mask_input=low_res[0])
    assert masks.shape == (3, 32, 32)


# --------------------------------------------------------------------------------------------- cache
def test_same_image_twice_is_one_encoder_pass(sam):
    calls = EncoderCalls(sam)
    predictor = Predictor(sam)
    image = _image((60, 60))
    predictor.set_image(image)
    predictor.set_image(_image((60, 60), seed=1))
    predictor.set_image(image.copy())  # equal content, another array
    assert calls.count == 2
    emb = predictor.embed(image)
    assert calls.count == 2 and isinstance(emb, ImageEmbedding) and emb.features.shape == (1, 256, 32, 32)


def test_lru_evicts_oldest(sam):
    calls = EncoderCalls(sam)
    predictor = Predictor(sam, cache_size=2)
    a, b, c = (_image((32, 32), seed=s) for s in range(3))
    for image in (a, b, c, c, b):
        predictor.embed(image)
    assert calls.count == 3
    predictor.embed(a)  # evicted by c
    assert calls.count == 4
    Predictor(sam, cache_size=0).embed(a)
    assert calls.count == 5


def test_changed_weights_give_a_new_key(sam):
    calls = EncoderCalls(sam)
    predictor = Predictor(sam)
    image = _image((48, 48))
    predictor.set_image(image)
    key = predictor.embedding.key
    with torch.no_grad():
        sam.image_encoder.patch_embed.proj.weight[0, 0, 0, 0] += 1.0  # one weight, in place
    predictor.set_image(image)  # detected without refresh_model
    assert calls.count == 2 and predictor.embedding.key != key
    assert predictor.embedding.key.split("-")[0] == key.split("-")[0]  # same image, other model


def test_refresh_model_re_embeds_the_current_image(sam):
    calls = EncoderCalls(sam)
    predictor = Predictor(sam)
    image = _image((48, 48))
    predictor.set_image(image)
    old = predictor.get_image_embedding().clone()
    fingerprint = predictor.model_fingerprint
    assert predictor.refresh_model() == fingerprint and calls.count == 1  # nothing changed
    with torch.no_grad():
        sam.image_encoder.neck[0].weight.mul_(2.0)
    assert predictor.refresh_model() != fingerprint
    assert calls.count == 2 and not torch.equal(predictor.get_image_embedding(), old)


def test_set_model_hot_swap_keeps_the_image(sam):
    image = _image((64, 90))
    predictor = Predictor(sam)
    predictor.set_image(image)
    prompt = dict(box=np.array([10, 10, 60, 50]))
    torch.manual_seed(2)
    other = build_sam("tiny")
    predictor.set_model(other)
    reference = SamPredictor(other)
    reference.set_image(image)
    assert predictor.is_image_set and predictor.original_size == (64, 90)
    np.testing.assert_allclose(predictor.predict(**prompt)[1], reference.predict(**prompt)[1], atol=1e-5)
    calls = EncoderCalls(sam)
    predictor.set_model(sam)  # back: served from the cache
    assert calls.count == 0
    reference = SamPredictor(sam)
    reference.set_image(image)
    np.testing.assert_allclose(predictor.predict(**prompt)[1], reference.predict(**prompt)[1], atol=1e-5)


def test_stale_embedding_is_refused(sam):
    predictor = Predictor(sam)
    emb = predictor.embed(_image((32, 32)))
    torch.manual_seed(3)
    predictor.set_model(build_sam("tiny"))
    with pytest.raises(ValueError, match="another model"):
        predictor.set_embedding(emb)


def test_embed_in_a_worker_thread(sam):
    predictor = Predictor(sam)
    predictor.set_image(_image((40, 40)))
    results: list[ImageEmbedding] = []
    worker = threading.Thread(target=lambda: results.append(predictor.embed(_image((50, 30), seed=4))))
    worker.start()
    predictor.predict(point_coords=[[10, 10]], point_labels=[1])  # the owner keeps predicting
    worker.join()
    assert predictor.original_size == (40, 40)  # embed did not change the current image
    predictor.set_embedding(results[0])
    assert predictor.original_size == (50, 30)
    assert predictor.predict(box=[0, 0, 20, 40])[0].shape == (3, 50, 30)


def test_owner_is_not_blocked_by_a_worker_encoder_pass(sam):
    predictor = Predictor(sam)
    shown = _image((40, 40))
    predictor.set_image(shown)
    in_encoder, release = threading.Event(), threading.Event()

    def slow_encoder(*_) -> None:
        in_encoder.set()
        release.wait(30)

    handle = sam.image_encoder.register_forward_pre_hook(slow_encoder)
    results: list[ImageEmbedding] = []
    worker = threading.Thread(target=lambda: results.append(predictor.embed(_image((40, 40), seed=9))))
    worker.start()
    try:
        assert in_encoder.wait(30)

        def owner():
            predictor.predict(point_coords=[[10, 10]], point_labels=[1])
            predictor.set_image(shown)  # a cache hit
            predictor.set_embedding(predictor.embedding)

        owner_thread = threading.Thread(target=owner)
        owner_thread.start()
        owner_thread.join(timeout=20)
        assert not owner_thread.is_alive(), "the owner waited for the worker's encoder pass"
    finally:
        release.set()
        worker.join()
        handle.remove()
    assert len(results) == 1 and results[0].original_size == (40, 40)


def test_disk_cache_across_instances(sam, tmp_path):
    image = _image((40, 60))
    first = Predictor(sam, cache_dir=tmp_path)
    first.set_image(image)
    files = list(tmp_path.glob("*.safetensors"))
    assert [f.stem for f in files] == [first.embedding.key]
    calls = EncoderCalls(sam)
    second = Predictor(sam, cache_dir=tmp_path)
    second.set_image(image)
    assert calls.count == 0
    assert torch.equal(second.get_image_embedding(), first.get_image_embedding())
    assert second.original_size == (40, 60) and second.input_size == first.input_size


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_byte"])
def test_corrupt_disk_cache_file_is_recomputed(sam, tmp_path, damage):
    image = _image((40, 60))
    Predictor(sam, cache_dir=tmp_path).set_image(image)
    (path,) = tmp_path.glob("*.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a safetensors file")
    else:
        data[-100] ^= 0xFF  # inside the tensor data: only the checksum notices
    path.write_bytes(bytes(data))
    calls = EncoderCalls(sam)
    predictor = Predictor(sam, cache_dir=tmp_path)
    predictor.set_image(image)
    assert calls.count == 1
    reference = SamPredictor(sam)
    reference.set_image(image)
    torch.testing.assert_close(predictor.get_image_embedding(), reference.get_image_embedding(), rtol=0, atol=1e-6)
    calls.count = 0
    Predictor(sam, cache_dir=tmp_path).set_image(image)  # the file was rewritten
    assert calls.count == 0
