"""PEFT registry: exact parameter counts at ViT-B, identity at step 0, what trains, key stability, autocast."""

from __future__ import annotations

import copy

import pytest
import torch

from infosam_core.models.sam import build_sam
from infosam_core.peft.registry import PEFT_METHODS, apply_peft
from infosam_core.peft.state import PeftReport

ALL_METHODS = sorted(PEFT_METHODS)
# hq_sam adds an output (HQ-SAM's HQ token and its mask) rather than a zero-initialised residual: not the identity
# at step 0 (its own tests: test_peft_hq_sam.py)
IDENTITY_METHODS = [m for m in ALL_METHODS if m != "hq_sam"]


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return build_sam("vit_b")


def test_adapter_counts_at_vit_b(vit_b):
    sam = copy.deepcopy(vit_b)
    report = apply_peft(sam, "adapter")
    # adapters only: 10 blocks (2..11) x 2 x (768*192 + 192 + 192*768 + 768)
    assert report.added == 5_917_440 == 10 * 2 * (768 * 192 + 192 + 192 * 768 + 768)
    assert report.image_encoder == 30_720  # norm1/norm2 weight + bias of blocks 2..11
    assert report.mask_decoder == 4_058_340  # the whole decoder
    assert report.prompt_encoder == 0
    assert report.total_trainable == 5_917_440 + 30_720 + 4_058_340
    names = sam.peft_state.added
    assert not any(".blocks.0." in n or ".blocks.1." in n for n in names)
    assert {n.split(".")[2] for n in names} == {str(i) for i in range(2, 12)}
    text = str(report)
    assert "5,917,440" in text and "added modules" in text and "total" in text


def test_lora_counts_at_vit_b(vit_b):
    sam = copy.deepcopy(vit_b)
    report = apply_peft(sam, "lora", rank=4, alpha=4, train_decoder=False)
    assert report.added == 147_456 == 12 * (4 * 768 + 2304 * 4)
    assert report.total_trainable == 147_456
    qkv = sam.image_encoder.blocks[0].attn.qkv
    assert torch.count_nonzero(qkv.lora_B) == 0 and qkv.scaling == 1.0
    # kaiming-uniform(a=sqrt 5): bound = 1 / sqrt(fan_in)
    assert qkv.lora_A.abs().max() <= 1 / 768**0.5 + 1e-7 and qkv.lora_A.std() > 0


