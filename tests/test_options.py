"""One way to read and check options (infosam_core.options), for every PEFT method and distiller; registries
built from their classes; the CLI and plans refuse a bad option in one line before any data is read."""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import torch
from helpers import head_only_method

from infosam_core.distill.base import Distiller, DistillLoss
from infosam_core.distill.registry import (
    DISTILLER_CLASSES,
    DISTILLERS,
    make_distiller,
    make_distiller_config,
    register_distiller,
    unregister_distiller,
)
from infosam_core.options import OptionError, Options, bounds, check
from infosam_core.peft.registry import (
    METHOD_MODULES,
    PEFT_METHODS,
    apply_peft,
    make_config,
    register_peft_method,
    unregister_peft_method,
)


@dataclass
class Example(Options):
    flag: bool = False
    count: int = field(default=2, metadata=bounds(1, 8))
    rate: float = field(default=0.5, metadata=bounds(0.0, 1.0, low_open=True))
    mode: Literal["fast", "slow"] = "fast"
    label: str = "x"
    sizes: tuple[int, ...] = field(default=(1, 2), metadata=bounds(1, 100))
    limit: float | None = None
    parity: Any = field(default=0, metadata=check(lambda v: v if v in (0, 1) else _raise("must be 0 or 1")))

    def validate(self) -> None:
        if self.mode == "slow" and self.count > 4:
            raise OptionError("count", "must be <= 4 with mode=slow")


def _raise(message: str):
    raise ValueError(message)


