"""The path that once ended in ``Fatal Python error: none_dealloc`` (issue 30), replayed headless: reopen a
project (its adapter comes back), toggle the relation map, add a text file, a text file named .jpg and a
truncated JPEG, close the error notification, right-click in the image list.

The crash was PySide6 6.12.0's: a Qt call returning None took one reference of None too many, and napari's
window event filter makes such a call (``QApplication.activePopupWidget()``) on every event. The first test
checks exactly that on the binding installed: None's reference count does not sink as such calls repeat
(Python 3.11: None is not immortal). :mod:`infosam_app.qt_safety` refuses the known-bad release."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("napari")

from test_app_adapt_memory import _add_objects

from infosam_app.relation_overlay import LAYER_NAME

pytestmark = pytest.mark.gui


def _none_refs() -> int:
    return sys.getrefcount(None)


def test_qt_calls_returning_none_keep_nones_refcount(qapp):
    from qtpy.QtWidgets import QApplication

    if sys.version_info >= (3, 12):
        pytest.skip("None is immortal from Python 3.12 on: its reference count says nothing")
    before = _none_refs()
    for _ in range(5000):
        assert QApplication.activePopupWidget() is None  # what napari's eventFilter calls on every event
        QApplication.activeModalWidget()
    assert _none_refs() > before - 500, "this Qt binding drops references of None (see infosam_app.qt_safety)"


@pytest.mark.slow
def test_reopen_relation_map_bad_files_notification_and_right_click(studio, qtbot, tmp_path):
    import imageio.v3 as iio
    from qtpy.QtCore import QPoint, QTimer
    from qtpy.QtWidgets import QApplication

    s, panel, images = studio.session, studio.adapt_panel, studio.image_panel
    root = s.project.root
    _add_objects(s.project, n_per_image=1)
    settings = panel.settings()
    settings.method, settings.distill, settings.max_steps = "decoder", "infosam", 1
    assert panel.controller.start(settings)
    qtbot.waitUntil(lambda: not panel.controller.running and s.has_adapted, timeout=240_000)

    s.open_project(tmp_path / "elsewhere")
    s.open_project(root, create=False)  # reopen: the adapter comes back from adapt.json
    qtbot.waitUntil(lambda: s.has_adapted and panel.relation_check.isEnabled(), timeout=60_000)
    panel.relation_check.setChecked(True)
    qtbot.waitUntil(lambda: LAYER_NAME in s.viewer.layers, timeout=60_000)
    panel.relation_check.setChecked(False)
    assert LAYER_NAME not in s.viewer.layers and s.viewer.layers.selection.active is s.layers.points

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("notes\n")
    (bad / "fake.jpg").write_text("not a jpeg\n")
    iio.imwrite(bad / "whole.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (bad / "truncated.jpg").write_bytes((bad / "whole.jpg").read_bytes()[:900])
    count = images.list.count()
    assert s.add_images([bad / "notes.txt", bad / "fake.jpg", bad / "truncated.jpg"]) == 0
    assert images.list.count() == count and "fake.jpg" in s.last_error
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for note in studio.viewer.window._qt_window.findChildren(NapariQtNotification):
        note.close()  # "close the error notification"
    qtbot.wait(100)

    # right-click an image of the list: the menu opens and closes (Escape), nothing is removed
    QTimer.singleShot(200, lambda: QApplication.activePopupWidget() and QApplication.activePopupWidget().close())
    rect = images.list.visualItemRect(images.list.item(0))
    images._show_context_menu(QPoint(rect.center().x(), rect.center().y()))
    qtbot.wait(200)
    assert images.list.count() == count
    for _ in range(200):  # events go through napari's event filter
        QApplication.processEvents()
    # None's count over the whole path also falls as objects holding None are freed: measure the Qt call alone
    refs = _none_refs()
    for _ in range(2000):
        QApplication.activePopupWidget()
    assert _none_refs() > refs - 200
    s.next_image(1)  # still working
    qtbot.waitUntil(lambda: s.embedding_ready, timeout=60_000)
