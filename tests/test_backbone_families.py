"""Backbone families (infosam_core.models.family): every family-specific attribute lives in the family modules,
each family answers for a model of its own, and a new backbone is one family plus its registry entry."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import disc_samples, quick
from segment_anything.modeling import Sam

from infosam_core.distill.base import ModelDims
from infosam_core.distill.registry import DISTILLERS, distillers_for, make_distiller
from infosam_core.inference.backends import backend_for
from infosam_core.inference.predictor import Predictor
from infosam_core.models import mobile_sam, sam, sam2
from infosam_core.models.family import BackboneFamily
from infosam_core.models.registry import MODELS, ModelSpec, detect_model_type, families, family_of, load_sam
from infosam_core.resources import BUNDLED_TINY_CHECKPOINT
from infosam_core.training.trainer import train

CORE = Path(__file__).resolve().parents[1] / "infosam_core"
FAMILY_MODULES = {CORE / "models" / "sam.py", CORE / "models" / "mobile_sam.py", CORE / "models" / "sam2.py"}
#: what only a family module may name: Hiera's trunk, the ViT's block list, TinyViT's stages by index, a type
#: test for SAM2's model, the old encoder-type check
FAMILY_SPECIFIC = re.compile(r"trunk|image_encoder\.blocks|layers\[|isinstance\([^)]*Sam2Model|_is_vit")
ALL = set(DISTILLERS)
BLOCK_READERS = {"vid", "reviewkd", "ibd", "semckd"}
UNIFORM_ONLY = {"ibd", "semckd"}


def test_no_family_specific_attribute_outside_the_family_modules():
    offenders = [
        f"{path.relative_to(CORE.parent)}:{n}: {line.strip()}"
        for path in sorted(CORE.rglob("*.py"))
        if path not in FAMILY_MODULES
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if FAMILY_SPECIFIC.search(line)
    ]
    assert offenders == []


def test_every_model_type_names_a_family_module_object():
    assert families() == (sam.FAMILY, mobile_sam.FAMILY, sam2.FAMILY)
    for name, spec in MODELS.items():
        assert isinstance(spec.family, BackboneFamily), name
    assert {n for n, s in MODELS.items() if s.family is sam.FAMILY} == {"tiny", "vit_b", "vit_l", "vit_h"}
    assert {n for n, s in MODELS.items() if s.family is mobile_sam.FAMILY} == {"vit_t"}
    assert {n for n, s in MODELS.items() if s.family is sam2.FAMILY} == set(sam2.SAM2_MODEL_TYPES)


def test_which_distillers_apply_per_model_type():
    """The same sets as before families: VID / ReviewKD not on vit_t, IBD / SemCKD only on uniform blocks."""
    assert set(distillers_for(MODELS["tiny"].family)) == ALL
    assert set(distillers_for(MODELS["vit_t"].family)) == ALL - BLOCK_READERS
    assert set(distillers_for(MODELS["sam2.1_hiera_tiny"].family)) == ALL - UNIFORM_ONLY


# --- each family on a model of its own -----------------------------------------------------------------------


def test_sam_family_on_the_bundled_tiny_model():
    model = load_sam("tiny")
    family = family_of(model)
    assert family is sam.FAMILY and family.owns(model) and not mobile_sam.FAMILY.owns(model)
    assert detect_model_type(model.state_dict()) == "tiny"
    encoder = model.image_encoder
    geometry = family.block_geometry(encoder)
    assert (geometry.width, geometry.depth, geometry.global_blocks) == (128, 4, (1, 3))
    assert list(family.feature_blocks(encoder)) == family.encoder_blocks(encoder) == list(encoder.blocks)
    assert all(family.is_vit_block(b) for b in family.encoder_blocks(encoder))
    assert family.hq_feature_block(encoder) == (1, 128)
    dims = ModelDims.of(model)
    assert (dims.encoder_dim, dims.encoder_depth, dims.uniform_blocks) == (128, 4, True)
    assert set(distillers_for(dims)) == ALL
    assert isinstance(backend_for(model), sam.SamBackend)
    backbone = family.training_backbone(model)
    assert isinstance(backbone, sam.VitTrainingBackbone) and backbone.frozen_prefix_depth() == 0  # all trainable
    for p in model.parameters():
        p.requires_grad_(False)
    assert backbone.frozen_prefix_depth() == 4


def test_the_training_backbone_runs_the_cached_prefix_like_the_whole_encoder():
    """encode_prefix + encode_from(depth) = encode_from(0) = the encoder's forward, with the blocks captured."""
    model = load_sam("tiny")
    backbone = sam.FAMILY.training_backbone(model)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        whole = model.image_encoder(x)
        h, early = backbone.encode_prefix(x, 2, (0, 3))
        rest, late = backbone.encode_from(h, 2, (0, 3))
        direct, both = backbone.encode_from(x, 0, (0, 3))
    assert set(early) == {0} and set(late) == {3} and set(both) == {0, 3}
    torch.testing.assert_close(rest.embed, whole)
    torch.testing.assert_close(direct.embed, whole)
    torch.testing.assert_close(late[3], both[3])