def _refusal(callable_, *args, **kwargs) -> OptionError:
    with pytest.raises(OptionError) as info:
        callable_(*args, **kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    return info.value


def test_raw_values_are_coerced_by_the_field_type():
    raw = {"flag": "true", "count": "4", "rate": "0.25", "mode": "slow", "sizes": "3,4", "limit": "2", "parity": 1}
    got = Example.parse(raw)
    assert got == Example(flag=True, count=4, rate=0.25, mode="slow", sizes=(3, 4), limit=2.0, parity=1)
    assert type(got.count) is int and type(got.rate) is float and type(got.limit) is float
    assert Example.parse({"count": 3.0, "rate": 1, "sizes": [5], "limit": None, "flag": False}).count == 3
    assert Example.parse({"limit": "none"}).limit is None
    assert Example.parse({}) == Example()


@pytest.mark.parametrize(
    ("raw", "option", "words"),
    [
        ({"flag": 1}, "flag", "true or false"),
        ({"flag": "maybe"}, "flag", "true or false"),
        ({"count": "abc"}, "count", "must be an integer"),
        ({"count": 2.5}, "count", "must be an integer"),
        ({"count": True}, "count", "must be an integer"),
        ({"count": 9}, "count", "must be in [1, 8]"),
        ({"count": 0}, "count", "must be in [1, 8]"),
        ({"rate": 0}, "rate", "must be in (0, 1]"),
        ({"rate": "nan"}, "rate", "finite"),
        ({"rate": float("inf")}, "rate", "finite"),
        ({"rate": [1]}, "rate", "finite number"),
        ({"mode": "medium"}, "mode", "one of fast, slow"),
        ({"label": 3}, "label", "must be text"),
        ({"sizes": [1, 1000]}, "sizes", "must be in [1, 100]"),
        ({"sizes": 7}, "sizes", "must be a list"),
        ({"limit": "x"}, "limit", "finite number"),
        ({"parity": 2}, "parity", "must be 0 or 1"),
        ({"mode": "slow", "count": 6}, "count", "<= 4 with mode=slow"),  # a rule between fields
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_option(raw, option, words):
    error = _refusal(Example.parse, raw, owner="thing 'ex'")
    assert error.option == option
    assert str(error).startswith(f"thing 'ex': option {option} ") and words in str(error), str(error)


def test_unknown_keys_are_named_with_the_valid_ones():
    error = _refusal(Example.parse, {"cuont": 1, "flag": True})
    assert error.option is None
    assert str(error) == ("unknown option(s) cuont; valid: flag, count, rate, mode, label, sizes, limit, parity")


def test_an_instance_made_directly_is_checked_too():
    _refusal(Example, count=100)
    assert Example(count="3").count == 3


CONFIGS = [(f"PEFT method {n!r}", m.config_cls) for n, m in PEFT_METHODS.items()] + [
    (f"distiller {n!r}", s.config_cls) for n, s in DISTILLERS.items()
]


def _numeric_fields(cls) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]


@pytest.mark.parametrize(("owner", "cls"), CONFIGS, ids=[o for o, _ in CONFIGS])
def test_every_config_checks_its_options(owner, cls):
    assert issubclass(cls, Options)
    assert cls.parse({}) == cls()  # the defaults are valid
    error = _refusal(cls.parse, {"no_such_option": 1}, owner=owner)
    assert "no_such_option" in str(error) and str(error).startswith(owner)
    for f, _ in _numeric_fields(cls):
        limits = f.metadata.get("bounds")
        assert limits is not None and limits.high is not None and math.isfinite(limits.high), (owner, f.name)
        error = _refusal(cls.parse, {f.name: "abc"}, owner=owner)
        assert error.option == f.name and f"option {f.name} must be" in str(error)
        error = _refusal(cls.parse, {f.name: limits.high * 10 + 10}, owner=owner)
        assert error.option == f.name and "must be in" in str(error)
    for f in dataclasses.fields(cls):
        if typing.get_type_hints(cls)[f.name] is bool:
            assert _refusal(cls.parse, {f.name: "perhaps"}).option == f.name


@pytest.mark.parametrize(
    ("name", "options", "option"),
    [
        ("vid", {"init_var": "abc"}, "init_var"),
        ("vid", {"init_var": 0}, "init_var"),  # a variance must be > 0
        ("semckd", {"mid_channels": 3000}, "mid_channels"),  # was 7.8 GB of regressors (issue 32)
        ("ibd", {"qk_dim": 2e5}, "qk_dim"),  # was an allocation traceback (issue 32)
        ("semckd", {"batch_size": 0}, "batch_size"),
        ("logit", {"temperature": 0}, "temperature"),
        ("semckd", {"temperature": -1}, "temperature"),
        ("infosam", {"alpha": -1}, "alpha"),
        ("pkt", {"feature": "logits"}, "feature"),
        ("reviewkd", {"warmup_epochs": -1}, "warmup_epochs"),
        ("vid", {"blocks": "2,x"}, "blocks"),
        ("ibd", {"blocks": [1, 10**9]}, "blocks"),
    ],
)
def test_distiller_options_are_bounded(name, options, option):
    error = _refusal(make_distiller, name, options, 256)
    assert error.option == option and str(error).startswith(f"distiller {name!r}: option {option} ")


def test_peft_options_are_checked_once_by_the_config(random_tiny_sam):
    for method, options, option in [
        ("lora", {"rank": 0}, "rank"),
        ("convlora", {"experts": 1000}, "experts"),
        ("su_sam", {"mlp_ratio": 0}, "mlp_ratio"),
        ("su_sam", {"variant": "zigzag"}, "variant"),
        ("adaptformer", {"bottleneck": -1}, "bottleneck"),
    ]:
        error = _refusal(apply_peft, copy.deepcopy(random_tiny_sam), method, **options)
        assert error.option == option and str(error).startswith(f"PEFT method {method!r}: option {option} ")
    assert make_config("lora", {"rank": "8", "train_decoder": "false"}) == PEFT_METHODS["lora"].config_cls(
        train_decoder=False, rank=8
    )


def test_registries_are_built_from_the_modules_and_classes():
    assert list(PEFT_METHODS) == [m.METHOD.name for m in METHOD_MODULES]
    assert all(PEFT_METHODS[m.METHOD.name] is m.METHOD for m in METHOD_MODULES)
    assert list(DISTILLERS) == [c.name for c in DISTILLER_CLASSES]
    for name, spec in DISTILLERS.items():
        assert spec.distiller_cls.name == name and spec.config_cls is spec.distiller_cls.config_cls
        assert spec.description
    assert [n for n, s in DISTILLERS.items() if s.recommended] == ["infosam"]
    with pytest.raises(ValueError, match="registered already"):
        register_peft_method(PEFT_METHODS["lora"])
    with pytest.raises(ValueError, match="registered already"):
        register_distiller(DISTILLER_CLASSES[0])


def test_a_peft_method_registered_at_run_time_applies_and_checks_its_options(random_tiny_sam):
    method = register_peft_method(head_only_method())
    try:
        assert "test_head_only" in PEFT_METHODS
        model = copy.deepcopy(random_tiny_sam)
        report = apply_peft(model, "test_head_only", generator=torch.Generator().manual_seed(0))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith("mask_decoder.iou_prediction_head.") for n in trainable)
        assert report.method == "test_head_only" and report.options == {"train_decoder": False, "scale": 1.0}
        assert (
            report.total_trainable
            == report.mask_decoder
            == sum(p.numel() for p in model.parameters() if p.requires_grad)
        )
        error = _refusal(make_config, "test_head_only", {"scale": 11})
        assert error.option == "scale" and str(error).startswith("PEFT method 'test_head_only'")
    finally:
        unregister_peft_method(method.name)
    assert "test_head_only" not in PEFT_METHODS


def test_a_distiller_registered_at_run_time_is_made_with_checked_options():
    @dataclass
    class ZeroConfig(Options):
        weight: float = field(default=1.0, metadata=bounds(0.0, 10.0))

    class ZeroDistiller(Distiller):
        name = "test_zero"
        config_cls = ZeroConfig
        description = "a zero loss (a test plug-in)"
        term_names = ("zero",)

        def __init__(self, config, dims, generator=None) -> None:
            super().__init__(config)

        def forward(self, inputs) -> DistillLoss:
            zero = inputs.student_embeddings.sum() * 0
            return DistillLoss(self.config.weight * zero, {"zero": zero})

    register_distiller(ZeroDistiller)
    try:
        assert isinstance(make_distiller("test_zero", {"weight": "2"}, 256), ZeroDistiller)
        assert make_distiller_config("test_zero", {"weight": 2}).weight == 2.0
        assert _refusal(make_distiller, "test_zero", {"weight": -1}, 256).option == "weight"
    finally:
        unregister_distiller("test_zero")
    assert "test_zero" not in DISTILLERS


def test_the_cli_refuses_a_bad_distiller_option_in_one_line_before_reading_data(tmp_path, capsys, monkeypatch):
    import infosam_core.data.datasets as datasets
    from infosam_core.cli import main

    def no_loading(*a, **k):
        raise AssertionError("data read before the options were checked")

    monkeypatch.setattr(datasets, "load_folder_dataset", no_loading)
    missing = tmp_path / "no_such_dataset"
    args = ["train", "--distill", "vid", "--distill-option", "init_var=abc", "--data", str(missing)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "option init_var must be a finite number" in err and "'vid'" in err
    assert "no_such_dataset" not in err and not (tmp_path / "out").exists()  # refused before --data or --out
    for extra, option in (
        (["--distill", "semckd", "--distill-option", "mid_channels=3000"], "mid_channels"),
        (["--distill", "ibd", "--distill-option", "qk_dim=2e5"], "qk_dim"),
        (["--distill", "vid", "--distill-option", "init_vr=1"], "init_vr"),
        (["--peft", "lora", "--peft-option", "alpha=abc"], "alpha"),
    ):
        assert main(["train", *extra, "--data", str(missing), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and option in err and "no_such_dataset" not in err, err


def test_info_refuses_a_bad_peft_option_before_loading_the_model(capsys, monkeypatch):
    import infosam_core.models.registry as registry
    from infosam_core.cli import main

    def no_loading(*a, **k):
        raise AssertionError("model loaded before the options were checked")

    monkeypatch.setattr(registry, "load_sam", no_loading)
    assert main(["info", "--peft", "lora", "--peft-option", "rank=100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "option rank must be in [1, 1024]" in err, err


def test_a_plan_with_a_bad_method_option_is_refused_when_loaded(tmp_path):
    from infosam_core.experiments.plan import PlanError, load_plan

    head = '[[datasets]]\nname="a"\ntrain="a"\ntest="a"\n[[methods]]\nname="m"\npeft="adapter"\n'
    path = tmp_path / "plan.toml"
    for body, option in (
        ('distill="vid"\ndistill_options={init_var="abc"}', "init_var"),
        ('distill="semckd"\ndistill_options={mid_channels=3000}', "mid_channels"),
        ("peft_options={mlp_ratio=1e9}", "mlp_ratio"),
    ):
        path.write_text(head + body)
        with pytest.raises(PlanError, match=f"methods\\[0\\] \\(m\\): .*option {option} must be"):
            load_plan(path)
