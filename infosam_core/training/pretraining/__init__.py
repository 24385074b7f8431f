"""Pretraining the bundled tiny SAM on synthetic scenes with SAM's interactive recipe: settings (:mod:`.config`),
prompt sampling on the device (:mod:`.prompt_sampler`), losses (:mod:`.losses`), the scene stream
(:mod:`.scenes`) and the loop (:mod:`.pretrainer`)."""