def test_mobile_sam_family_on_a_random_vit_t():
    model = mobile_sam.build_mobile_sam()
    family = family_of(model)
    assert family is mobile_sam.FAMILY and not sam.FAMILY.owns(model)
    assert detect_model_type(model.state_dict()) == "vit_t"
    encoder = model.image_encoder
    assert not family.block_levels and not family.uniform_blocks
    assert len(family.feature_blocks(encoder)) == 4  # the four stages
    assert len(family.encoder_blocks(encoder)) == 10  # the attention blocks of stages 2-4
    assert not any(family.is_vit_block(b) for b in family.encoder_blocks(encoder))
    assert family.hq_feature_block(encoder) == (1, 160)
    dims = ModelDims.of(model)
    assert dims.encoder_depth == 0 and dims.encoder_name == "TinyViT"
    assert set(distillers_for(dims)) == ALL - BLOCK_READERS
    with pytest.raises(ValueError, match="distiller 'vid' distils the outputs of the image encoder's blocks"):
        make_distiller("vid", {}, dims)
    assert isinstance(backend_for(model), sam.SamBackend)
    backbone = family.training_backbone(model)
    assert backbone.frozen_prefix_depth() == 0
    with torch.no_grad():
        features, captured = backbone.encode_from(torch.randn(1, 3, 1024, 1024), 0, (1,))
    assert tuple(features.embed.shape) == (1, 256, 64, 64) and tuple(captured[1].shape) == (1, 64, 64, 160)


def test_sam2_family_on_a_small_random_hiera():
    pytest.importorskip("sam2")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = sam2.build_sam2_base("sam2.1_hiera_tiny", image_size=256)
    assert detect_model_type(base.state_dict()) == "sam2.1_hiera_tiny"
    model = sam2.Sam2Model(base, "sam2.1_hiera_tiny").eval()
    family = family_of(model)
    assert family is sam2.FAMILY and not sam.FAMILY.owns(model) and not mobile_sam.FAMILY.owns(model)
    encoder = model.image_encoder
    geometry = family.block_geometry(encoder)
    assert geometry.depth == 12 and geometry.stage_ends == (0, 2, 9, 11)
    assert [geometry.block_widths[i] for i in geometry.stage_ends] == [96, 192, 384, 768]
    assert [geometry.block_strides[i] for i in geometry.stage_ends] == [4, 8, 16, 32]
    assert len(family.feature_blocks(encoder)) == len(family.encoder_blocks(encoder)) == 12
    assert family.hq_feature_block(encoder) is None
    dims = ModelDims.of(model)
    assert dims.block_indices("global") == (0, 2, 9, 11) and not dims.uniform_blocks
    assert set(distillers_for(dims)) == ALL - UNIFORM_ONLY
    assert isinstance(backend_for(model), sam2.Sam2Backend)
    backbone = family.training_backbone(model)
    assert isinstance(backbone, sam2.Sam2TrainingBackbone) and backbone.frozen_prefix_depth() == 0
    with torch.no_grad():
        features, captured = backbone.encode_from(torch.randn(1, 3, 256, 256), 0, (2, 11))
    assert [tuple(e.shape) for e in features.extra] == [(1, 32, 64, 64), (1, 64, 32, 32)]
    assert tuple(captured[2].shape) == (1, 32, 32, 192) and tuple(captured[11].shape) == (1, 8, 8, 768)


# --- the recipe: a new backbone is one family plus its registry entry ------------------------------------------


class TwinSam(Sam):
    """The bundled tiny SAM under a class of its own: the "new backbone" of the recipe test."""


class TwinFamily(sam.SamFamily):
    """A family for :class:`TwinSam`; it counts what the core asks it for."""

    name = "twin"
    encoder_name = "Twin ViT"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def owns(self, model: torch.nn.Module) -> bool:
        return isinstance(model, TwinSam)

    def guess_model_type(self, state):
        return None

    def load(self, model_type: str, checkpoint: Path | None) -> torch.nn.Module:
        model = sam.load_segment_anything("tiny", checkpoint)
        model.__class__ = TwinSam
        model.model_type = model_type
        return model

    def prediction_backend(self, model):
        self.asked.append("prediction_backend")
        return super().prediction_backend(model)

    def training_backbone(self, model):
        self.asked.append("training_backbone")
        return super().training_backbone(model)

    def block_geometry(self, encoder):
        self.asked.append("block_geometry")
        return super().block_geometry(encoder)


@pytest.fixture
def twin(monkeypatch):
    family = TwinFamily()
    monkeypatch.setitem(MODELS, "twin", ModelSpec("twin", "Twin (test)", family, BUNDLED_TINY_CHECKPOINT))
    yield family
    # monkeypatch removes the entry afterwards


def test_a_new_family_predicts_through_its_registry_entry_only(twin):
    model = load_sam("twin")
    assert type(model) is TwinSam and family_of(model) is twin and twin in families()
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    predictor = Predictor(model, cache_size=0)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
    assert "prediction_backend" in twin.asked
    reference = Predictor(load_sam("tiny"), cache_size=0)  # the same weights under the SAM family
    reference.set_image(image)
    expected, expected_scores, _ = reference.predict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_a_new_family_trains_through_its_registry_entry_only(twin):
    model = load_sam("twin")
    config = quick(peft="adapter", distill="vid", distill_options={}, max_steps=1, seed=0, device="cpu")
    result = train(config, model, disc_samples(2))
    assert result.steps == 1 and {"training_backbone", "block_geometry"} <= set(twin.asked)
    assert family_of(result.model) is twin


def test_the_twin_entry_is_gone_afterwards():
    assert "twin" not in MODELS and all(f.name != "twin" for f in families())
