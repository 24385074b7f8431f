"""Words the user reads: plurals, "adapter" (not "adapter adapter"), the label button in box mode, status lines
that keep their height, and `infosam segment`'s per-image progress on stderr."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from infosam_app.state.wording import adapter_name, plural


def test_plural_and_adapter_name():
    assert [plural(n, "object") for n in (0, 1, 2)] == ["0 objects", "1 object", "2 objects"]
    assert plural(1, "proposal") == "1 proposal" and plural(3, "image") == "3 images"
    assert adapter_name("adapter") == "adapter" and adapter_name("lora") == "lora adapter"


@pytest.mark.gui
def test_box_mode_label_and_steady_status_lines(studio, qtbot):
    pytest.importorskip("napari")
    c = studio.prompts
    status_height = studio.status_label.height()
    prompt_height = studio.prompt_state_label.height()
    segment_y = studio.proposals_panel.mapTo(studio, studio.proposals_panel.rect().topLeft()).y()
    c.set_mode("box")
    assert studio.label_btn.text() == "box: drag a rectangle" and not studio.label_btn.isEnabled()
    c.set_mode("points")
    assert studio.label_btn.text().startswith("next point:") and studio.label_btn.isEnabled()
    # a long message and a prompt appearing: neither line grows, the Segment all buttons stay where they were
    studio.session.tell("a long message " * 40)
    c.add_point(10, 10)
    qtbot.wait(50)
    assert studio.status_label.height() == status_height and studio.prompt_state_label.height() == prompt_height
    assert studio.proposals_panel.mapTo(studio, studio.proposals_panel.rect().topLeft()).y() == segment_y
    assert "1 prompt" in studio.prompt_state_label.text() and "prompt(s)" not in studio.prompt_state_label.text()
    assert studio.status_label.toolTip().startswith("a long message")


@pytest.mark.slow
def test_segment_prints_one_line_per_image_on_stderr(tmp_path, capsys):
    from infosam_core.cli import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        iio.imwrite(folder / name, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (folder / "c.png").write_text("not an image")
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), "--points-per-side", "4"]) == 1  # one was skipped
    captured = capsys.readouterr()
    err = captured.err
    assert "segment [1/3] a.png (64 x 48) ..." in err and "segment [2/3] b.png: " in err
    skips = [line for line in err.splitlines() if "c.png" in line]
    assert len(skips) == 1 and skips[0].startswith("segment [3/3] c.png: skipped: ") and str(folder) in skips[0]
    assert " objects in " in err and "1 not readable, skipped (named above)" in captured.out
