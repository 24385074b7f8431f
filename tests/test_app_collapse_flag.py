"""Issue 31 in the app: the loss plot shows when the distillation has collapsed, and "Adapt to my data" uses
the InfoSAM setting measured best for the model in use (tiny: centred relation vectors)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from qtpy.QtGui import QColor

from infosam_app.adapt_panel import COLLAPSE_FLAG
from infosam_app.loss_plot import FLAG_COLOR, LossPlot
from infosam_app.training import RunSettings
from infosam_core.training.results import TrainProgress

pytestmark = [pytest.mark.gui]


def _flag_pixels(plot: LossPlot) -> int:
    image = plot.grab().toImage()
    red = QColor(FLAG_COLOR)
    return sum(
        1
        for y in range(0, image.height(), 1)
        for x in range(image.width() // 2, image.width())
        if QColor(image.pixel(x, y)).red() > 200 and abs(QColor(image.pixel(x, y)).green() - red.green()) < 40
    )


def test_loss_plot_draws_the_flag_only_when_set(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 220)
    for step in range(1, 6):
        plot.add(step, {"seg": 1.0 / step, "L_r": 0.1, "L_d": -0.01})
    assert _flag_pixels(plot) == 0
    plot.set_flag(COLLAPSE_FLAG)
    assert plot.flag == COLLAPSE_FLAG and _flag_pixels(plot) > 20
    plot.set_flag("")
    assert _flag_pixels(plot) == 0


@pytest.mark.slow
def test_adapt_panel_shows_the_collapse_and_uses_the_model_default(studio):
    panel = studio.adapt_panel

    def progress(step: int, collapsed: bool) -> TrainProgress:
        return TrainProgress(step, 10, 1, 1.0, 0.9, {"l_r": 0.1, "l_d": -0.01}, 2e-4, 1.0, 9.0,
                             diagnostics={"rel_cos_s": 0.996}, distill_collapsed=collapsed)  # fmt: skip

    panel._on_progress(progress(1, False))
    assert panel.plot.flag == ""
    panel._on_progress(progress(2, True))
    assert panel.plot.flag == COLLAPSE_FLAG
    panel._on_progress(progress(3, False))
    assert panel.plot.flag == ""
    # the studio runs the bundled tiny model: its InfoSAM default is centred relation vectors
    config = panel.controller._train_config(RunSettings(), continue_run=False)
    assert config.distill == "infosam" and config.distill_options == {"center": True}
    assert panel.controller._train_config(RunSettings(distill="none"), False).distill_options == {}