@pytest.mark.parametrize("method", IDENTITY_METHODS)
def test_identity_at_init(random_tiny_sam, method):
    base = random_tiny_sam
    sam = copy.deepcopy(base)
    apply_peft(sam, method, generator=torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        e0, e1 = base.image_encoder(x), sam.image_encoder(x)
        assert torch.equal(e0, e1)
        pts = (torch.tensor([[[100.0, 120.0]]]), torch.ones(1, 1, dtype=torch.long))
        sparse, dense = sam.prompt_encoder(points=pts, boxes=None, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        m0, _ = base.mask_decoder(e0, pe, sparse, dense, multimask_output=False)
        m1, _ = sam.mask_decoder(e1, pe, sparse, dense, multimask_output=False)
    assert torch.equal(m0, m1)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_only_method_parameters_train_and_base_keys_stay(random_tiny_sam, method):
    base = random_tiny_sam
    sam = copy.deepcopy(base)
    report = apply_peft(sam, method)
    base_state, state = base.state_dict(), sam.state_dict()
    assert set(base_state) <= set(state)  # wrapping never renames a base weight
    assert all(torch.equal(base_state[k], state[k]) for k in base_state)
    assert set(state) - set(base_state) == set(sam.peft_state.added)
    trainable = {n for n, p in sam.named_parameters() if p.requires_grad}
    assert trainable == set(sam.peft_state.trainable)
    assert not any(n.startswith("prompt_encoder.") for n in trainable)
    if sam.peft_state.options["train_decoder"]:  # the default of every method but hq_sam (HQ-SAM: decoder frozen)
        assert all(p.requires_grad for p in sam.mask_decoder.parameters())
    assert not sam.image_encoder.patch_embed.proj.weight.requires_grad
    encoder_base = {n for n in trainable if n.startswith("image_encoder.") and n not in sam.peft_state.added}
    if method == "bitfit":
        assert encoder_base and all(n.endswith("bias") and ".blocks." in n for n in encoder_base)
    elif method == "adapter":
        assert encoder_base == {
            f"image_encoder.blocks.{b}.{norm}.{w}"
            for b in (2, 3)
            for norm in ("norm1", "norm2")
            for w in ("weight", "bias")
        }
    else:
        assert not encoder_base
    assert report.total_trainable == sum(sam.get_parameter(n).numel() for n in trainable)
    assert isinstance(PeftReport.from_model(sam), PeftReport)


@pytest.mark.parametrize("method", ["adapter", "lora", "adaptformer"])
def test_added_modules_get_gradients(random_tiny_sam, method):
    sam = copy.deepcopy(random_tiny_sam)
    apply_peft(sam, method, train_decoder=False)
    x = torch.randn(1, 3, 256, 256)
    sam.image_encoder(x).square().mean().backward()
    grads = {n: p.grad for n, p in sam.named_parameters() if n in sam.peft_state.added}
    # the zero-initialised up projections (LoRA B) are what moves first
    ups = [g for n, g in grads.items() if n.endswith(("up.weight", "lora_B"))]
    assert ups and all(g is not None and g.abs().sum() > 0 for g in ups)
    assert all(p.grad is None for n, p in sam.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bf16_autocast_forward_backward(random_tiny_sam, method):
    sam = copy.deepcopy(random_tiny_sam)
    apply_peft(sam, method)
    block = sam.image_encoder.blocks[-1]  # wrapped (adapter, adaptformer) or holding LoRA / trained biases
    x = torch.randn(2, 32, 32, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert torch.isfinite(out.float()).all()  # fp32 residual stream + bf16 branches
    if out.requires_grad:  # not for "decoder": the encoder is frozen
        out.float().square().mean().backward()
        routed = [(n, p) for n, p in block.named_parameters() if ".experts." not in n]  # ConvLoRA: top-1 experts
        assert all(p.grad is not None for _, p in routed if p.requires_grad)


def test_new_modules_follow_the_model_device_and_dtype(random_tiny_sam):
    sam = copy.deepcopy(random_tiny_sam).to(torch.float64)
    apply_peft(sam, "adapter")
    apply_kinds = {p.dtype for p in sam.parameters()}
    assert apply_kinds == {torch.float64}
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        cuda_sam = copy.deepcopy(random_tiny_sam).cuda()
        apply_peft(cuda_sam, "lora", generator=torch.Generator().manual_seed(0))
        assert all(p.is_cuda for p in cuda_sam.parameters())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            cuda_sam.image_encoder(torch.randn(1, 3, 256, 256, device="cuda"))


def test_seeded_and_no_global_rng(random_tiny_sam):
    a, b = copy.deepcopy(random_tiny_sam), copy.deepcopy(random_tiny_sam)
    state = torch.random.get_rng_state()
    apply_peft(a, "lora", generator=torch.Generator().manual_seed(5))
    assert torch.equal(state, torch.random.get_rng_state())
    apply_peft(b, "lora", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_errors(random_tiny_sam):
    sam = copy.deepcopy(random_tiny_sam)
    with pytest.raises(ValueError, match="unknown PEFT method 'prefix'"):
        apply_peft(sam, "prefix")
    with pytest.raises(ValueError, match="unknown option.*ranks.*valid: train_decoder, rank, alpha"):
        apply_peft(sam, "lora", ranks=3)
    with pytest.raises(ValueError, match="would train nothing"):
        apply_peft(sam, "decoder", train_decoder=False)
    apply_peft(sam, "bitfit")
    with pytest.raises(ValueError, match="already has PEFT method 'bitfit'"):
        apply_peft(sam, "lora")
