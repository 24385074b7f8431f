"""load_sam / load_state_dict_file: every way a checkpoint can be wrong gives a CheckpointError naming it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from infosam_core.models.checkpoints import CheckpointError, load_state_dict_file, save_sam_weights
from infosam_core.models.fingerprint import model_fingerprint
from infosam_core.models.registry import load_sam, resolve_model_type
from infosam_core.models.sam import build_sam, guess_model_type
from infosam_core.resources import BUNDLED_TINY_CHECKPOINT


class _WritesMarker:
    """Unpickling this object would create a file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_sam("tiny").state_dict()


@pytest.fixture(scope="module")
def vit_b_sam():
    """Built once, never run (construction only: ~90 M parameters)."""
    torch.manual_seed(0)
    return build_sam("vit_b")


def _assert_same_weights(sam, state):
    got = sam.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v.float() if v.is_floating_point() else v), k


# ---------------------------------------------------------------------------------------- accepted
def test_bundled_tiny_loads():
    sam = load_sam("tiny")
    assert sam.model_type == "tiny" and not sam.training
    assert Path(sam.checkpoint_path) == BUNDLED_TINY_CHECKPOINT
    assert sam.image_encoder.img_size == 256


def test_plain_pth(tmp_path, tiny_state):
    torch.save(tiny_state, tmp_path / "sam.pth")
    _assert_same_weights(load_sam("tiny", tmp_path / "sam.pth"), tiny_state)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dict(tmp_path, tiny_state, wrapper):
    torch.save({wrapper: tiny_state, "epoch": 3, "lr": 1e-4}, tmp_path / "ckpt.pth")
    _assert_same_weights(load_sam("tiny", tmp_path / "ckpt.pth"), tiny_state)


def test_safetensors(tmp_path, tiny_state):
    sam = build_sam("tiny")
    sam.load_state_dict(tiny_state)
    path = save_sam_weights(sam, tmp_path / "sam.safetensors", half=False)
    loaded = load_sam("tiny", path)
    _assert_same_weights(loaded, tiny_state)
    assert model_fingerprint(loaded) == model_fingerprint(sam)


def test_safetensors_without_suffix_and_half_precision(tmp_path, tiny_state):
    sam = build_sam("tiny")
    sam.load_state_dict(tiny_state)
    save_sam_weights(sam, tmp_path / "sam.safetensors", half=True)
    (tmp_path / "sam.safetensors").rename(tmp_path / "weights.bin")  # detected from the header
    loaded = load_sam("tiny", tmp_path / "weights.bin")
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())


def test_random_init_warns(vit_b_sam):
    with pytest.warns(UserWarning, match="randomly initialised"):
        sam = load_sam("vit_b")
    assert sam.model_type == "vit_b" and sam.checkpoint_path is None


def test_vit_b_parameter_count(vit_b_sam):
    assert sum(p.numel() for p in vit_b_sam.parameters()) == 93_735_472  # Meta's SAM ViT-B
    assert guess_model_type(vit_b_sam.state_dict()) == "vit_b"


