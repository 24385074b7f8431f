"""Issue 31: InfoSAM's options beyond the paper (teacher token as query), the collapse indicator in the
training history and progress, and the per-model defaults of ``infosam train``."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import disc_samples, micro_sam, quick

import infosam_core.training.trainer as train_module
from infosam_core.cli import build_parser
from infosam_core.cli.train_cmd import build_config
from infosam_core.distill import DistillInputs
from infosam_core.distill.infosam import InfosamConfig, InfosamDistiller, mean_pairwise_cosine
from infosam_core.training.collapse import CollapseMonitor
from infosam_core.training.defaults import recommended_distill_options, with_recommended_options
from infosam_core.training.results import TrainProgress
from infosam_core.training.trainer import train


def inputs(seed: int = 0, b: int = 4, c: int = 8, same_embedding: bool = False) -> DistillInputs:
    g = torch.Generator().manual_seed(seed)
    f_t, tok_t = torch.randn(b, c, 4, 4, generator=g), torch.randn(b, c, generator=g)
    f_s = f_t.clone() if same_embedding else torch.randn(b, c, 4, 4, generator=g)
    tok_s = torch.randn(b, c, generator=g)
    f_s.requires_grad_(True)
    tok_s.requires_grad_(True)
    logits = torch.zeros(b, 1, 16, 16)
    return DistillInputs(f_t, f_s, tok_s, logits, torch.zeros(b, 1, 64, 64), lambda _: (logits, tok_t))


def test_mean_pairwise_cosine():
    same = torch.ones(4, 10)
    assert float(mean_pairwise_cosine(same)) == pytest.approx(1.0)
    assert float(mean_pairwise_cosine(torch.eye(3))) == pytest.approx(0.0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert float(mean_pairwise_cosine(opposite)) == pytest.approx(-1.0)


def test_teacher_query_uses_the_teacher_token_and_trains_only_the_embedding():
    distiller = InfosamDistiller(InfosamConfig(query="teacher"), 8, torch.Generator().manual_seed(0))
    x = inputs()
    out = distiller(x)
    out.total.backward()
    assert x.student_token.grad is None  # the student's token is not read
    assert x.student_embeddings.grad is not None and x.student_embeddings.grad.abs().sum() > 0
    # with the student's embedding equal to the teacher's, both relation vectors are the same: the
    # student's relation vector is R(f_s, tok_t)
    paper = InfosamDistiller(InfosamConfig(), 8, torch.Generator().manual_seed(0))
    y = inputs(same_embedding=True)
    rel_t = distiller.relation_vectors(y.teacher_embeddings, y.teacher_token())
    assert float(distiller(y).diagnostics["rel_cos_s"]) == pytest.approx(float(mean_pairwise_cosine(rel_t)), abs=1e-6)
    assert float(paper(y).diagnostics["rel_cos_s"]) != pytest.approx(float(mean_pairwise_cosine(rel_t)), abs=1e-3)


def test_options_are_refused_when_wrong():
    from infosam_core.distill.registry import make_distiller_config
    from infosam_core.options import OptionError

    assert make_distiller_config("infosam", {"query": "teacher"}).query == "teacher"
    with pytest.raises(OptionError, match="query"):
        make_distiller_config("infosam", {"query": "both"})


def test_collapse_monitor_flags_after_patience_and_resets():
    m = CollapseMonitor(patience=3)
    collapsed = {"rel_cos_s": 0.996, "l_d": -0.3}
    healthy = {"rel_cos_s": 0.4, "l_d": -1.9}
    flags = [m.update(v, i + 1) for i, v in enumerate([collapsed, collapsed, collapsed, collapsed, healthy])]
    assert flags == [False, False, True, True, False] and m.first_step == 3
    assert m.end_epoch() == {"collapsed_steps": 4, "distill_collapsed": True}
    assert m.end_epoch() == {"collapsed_steps": 0, "distill_collapsed": False}
    # L_d near 0 alone is a collapse too; no indicator at all: never flagged, no history fields
    m = CollapseMonitor(patience=2)
    assert [m.update({"l_d": -0.01}, i) for i in (1, 2)] == [False, True]
    none = CollapseMonitor(patience=1)
    assert not none.update({"l_r": 0.0}, 1) and none.end_epoch() == {}


@pytest.fixture(scope="module")
def base():
    return micro_sam()


@pytest.fixture(scope="module")
def samples():
    return disc_samples(6)


@pytest.mark.parametrize("collapsing", [True, False])
def test_history_and_progress_report_the_collapse(base, samples, monkeypatch, collapsing):
    # thresholds that every step passes (or none does), so the flag's plumbing is what is tested
    thresholds = dict(cos_threshold=-2.0, ld_threshold=1e9) if collapsing else dict(cos_threshold=2.0, ld_threshold=-1)
    monkeypatch.setattr(train_module, "CollapseMonitor", functools.partial(CollapseMonitor, patience=2, **thresholds))
    seen: list[TrainProgress] = []
    result = train(quick(epochs=2), base, samples, progress=seen.append)
    steps = [p for p in seen if p.val_miou is None]
    assert all(-1.0 <= p.diagnostics["rel_cos_s"] <= 1.0 for p in steps)
    assert [p.distill_collapsed for p in steps] == (
        [False, True, True, True, True, True] if collapsing else [False] * 6
    )
    assert [h["collapsed_steps"] for h in result.history] == ([3, 3] if collapsing else [0, 0])
    assert [h["distill_collapsed"] for h in result.history] == [collapsing, collapsing]
    assert all("rel_cos_s" in h for h in result.history)
    assert result.summary()["distill_collapse_step"] == (2 if collapsing else None)


def test_plain_peft_has_no_collapse_fields(base, samples):
    result = train(quick(distill="none"), base, samples)
    assert "distill_collapsed" not in result.history[0] and result.collapse_step is None


def test_recommended_options_per_model():
    assert recommended_distill_options("tiny", "infosam") == {"center": True}
    assert recommended_distill_options("vit_b", "infosam") == {}
    assert recommended_distill_options("tiny", "pkd") == {}
    assert with_recommended_options("tiny", "infosam", {"center": False, "beta": 1.0}) == {"center": False, "beta": 1.0}


def test_train_cli_uses_the_model_default_and_the_paper_when_asked():
    """tiny: plain PEFT unless InfoSAM is asked for (by name, an option, a weight or the paper preset), then
    centred unless the paper's formula is asked for; other models: InfoSAM with the paper's formula."""
    parser = build_parser()
    common = ["train", "--data", "d", "--out", "o", "--model"]
    default = build_config(parser.parse_args([*common, "tiny"]))
    assert default.distill == "none" and default.distill_options == {}
    for asked in (["--distill", "infosam"], ["--beta", "0.5"], ["--distill-option", "alpha=1"], ["--lam", "1"]):
        config = build_config(parser.parse_args([*common, "tiny", *asked]))
        assert config.distill == "infosam" and config.distill_options["center"] is True, asked
    assert build_config(parser.parse_args([*common, "vit_b"])).distill == "infosam"
    paper = parser.parse_args([*common, "tiny", "--distill", "infosam", "--distill-option", "center=false"])
    assert build_config(paper).distill_options == {"center": False}
    assert build_config(parser.parse_args([*common, "tiny", "--preset", "paper"])).distill_options["center"] is False
    assert build_config(parser.parse_args([*common, "vit_b"])).distill_options == {}
    assert build_config(parser.parse_args([*common, "tiny", "--distill", "none"])).distill_options == {}


def test_decoder_lr_scale_slows_only_the_decoder(base, samples):
    from infosam_core.peft.state import trained_state

    start = {
        k: v.clone()
        for k, v in trained_state(train(quick(max_steps=1, lr=1e-9, min_lr=0), base, samples).model).items()
    }

    def moved(scale: float) -> dict[str, float]:
        state = trained_state(train(quick(max_steps=1, lr=1e-3, min_lr=0, decoder_lr_scale=scale), base, samples).model)
        return {k: float((state[k] - start[k]).abs().max()) for k in state}

    full, slow = moved(1.0), moved(0.01)
    decoder = [k for k in full if k.startswith("mask_decoder.") and full[k] > 1e-6]
    others = [k for k in full if not k.startswith("mask_decoder.") and full[k] > 1e-6]
    assert decoder and others
    assert all(slow[k] < 0.05 * full[k] for k in decoder)  # Adam's first step: the step is lr * sign(grad)
    assert all(slow[k] == pytest.approx(full[k], rel=1e-4) for k in others)
    with pytest.raises(ValueError, match="decoder_lr_scale"):
        quick(decoder_lr_scale=0.0).validate()


def test_describe_recommended():
    from infosam_core.training.defaults import describe_recommended

    assert describe_recommended("tiny", "infosam") == (
        "infosam defaults for the tiny model: center=true (override with --distill-option)"
    )
    assert describe_recommended("vit_b", "infosam") == ""
    from infosam_core.training.defaults import describe_recommended_distiller, recommended_distiller

    assert (recommended_distiller("tiny"), recommended_distiller("vit_b"), recommended_distiller(None)) == (
        "none",
        "infosam",
        "infosam",
    )
    assert "distillation: none, the default for the tiny model" in describe_recommended_distiller("tiny")
    assert describe_recommended_distiller("vit_b") == ""


def test_mean_teacher_follows_the_student_and_is_never_cached(base, samples):
    """teacher_ema: the teacher is a frozen copy of the student that moves towards it after every step by
    (1 - teacher_ema); its embeddings are recomputed every step (never cached), the base model is untouched."""
    from infosam_core.training.trainer import Trainer

    before = {k: v.clone() for k, v in base.state_dict().items()}
    trainer = Trainer(quick(max_steps=2, lr=1e-3, min_lr=1e-3, teacher_ema=0.5, seed=3), base, samples)
    assert trainer.teacher is not base and trainer.teacher is not trainer.student
    assert getattr(trainer.teacher, "distiller", None) is None  # the teacher never runs the distiller
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    teacher_params, student_params = trainer.ema_pairs
    assert teacher_params and len(teacher_params) == len(student_params)
    assert all(t.data_ptr() != s.data_ptr() for t, s in zip(teacher_params, student_params))
    start = [t.clone() for t in teacher_params]
    result = trainer.run()
    assert result.steps == 2
    # two steps with decay 0.5: teacher = 0.25 * start + 0.25 * student_1 + 0.5 * student_2, so it has moved
    # towards the student but is not the student
    moved = [float((t - s0).abs().max()) for t, s0 in zip(teacher_params, start)]
    apart = [float((t - s.detach()).abs().max()) for t, s in zip(teacher_params, student_params)]
    assert max(moved) > 0 and max(apart) > 0
    assert trainer.cache.teacher_images >= 2 * 2  # every step's batch re-encoded by the teacher
    assert not trainer.cache.teacher_entries
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


def test_mean_teacher_update_is_the_moving_average(base, samples):
    from infosam_core.training.trainer import Trainer

    trainer = Trainer(quick(teacher_ema=0.9), base, samples)
    teacher_params, student_params = trainer.ema_pairs
    with torch.no_grad():
        for t, s in zip(teacher_params, student_params):
            t.fill_(1.0)
            s.fill_(3.0)
    trainer._update_mean_teacher()
    assert all(torch.allclose(t, torch.full_like(t, 0.9 * 1.0 + 0.1 * 3.0)) for t in teacher_params)
    assert all(torch.all(s == 3.0) for s in student_params)


def test_teacher_ema_zero_keeps_the_pretrained_teacher_and_bad_values_are_refused(base, samples):
    from infosam_core.training.trainer import Trainer

    assert Trainer(quick(), base, samples).teacher is base
    assert Trainer(quick(distill="none", teacher_ema=0.9), base, samples).ema_pairs == ([], [])
    # a frozen encoder (decoder-only PEFT) is the same in the mean teacher: its embeddings stay cached
    frozen = Trainer(quick(peft="decoder", teacher_ema=0.9), base, samples)
    assert frozen.ema_pairs[0] and not frozen.cache.teacher_changes
    assert Trainer(quick(teacher_ema=0.9), base, samples).cache.teacher_changes
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="teacher_ema"):
            quick(teacher_ema=bad).validate()


def test_gram_match_is_zero_at_the_teacher_and_is_reported_as_its_own_term(base, samples):
    """l_d="gram_match": ||G_r^S - G_r^T||_F^2, 0 when the student relates the samples as the teacher does, and
    reported as l_gram (so the collapse monitor, which reads L_d near 0 as a collapse, does not misread it)."""
    from infosam_core.distill.infosam import gram_matching_loss

    distiller = InfosamDistiller(InfosamConfig(l_d="gram_match"), 8, torch.Generator().manual_seed(0))
    assert distiller.term_names == ("l_r", "l_gram") and InfosamDistiller.term_names == ("l_r", "l_d")
    g = torch.Generator().manual_seed(1)
    rel_t = torch.randn(4, 10, generator=g)
    assert float(gram_matching_loss(rel_t, 3 * rel_t)) == pytest.approx(0.0, abs=1e-10)  # scale-free: cosines
    assert float(gram_matching_loss(rel_t, torch.eye(4, 10))) > 0.1
    out = distiller(inputs())
    assert set(out.terms) == {"l_r", "l_gram"}
    out.total.backward()
    result = train(quick(max_steps=2, distill_options={"l_d": "gram_match"}), base, samples)
    record = result.history[-1]
    assert "l_gram" in record and "l_d" not in record and "rel_cos_s" in record
