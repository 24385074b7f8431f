"""The distillation baselines: each closed-form loss against a straightforward independent implementation,
the minimum where student == teacher, which parameters the gradients reach, the encoder-block cache, and a
few training steps + adapter round trip per distiller on a micro SAM."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import disc_samples, micro_sam, quick

from infosam_core.adapter_files.checkpoint import load_peft_checkpoint, save_peft_checkpoint
from infosam_core.distill import DISTILLERS, DistillInputs, ModelDims, make_distiller
from infosam_core.distill.logit import binary_kd_loss
from infosam_core.distill.pkd import pkd_loss
from infosam_core.distill.pkt import pkt_loss
from infosam_core.distill.vid import VidLevel
from infosam_core.training.batches import make_batch, prepare_samples
from infosam_core.training.config import TrainConfig
from infosam_core.training.encoder_cache import EncoderCache
from infosam_core.training.trainer import Trainer, train

DIMS = ModelDims(embed_dim=8, encoder_dim=6, encoder_depth=4, global_blocks=(1, 3))


@pytest.fixture(scope="module")
def base():
    return micro_sam()


@pytest.fixture(scope="module")
def samples():
    return disc_samples(6)


def fake_inputs(seed: int = 0, b: int = 4, same: bool = False, dims: ModelDims = DIMS) -> DistillInputs:
    """Random teacher/student tensors of a model with ``dims`` (student := teacher with ``same``)."""
    g = torch.Generator().manual_seed(seed)
    c, d = dims.embed_dim, dims.encoder_dim

    def r(*shape):
        return torch.randn(*shape, generator=g)

    f_t, tok_t, z_t = r(b, c, 4, 4), r(b, c), 3 * r(b, 1, 16, 16)
    blocks_t = {i: r(b, d, 4, 4) for i in range(dims.encoder_depth)}
    if same:
        f_s, tok_s, z_s, blocks_s = f_t.clone(), tok_t.clone(), z_t.clone(), {i: v.clone() for i, v in blocks_t.items()}
    else:
        f_s, tok_s, z_s = r(b, c, 4, 4), r(b, c), 3 * r(b, 1, 16, 16)
        blocks_s = {i: r(b, d, 4, 4) for i in range(dims.encoder_depth)}
    for t in (f_s, tok_s, z_s, *blocks_s.values()):
        t.requires_grad_(True)
    masks = (r(b, 1, 64, 64) > 0).float()
    return DistillInputs(
        f_t, f_s, tok_s, z_s, masks, lambda _: (z_t, tok_t), teacher_features=blocks_t, student_features=blocks_s
    )


# ------------------------------------------------------------------------------ closed forms vs independent code
def test_logit_kd_matches_two_class_kl():
    inputs = fake_inputs(1)
    t = 3.0
    zs, zt = inputs.student_logits.detach().double(), inputs.teacher_logits().double()
    two_s = torch.stack([torch.zeros_like(zs), zs / t], -1)  # class logits (0, z): p(fg) = sigmoid(z / T)
    two_t = torch.stack([torch.zeros_like(zt), zt / t], -1)
    kl = F.kl_div(two_s.log_softmax(-1), two_t.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    expected = t * t * kl.mean()
    assert binary_kd_loss(inputs.student_logits, inputs.teacher_logits(), t).item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    out = make_distiller("logit", {"temperature": t}, DIMS)(inputs)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5) and set(out.terms) == {"kd"}


def test_pkd_is_one_minus_pearson_per_channel():
    inputs = fake_inputs(2)
    s, t = inputs.student_embeddings.detach().numpy(), inputs.teacher_embeddings.numpy()
    n = s.shape[0] * s.shape[2] * s.shape[3]
    rs = [np.corrcoef(s[:, c].ravel(), t[:, c].ravel())[0, 1] for c in range(s.shape[1])]
    expected = np.mean([(n - 1) / n * (1 - r) for r in rs])  # unbiased std: sum of squares is n - 1, not n
    got = make_distiller("pkd", {}, DIMS)(inputs).total.item()
    assert got == pytest.approx(expected, rel=1e-4)
    # invariant to a positive affine map of each channel (Pearson)
    a = torch.rand(1, 8, 1, 1) + 0.5
    assert pkd_loss(inputs.student_embeddings * a + 3, inputs.teacher_embeddings).item() == pytest.approx(got, rel=1e-4)


def test_pkt_matches_loops():
    inputs = fake_inputs(3, b=5)
    s = inputs.student_embeddings.detach().flatten(1).double().numpy()
    t = inputs.teacher_embeddings.flatten(1).double().numpy()

    def cond(f):
        b = len(f)
        k = np.array(
            [[(f[i] @ f[j] / np.linalg.norm(f[i]) / np.linalg.norm(f[j]) + 1) / 2 for j in range(b)] for i in range(b)]
        )
        return k / k.sum(1, keepdims=True)

    ps, pt = cond(s), cond(t)
    expected = np.mean(pt * np.log((pt + 1e-7) / (ps + 1e-7)))
    assert pkt_loss(inputs.student_embeddings.flatten(1), inputs.teacher_embeddings.flatten(1)).item() == pytest.approx(
        expected, rel=1e-4
    )
    out = make_distiller("pkt", {"weight": 10.0}, DIMS)(inputs)
    assert out.total.item() == pytest.approx(10 * expected, rel=1e-4)
    token = make_distiller("pkt", {"feature": "token"}, DIMS)(inputs).terms["pkt"]
    assert token.item() == pytest.approx(pkt_loss(inputs.student_token, inputs.teacher_token()).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["pkt", "pkd"])
def test_batch_statistics_use_the_gathered_batch(name):
    """With several processes each holds part of the batch: the loss is the full batch's (gather)."""
    full = fake_inputs(9, b=4)
    distiller = make_distiller(name, {}, DIMS)
    expected = distiller(full).total.item()

    def gather(x):  # this process holds rows 0-1; "the other process" rows 2-3
        key = next(k for k, v in full_tensors.items() if v.shape[1:] == x.shape[1:] and torch.equal(v[:2], x.detach()))
        return torch.cat([x, full_tensors[key][2:]])

    full_tensors = {
        "es": full.student_embeddings.detach().flatten(1),
        "et": full.teacher_embeddings.flatten(1),
        "es4": full.student_embeddings.detach(),
        "et4": full.teacher_embeddings,
    }
    half = DistillInputs(
        full.teacher_embeddings[:2],
        full.student_embeddings[:2],
        full.student_token[:2],
        full.student_logits[:2],
        full.masks[:2],
        lambda _: (None, None),
        gather=gather,
    )
    assert distiller(half).total.item() == pytest.approx(expected, rel=1e-5)


