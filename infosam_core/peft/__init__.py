"""Parameter-efficient fine-tuning of SAM: one module per method, each declaring its :class:`.method.PeftMethod`
entry, collected by :mod:`.registry` (:data:`PEFT_METHODS` lists them all); what a method did to a model
(:mod:`.state`). Saved adapter files (PEFT checkpoints of every method) live in :mod:`infosam_core.adapter_files`."""

from infosam_core.peft.method import PeftMethod
from infosam_core.peft.registry import (
    PEFT_METHODS,
    apply_peft,
    make_config,
    register_peft_method,
    unregister_peft_method,
)
from infosam_core.peft.state import PeftReport, PeftState, trained_state

__all__ = [
    "PEFT_METHODS",
    "PeftMethod",
    "PeftReport",
    "PeftState",
    "apply_peft",
    "make_config",
    "register_peft_method",
    "trained_state",
    "unregister_peft_method",
]
