"""SAM2 (``sam2.1_hiera_*`` / ``sam2_hiera_*``): Meta's checkpoint format loads, the Predictor predicts what
``SAM2ImagePredictor`` predicts, the single-mask token is the decoder's, clear errors. A SAM2.1-tiny image
embedding takes ~3-6 s on this CPU: the module makes two (ours and the reference's)."""

from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from infosam_core.inference.predictor import Predictor
from infosam_core.models.checkpoints import CheckpointError
from infosam_core.models.registry import MODEL_TYPES, load_sam, model_choices
from infosam_core.models.sam2 import SINGLE_MASK_TOKEN_INDEX, Sam2Model, build_sam2_base

BOX = np.array([10, 20, 80, 70])


@pytest.fixture(scope="module")
def meta_checkpoint(tmp_path_factory):
    """Meta's SAM2.1 tiny built by ``build_sam2`` (random weights, perturbed) and saved as Meta saves it."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": reference.state_dict()}, path)
    return path, reference


@pytest.fixture(scope="module")
def sam2_tiny(meta_checkpoint):
    return load_sam("sam2.1_hiera_tiny", meta_checkpoint[0])


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)


def test_every_sam2_type_is_listed():
    for name in ("sam2.1_hiera_tiny", "sam2.1_hiera_large", "sam2_hiera_small", "sam2_hiera_base_plus"):
        assert name in MODEL_TYPES
    assert ("SAM 2.1 Hiera-Tiny", "sam2.1_hiera_tiny") in model_choices()


@pytest.mark.slow
def test_predictor_predicts_what_sam2_image_predictor_predicts(meta_checkpoint, sam2_tiny, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    assert isinstance(sam2_tiny, Sam2Model) and sam2_tiny.checkpoint_path.endswith("sam2.1_hiera_tiny.pt")
    ours = Predictor(sam2_tiny)
    ours.set_image(image)
    theirs = SAM2ImagePredictor(meta_checkpoint[1])
    theirs.set_image(image)
    torch.testing.assert_close(ours.features, theirs._features["image_embed"], rtol=0, atol=1e-6)
    prompts = [
        {"box": BOX},
        {"point_coords": np.array([[40.0, 50.0], [90.0, 30.0]]), "point_labels": np.array([1, 0])},
        {"box": BOX, "point_coords": np.array([[40.0, 50.0]]), "point_labels": np.array([0])},
    ]
    for kwargs in prompts:
        for multimask in (False, True):
            masks, scores, low = ours.predict(multimask_output=multimask, **kwargs)
            ref_masks, ref_scores, ref_low = theirs.predict(multimask_output=multimask, **kwargs)
            assert masks.shape == ref_masks.shape == (3 if multimask else 1, 96, 128)
            np.testing.assert_allclose(low, ref_low, atol=1e-5)
            np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
            np.testing.assert_array_equal(masks, ref_masks.astype(bool))
    # the previous low-res logits as a mask prompt
    previous = theirs.predict(box=BOX, multimask_output=False)[2]
    low = ours.predict(box=BOX, mask_input=previous, multimask_output=False)[2]
    np.testing.assert_allclose(low, theirs.predict(box=BOX, mask_input=previous, multimask_output=False)[2], atol=1e-5)


@pytest.mark.slow
def test_embedding_cache_keeps_the_high_resolution_features(sam2_tiny, image, tmp_path):
    predictor = Predictor(sam2_tiny, cache_dir=tmp_path)
    predictor.set_image(image)
    expected = predictor.predict(box=BOX, multimask_output=False)[2]
    fresh = Predictor(sam2_tiny, cache_dir=tmp_path, cache_size=0)  # from the disk file, no encoder pass
    fresh._encode = None  # an encoder pass would fail
    fresh.set_image(image)
    assert [tuple(t.shape) for t in fresh.extra_features] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    np.testing.assert_allclose(fresh.predict(box=BOX, multimask_output=False)[2], expected, atol=1e-5)


def test_single_mask_token_is_hs_2(sam2_tiny):
    """The token InfoSAM uses is the one the decoder turns into mask 0 (checked on a full decoder pass)."""
    decoder = sam2_tiny.mask_decoder
    torch.manual_seed(1)
    embed = torch.randn(1, 256, 64, 64)
    high_res = [torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128)]
    sparse, dense = sam2_tiny.prompt_encoder(
        points=(torch.tensor([[[100.0, 200.0], [600.0, 700.0]]]), torch.tensor([[2, 3]])), boxes=None, masks=None
    )
    captured = {}

    def keep_tokens(module, args, output):
        captured["hs"] = output[0]

    hook = decoder.transformer.register_forward_hook(keep_tokens)
    with torch.no_grad():
        _, _, sam_tokens, _ = decoder(
            embed, sam2_tiny.prompt_encoder.get_dense_pe(), sparse, dense, False, False, high_res
        )
    hook.remove()
    torch.testing.assert_close(sam_tokens[:, 0], captured["hs"][:, SINGLE_MASK_TOKEN_INDEX], rtol=0, atol=0)
    assert decoder.pred_obj_scores and decoder.use_multimask_token_for_obj_ptr


def test_wrong_files_are_refused_clearly(tmp_path, meta_checkpoint):
    state = torch.load(meta_checkpoint[0], weights_only=True)["model"]
    with pytest.raises(
        CheckpointError, match=r"holds a SAM 2.1 Hiera-Tiny model \(type sam2.1_hiera_tiny\), not sam2_hiera_tiny"
    ):
        load_sam("sam2_hiera_tiny", meta_checkpoint[0])
    del state["sam_mask_decoder.iou_token.weight"]
    partial = tmp_path / "partial.pt"
    torch.save({"model": state}, partial)
    with pytest.raises(CheckpointError, match=r"partial.pt: does not match SAM2 sam2.1_hiera_tiny: 1 weights missing"):
        load_sam("sam2.1_hiera_tiny", partial)
    from infosam_core.models.sam import build_sam

    sam_file = tmp_path / "sam.pth"
    torch.save(build_sam("tiny").state_dict(), sam_file)
    with pytest.raises(
        CheckpointError, match=r"sam.pth: this checkpoint holds a tiny model \(type tiny\), not sam2.1_hiera_tiny"
    ):
        load_sam("sam2.1_hiera_tiny", sam_file)


def test_random_weights_warn_and_state_matches_meta():
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = load_sam("sam2_hiera_tiny")
    base = build_sam2_base("sam2_hiera_tiny")
    assert sum(p.numel() for p in base.parameters()) == 38_945_986  # Meta's sam2_hiera_tiny
    assert sum(p.numel() for p in model.image_encoder.trunk.parameters()) == 26_849_472


def test_missing_sam2_package_is_named(monkeypatch):
    real_import = builtins.__import__

    def no_sam2(name, *args, **kwargs):
        if name == "sam2" or name.startswith("sam2."):
            raise ImportError("No module named 'sam2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sam2)
    with pytest.raises(ImportError, match="SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0"):
        load_sam("sam2.1_hiera_tiny")


@pytest.mark.parametrize("method", ["lora", "adapter", "bitfit", "adaptformer", "convlora", "su_sam", "decoder"])
def test_peft_methods_apply_to_hiera(method):
    from infosam_core.peft.registry import apply_peft

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_sam("sam2.1_hiera_tiny")
    report = apply_peft(model, method, generator=torch.Generator().manual_seed(0))
    added = report.added
    if method == "lora":  # r=4 on the 12 trunk qkv: (in + 3 * out) * 4
        dims = [(96, 96), (96, 192), (192, 192), (192, 384)] + [(384, 384)] * 6 + [(384, 768), (768, 768)]
        assert added == sum(4 * (i + 3 * o) for i, o in dims)
    elif method in ("bitfit", "decoder"):
        assert added == 0
    else:
        assert added > 0
    assert report.mask_decoder > 0