def test_no_warning_with_checkpoint(tmp_path, tiny_state):
    torch.save(tiny_state, tmp_path / "sam.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sam("tiny", tmp_path / "sam.pth")


# ---------------------------------------------------------------------------------------- refused
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: file not found"):
        load_sam("tiny", tmp_path / "nope.pth")


def test_folder(tmp_path):
    with pytest.raises(CheckpointError, match="folder"):
        load_sam("tiny", tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: file is empty"):
        load_sam("tiny", tmp_path / "empty.pth")


def test_truncated_pth(tmp_path, tiny_state):
    torch.save(tiny_state, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth.*(truncated|corrupt)"):
        load_sam("tiny", tmp_path / "cut.pth")


def test_truncated_safetensors(tmp_path, tiny_state):
    sam = build_sam("tiny")
    save_sam_weights(sam, tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        load_sam("tiny", tmp_path / "cut.safetensors")


def test_random_bytes(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_sam("tiny", tmp_path / "junk.pth")


def test_non_sam_state_dict(tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)).state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(CheckpointError, match="mlp.pth: not a SAM checkpoint"):
        load_sam("tiny", tmp_path / "mlp.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth: does not hold a state dict"):
        load_sam("tiny", tmp_path / "list.pth")
    torch.save({"epoch": 3}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_sam("tiny", tmp_path / "notensors.pth")


def test_vit_b_checkpoint_asked_as_tiny(tmp_path, vit_b_sam):
    # half precision keeps the temporary file at ~190 MB; it is still a vit_b checkpoint
    torch.save({k: v.half() for k, v in vit_b_sam.state_dict().items()}, tmp_path / "sam_vit_b.pth")
    with pytest.raises(
        CheckpointError,
        match=r"sam_vit_b.pth: this checkpoint holds a SAM ViT-B model \(type vit_b\), not tiny. Use --model vit_b",
    ):
        load_sam("tiny", tmp_path / "sam_vit_b.pth")
    # --model auto (the CLI's default) takes the file's type, read from its header without loading the weights
    assert resolve_model_type("auto", tmp_path / "sam_vit_b.pth") == "vit_b"


def test_mismatched_shapes(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["mask_decoder.iou_prediction_head.layers.2.weight"] = torch.zeros(5, 256)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: shapes do not match.*iou_prediction_head"):
        load_sam("tiny", tmp_path / "odd.pth")


def test_missing_and_unexpected_keys(tmp_path, tiny_state):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("mask_decoder.iou_prediction_head")}
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(
        CheckpointError, match=r"partial.pth: does not match SAM tiny: \d+ weights missing.*1 unexpected"
    ):
        load_sam("tiny", tmp_path / "partial.pth")


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_with_code_is_refused_and_never_run(tmp_path, tiny_state, zip_format):
    marker = tmp_path / "pwned"
    payload = {"model": tiny_state, "payload": _WritesMarker(marker)}
    torch.save(payload, tmp_path / "evil.pth", _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        load_sam("tiny", tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_unknown_model_type():
    with pytest.raises(ValueError, match="unknown model type 'vit_x'"):
        load_sam("vit_x")


# ------------------------------------------------------------------------------- which model is this file?
def _family_states(vit_b_sam, tiny_state) -> dict[str, dict[str, torch.Tensor]]:
    """A state dict of each family, as its makers save it (shapes are all that matter here)."""
    import mobile_sam

    from infosam_core.models.sam2 import build_sam2_base

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mobile = mobile_sam.sam_model_registry["vit_t"](checkpoint=None).state_dict()
        sam2 = {
            name: build_sam2_base(name, image_size=256).state_dict()
            for name in ("sam2.1_hiera_tiny", "sam2_hiera_tiny")
        }
    hq_vit_b = dict(vit_b_sam.state_dict(), **{"mask_decoder.hf_token.weight": torch.zeros(1, 256)})  # sam-hq's
    return {"tiny": tiny_state, "vit_b": vit_b_sam.state_dict(), "vit_t": mobile, "hq vit_b": hq_vit_b, **sam2}


def test_the_model_type_is_detected_from_tensor_names_and_shapes(tmp_path, vit_b_sam, tiny_state):
    from safetensors.torch import save_file

    from infosam_core.models.checkpoints import read_checkpoint_shapes
    from infosam_core.models.registry import checkpoint_model_type, detect_model_type

    for label, state in _family_states(vit_b_sam, tiny_state).items():
        expected = label.removeprefix("hq ")
        assert detect_model_type(state) == expected, label
    assert detect_model_type({"mlp.weight": torch.zeros(3, 3)}) is None
    # from files, in each maker's format, reading the header only (meta tensors: no weights in memory)
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, tmp_path / "tiny.safetensors")
    torch.save({"model": tiny_state}, tmp_path / "wrapped.pt")  # Meta's SAM2 layout
    torch.save(tiny_state, tmp_path / "plain.pth")
    for name in ("tiny.safetensors", "wrapped.pt", "plain.pth"):
        shapes = read_checkpoint_shapes(tmp_path / name)
        assert shapes is not None and all(t.is_meta for t in shapes.values()), name
        assert checkpoint_model_type(tmp_path / name) == "tiny", name
        assert resolve_model_type("auto", tmp_path / name) == "tiny"
    assert checkpoint_model_type(BUNDLED_TINY_CHECKPOINT) == "tiny"
    # an old (non-zip) torch.save file has no header to read: its shapes are not read this way, but `auto`
    # reads the whole file, and it loads when its type is named
    torch.save(tiny_state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert checkpoint_model_type(tmp_path / "legacy.pth") is None
    assert load_sam("tiny", tmp_path / "legacy.pth").model_type == "tiny"
    assert resolve_model_type("auto", tmp_path / "legacy.pth") == "tiny"
    # a truncated download: `auto` says so (not "cannot tell which model")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "plain.pth").read_bytes()[:1000])
    assert checkpoint_model_type(tmp_path / "cut.pth") is None
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch checkpoint"):
        resolve_model_type("auto", tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="missing.pth: file not found"):
        resolve_model_type("auto", tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        resolve_model_type("auto", tmp_path)
    assert resolve_model_type("auto", None) == "tiny"


def test_cli_model_auto_takes_the_checkpoint_type(tmp_path, tiny_state, capsys):
    from infosam_core.cli import main

    torch.save({"model": tiny_state}, tmp_path / "my_weights.pt")
    assert main(["info", "--checkpoint", str(tmp_path / "my_weights.pt")]) == 0
    assert "model tiny" in capsys.readouterr().out
    assert main(["info", "--model", "vit_t", "--checkpoint", str(tmp_path / "my_weights.pt")]) == 2
    err = capsys.readouterr().err
    assert "holds a tiny model (type tiny), not vit_t. Use --model tiny" in err and len(err.strip().splitlines()) == 1
