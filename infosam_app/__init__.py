"""InfoSAM Studio's napari app: click to segment with SAM, accept objects, adapt SAM to them, export.

The GUI only: every computation is a call into :mod:`infosam_core`. Start it with ``infosam app`` or open
the "InfoSAM Studio" widget from napari's Plugins menu. Importing this package does not import napari.
"""

from __future__ import annotations

__all__ = ["StudioWidget", "launch"]


def __getattr__(name: str):  # lazy: `infosam --help` must not pay for napari
    if name == "StudioWidget":
        from infosam_app.widget import StudioWidget

        return StudioWidget
    if name == "launch":
        from infosam_app.cli import launch

        return launch
    raise AttributeError(name)
