"""`infosam experiment`: plan parsing, run expansion, resumable execution, results.csv / table.md, dry runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import write_ellipse_dataset

import infosam_core.experiments.runner as runner_module
from infosam_core.cli import main
from infosam_core.experiments.plan import PlanError, load_plan
from infosam_core.experiments.tables import mean_std

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PLANS = sorted((ROOT / "experiments").glob("*.toml"))

SMALL_PLAN = """
seeds = [3, 4]
[train]
epochs = 1
batch_size = 2
max_steps = 1
[[datasets]]
name = "Blobs"
train = "blobs"
test = "blobs"
prompt = "box"
metrics = ["iou", "dice"]
[[methods]]
name = "Decoder-only"
peft = "decoder"
[[methods]]
name = "Decoder+InfoSAM"
peft = "decoder"
distill = "infosam"
[[methods]]
name = "Adapter+Future"
peft = "adapter"
distill = "not_a_distiller_yet"
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_ellipse_dataset(root / "blobs", [(24, 30 + i, 10, 14) for i in range(4)], shape=(48, 64))
    return root


@pytest.mark.slow
def test_small_plan_runs_tabulates_and_resumes(data_root, tmp_path, monkeypatch, capsys):
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(SMALL_PLAN)
    out = tmp_path / "out"
    argv = ["experiment", str(plan_path), "--data-root", str(data_root), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipping Adapter+Future: distiller 'not_a_distiller_yet' not implemented yet" in printed
    assert "[4/4]" in printed and "ETA" in printed

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["dataset"], r["method"], r["seed"]) for r in rows] == [
        ("Blobs", "Decoder-only", "3"),
        ("Blobs", "Decoder-only", "4"),
        ("Blobs", "Decoder+InfoSAM", "3"),
        ("Blobs", "Decoder+InfoSAM", "4"),
    ]
    assert all(0 <= float(r["iou"]) <= 1 and float(r["dice"]) >= float(r["iou"]) for r in rows)
    assert all(r["steps"] == "1" for r in rows)
    # every trained run's adapter and history are saved beside the results, and its result file names them
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        adapter = out / "adapters" / path.stem / "adapter.json"
        assert record["adapter"] == str(adapter) and adapter.is_file() and (adapter.parent / "history.json").is_file()

    table = (out / "table.md").read_text().splitlines()
    for method in ("Decoder-only", "Decoder+InfoSAM"):
        line = next(x for x in table if x.startswith(f"| {method} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        for cell, metric in zip(cells, ("iou", "dice")):
            mean, std = mean_std([float(r[metric]) for r in rows if r["method"] == method])
            assert cell == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert any(x.startswith("| Adapter+Future ¹ | n/a | n/a |") for x in table)

    # a second call retrains nothing and leaves the results as they were
    before = (out / "results.csv").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(runner_module, "train_and_save", no_training)
    assert main(argv) == 0
    assert (out / "results.csv").read_text() == before
    assert main(["experiment", str(plan_path), "--out", str(out), "--dry-run", "--data-root", str(data_root)]) == 0
    assert capsys.readouterr().out.count("  done  ") == 4
    (out / "table.md").unlink()
    assert main([*argv, "--report"]) == 0  # tables rewritten from the finished runs, nothing trained
    assert (out / "results.csv").read_text() == before and (out / "table.md").exists()


@pytest.mark.slow
def test_interrupted_or_changed_run_is_redone(data_root, tmp_path, monkeypatch):
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(SMALL_PLAN.replace("seeds = [3, 4]", "seeds = [3]"))
    out = tmp_path / "out"
    argv = ["experiment", str(plan_path), "--data-root", str(data_root), "--out", str(out)]
    assert main(argv) == 0
    files = sorted((out / "runs").glob("*.json"))
    assert len(files) == 2
    files[0].unlink()  # as if the process died before writing it
    record = json.loads(files[1].read_text())
    record["fingerprint"] = "0" * 16  # as if its settings changed in the plan
    files[1].write_text(json.dumps(record))
    calls = []
    real_train = runner_module.train_and_save
    monkeypatch.setattr(runner_module, "train_and_save", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    assert main(argv) == 0
    assert len(calls) == 2


@pytest.mark.parametrize("plan_path", SHIPPED_PLANS, ids=[p.stem for p in SHIPPED_PLANS])
def test_shipped_plans_expand_with_dry_run(plan_path, capsys):
    assert main(["experiment", str(plan_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    plan = load_plan(plan_path)
    n_runs = len(plan.runs())
    assert f"{n_runs} run(s); {len(plan.unavailable())} method(s) not available yet" in printed
    assert printed.count("  todo  ") == n_runs
    assert n_runs + len(plan.unavailable()) * len(plan.datasets) * len(plan.seeds) == (
        len(plan.datasets) * len(plan.methods) * len(plan.seeds)
    )


def test_paper_protocol_in_shipped_plans():
    plan = load_plan(ROOT / "experiments" / "peft_table.toml")
    by_name = {d.name: d for d in plan.datasets}
    assert by_name["CAMO"].metrics == ("s_measure", "e_measure", "weighted_f")
    assert by_name["Kvasir"].metrics == ("s_measure", "e_measure")
    assert by_name["Road"].prompt == "points5" and by_name["Road"].train_overrides == {"epochs": 20}
    road_run = next(r for r in plan.runs() if r.dataset.name == "Road" and r.config is not None)
    assert road_run.config.epochs == 20 and road_run.config.batch_size == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds = []", "'seeds' must be a non-empty list"),
        ('bogus = 1\n[[datasets]]\nname="a"\ntrain="a"\ntest="a"', "unknown top-level key(s) bogus"),
        ('[[datasets]]\nname="a"\ntrain="a"\ntest="a"\nprompt="lasso"\n[[methods]]\nname="m"\npeft="lora"', "prompt"),
        ('[[datasets]]\nname="a"\ntrain="a"\ntest="a"\n[[methods]]\nname="m"\npeft="lora"\nepoch=3', "epoch"),
        ('[[datasets]]\nname="a"\ntrain="a"\ntest="a"\n[[methods]]\nname="m"\npeft="lora"\nbatch_size=0', ">= 1"),
        (
            '[[datasets]]\nname="a"\ntrain="a"\ntest="a"\n[[methods]]\nname="m"\npeft="lora"\npeft_options={rnk=2}',
            "rnk",
        ),
        ("seeds = [1", "not valid TOML"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_plan(path)


def test_missing_dataset_fails_before_any_training(tmp_path, capsys):
    path = tmp_path / "plan.toml"
    path.write_text(
        '[[datasets]]\nname="a"\ntrain="nowhere/train"\ntest="nowhere/test"\n[[methods]]\nname="m"\npeft="decoder"'
    )
    assert main(["experiment", str(path), "--out", str(tmp_path / "o"), "--data-root", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- several GPUs
def test_claims_are_exclusive_os_locks_released_when_the_holder_dies(tmp_path, data_root):
    import subprocess
    import sys

    from infosam_core.experiments.runner import claim_path, claim_run, release_run

    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(SMALL_PLAN)
    run = load_plan(plan_path).runs(data_root)[0]
    lock = claim_run(tmp_path, run)
    assert lock is not None
    assert claim_run(tmp_path, run) is None  # held (another lock object, as another runner would have)
    release_run(lock)
    # a holder killed with -9 (never releasing): the OS frees its lock, the run is free at once
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from filelock import FileLock; lock = FileLock({str(claim_path(tmp_path, run))!r}); lock.acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    assert claim_run(tmp_path, run) is None
    holder.kill()
    holder.wait()
    lock = claim_run(tmp_path, run, timeout=5)
    assert lock is not None
    release_run(lock)


def test_gpus_refused_without_those_gpus_and_on_bad_lists(tmp_path, data_root, capsys):
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(SMALL_PLAN)
    base = ["experiment", str(plan_path), "--data-root", str(data_root), "--out", str(tmp_path / "o")]
    assert main([*base, "--gpus", "0,x"]) == 2
    assert "distinct GPU numbers" in capsys.readouterr().err
    assert main([*base, "--gpus", "1,1"]) == 2
    capsys.readouterr()
    import torch

    if not torch.cuda.is_available():
        assert main([*base, "--gpus", "0"]) == 2
        assert "no GPU 0 here" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs").exists()  # refused before any run started


@pytest.mark.slow
def test_gpus_spread_runs_over_workers_each_run_once(tmp_path, data_root, monkeypatch, capsys):
    import infosam_core.cli.experiment_cmd as experiment_cmd

    monkeypatch.setattr(experiment_cmd, "check_gpus", lambda ids: None)  # the workers run on the CPU here
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(SMALL_PLAN)
    out = tmp_path / "out"
    argv = ["experiment", str(plan_path), "--data-root", str(data_root), "--out", str(out), "--gpus", "0,1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    trained = [line for line in printed.splitlines() if "] done in " in line]
    assert len(trained) == 4  # 2 methods x 2 seeds, each trained by exactly one worker
    assert {line.split("]")[0] for line in trained} <= {"[gpu 0", "[gpu 1"}
    assert "4/4 runs finished on GPUs 0,1" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and not list((out / "runs").glob("*.claim"))


@pytest.mark.parametrize(
    "model, runnable",
    [
        ("tiny", {"vid", "reviewkd", "ibd", "semckd"}),
        ("sam2.1_hiera_tiny", {"vid", "reviewkd"}),  # Hiera: levels = stage ends of different widths
        ("sam2_hiera_base_plus", {"vid", "reviewkd"}),
        ("vit_t", set()),  # TinyViT: no block outputs handed to distillers
    ],
)
def test_block_distillers_are_marked_by_what_the_model_gives(model, runnable):
    from infosam_core.experiments.plan import MethodSpec

    for distill in ("vid", "reviewkd", "ibd", "semckd", "pkt"):
        reason = MethodSpec(name="m", peft="adapter", distill=distill).missing(model)
        if distill in runnable or distill == "pkt":
            assert reason is None, (distill, reason)
        elif model == "vit_t":
            assert reason == f"distiller {distill!r} reads encoder block outputs, which vit_t's encoder does not give"
        else:
            assert "needs encoder blocks of one width and grid (ViT)" in reason
