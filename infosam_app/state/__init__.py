"""The app's state without Qt: plain Python objects that :class:`infosam_app.session.Session` composes.

- :mod:`.images`: :class:`ImageStore` (recently read images, LRU) and :class:`PrefetchPolicy` (when to embed the
  next image ahead of time).
- :mod:`.navigation`: :class:`Navigation` (the open project, the image shown, stale-result guard).
- :mod:`.models`: :class:`ModelSet` (base / adapted models, their predictors and labels, the active one, which
  image each has embedded) and :class:`ModelInfo`.
- :mod:`.prompts`: :class:`PromptState` (the prompts of the object being drawn: history and undo, point/box
  mode, next label, SAM's candidate masks and the chosen one, what an accept saves).
- :mod:`.object_edits`: :class:`ObjectEdits` (the acceptance rule, accept / delete / undo of objects with one
  undo stack per image).
- :mod:`.proposal_review`: :class:`ProposalReview` ("Segment all" proposals still shown, rejected, refined).
- :mod:`.ranking`: :class:`UncertaintyRanking` ("Suggest next": images without objects by uncertainty, ★ ranks).
- :mod:`.gc_policy`: the app's garbage-collector policy (freeze at start, hold collections while a run sets up).

Nothing here imports a Qt binding or napari (an import-linter contract in pyproject.toml), so these objects
are tested without a display.
"""

from infosam_app.state import gc_policy
from infosam_app.state.images import ImageStore, PrefetchPolicy, read_image_pair
from infosam_app.state.models import ModelInfo, ModelSet, device_name
from infosam_app.state.navigation import Navigation
from infosam_app.state.object_edits import ObjectEdits
from infosam_app.state.prompts import PromptState
from infosam_app.state.proposal_review import ProposalReview
from infosam_app.state.ranking import UncertaintyRanking

__all__ = [
    "ImageStore",
    "ModelInfo",
    "ModelSet",
    "Navigation",
    "ObjectEdits",
    "PrefetchPolicy",
    "PromptState",
    "ProposalReview",
    "UncertaintyRanking",
    "device_name",
    "gc_policy",
    "read_image_pair",
]
