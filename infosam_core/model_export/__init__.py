"""Taking an adapted model out of InfoSAM Studio: a merged checkpoint in the base model's own format
(:mod:`.merge`) and ONNX files with SAM's ONNX interface (:mod:`.onnx_files`); :mod:`.formats` says which
formats apply to a model."""
