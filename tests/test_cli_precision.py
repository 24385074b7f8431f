"""``--precision`` on every command that predicts: parsed, checked before any model is loaded, passed on."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from infosam_core.cli import build_parser, main
from infosam_core.cli.common import PRECISION_CHOICES
from infosam_core.inference import predictor as predictor_module
from infosam_core.inference.precision import PRECISIONS


def test_the_choices_are_the_librarys():
    assert PRECISION_CHOICES == PRECISIONS


@pytest.mark.parametrize("command", ["predict", "segment", "eval"])
def test_every_inference_command_takes_precision(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "--precision {auto,float32,bfloat16,int8}" in capsys.readouterr().out


def test_unknown_precision_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "x.png"), "--box", "1,1,5,5", "--precision", "fp16", "--out", "m.png"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_predict_runs_in_the_precision_asked_for(tmp_path, monkeypatch):
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = (220, 180, 40)
    iio.imwrite(tmp_path / "img.png", image)
    seen = []
    real_init = predictor_module.Predictor.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.append(self.resolved_precision)

    monkeypatch.setattr(predictor_module.Predictor, "__init__", recording_init)
    out = tmp_path / "mask.png"
    args = ["predict", str(tmp_path / "img.png"), "--box", "20,15,60,45", "--out", str(out), "--device", "cpu"]
    assert main([*args, "--precision", "int8"]) == 0
    assert seen == ["int8"] and iio.imread(out).max() == 255
