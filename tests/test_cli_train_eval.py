"""`infosam train` and `infosam eval` end to end on the bundled tiny model (a few steps), and their errors."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import write_ellipse_dataset

from infosam_core.cli import build_parser, main
from infosam_core.cli.train_cmd import build_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    ellipses = [(32, 40, 12 + i, 18) for i in range(4)]
    return write_ellipse_dataset(tmp_path_factory.mktemp("ds"), ellipses, shape=(64, 80))


def test_train_then_eval_with_the_adapter(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            str(dataset),
            "--peft",
            "lora",
            "--peft-option",
            "rank=2",
            "--distill",
            "infosam",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert len(list(out.glob("adapter.*.safetensors"))) == 1 and (out / "adapter.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert history["steps"] == 1 and history["config"]["peft_options"] == {"rank": 2}
    assert json.loads((out / "adapter.json").read_text())["options"]["rank"] == 2
    assert "step 1/1" in printed and "adapter ->" in printed and "added modules" in printed

    rc = main(
        [
            "eval",
            "--data",
            str(dataset),
            "--adapter",
            str(out / "adapter"),
            "--prompt",
            "box",
            "--metrics",
            "iou",
            "dice",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "iou" in printed and "mean over 4 images" in printed
    rows = list(csv.DictReader((tmp_path / "eval" / "metrics.csv").open()))
    assert [r["image"] for r in rows] == ["im0", "im1", "im2", "im3", "mean"]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["n_images"] == 4 and set(summary["mean"]) == {"iou", "dice"}
    assert float(rows[-1]["iou"]) == pytest.approx(summary["mean"]["iou"], abs=1e-6)


def test_eval_base_model_points5_is_seeded(dataset, tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            main(
                [
                    "eval",
                    "--data",
                    str(dataset),
                    "--prompt",
                    "points5",
                    "--metrics",
                    "iou",
                    "--seed",
                    "3",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_user_errors_exit_2_with_a_message(dataset, tmp_path, capsys):
    infosam = ["--distill", "infosam"]  # not the tiny model's default (issue 31)
    assert main(["train", "--data", str(dataset), *infosam, "--batch-size", "1", "--out", str(tmp_path)]) == 2
    assert "'infosam' needs batch_size >= 2" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--peft-option", "rank", "--out", str(tmp_path)]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert (
        main(["train", "--data", str(dataset), "--peft", "bitfit", "--peft-option", "rank=2", "--out", str(tmp_path)])
        == 2
    )
    assert "unknown option(s) rank" in capsys.readouterr().err
    assert main(["eval", "--data", str(dataset), "--adapter", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing.json: adapter description not found" in capsys.readouterr().err


def test_adapter_for_another_base_is_refused(dataset, tmp_path, capsys):
    import torch

    from infosam_core.adapter_files.checkpoint import save_peft_checkpoint
    from infosam_core.models.checkpoints import save_sam_weights
    from infosam_core.models.sam import build_sam
    from infosam_core.peft.registry import apply_peft

    torch.manual_seed(1)
    other = build_sam("tiny")
    save_sam_weights(other, tmp_path / "other.safetensors", half=False)
    apply_peft(other, "bitfit")
    save_peft_checkpoint(other, tmp_path / "ad")
    assert main(["eval", "--data", str(dataset), "--adapter", str(tmp_path / "ad"), "--out", str(tmp_path / "e")]) == 2
    assert "made for another base model" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--data",
                str(dataset),
                "--checkpoint",
                str(tmp_path / "other.safetensors"),
                "--adapter",
                str(tmp_path / "ad"),
                "--metrics",
                "iou",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )


def test_preset_paper_and_explicit_flags():
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--data",
            "d",
            "--out",
            "o",
            "--preset",
            "paper",
            "--epochs",
            "3",
            "--peft-option",
            "train_decoder=false",
            "--peft-option",
            "mlp_ratio=0.5",
        ]
    )
    config = build_config(args)
    assert (config.peft, config.distill, config.batch_size, config.lr, config.min_lr, config.seed) == (
        "adapter",
        "infosam",
        4,
        2e-4,
        2e-5,
        42,
    )
    assert (config.distill_weight, config.distill_options) == (1.0, {"alpha": 1.0, "beta": 0.5, "center": False})
    assert config.epochs == 3 and config.peft_options == {"train_decoder": False, "mlp_ratio": 0.5}
    assert not config.grad_checkpoint and config.bf16
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--grad-checkpoint", "--no-bf16"])
    assert build_config(args).grad_checkpoint and not build_config(args).bf16
