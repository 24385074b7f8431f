"""Precomputed embeddings (``inference.embedding_store``, ``infosam embed``, ``--embeddings``): stored once, read
with no encoder pass, never reused by another model or adapter, damaged entries are misses."""

from __future__ import annotations

import copy
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import zarr

from infosam_core.cli import main
from infosam_core.inference.embedding_store import EmbeddingStore, EmbeddingStoreError
from infosam_core.inference.predictor import Predictor


def _image(seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 60, (60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = (220, 180, 40)
    return image


class EncoderCalls:
    def __init__(self, sam) -> None:
        self.count = 0
        sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_args) -> None:
        self.count += 1


def test_round_trip_and_all_or_nothing(tiny_sam, tmp_path):
    store = EmbeddingStore(tmp_path / "e.zarr", writable=True)
    embedding = Predictor(tiny_sam, precision="float32").embed(_image())
    assert store.put(embedding) and not store.put(embedding)  # the second time: stored already
    (tmp_path / "e.zarr" / ".partial-crashed").mkdir()  # a writer that died midway leaves no entry
    reader = EmbeddingStore(tmp_path / "e.zarr")
    assert reader.keys() == [embedding.key]
    got = reader.get(embedding.key)
    assert torch.equal(got.features, embedding.features)
    assert (got.original_size, got.input_size) == (embedding.original_size, embedding.input_size)
    assert reader.get("../outside") is None and reader.get("0" * 32 + "-missing") is None
    with pytest.raises(EmbeddingStoreError, match="reading only"):
        reader.put(embedding)


def test_damaged_entries_are_misses(tiny_sam, tmp_path):
    store = EmbeddingStore(tmp_path / "e.zarr", writable=True)
    embedding = Predictor(tiny_sam, precision="float32").embed(_image())
    store.put(embedding)
    array = zarr.open_array(str(tmp_path / "e.zarr" / embedding.key / "features"), mode="r+")
    array[0, 0, 0, 0] = np.nan
    assert store.get(embedding.key) is None


def test_other_folders_are_refused_by_name(tmp_path):
    with pytest.raises(EmbeddingStoreError, match="infosam embed"):
        EmbeddingStore(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "something-else"
    with pytest.raises(EmbeddingStoreError, match="not an InfoSAM embedding store"):
        EmbeddingStore(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(EmbeddingStoreError, match="not a Zarr embedding store"):
        EmbeddingStore(tmp_path / "plain")


def test_predictor_reads_the_store_and_another_adapter_recomputes(tiny_sam, tmp_path):
    image = _image()
    store = EmbeddingStore(tmp_path / "e.zarr", writable=True)
    store.put(Predictor(tiny_sam, cache_size=0, precision="float32").embed(image))
    sam = copy.deepcopy(tiny_sam)
    calls = EncoderCalls(sam)
    predictor = Predictor(sam, cache_size=0, precision="float32", embedding_store=EmbeddingStore(store.path))
    predictor.set_image(image)
    assert calls.count == 0  # from the store
    box = np.array([20, 15, 60, 45])
    stored_masks = predictor.predict(box=box)[0]
    fresh = Predictor(tiny_sam, cache_size=0, precision="float32")
    fresh.set_image(image)
    np.testing.assert_array_equal(stored_masks, fresh.predict(box=box)[0])
    with torch.no_grad():  # an adapter that changes the encoder: another fingerprint, no stale entry
        sam.image_encoder.neck[0].weight.mul_(1.5)
    predictor.set_image(image)
    assert calls.count == 1


def test_embed_then_predict_runs_no_encoder_pass(tmp_path, monkeypatch, capsys):
    image_path = tmp_path / "img.png"
    iio.imwrite(image_path, _image())
    store = tmp_path / "emb.zarr"
    assert main(["embed", str(image_path), "--out", str(store), "--device", "cpu"]) == 0
    assert main(["embed", str(image_path), "--out", str(store), "--device", "cpu"]) == 0
    assert "0 embeddings added, 1 already stored" in capsys.readouterr().out
    encodes = []
    real = Predictor._encode
    monkeypatch.setattr(Predictor, "_encode", lambda self, *a: encodes.append(1) or real(self, *a))
    args = ["predict", str(image_path), "--box", "20,15,60,45", "--device", "cpu"]
    assert main([*args, "--embeddings", str(store), "--out", str(tmp_path / "a.png")]) == 0
    assert encodes == []
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    assert encodes == [1]
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.png"), iio.imread(tmp_path / "b.png"))
    (tmp_path / "notastore").mkdir()
    capsys.readouterr()
    assert main([*args, "--embeddings", str(tmp_path / "notastore"), "--out", str(tmp_path / "c.png")]) != 0
    assert "not a Zarr embedding store" in capsys.readouterr().err and not (tmp_path / "c.png").exists()
    assert json.loads((store / "zarr.json").read_text())["attributes"]["format"] == "infosam-embeddings-1"
