"""Parameter-efficient fine-tuning of SAM: one module per method (:mod:`.adapter`, :mod:`.lora`, :mod:`.bitfit`,
:mod:`.adaptformer`, :mod:`.decoder_only`) behind :mod:`.registry`; what a method did to a model
(:mod:`.state`); PEFT checkpoints, i.e. "adapter" files, for every method (:mod:`.checkpoint`)."""

from infosam_core.peft.registry import PEFT_METHODS, apply_peft, make_config
from infosam_core.peft.state import PeftReport, PeftState, trained_state

__all__ = ["PEFT_METHODS", "PeftReport", "PeftState", "apply_peft", "make_config", "trained_state"]
