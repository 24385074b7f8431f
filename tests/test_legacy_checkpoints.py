"""Old (pre-1.6, non-zip) ``torch.save`` files: loaded when honest, refused before torch allocates when their
pickle declares more storage than the file holds (issue 32: they had no layout checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infosam_core.models.checkpoints import CheckpointError, load_state_dict_file
from infosam_core.models.legacy_torch_files import LegacyFileError, check_legacy_file


def _legacy(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def _declare(path: Path, numel: int) -> Path:
    """Rewrite the first storage's element count (``BININT1 12`` after ``'cpu'``) as a ``LONG1`` of ``numel``."""
    data = path.read_bytes()
    old = b"cpuq\x06K\x0c"
    assert data.count(old) == 1
    body = numel.to_bytes((numel.bit_length() + 8) // 8, "little", signed=True)
    path.write_bytes(data.replace(old, b"cpuq\x06\x8a" + bytes([len(body)]) + body))
    return path


def test_an_honest_legacy_file_loads_with_its_storages_counted(tmp_path: Path) -> None:
    state = {"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.float16)}
    path = _legacy(tmp_path / "old.pth", state)
    storages = check_legacy_file(path)
    assert sorted((s.storage_type, s.numel) for s in storages) == [("FloatStorage", 12), ("HalfStorage", 5)]
    loaded = load_state_dict_file(path)
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["b"], state["b"])


def test_a_shared_storage_is_counted_once(tmp_path: Path) -> None:
    base = torch.zeros(100)
    path = _legacy(tmp_path / "views.pth", {"x": base[:50], "y": base[50:], "z": base})
    assert [s.numel for s in check_legacy_file(path)] == [100]


def test_a_declared_storage_larger_than_the_file_is_refused_before_loading(tmp_path: Path) -> None:
    path = _declare(_legacy(tmp_path / "bomb.pth", {"a": torch.zeros(3, 4)}), 1 << 38)  # 1 TiB of float32
    assert path.stat().st_size < 2000
    with pytest.raises(LegacyFileError, match="declare"):
        check_legacy_file(path)
    with pytest.raises(CheckpointError, match=r"bomb\.pth: refused: its tensors declare .* re-save it"):
        load_state_dict_file(path)


def test_a_negative_or_unreadable_count_is_refused(tmp_path: Path) -> None:
    path = _declare(_legacy(tmp_path / "neg.pth", {"a": torch.zeros(3, 4)}), -5)
    with pytest.raises(CheckpointError, match="neg.pth: refused: a storage's element count"):
        load_state_dict_file(path)


def test_a_legacy_tensor_larger_than_its_storage_is_refused(tmp_path: Path) -> None:
    """The legacy counterpart of the zip format's stride-0 check: a view that expands when copied."""
    wide = torch.zeros(1).as_strided((4096, 4096), (0, 0))
    path = _legacy(tmp_path / "stride0.pth", {"w": wide})
    with pytest.raises(CheckpointError, match="stride0.pth: refused: tensor 'w' has 16777216 elements"):
        load_state_dict_file(path)


def test_garbage_after_the_header_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x80\x02" + b"\xff" * 64)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_state_dict_file(path)
