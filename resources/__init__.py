"""The project's bundled files, installed as the package ``infosam_resources``: the tiny SAM and its card
(``models/``) and the sample images (``samples/``). Holds no code; see :mod:`infosam_core.resources`."""