def test_vid_is_gaussian_nll_of_a_conv_regressor():
    inputs = fake_inputs(4)
    level = VidLevel(6, 6, init_var=5.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(level.variance(), torch.full((6,), 5.0), atol=1e-5)
    with torch.no_grad():
        level.log_scale.normal_(generator=torch.Generator().manual_seed(1))
    s, t = inputs.student_features[1].detach(), inputs.teacher_features[1]
    w = [conv.weight[:, :, 0, 0] for conv in level.regressor[::2]]
    h = torch.einsum("oc,bchw->bohw", w[0], s).relu()
    h = torch.einsum("oc,bchw->bohw", w[1], h).relu()
    mu = torch.einsum("oc,bchw->bohw", w[2], h)
    std = (F.softplus(level.log_scale) + 1e-5).sqrt().view(1, -1, 1, 1)
    nll = -torch.distributions.Normal(mu, std).log_prob(t) - 0.5 * math.log(2 * math.pi)
    assert level(s, t).item() == pytest.approx(nll.mean().item(), rel=1e-5)
    vid = make_distiller("vid", {"blocks": "global"}, DIMS, torch.Generator().manual_seed(0))
    assert vid.encoder_blocks == (1, 3) and set(vid.levels) == {"1", "3"}
    expected = sum(vid.levels[str(i)](inputs.student_features[i], inputs.teacher_features[i]) for i in (1, 3))
    assert vid(inputs).total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert make_distiller("vid", {"blocks": "0,2", "embedding": True}, DIMS).encoder_blocks == (0, 2)


def test_mobilesam_is_embedding_mse():
    inputs = fake_inputs(5)
    diff = (inputs.student_embeddings.detach() - inputs.teacher_embeddings).numpy()
    out = make_distiller("mobilesam", {"weight": 2.0}, DIMS)(inputs)
    assert out.total.item() == pytest.approx(2 * float((diff**2).mean()), rel=1e-5) and set(out.terms) == {"mse"}
    with_rm = make_distiller("mobilesam", {"relation_module": True}, DIMS, torch.Generator().manual_seed(0))
    assert with_rm.term_names == ("mse", "l_r", "l_d")
    terms = with_rm(inputs).terms
    assert set(terms) == {"mse", "l_r", "l_d"} and terms["mse"].item() == pytest.approx(out.terms["mse"].item())


def test_tinysam_terms_and_hard_mask_weight():
    from infosam_core.distill.tinysam import hard_mask_weight

    inputs = fake_inputs(8)
    z_s, z_t = inputs.student_logits.detach(), inputs.teacher_logits()
    gt = F.interpolate(inputs.masks, (16, 16), mode="area") > 0.5
    weights = []
    for b in range(4):
        iou = [((z[b] > 0) & gt[b]).sum().item() / max(((z[b] > 0) | gt[b]).sum().item(), 1) for z in (z_t, z_s)]
        weights.append(1 / (1 + math.exp(-(iou[0] / (iou[1] + 1e-6) - 1))))
    h = hard_mask_weight(z_t, z_s, inputs.masks)
    assert torch.allclose(h, torch.tensor(weights), atol=1e-6)
    out = make_distiller("tinysam", {"w_embedding": 2.0}, DIMS)(inputs)
    emb = (inputs.student_embeddings.detach() - inputs.teacher_embeddings).abs().mean()
    tok = (inputs.student_token.detach() - inputs.teacher_token()).abs().mean()
    output = (torch.tensor(weights) * (z_s - z_t).abs().flatten(1).mean(1)).mean()
    assert out.total.item() == pytest.approx((2 * emb + tok + output).item(), rel=1e-5)
    assert out.terms["output"].item() == pytest.approx(output.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["logit", "pkd", "pkt", "mobilesam", "tinysam"])
def test_minimum_zero_where_student_equals_teacher(name):
    inputs = fake_inputs(6, same=True)
    out = make_distiller(name, {}, DIMS)(inputs)
    assert abs(out.total.item()) < 1e-5
    if name != "tinysam":  # L1 has no gradient at 0; the others are smooth minima
        grads = torch.autograd.grad(out.total, [inputs.student_embeddings, inputs.student_logits], allow_unused=True)
        assert all(g is None or g.abs().max() < 1e-4 for g in grads)  # a minimum: the gradient vanishes there
    assert make_distiller(name, {}, DIMS)(fake_inputs(7)).total.item() > 1e-4  # and it is not always 0


# --------------------------------------------------------------------------------------------- the encoder cache
def test_encoder_cache_blocks_match_a_full_forward(base, samples):
    from infosam_core.peft.registry import apply_peft

    student = copy.deepcopy(base)
    apply_peft(student, "adapter")
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(0.01)
    prepared = prepare_samples(samples, 64)
    cache = EncoderCache(base, student, need_teacher=True, enabled=True, max_bytes=1e9, blocks=(1, 3))
    assert cache.depth == 2  # block 1 in the frozen prefix, block 3 after it

    def reference(sam, images):
        seen = {}
        hooks = [
            sam.image_encoder.blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.update({i: o})) for i in (1, 3)
        ]
        with torch.no_grad():
            emb = sam.image_encoder(images)
        for h in hooks:
            h.remove()
        return emb, {i: v.permute(0, 3, 1, 2) for i, v in seen.items()}

    rng = np.random.default_rng(0)
    for keys in ([(0, 0), (1, 1)], [(1, 1), (2, 0)]):
        batch = make_batch(student, prepared, keys, rng)
        out = cache.features(batch)
        emb_t, blocks_t = reference(base, batch.images)
        emb_s, blocks_s = reference(student, batch.images)
        assert torch.allclose(out.teacher, emb_t, atol=1e-5) and torch.allclose(out.student, emb_s, atol=1e-5)
        for i in (1, 3):
            scale = blocks_t[i].abs().max()
            assert torch.allclose(out.teacher_blocks[i], blocks_t[i], atol=1e-3 * scale)  # cached as float16
            assert torch.allclose(out.student_blocks[i], blocks_s[i], atol=1e-3 * scale)
        assert out.student_blocks[3].requires_grad and not out.teacher_blocks[3].requires_grad
    assert cache.teacher_images == 3


