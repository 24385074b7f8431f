"""Adapter files crafted or damaged (issue 32): a FIFO or a folder where the JSON or the tensors file should be,
integer / bool / float8 tensors, distiller options beyond their bounds: one PeftCheckpointError naming the file,
within seconds, never a hang or a traceback; and from the CLI one line on stderr with exit status 2."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infosam_core.adapter_files.checkpoint import PeftCheckpointError, load_peft_checkpoint, save_peft_checkpoint
from infosam_core.distill.base import ModelDims
from infosam_core.distill.registry import make_distiller
from infosam_core.peft.registry import apply_peft


@pytest.fixture
def adapter(random_tiny_sam, tmp_path) -> tuple[Path, Path]:
    sam = copy.deepcopy(random_tiny_sam)
    apply_peft(sam, "bitfit", generator=torch.Generator().manual_seed(0))
    return save_peft_checkpoint(sam, tmp_path / "a")


def _load_within(base, path: Path, seconds: float = 10) -> BaseException:
    """``load_peft_checkpoint(base, path)`` in a thread: the error it raised (fails if it hangs or succeeds)."""
    result: list[BaseException] = []

    def run() -> None:
        try:
            load_peft_checkpoint(base, path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loading {path} hangs"
    assert result, "loaded without an error"
    return result[0]


def _rewrite_tensors(tensors_path: Path, json_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(tensors_path))
    meta = json.loads(json_path.read_text())
    meta["tensors_sha256"] = hashlib.sha256(tensors_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("which", ["tensors", "json"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_special_files_in_place_of_an_adapter_file(random_tiny_sam, adapter, which, kind):
    tensors_path, json_path = adapter
    target = tensors_path if which == "tensors" else json_path
    target.unlink()
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    error = _load_within(random_tiny_sam, json_path)
    assert isinstance(error, PeftCheckpointError), repr(error)
    assert str(error).startswith(str(target)) and "not a regular file" in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.uint8, torch.float8_e4m3fn])
def test_non_float_adapter_weights_are_refused(random_tiny_sam, adapter, dtype):
    tensors_path, json_path = adapter
    tensors = load_file(tensors_path)
    name = next(iter(tensors))
    tensors[name] = tensors[name].to(dtype)
    _rewrite_tensors(tensors_path, json_path, tensors)
    error = _load_within(random_tiny_sam, json_path)
    assert isinstance(error, PeftCheckpointError), repr(error)
    assert str(error).startswith(str(tensors_path)) and f"{name!r} has dtype" in str(error)


@pytest.mark.parametrize(
    "name, options",
    [("semckd", {"mid_channels": 3000}), ("semckd", {"mid_channels": 1e5}), ("ibd", {"qk_dim": 2e5})],
)
def test_distiller_options_beyond_bounds_are_refused_before_building(random_tiny_sam, adapter, name, options):
    """Issue 32's cases: SemCKD ``mid_channels=3000`` built 330 M parameters; ``1e5`` and IBD's ``qk_dim=2e5``
    were allocation tracebacks. From an adapter JSON and from make_distiller: one line, nothing built."""
    _, json_path = adapter
    with pytest.raises(ValueError, match=r"option \w+ must be in \[1, \d+\]"):
        make_distiller(name, dict(options), ModelDims.of(random_tiny_sam))
    meta = json.loads(json_path.read_text())
    meta["distiller"] = {"name": name, "options": options}
    json_path.write_text(json.dumps(meta))
    error = _load_within(random_tiny_sam, json_path)
    assert isinstance(error, PeftCheckpointError) and str(error).startswith(str(json_path))
    assert "must be in [1," in str(error) and "\n" not in str(error)


@pytest.mark.parametrize(
    "args",
    [
        ["--distill", "semckd", "--distill-option", "mid_channels=3000"],
        ["--distill", "semckd", "--distill-option", "mid_channels=1e5"],
        ["--distill", "ibd", "--distill-option", "qk_dim=2e5"],
    ],
)
def test_cli_refuses_distiller_options_beyond_bounds(tmp_path, capsys, args):
    from infosam_core.cli import main

    (tmp_path / "data").mkdir()
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be in [1," in err[0], err
    assert not (tmp_path / "out").exists()
