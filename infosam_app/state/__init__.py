"""The app's state without Qt: plain Python objects that :class:`infosam_app.session.Session` composes.

- :mod:`.images`: :class:`ImageStore` (recently read images, LRU) and :class:`PrefetchPolicy` (when to embed the
  next image ahead of time).
- :mod:`.navigation`: :class:`Navigation` (the open project, the image shown, stale-result guard).
- :mod:`.models`: :class:`ModelSet` (base / adapted models, their predictors and labels, the active one, which
  image each has embedded) and :class:`ModelInfo`.

Nothing here imports a Qt binding or napari (an import-linter contract in pyproject.toml), so these objects
are tested without a display.
"""

from infosam_app.state.images import ImageStore, PrefetchPolicy, read_image_pair
from infosam_app.state.models import ModelInfo, ModelSet, device_name
from infosam_app.state.navigation import Navigation

__all__ = ["ImageStore", "ModelInfo", "ModelSet", "Navigation", "PrefetchPolicy", "device_name", "read_image_pair"]
