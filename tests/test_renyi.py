"""InfoSAM information terms against an independent float64 implementation, and the relation module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infosam_core.distill.relation import RelationModule
from infosam_core.distill.renyi import gram, relation_compression_loss, relation_distillation_loss, renyi_entropy


# -- independent reference, written from the formulas (numpy, float64) ----------------------------------
def ref_gram(x: np.ndarray) -> np.ndarray:
    z = x.reshape(x.shape[0], -1).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return z @ z.T


def ref_entropy(k: np.ndarray) -> float:
    a = k / np.trace(k)
    return float(-np.log2(np.sum(a**2)))


def ref_l_r(z_img, z_tok, rel) -> float:
    gi, gm, gr = ref_gram(z_img), ref_gram(z_tok), ref_gram(rel)
    return ref_entropy(gr) - ref_entropy(gi * gm * gr)


def ref_l_d(rt, rs) -> float:
    gt, gs = ref_gram(rt), ref_gram(rs)
    return -ref_entropy(gt) - ref_entropy(gs) + ref_entropy(gt * gs)


def ref_relation(module: RelationModule, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy()

    def ln(x, norm):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + norm.eps) * np64(norm.weight) + np64(norm.bias)

    fn, mn = ln(f, module.norm_features), ln(m, module.norm_token)
    q = mn @ np64(module.query.weight).T + np64(module.query.bias)
    k = fn @ np64(module.key.weight).T + np64(module.key.bias)
    s = (q @ k.transpose(0, 2, 1)) / np.sqrt(f.shape[-1]) + mn @ fn.transpose(0, 2, 1)
    s = s.reshape(f.shape[0], -1)
    return s / np.linalg.norm(s, axis=1, keepdims=True)


@pytest.mark.parametrize("batch", [2, 4, 8])
def test_losses_match_float64_reference(batch):
    g = torch.Generator().manual_seed(batch)
    z_img = torch.randn(batch, 16, 6, 6, generator=g)
    z_tok = torch.randn(batch, 16, generator=g)
    rel = torch.randn(batch, 36, generator=g)
    rel_s = rel + 0.5 * torch.randn(batch, 36, generator=g)
    l_r = relation_compression_loss(z_img, z_tok, rel)
    l_d = relation_distillation_loss(rel, rel_s)
    assert l_r.shape == () and l_d.shape == () and l_r.dtype == torch.float32
    assert l_r.item() == pytest.approx(ref_l_r(z_img.numpy(), z_tok.numpy(), rel.numpy()), abs=2e-5)
    assert l_d.item() == pytest.approx(ref_l_d(rel.numpy(), rel_s.numpy()), abs=2e-5)
    k = gram(z_img)
    assert torch.allclose(k, torch.from_numpy(ref_gram(z_img.numpy())).float(), atol=1e-6)
    # bounds for unit-diagonal Gram matrices: S_2 in [0, log2 B]
    assert -1e-6 <= renyi_entropy(k).item() <= np.log2(batch) + 1e-6


def test_batch_of_one_is_exactly_zero_with_zero_gradient():
    z_img, z_tok = torch.randn(1, 8, 4, 4), torch.randn(1, 8)
    rel = torch.randn(1, 16, requires_grad=True)
    rel_s = torch.randn(1, 16, requires_grad=True)
    l_r = relation_compression_loss(z_img, z_tok, rel)
    l_d = relation_distillation_loss(rel, rel_s)
    assert l_r.item() == 0.0 and l_d.item() == 0.0
    (l_r + l_d).backward()
    assert torch.count_nonzero(rel.grad) == 0 and torch.count_nonzero(rel_s.grad) == 0


def test_information_bounds():
    # joint entropy >= each marginal and <= their sum (Sanchez Giraldo et al. 2015), hence
    # L_r <= 0 and -min(S_T, S_S) <= L_d <= 0
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        z, tok, rel, rel_s = (torch.randn(8, 12, generator=g) for _ in range(4))
        s_t, s_s = renyi_entropy(gram(rel)).item(), renyi_entropy(gram(rel_s)).item()
        assert relation_compression_loss(z, tok, rel).item() <= 1e-6
        assert -min(s_t, s_s) - 1e-6 <= relation_distillation_loss(rel, rel_s).item() <= 1e-6


def test_distillation_minimum_is_an_orthogonal_student_whatever_the_teacher():
    """Issue 31 (docs/results, "What L_d's gradient does"): L_d's floor -S(G_r^T) is reached by any student whose
    relation vectors are orthogonal across the batch (Gram = identity), and that student scores lower than one that
    copies the teacher's relation vectors: L_d decorrelates the student rather than pulling it to the teacher."""
    g = torch.Generator().manual_seed(5)
    for b in (2, 4, 8):
        shared = torch.randn(1, 16, generator=g)  # a common direction: the teacher's vectors are correlated
        rel_t = torch.randn(b, 16, generator=g) + 2 * shared
        floor = -renyi_entropy(gram(rel_t)).item()
        orthogonal = torch.eye(b, 16)
        assert relation_distillation_loss(rel_t, orthogonal).item() == pytest.approx(floor, abs=1e-5)
        assert relation_distillation_loss(rel_t, rel_t).item() > floor + 0.05
        for _ in range(20):
            rel_s = torch.randn(b, 16, generator=g) + torch.rand(1, generator=g) * 3 * shared
            assert relation_distillation_loss(rel_t, rel_s).item() >= floor - 1e-5


def test_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = torch.randn(4, 8, 4, 4).bfloat16()
        rel = torch.randn(4, 16).bfloat16()
        l_r = relation_compression_loss(z, torch.randn(4, 8).bfloat16(), rel)
        l_d = relation_distillation_loss(rel, rel.flip(0))
        out = RelationModule(8)(z, torch.randn(4, 8).bfloat16())
    assert l_r.dtype == l_d.dtype == out.dtype == torch.float32


def test_relation_module_matches_formula_and_shapes():
    torch.manual_seed(0)
    module = RelationModule(dim=16)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        module.norm_features.weight.uniform_(0.5, 1.5)
        module.norm_token.bias.uniform_(-0.5, 0.5)
    f, m = torch.randn(3, 25, 16), torch.randn(3, 1, 16)
    out = module(f, m)
    assert out.shape == (3, 25)
    assert torch.allclose(out.norm(dim=1), torch.ones(3))
    ref = ref_relation(module, f.double().numpy(), m.double().numpy())
    assert np.allclose(out.detach().numpy(), ref, atol=1e-5)
    # (B, C, h, w) features and (B, C) tokens are accepted too
    fmap = f.transpose(1, 2).reshape(3, 16, 5, 5)
    assert torch.allclose(module(fmap, m[:, 0]), out, atol=1e-6)
    assert sum(p.numel() for p in RelationModule(256).parameters()) == 132_608


def test_gradients_reach_the_relation_module_only_through_allowed_paths():
    torch.manual_seed(0)
    module = RelationModule(dim=16)
    f_t, m_t = torch.randn(4, 9, 16), torch.randn(4, 1, 16)  # teacher: no gradient
    f_s = torch.randn(4, 9, 16, requires_grad=True)
    m_s = torch.randn(4, 1, 16, requires_grad=True)
    rel_t = module(f_t, m_t)
    l_r = relation_compression_loss(f_t, m_t, rel_t)
    l_r.backward(retain_graph=True)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.query.parameters())
    assert f_s.grad is None  # L_r does not touch the student
    module.zero_grad()
    l_d = relation_distillation_loss(rel_t, module(f_s, m_s))
    l_d.backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0 and m_s.grad.abs().sum() > 0
    assert module.key.weight.grad.abs().sum() > 0
