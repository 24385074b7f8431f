"""Every loader bounded before it allocates, and every crafted weight file one clear error (issue 32): checkpoint
bombs (zip members that inflate, stride-0 tensors), non-regular files, key names the type guessers choke on,
integer / bool / float8 weights, and what ``--model auto`` says about a damaged file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infosam_core.models.checkpoints import CheckpointError, inspect_checkpoint_shapes, load_state_dict_file
from infosam_core.models.registry import detect_model_type, load_sam, resolve_model_type
from infosam_core.models.sam import build_sam

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_sam("tiny").state_dict()


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _zip_bomb(path: Path, numel: int) -> Path:
    """A ``torch.save`` file whose one tensor (``numel`` float32 zeros) is a deflated zip member: a few hundred KB
    on disk, ``4 * numel`` bytes once read. Built by rewriting a small saved tensor (never allocated here)."""
    small = path.with_suffix(".small")
    torch.save({"w": torch.zeros(200)}, small)
    with zipfile.ZipFile(small) as zin:
        members = {name: zin.read(name) for name in zin.namelist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    members[pkl] = members[pkl].replace(b"K\xc8", b"J" + numel.to_bytes(4, "little"))  # the storage's and size's
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members.items():
            if name.endswith("/data/0"):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(info, "w", force_zip64=True) as member:
                    chunk = bytes(1 << 22)
                    for _ in range(4 * numel // len(chunk)):
                        member.write(chunk)
            else:
                zout.writestr(name, data)
    small.unlink()
    return path


def _stride_zero(path: Path, numel: int) -> Path:
    """A 1-element storage seen as a ``numel``-element tensor (stride 0): ~1.5 KB on disk."""
    torch.save({"image_encoder.pos_embed": torch.zeros(1).expand(numel)}, path)
    return path


@pytest.mark.parametrize("kind", ["zip-bomb", "stride-0", "stride-0 huge"])
def test_checkpoint_bombs_are_refused_before_they_allocate(tmp_path, kind):
    if kind == "zip-bomb":
        path = _zip_bomb(tmp_path / "bomb.pth", numel=1 << 26)  # 256 MiB inflated from ~250 KB
        match = "decompression bomb"
    else:
        path = _stride_zero(tmp_path / "stride.pth", numel=1 << (36 if "huge" in kind else 28))
        match = "storage holds 1 "
    assert path.stat().st_size < 1 << 20
    for read in (load_state_dict_file, inspect_checkpoint_shapes):
        with pytest.raises(CheckpointError, match=match) as info:
            read(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=match):
        resolve_model_type("auto", path)


@pytest.mark.slow
def test_checkpoint_bombs_stay_under_a_bounded_peak_memory_in_the_cli(tmp_path):
    """The CLI on each bomb, auto and explicit: exit 2, one line, and a peak (maximum resident set) far below
    what the bomb expands to (torch's own import is ~0.5 GB of it)."""
    bombs = [_zip_bomb(tmp_path / "zip.pth", numel=1 << 28), _stride_zero(tmp_path / "stride.pth", numel=1 << 30)]
    script = textwrap.dedent(
        """
        import sys
        from infosam_core.cli import main
        code = main(sys.argv[1:])
        # VmHWM: this program's own peak (ru_maxrss would keep the forked parent's: a large pytest process)
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak = int(status.split()[0]) / 1024
        print(f"PEAK {peak:.0f}", file=sys.stdout)
        sys.exit(code)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for bomb in bombs:
        for model in ("auto", "tiny"):
            proc = subprocess.run(
                [sys.executable, "-c", script, "info", "--model", model, "--checkpoint", str(bomb)],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            assert proc.returncode == 2, proc.stderr
            assert str(bomb) in _one_line(proc.stderr)
            peak = float(proc.stdout.split("PEAK")[-1])
            assert peak < 1500, (bomb.name, model, peak)  # the bombs expand to 1 GiB (zip) and 4 GiB (stride 0)


def test_special_files_are_refused_without_opening(tmp_path, tiny_state):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def read() -> None:
        for call in (load_state_dict_file, inspect_checkpoint_shapes, lambda p: resolve_model_type("auto", p)):
            try:
                call(fifo)
            except CheckpointError as exc:
                done.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "reading a FIFO hangs"
    assert len(done) == 3 and all("a FIFO (named pipe), not a regular file" in str(e) for e in done)
    with pytest.raises(CheckpointError, match="/dev/zero: is a device, not a regular file"):
        resolve_model_type("auto", "/dev/zero")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_state_dict_file(tmp_path)


@pytest.mark.slow
def test_auto_says_what_is_wrong_with_the_file(tmp_path, tiny_state, capsys):
    """A truncated download, a corrupt safetensors header and a pickle with code: each its own message, not
    "cannot tell which model"; a plain pickle (protocol 4, not torch.save) prints no torch warning."""
    import pickle

    from safetensors.torch import save_file

    from infosam_core.cli import main

    torch.save(tiny_state, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:200_000])
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, tmp_path / "w.safetensors")
    data = bytearray((tmp_path / "w.safetensors").read_bytes())
    data[8:20] = b"{garbage!!!!"
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    torch.save({"model": tiny_state, "code": threading.Lock}, tmp_path / "code.pth")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    cases = {
        "cut.pth": "not a readable PyTorch checkpoint (truncated or corrupt",
        "bad.safetensors": "not a readable safetensors file (corrupt header",
        "code.pth": "refused: the file contains pickled Python objects",
        "plain.pkl": "",
    }
    for name, expected in cases.items():
        assert main(["info", "--checkpoint", str(tmp_path / name)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert str(tmp_path / name) in line and expected in line, line
        assert "cannot tell which model" not in line or name == "plain.pkl"


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.uint8, torch.float8_e4m3fn])
def test_non_float_weights_are_refused(tmp_path, tiny_state, dtype):
    state = dict(tiny_state)
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"].to(dtype)
    torch.save(state, tmp_path / "odd.pth")
    for model in ("tiny", "auto"):
        with pytest.raises(CheckpointError, match=r"odd.pth: .*iou_token.weight.* dtype") as info:
            load_sam(model, tmp_path / "odd.pth")
        assert "\n" not in str(info.value)


def test_guessers_survive_crafted_key_names_and_shapes(tmp_path, tiny_state):
    """Extra ``image_encoder.blocks.x.*`` keys (no block number) and a scalar SAM2 patch embedding: no model
    type, never an exception; the valid tiny checkpoint still loads when named."""
    crafted = dict(tiny_state)
    crafted["image_encoder.blocks.x.weight"] = torch.zeros(1)
    assert detect_model_type(crafted) is None
    sam2ish = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.zeros(()),
        "sam_mask_decoder.iou_token.weight": torch.zeros(1),
        "image_encoder.trunk.blocks.1e3.w": torch.zeros(1),
    }
    assert detect_model_type(sam2ish) is None
    torch.save(crafted, tmp_path / "crafted.pth")
    with pytest.raises(CheckpointError, match="crafted.pth: cannot tell which model"):
        resolve_model_type("auto", tmp_path / "crafted.pth")
    with pytest.raises(CheckpointError, match=r"crafted.pth: does not match SAM tiny: 0 weights missing, 1 unexp"):
        load_sam("tiny", tmp_path / "crafted.pth")


_KEY_PARTS = st.sampled_from(
    ["image_encoder", "blocks", "trunk", "layers", "patch_embed", "proj", "weight", "pos_embed", "0", "12", "-1",
     "x", "", "٣", "99999999999", "mask_decoder", "iou_token", "sam_mask_decoder", "no_obj_embed_spatial"]
)  # fmt: skip
_KEYS = st.lists(_KEY_PARTS, min_size=1, max_size=6).map(".".join)
_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.uint8])
_SHAPES = st.lists(st.integers(0, 3), max_size=4).map(tuple)


@pytest.mark.slow
@FUZZ
@given(st.dictionaries(_KEYS, st.tuples(_SHAPES, _DTYPES), max_size=8), st.booleans())
def test_fuzzed_key_names_dtypes_and_shapes_detect_or_refuse(tmp_path_factory, spec, on_tiny):
    """Any key names, shapes and dtypes, alone or added to the tiny model's: the guessers return a type or None
    and loading gives a model or one CheckpointError naming the file."""
    base = {k: v for k, v in _TINY.items()} if on_tiny else {}
    state = {**base, **{k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in spec.items()}}
    found = detect_model_type(state)
    assert found is None or isinstance(found, str)
    if not state:
        return
    path = tmp_path_factory.mktemp("fuzz") / "w.pth"
    torch.save(state, path)
    for model in ("auto", "tiny"):
        try:
            load_sam(model, path)
        except CheckpointError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)


torch.manual_seed(0)
_TINY = build_sam("tiny").state_dict()
