"""Data: datasets of (image, mask) samples (:mod:`.datasets`), mask helpers (:mod:`.masks`), prompts drawn from
ground-truth masks for training and evaluation (:mod:`.prompt_sampling`), the synthetic scene engine
(:mod:`.synthetic`) and the fixed held-out sets the bundled model is judged on (:mod:`.reference_sets`)."""
