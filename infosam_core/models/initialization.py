"""Seeded parameter initialisation (a local generator, never the global RNG)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


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
