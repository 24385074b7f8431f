"""Saved adapter files: what a training run leaves on disk and what `eval`, `predict`, `segment` and the app load.

An "adapter file" is a PEFT checkpoint of any PEFT method (the ``adapter`` method is only one of them): the
trained tensors plus the JSON that rebuilds the PEFT method and the distiller's own parts
(:mod:`.checkpoint`). :mod:`.loading` builds a base model and puts a saved adapter on it, with one error
handling for every caller. This room sits above ``peft`` and ``distill`` (it rebuilds both)."""
