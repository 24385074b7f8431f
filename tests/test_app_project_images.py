"""Issue 30 in the studio: unreadable images refused when added, "Remove from project", project-wide actions
that skip an unreadable image (Suggest next, export, Adapt's samples), N / P in the image list, and the Qt
binding known to crash napari."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_app.qt_safety import binding_problem
from infosam_app.state.ranking import SUGGEST_POINTS_PER_SIDE
from infosam_core.inference.automatic import AutomaticConfig

pytestmark = pytest.mark.gui


def _bad_files(folder):
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fake.jpg").write_text("a text file\n")
    iio.imwrite(folder / "whole.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    iio.imwrite(folder / "huge.png", np.zeros((300, 300), np.uint8))
    (folder / "notes.txt").write_text("notes\n")
    return [folder / n for n in ("fake.jpg", "truncated.jpg", "huge.png", "notes.txt")]


def test_known_bad_qt_binding_is_named_with_the_fix():
    message = binding_problem("PySide6", "6.12.0")
    assert message is not None and "none_dealloc" in message and "PySide6-Essentials!=6.12.0" in message
    assert binding_problem("PySide6", "6.11.3") is None and binding_problem("PyQt5", "5.15.10") is None


def test_bad_images_are_refused_and_named(studio, qtbot, tmp_path, monkeypatch):
    s, panel = studio.session, studio.image_panel
    monkeypatch.setenv("INFOSAM_MAX_PIXELS", "50000")  # huge.png (90000 px) is over it; the samples are not
    before = len(s.project.images)
    assert s.add_images(_bad_files(tmp_path / "bad")) == 0
    assert len(s.project.images) == before and panel.list.count() == before
    for name in ("fake.jpg", "truncated.jpg", "huge.png", "notes.txt"):
        assert name in s.last_error
    assert "Not added (4 files)" in s.last_error and "megapixels" in s.last_error


def test_remove_from_project_menu_and_n_p_in_the_list(studio, qtbot):
    from qtpy.QtCore import Qt

    from infosam_app.testing import prompt_until_mask

    s, panel, c = studio.session, studio.image_panel, studio.prompts

    assert prompt_until_mask(c) is not None and c.accept() is not None
    key, name = s.key, s.entry.name
    menu = panel.context_menu_for(0)
    assert [a.text() for a in menu.actions()] == ["Remove from project"]
    assert panel.context_menu_for(99) is None
    from infosam_core.annotation.project import rgb_pixels_hash

    cache = s.project.root / "cache" / "embeddings"
    digest = rgb_pixels_hash(s.rgb)
    assert list(cache.glob(f"{digest}-*.safetensors"))  # the shown image's embedding is cached on disk
    assert s.remove_image(key)
    assert key not in [e.key for e in s.project.images] and panel.list.count() == 2
    assert name not in panel.count_text(0) and not s.project.annotation_dir(key).exists()
    assert not list(cache.glob(f"{digest}-*.safetensors"))
    qtbot.waitUntil(lambda: s.rgb is not None and s.key == s.project.images[0].key, timeout=30_000)
    # N / P while the image list has the keyboard focus
    panel.list.setFocus()
    qtbot.keyClick(panel.list, Qt.Key.Key_N)
    assert s.index == 1
    qtbot.keyClick(panel.list, Qt.Key.Key_P)
    assert s.index == 0


def test_suggest_next_and_export_skip_an_unreadable_image(studio, qtbot, tmp_path):
    s, p, export = studio.session, studio.proposals, studio.export_panel
    # an image that became unreadable after it was added (the file replaced by text)
    victim = s.project.images[2]
    s.project.image_path(victim).write_text("gone\n")
    s.project.entry(victim.key).shape = None
    cfg = AutomaticConfig(points_per_side=SUGGEST_POINTS_PER_SIDE)
    p.config = lambda: cfg
    assert p.suggest_next()
    qtbot.waitUntil(lambda: p.suggest_task is None, timeout=120_000)
    assert victim.key not in p.uncertainty and len(p.uncertainty) == 2
    assert victim.name in s.last_error and "Not ranked" in s.last_error
    paths = export.export_masks(tmp_path / "labels", fmt="tif", layout="instances")
    assert len(paths) == 2 and "Skipped 1 unreadable image" in s.last_error
    assert export.export_coco(tmp_path / "coco.json") is not None
