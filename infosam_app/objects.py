"""Accepted objects of the shown image, in the app: accept (new, or replacing a refined one), delete, undo.

The rule and the undo stack are :class:`~infosam_app.state.object_edits.ObjectEdits` (Qt-free); this wrapper
applies them to the session's project and shown image, tells the user what happened and updates the objects
layer. Every change is saved at once (atomically) by the project before the layer is updated; U / Ctrl+Z
reverts it (an undo is saved at once too).
"""

from __future__ import annotations

import numpy as np

from infosam_app.session import Session
from infosam_app.state.object_edits import NotAcceptable, ObjectEdits, acceptable, free_pixels
from infosam_app.state.wording import plural
from infosam_core.annotation.project import ProjectError
from infosam_core.annotation.records import AnnotatedObject, ObjectPrompts


def undo_text(action) -> str:
    """What an undo reverted, in words: "the new object 3", "4 accepted proposals (objects 5-8)", ..."""
    if action.kind == "add_many":
        ids = list(action.object_ids) or [action.object_id]
        span = f"object {ids[0]}" if len(ids) == 1 else f"objects {min(ids)}–{max(ids)}"
        return f"the {plural(len(ids), 'accepted proposal')} ({span})"
    return {
        "add": f"the new object {action.object_id}",
        "replace": f"the refinement of object {action.object_id}",
        "delete": f"the deletion of object {action.object_id}",
    }.get(action.kind, f"{action.kind} of object {action.object_id}")


class ObjectEditor:
    def __init__(self, session: Session):
        self.session = session
        self.edits = ObjectEdits()

    def _refresh(self, key: str) -> None:
        self.session.show_objects(key)
        self.session.images_changed.emit()  # counts in the image list

    def _model_label(self) -> str:
        info = self.session.infos.get(self.session.active)
        return info.label if info else ""

    def accept(self, mask: np.ndarray, prompts: ObjectPrompts, replace_id: int | None = None) -> AnnotatedObject | None:
        """Save ``mask`` as a new object, or as the new shape and prompts of ``replace_id``."""
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None:
            return None
        try:
            obj = self.edits.accept(
                project,
                key,
                mask,
                prompts,
                model=self._model_label(),
                replace_id=replace_id,
                category=session.category_id,
            )
        except (NotAcceptable, ProjectError, OSError) as exc:  # refused by the rule, or not saved
            session.fail(f"Not accepted: {exc}")
            return None
        self._refresh(key)
        return obj

    def accept_many(self, items: list[tuple[np.ndarray, ObjectPrompts]]) -> list[AnnotatedObject]:
        """Save several masks as new objects (e.g. accepted proposals), in order; one undo step for all.

        A mask that the rules of :meth:`acceptable` refuse (mostly covered by objects accepted before) is
        skipped; each object is saved at once as with :meth:`accept`.
        """
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None:
            return []
        added, error = self.edits.accept_many(
            project, key, items, model=self._model_label(), category=session.category_id
        )
        if error is not None:
            session.fail(f"Not accepted: {error}")
        if added:
            self._refresh(key)
        return added

    def free_pixels(self, mask: np.ndarray, replace_id: int | None = None) -> int:
        """How many of ``mask``'s pixels an accept would paint (accepted objects are left untouched)."""
        return free_pixels(self.session.project.annotations(self.session.key).labels, mask, replace_id)

    def acceptable(self, mask: np.ndarray, replace_id: int | None = None) -> bool:
        """False when too little of ``mask`` is left once accepted objects are kept (a sliver, not an object)."""
        return acceptable(self.session.project.annotations(self.session.key).labels, mask, replace_id)

    def delete(self, object_id: int) -> bool:
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None or object_id not in project.annotations(key).objects:
            session.tell(f"There is no object {object_id} on this image.")
            return False
        try:
            self.edits.delete(project, key, object_id)
        except (ProjectError, OSError) as exc:
            session.fail(f"Delete failed: {exc}")
            return False
        self._refresh(key)
        session.tell(f"Deleted object {object_id} (U undoes).")
        return True

    def set_category(self, object_id: int) -> bool:
        """Give object ``object_id`` of the shown image the current category (U undoes it)."""
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None or object_id not in project.annotations(key).objects:
            session.tell(f"There is no object {object_id} on this image.")
            return False
        name = project.category(session.category_id).name
        try:
            changed = self.edits.set_category(project, key, object_id, session.category_id)
        except (ProjectError, OSError) as exc:
            session.fail(f"Category change failed: {exc}")
            return False
        if changed is None:
            session.tell(f"Object {object_id} is already '{name}'.")
            return False
        self._refresh(key)
        session.tell(f"Object {object_id} is now '{name}' (U undoes).")
        return True

    def undo(self) -> bool:
        """Revert the last object change on the shown image."""
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None or not self.edits.depth(key):
            session.tell("Nothing to undo.")
            return False
        try:
            action = self.edits.undo(project, key)
        except (ProjectError, OSError) as exc:
            session.fail(f"Undo failed: {exc}")
            return False
        assert action is not None  # the stack was not empty
        self._refresh(key)
        session.tell(f"Undone: {undo_text(action)}.")
        return True

    def under_cursor(self) -> int | None:
        """The accepted object under the mouse (None over the background)."""
        layer = self.session.layers.objects
        if layer is None:
            return None
        try:
            value = layer.get_value(self.session.viewer.cursor.position, world=True)
        except Exception:  # noqa: BLE001 - no image yet, or the cursor outside it
            value = None
        return int(value) if value else None
