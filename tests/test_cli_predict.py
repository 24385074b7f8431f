"""`infosam predict`, run in-process through infosam_core.cli.main."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from infosam_core.cli import main
from infosam_core.inference.predictor import Predictor
from infosam_core.models.registry import load_sam


@pytest.fixture()
def image_path(tmp_path):
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = (220, 180, 40)
    path = tmp_path / "img.png"
    iio.imwrite(path, image)
    return path


def _expected(image, **prompt):
    predictor = Predictor(load_sam("tiny"))
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(**prompt)
    best = int(np.argmax(scores))
    return masks[best], float(scores[best])


def test_point_prompt_writes_0_255_png(image_path, tmp_path, capsys):
    out = tmp_path / "sub" / "mask.png"
    assert main(["predict", str(image_path), "--point", "40,30", "--out", str(out)]) == 0
    mask = iio.imread(out)
    assert mask.dtype == np.uint8 and mask.shape == (60, 80) and set(np.unique(mask)) <= {0, 255}
    want, score = _expected(
        iio.imread(image_path),
        point_coords=np.array([[40.0, 30.0]]),
        point_labels=np.array([1]),
        multimask_output=False,
    )
    np.testing.assert_array_equal(mask == 255, want)
    printed = capsys.readouterr().out
    assert f"score {score:.3f}" in printed and str(out) in printed
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_box_points_and_multimask(image_path, tmp_path):
    out = tmp_path / "mask.png"
    argv = [
        "predict",
        str(image_path),
        "--box",
        "15,10,65,50",
        "--point",
        "40,30",
        "--point",
        "5,5,0",
        "--multimask",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    want, _ = _expected(
        iio.imread(image_path),
        box=np.array([15.0, 10, 65, 50]),
        point_coords=np.array([[40.0, 30], [5, 5]]),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    )
    np.testing.assert_array_equal(iio.imread(out) == 255, want)


def test_16bit_tiff_input(tmp_path):
    tifffile.imwrite(tmp_path / "scan.tif", np.linspace(0, 4000, 50 * 40).reshape(50, 40).astype(np.uint16))
    assert main(["predict", str(tmp_path / "scan.tif"), "--box", "0,0,39,49", "--out", str(tmp_path / "m.png")]) == 0
    assert iio.imread(tmp_path / "m.png").shape == (50, 40)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "give a prompt"),
        (["--point", "40"], "expected X,Y"),
        (["--point", "a,b"], "expected X,Y"),
        (["--point", "40,30,2"], "LABEL must be 1"),
        (["--point", "400,30"], "outside the 80x60 image"),
        (["--box", "1,2,3"], "4 numbers"),
        (["--box", "50,10,10,40"], "X1 must be >= X0"),
        (["--box", "0,0,90,40"], "outside"),
        (["--point", "40,30", "--checkpoint", "missing.pth"], "missing.pth: file not found"),
    ],
)
def test_user_errors(image_path, tmp_path, capsys, extra, message):
    out = tmp_path / "mask.png"
    assert main(["predict", str(image_path), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infosam predict: error:") and message in err
    assert not out.exists()


def test_bad_image_and_output_name(tmp_path, image_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert main(["predict", str(tmp_path / "broken.png"), "--point", "1,1", "--out", str(tmp_path / "m.png")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["predict", str(image_path), "--point", "1,1", "--out", str(tmp_path / "m.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


def test_checkpoint_of_another_architecture(tmp_path, image_path, capsys):
    torch.save({"mlp.weight": torch.zeros(3, 3)}, tmp_path / "mlp.pth")
    argv = [
        "predict",
        str(image_path),
        "--point",
        "1,1",
        "--checkpoint",
        str(tmp_path / "mlp.pth"),
        "--out",
        str(tmp_path / "m.png"),
    ]
    assert main(argv) == 2  # --model auto (the default): the file matches no model type
    err = capsys.readouterr().err
    assert "mlp.pth: cannot tell which model this file is for" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--model", "tiny"]) == 2
    assert "not a SAM checkpoint" in capsys.readouterr().err


def test_missing_out_is_an_argparse_error(image_path):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(image_path), "--point", "1,1"])
    assert exc.value.code == 2


def test_adapter_option_predicts_with_the_adapted_model(image_path, tmp_path, capsys):
    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
    from infosam_core.peft.registry import apply_peft

    adapted = load_sam("tiny")
    apply_peft(adapted, "lora", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    save_peft_checkpoint(adapted, tmp_path / "adapter")
    out = tmp_path / "mask.png"
    argv = [
        "predict",
        str(image_path),
        "--box",
        "15,10,65,50",
        "--adapter",
        str(tmp_path / "adapter"),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    predictor = Predictor(adapted)
    predictor.set_image(iio.imread(image_path))
    masks, scores, _ = predictor.predict(box=np.array([15.0, 10, 65, 50]), multimask_output=False)
    np.testing.assert_array_equal(iio.imread(out) == 255, masks[0])
    assert f"score {float(scores[0]):.3f}" in capsys.readouterr().out
    _, base_score = _expected(iio.imread(image_path), box=np.array([15.0, 10, 65, 50]), multimask_output=False)
    assert abs(base_score - float(scores[0])) > 1e-3  # the adapter changed the prediction
    missing = ["predict", str(image_path), "--box", "1,1,5,5", "--adapter", str(tmp_path / "nope"), "--out", str(out)]
    assert main(missing) == 2
    assert "nope.json: adapter description not found" in capsys.readouterr().err