# ------------------------------------------------------------------------------------ gradients and training runs
GRAD_CASES = {
    "logit": {},
    "pkd": {},
    "pkt": {},
    "vid": {},
    "mobilesam": {"relation_module": True},
    "tinysam": {"relation_module": True},
    "ibd": {},
    "semckd": {"batch_size": 2, "factor": 1},  # factor 1: d = 2 (at d = 1 the normalised q, k are constant +-1)
    "reviewkd": {},
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradients_reach_exactly_the_intended_parameters(base, samples, name):
    trainer = Trainer(quick(distill=name, distill_options=GRAD_CASES[name], batch_size=2), base, samples)
    batch = trainer._next_batch(np.arange(6), 0, [0])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the student away from the teacher (at equality the paired losses have no gradient)
        for n, p in trainer.student.named_parameters():
            if p.requires_grad and not n.startswith("distiller."):
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    trainer.student.zero_grad()
    losses = trainer.step_losses(batch)
    distill_only = losses.total - losses.seg
    distill_only.backward()
    student = trainer.student
    for n, p in base.named_parameters():
        assert p.grad is None, f"teacher parameter {n} got a gradient"
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen
    own = {n for n, p in student.distiller.named_parameters()}
    got_own = {n for n, p in student.distiller.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got_own == own  # every part the distiller owns trains
    encoder_grads = [
        n
        for n, p in student.image_encoder.named_parameters()
        if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
    ]
    # logit reads the decoder output; the feature methods the encoder (or its blocks)
    assert encoder_grads, f"{name}: no gradient reached the student's trainable encoder parameters"


@pytest.mark.parametrize(
    "name, options",
    [
        ("logit", {}),
        ("pkd", {}),
        ("pkt", {}),
        ("vid", {}),
        ("mobilesam", {}),
        ("mobilesam", {"relation_module": True}),
        ("tinysam", {"relation_module": True}),
        ("ibd", {}),
        ("semckd", {"batch_size": 2}),
        ("semckd", {"factor": 1}),  # batch_size from the run's (issue 32)
        ("reviewkd", {}),
    ],
)
def test_trains_and_adapter_round_trips(base, samples, tmp_path, name, options):
    result = train(quick(epochs=2, distill=name, distill_options=options), base, samples)
    record = result.history[-1]
    assert all(math.isfinite(record[k]) for k in ("loss", "seg_loss", *result.model.distiller.term_names))
    save_peft_checkpoint(result.model, tmp_path / "a")
    loaded = load_peft_checkpoint(base, tmp_path / "a")
    assert loaded.distiller.name == name and loaded.distiller.config == result.model.distiller.config
    if name == "semckd":
        assert loaded.distiller.config.batch_size == 2
    for k, v in result.model.distiller.state_dict().items():
        assert torch.equal(loaded.distiller.state_dict()[k].cpu(), v.cpu())


def test_registry_and_options():
    names = {"infosam", "logit", "pkd", "pkt", "ibd", "vid", "semckd", "reviewkd", "tinysam", "mobilesam"}
    assert set(DISTILLERS) == names
    with pytest.raises(ValueError, match="batch_size >= 2"):
        TrainConfig(distill="pkt", batch_size=1).validate()
    with pytest.raises(ValueError, match="relation_module"):
        TrainConfig(distill="mobilesam", distill_options={"relation_module": True}, batch_size=1).validate()
    TrainConfig(distill="mobilesam", batch_size=1).validate()
    TrainConfig(distill="semckd", batch_size=2).validate()  # its batch_size follows the run's (issue 32)
    with pytest.raises(ValueError, match="built for batches of 4 .* or set it to 2"):
        TrainConfig(distill="semckd", distill_options={"batch_size": 4}, batch_size=2).validate()
    with pytest.raises(ValueError, match="block index"):
        make_distiller("vid", {"blocks": "7"}, DIMS)
    with pytest.raises(ValueError, match="unknown option"):
        make_distiller("logit", {"alpha": 1}, DIMS)


def test_reviewkd_weight_warms_up_over_the_first_epochs(base, samples):
    """mdistiller's ramp: weight x min(epoch / warmup_epochs, 1), epochs from 1; the reported term is unweighted."""
    options = {"warmup_epochs": 4, "weight": 2.0}
    trainer = Trainer(quick(distill="reviewkd", distill_options=options, batch_size=2), base, samples)
    batch = trainer._next_batch(np.arange(6), 0, [0])
    totals, terms = {}, {}
    for epoch in (1, 2, 4, 7):
        trainer.epoch = epoch
        with torch.no_grad():
            losses = trainer.step_losses(batch)
        totals[epoch], terms[epoch] = float(losses.total - losses.seg), float(losses.terms["hcl"])
    assert terms[1] == terms[2] == terms[4] == terms[7] > 0
    for epoch in (1, 2, 4, 7):
        assert totals[epoch] == pytest.approx(2.0 * min(epoch / 4, 1.0) * terms[1], rel=1e-5)
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(distill="reviewkd", distill_options={"warmup_epochs": -1}).validate()
    seen = []  # the trainer hands each step's epoch to the distiller
    trainer = Trainer(quick(distill="reviewkd", distill_options=options, batch_size=2, epochs=2), base, samples)
    original = trainer.distiller.forward
    trainer.distiller.forward = lambda inputs: seen.append(inputs.epoch) or original(inputs)
    trainer.run()
    assert seen == [1] * trainer.steps_per_epoch + [2] * trainer.steps_per_epoch
