"""The relation-map overlay in the studio, headless: off until an InfoSAM adapter exists, then a toggled
napari Image layer over the current image, computed in the background."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from infosam_app.relation_overlay import LAYER_NAME
from infosam_app.testing import prompt_until_mask

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_relation_map_overlay_toggles_for_an_infosam_adapter(studio, qtbot):
    s, c, panel = studio.session, studio.prompts, studio.adapt_panel
    assert not panel.relation_check.isEnabled()  # the base model has no relation module
    for i in (0, 1):
        s.show_image(i)
        qtbot.waitUntil(lambda i=i: s.index == i and s.embedding_ready, timeout=30_000)
        assert prompt_until_mask(c) is not None
        assert c.accept() is not None

    settings = panel.settings()
    settings.method, settings.distill, settings.max_steps = "decoder", "infosam", 1
    assert panel.controller.start(settings)
    qtbot.waitUntil(lambda: not panel.controller.running and s.has_adapted, timeout=240_000)
    qtbot.waitUntil(panel.relation_check.isEnabled, timeout=30_000)

    panel.relation_check.setChecked(True)
    qtbot.waitUntil(lambda: LAYER_NAME in s.viewer.layers, timeout=60_000)
    layer = s.viewer.layers[LAYER_NAME]
    assert layer.data.shape == s.rgb.shape[:2]
    assert np.isfinite(layer.data).all() and layer.data.std() > 0
    assert layer.colormap.name == "inferno" and 0 < layer.opacity < 1

    # another image: the map follows it
    s.show_image(2)
    qtbot.waitUntil(lambda: s.index == 2 and not panel.relation_overlay.computing, timeout=60_000)
    assert s.viewer.layers[LAYER_NAME].data.shape == s.rgb.shape[:2]

    panel.relation_check.setChecked(False)
    assert LAYER_NAME not in s.viewer.layers
