"""The registered model types by name only: what the command line lists and checks before any model loads.

Importing this module imports nothing heavy (no torch), so building the ``infosam`` parser stays fast;
:mod:`infosam_core.models.registry` holds the full entries (:data:`~infosam_core.models.registry.MODELS`) and
refuses to import when its names and these differ.
"""

from __future__ import annotations

AUTO = "auto"  # the model type of the checkpoint given (the bundled tiny model without one)
DEFAULT_MODEL_TYPE = "tiny"  # what ``auto`` means without a checkpoint: the bundled tiny model

#: Every registered model type, in :data:`~infosam_core.models.registry.MODELS` order.
MODEL_TYPES: tuple[str, ...] = (
    "tiny",
    "vit_b",
    "vit_l",
    "vit_h",
    "vit_t",
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
    "sam2_hiera_tiny",
    "sam2_hiera_small",
    "sam2_hiera_base_plus",
    "sam2_hiera_large",
)
