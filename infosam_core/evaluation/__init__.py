"""Evaluation: the paper's metrics (:mod:`.metrics`) and prompted evaluation of a model on a dataset with seeded
prompts (:mod:`.prompted`)."""
