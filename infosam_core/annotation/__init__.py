"""Annotation projects: the project folder and its crash-safe saves (:mod:`.project`), what is recorded per object
(:mod:`.records`), label images on disk (:mod:`.label_files`), exports (:mod:`.export`: label images, COCO)
and a project's objects as training samples (:mod:`.training_samples`). No Qt, no torch."""
