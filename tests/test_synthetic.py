import numpy as np

from infosam_core.data.reference_sets import coins_instances, object_masks, synthetic_heldout
from infosam_core.data.synthetic import SceneConfig, SceneGenerator


def test_scenes_are_deterministic_per_seed():
    gen = SceneGenerator()
    a = gen.generate(np.random.default_rng(7))
    b = gen.generate(np.random.default_rng(7))
    c = gen.generate(np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_scene_shapes_and_objects():
    config = SceneConfig(image_size=128, min_objects=4, max_objects=6)
    gen = SceneGenerator(config)
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, labels = gen.generate(rng)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert labels.shape == (128, 128) and labels.dtype == np.int32
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        assert 1 <= ids.size <= 6
        assert counts.min() >= config.min_visible_area  # tiny slivers are dropped, not left as targets


def test_objects_differ_from_their_surroundings():
    # the engine lifts fills that match what they cover: an object's mean colour stands out
    gen = SceneGenerator()
    rng = np.random.default_rng(3)
    contrasts = []
    for _ in range(5):
        image, labels = gen.generate(rng)
        for mask in object_masks(labels, min_area=200):
            ring = np.zeros_like(mask)
            ys, xs = np.nonzero(mask)
            ring[max(0, ys.min() - 4) : ys.max() + 5, max(0, xs.min() - 4) : xs.max() + 5] = True
            ring &= labels == 0
            if ring.sum() > 50:
                contrasts.append(np.abs(image[mask].mean(0) - image[ring].mean(0)).max())
    assert np.median(contrasts) > 10


def test_heldout_and_coins_sets():
    held = synthetic_heldout(3)
    assert [h.name for h in held] == ["synthetic_000", "synthetic_001", "synthetic_002"]
    assert np.array_equal(held[0].image, synthetic_heldout(1)[0].image)
    coins = coins_instances()
    assert coins.image.shape == (303, 384, 3)
    assert coins.labels.max() == 24  # the classical watershed finds each of the 24 coins
    assert len(object_masks(coins.labels, min_area=100)) == 24
