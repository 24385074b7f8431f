"""Seeded parameter initialisation (a local generator, never the global RNG)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def seeded_init_(
    tensor: torch.Tensor, init: Callable[..., torch.Tensor], generator: torch.Generator | None, **kw
) -> None:
    """``init(tensor, generator=generator, **kw)``, drawing on the generator's device when it differs from the
    tensor's (e.g. a CPU generator for a model already on CUDA), so a seed gives the same values anywhere."""
    with torch.no_grad():
        if generator is None or generator.device == tensor.device:
            init(tensor, generator=generator, **kw)
        else:
            tmp = torch.empty(tensor.shape, dtype=tensor.dtype, device=generator.device)
            init(tmp, generator=generator, **kw)
            tensor.copy_(tmp)


def init_linear_(layer: nn.Linear, generator: torch.Generator | None = None) -> None:
    """PyTorch's default ``nn.Linear`` initialisation (kaiming-uniform a=sqrt(5)), with an explicit generator
    so a seeded run never touches the global RNG (training can run in a worker thread)."""
    seeded_init_(layer.weight, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        seeded_init_(layer.bias, nn.init.uniform_, generator, a=-bound, b=bound)


def init_default_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """PyTorch's default initialisation of every ``Linear`` / ``Conv*`` (kaiming-uniform a=sqrt(5), bias
    uniform +-1/sqrt(fan_in)) and norm layer inside ``module``, drawn from ``generator``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            seeded_init_(m.weight, nn.init.kaiming_uniform_, generator, a=math.sqrt(5))
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                seeded_init_(m.bias, nn.init.uniform_, generator, a=-bound, b=bound)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            m.reset_parameters()


def seeded_module(factory: Callable[[], ModuleT], generator: torch.Generator | None = None) -> ModuleT:
    """``factory()`` built without drawing from the global RNG (on the meta device, then materialised on the
    CPU) and initialised by :func:`init_default_` from ``generator``. Parameters other than those of
    ``Linear`` / ``Conv`` / norm layers are left uninitialised: the caller sets them."""
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu")
    init_default_(module, generator)
    return module
