"""The ``infosam`` command line starts light: building its parser, ``--help`` and refusing bad arguments import
no torch, torchvision, sklearn or napari (each command imports them when it runs). Run in a fresh interpreter,
since the test process has them loaded already. ``benchmarks/bench_cli_start.py`` measures the time saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import infosam_core.cli as cli
from infosam_core.cli import build_parser, complete_arguments, defer_arguments

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "sklearn", "napari")

PROBE = """
import contextlib, io, json, sys
import infosam_core.cli as cli

cli.build_parser()
codes = []
for argv in (
    ["--help"],
    ["predict", "a.png", "--bogus"],
    ["predict", "missing.png", "--box", "1,2,3", "--out", "x.png"],
    ["segment", "missing.png", "--out", "o", "--tile-shape", "3"],
):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(cli.main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
print(json.dumps({"codes": codes, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def test_building_the_parser_and_refusing_bad_arguments_import_no_torch(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 2, 2, 2], out.stderr  # help, argparse's refusal, the commands' own refusals
    assert result["loaded"] == [], f"imported while only parsing: {result['loaded']}"


def test_the_light_model_type_names_are_the_registry_s():
    from infosam_core.models import model_types, registry

    assert model_types.MODEL_TYPES == registry.MODEL_TYPES == tuple(registry.MODELS)
    assert model_types.AUTO == registry.AUTO
    assert registry.resolve_model_type(registry.AUTO, None) == model_types.DEFAULT_MODEL_TYPE


def test_deferred_arguments_are_added_when_their_command_is_chosen():
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--peft", "lora"])
    assert args.peft == "lora" and args.func.__module__ == "infosam_core.cli.train_cmd"


def test_complete_arguments_adds_them_once():
    import argparse

    calls = []
    parser = argparse.ArgumentParser()
    defer_arguments(parser, lambda p: calls.append(p.add_argument("--x")))
    assert not any("--x" in a.option_strings for a in parser._actions)
    complete_arguments(complete_arguments(parser))
    assert len(calls) == 1 and parser.parse_args(["--x", "1"]).x == "1"
    assert cli.complete_arguments is complete_arguments
