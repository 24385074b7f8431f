"""What a PEFT method is, for the registry: :class:`PeftMethod`. Each method module declares its one entry as
``METHOD = PeftMethod(...)``, so its name is written once; :mod:`.registry` collects them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from infosam_core.models.protocols import SamLike
from infosam_core.peft.common import PeftConfig


@dataclass(frozen=True)
class PeftMethod:
    """One registry entry: ``name`` (``--peft NAME``, the adapter file's ``method``), the options dataclass
    (a :class:`~infosam_core.peft.common.PeftConfig`), ``inject(sam, config, generator)`` (adds the method's
    modules in place and marks its trainable parameters), a one-line ``description`` (``--help``, the app's
    tooltips) and the ``title`` the app shows (the name when empty)."""

    name: str
    config_cls: type[PeftConfig]
    inject: Callable[[SamLike, Any, torch.Generator | None], None]
    description: str
    title: str = ""

    @property
    def label(self) -> str:
        """What a person reads: the title, else the name."""
        return self.title or self.name
