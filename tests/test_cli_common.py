"""Shared CLI helpers live in infosam_core.cli.common, and every command's --device has the same default."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import infosam_core.cli as cli
from infosam_core.cli import CLIError, build_parser, complete_arguments
from infosam_core.cli.common import DEVICE_DEFAULT, parse_option

CLI_DIR = Path(cli.__file__).parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: complete_arguments(sub) for name, sub in action.choices.items()}


def test_every_device_option_defaults_to_auto():
    commands = _subparsers(build_parser())
    defaults = {
        name: action.default
        for name, sub in commands.items()
        for action in sub._actions
        if "--device" in action.option_strings
    }
    assert {"train", "eval", "predict", "segment", "pretrain"} <= defaults.keys()
    assert DEVICE_DEFAULT == "auto" and set(defaults.values()) == {"auto"}, defaults


def test_no_command_imports_another_commands_module():
    for path in sorted(CLI_DIR.glob("*_cmd.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.endswith("_cmd")}, path.name


def test_parse_option():
    assert parse_option("rank=8") == ("rank", 8)
    assert parse_option(" train_decoder = False") == ("train_decoder", False)
    assert parse_option("blocks=[2,5]", "--distill-option") == ("blocks", [2, 5])
    assert parse_option("name=abc") == ("name", "abc")
    with pytest.raises(CLIError, match="--distill-option 'x': expected KEY=VALUE, e.g. alpha=0"):
        parse_option("x", "--distill-option", "alpha=0")
