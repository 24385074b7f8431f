"""Adapter files: only trained tensors, bit-identical reload in a new process, refusals with clear messages."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from infosam_core.adapter_files.checkpoint import (
    PeftCheckpointError,
    load_peft_checkpoint,
    peft_checkpoint_paths,
    read_peft_checkpoint_info,
    save_peft_checkpoint,
)
from infosam_core.distill.infosam import InfosamConfig, InfosamDistiller
from infosam_core.models.checkpoints import save_sam_weights
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.sam import build_sam
from infosam_core.peft.registry import PEFT_METHODS, apply_peft
from infosam_core.peft.state import trained_state


def adapted(base, method: str, seed: int = 0, relation: bool = False):
    """``base`` + PEFT ``method`` with its trainable tensors moved away from their initial values."""
    sam = copy.deepcopy(base)
    apply_peft(sam, method, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sam.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    if relation:
        sam.distiller = InfosamDistiller(InfosamConfig(), sam.prompt_encoder.embed_dim, g)
    return sam


@pytest.mark.parametrize("method", sorted(PEFT_METHODS))
def test_round_trip_every_method(random_tiny_sam, tmp_path, method):
    sam = adapted(random_tiny_sam, method, relation=method == "adapter")
    tensors_path, json_path = save_peft_checkpoint(sam, tmp_path / "a", summary={"steps": 3})
    assert json_path.name == "a.json" and re.fullmatch(r"a\.[0-9a-f]{16}\.safetensors", tensors_path.name)
    stored = load_file(tensors_path)
    assert set(stored) == set(trained_state(sam))  # only the trained tensors
    assert set(stored) == set(sam.peft_state.trainable) | {k for k in stored if k.startswith("distiller.relation.")}
    meta = json.loads(json_path.read_text())
    assert meta["method"] == method and meta["summary"] == {"steps": 3} and meta["base_model_type"] == "tiny"
    assert meta["base_fingerprint"] == model_fingerprint(random_tiny_sam)
    loaded = load_peft_checkpoint(random_tiny_sam, tmp_path / "a.json")
    a, b = sam.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not hasattr(random_tiny_sam, "peft_state")  # the base model is not modified


@pytest.mark.slow
def test_outputs_are_bit_identical_in_a_new_process(tmp_path):
    torch.manual_seed(7)
    base = build_sam("tiny")
    base_file = save_sam_weights(base, tmp_path / "base.safetensors", half=False)
    sam = adapted(base, "adapter", relation=True).eval()
    save_peft_checkpoint(sam, tmp_path / "adapter")
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        emb = sam.image_encoder(x)
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[30.0, 40, 200, 180]]), masks=None)
        masks, _ = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        torch.set_num_threads({torch.get_num_threads()})
        from infosam_core.models.registry import load_sam
        from infosam_core.adapter_files.checkpoint import load_peft_checkpoint
        base = load_sam("tiny", sys.argv[1])
        sam = load_peft_checkpoint(base, sys.argv[2])
        x = torch.from_numpy(np.load(sys.argv[3]))
        with torch.no_grad():
            emb = sam.image_encoder(x)
            sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[30.0, 40, 200, 180]]), masks=None)
            masks, _ = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
        np.save(sys.argv[4], masks.numpy())
        """
    )
    out = tmp_path / "masks.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(base_file), str(tmp_path / "adapter"), str(tmp_path / "x.npy"), str(out)],
        check=True,
        timeout=300,
    )
    assert np.array_equal(np.load(out), masks.numpy())
    with torch.no_grad():
        base_masks, _ = base.mask_decoder(
            base.image_encoder(x), base.prompt_encoder.get_dense_pe(), sparse, dense, False
        )
    assert not np.array_equal(base_masks.numpy(), masks.numpy())  # the adapter does change the output


def test_refuses_an_adapter_for_another_base(random_tiny_sam, tmp_path):
    save_peft_checkpoint(adapted(random_tiny_sam, "lora"), tmp_path / "a")
    other = copy.deepcopy(random_tiny_sam)
    with torch.no_grad():
        other.mask_decoder.iou_token.weight.add_(1e-3)
    with pytest.raises(PeftCheckpointError, match=r"a\.json: this adapter was made for another base model"):
        load_peft_checkpoint(other, tmp_path / "a")
    with pytest.raises(PeftCheckpointError, match="not onto an already adapted one"):
        load_peft_checkpoint(adapted(random_tiny_sam, "bitfit"), tmp_path / "a")


def test_missing_damaged_and_mismatched_files(random_tiny_sam, tmp_path):
    sam = adapted(random_tiny_sam, "bitfit")
    tensors_path, json_path = save_peft_checkpoint(sam, tmp_path / "a")
    with pytest.raises(PeftCheckpointError, match=r"nope\.json: adapter description not found"):
        load_peft_checkpoint(random_tiny_sam, tmp_path / "nope")
    tensors_path.write_bytes(tensors_path.read_bytes()[:-10])
    with pytest.raises(PeftCheckpointError, match=r"a\.[0-9a-f]{16}\.safetensors: the weights do not match a\.json"):
        load_peft_checkpoint(random_tiny_sam, tmp_path / "a")
    tensors_path.unlink()
    with pytest.raises(PeftCheckpointError, match=r"a\.[0-9a-f]{16}\.safetensors: adapter weights not found"):
        load_peft_checkpoint(random_tiny_sam, tmp_path / "a")
    json_path.write_text("{ not json")
    with pytest.raises(PeftCheckpointError, match=r"a\.json: not a valid adapter description"):
        read_peft_checkpoint_info(tmp_path / "a")
    json_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(PeftCheckpointError, match="not an InfoSAM adapter"):
        read_peft_checkpoint_info(json_path)


def test_tensors_that_do_not_fit_the_method(random_tiny_sam, tmp_path):
    from safetensors.torch import save_file

    tensors_path, json_path = save_peft_checkpoint(adapted(random_tiny_sam, "lora"), tmp_path / "a")
    tensors = load_file(tensors_path)
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(tensors_path))
    meta = json.loads(json_path.read_text())
    meta["tensors_sha256"] = __import__("hashlib").sha256(tensors_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(PeftCheckpointError, match="does not fit PEFT 'lora' on this model: 1 tensors missing"):
        load_peft_checkpoint(random_tiny_sam, tmp_path / "a")


def test_save_needs_peft_and_paths(random_tiny_sam):
    with pytest.raises(PeftCheckpointError, match="no PEFT method applied"):
        save_peft_checkpoint(random_tiny_sam, "/tmp/never")
    assert peft_checkpoint_paths("x/y.safetensors") == peft_checkpoint_paths("x/y.json") == peft_checkpoint_paths("x/y")
