"""Typed access to a model: both backbone families are :class:`SamLike`, and a model's PEFT state and distiller
are read through :func:`peft_state_of` / :func:`distiller_of` (None when absent, TypeError on a foreign object)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from infosam_core.distill.base import distiller_of, set_distiller
from infosam_core.distill.infosam import InfosamConfig, InfosamDistiller
from infosam_core.models import SamLike
from infosam_core.peft.registry import apply_peft
from infosam_core.peft.state import PeftState, peft_state_of, set_peft_state


def test_segment_anything_model_is_sam_like(random_tiny_sam):
    assert isinstance(random_tiny_sam, SamLike)


def test_sam2_model_is_sam_like():
    pytest.importorskip("sam2")
    from infosam_core.models.sam2 import Sam2Model, build_sam2_base

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Sam2Model(build_sam2_base("sam2.1_hiera_tiny", image_size=256), "sam2.1_hiera_tiny")
    assert isinstance(model, SamLike)


def test_a_plain_module_is_not_sam_like():
    assert not isinstance(nn.Linear(2, 2), SamLike)


def test_peft_state_of(random_tiny_sam):
    model = copy.deepcopy(random_tiny_sam)
    assert peft_state_of(model) is None
    apply_peft(model, "lora", generator=torch.Generator().manual_seed(0))
    state = peft_state_of(model)
    assert isinstance(state, PeftState) and state.method == "lora" and state.added
    other = PeftState("bitfit", {}, "tiny", "x", [], [])
    set_peft_state(model, other)
    assert peft_state_of(model) is other
    model.peft_state = "lora"
    with pytest.raises(TypeError, match="not a PeftState"):
        peft_state_of(model)


def test_distiller_of_attaches_and_detaches_a_sub_module():
    model = nn.Module()
    assert distiller_of(model) is None
    distiller = InfosamDistiller(InfosamConfig(), 8, torch.Generator().manual_seed(0))
    set_distiller(model, distiller)
    assert distiller_of(model) is distiller
    assert any(k.startswith("distiller.relation.") for k in model.state_dict())  # saved with the model
    set_distiller(model, None)
    assert distiller_of(model) is None and not model.state_dict()
    model.distiller = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="not a Distiller"):
        distiller_of(model)
