"""Accepted objects of the shown image: accept (new, or replacing a refined one), delete, undo.

Every change goes through the session's :class:`~infosam_core.annotation.project.Project`, which saves it at once
(atomically) before the objects layer is updated; each change is recorded per image so that U / Ctrl+Z
can revert it (an undo is saved at once too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infosam_app.session import Session
from infosam_core.annotation.project import ProjectError
from infosam_core.annotation.records import AnnotatedObject, ObjectPrompts

MIN_OBJECT_PX = 10  # an accepted object keeps at least this many pixels ...
MIN_FREE_FRACTION = 0.05  # ... and this share of its mask once accepted objects are left untouched


@dataclass
class ObjectAction:
    """One undoable change: ``old``/``old_mask`` are what a replaced or deleted object was."""

    kind: str  # "add" | "replace" | "delete" | "add_many"
    key: str
    object_id: int
    old: AnnotatedObject | None = None
    old_mask: np.ndarray | None = None
    object_ids: tuple[int, ...] = ()  # "add_many": the objects added, in order


class ObjectEditor:
    def __init__(self, session: Session):
        self.session = session
        self._undo: dict[str, list[ObjectAction]] = {}  # image key -> changes, oldest first

    def _refresh(self, key: str) -> None:
        self.session.layers.set_objects(self.session.project.annotations(key).labels)
        self.session.images_changed.emit()  # counts in the image list

    def accept(self, mask: np.ndarray, prompts: ObjectPrompts, replace_id: int | None = None) -> AnnotatedObject | None:
        """Save ``mask`` as a new object, or as the new shape and prompts of ``replace_id``."""
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None:
            return None
        ann = project.annotations(key)
        mask = np.asarray(mask, bool)
        free = self.free_pixels(mask, replace_id)
        if mask.any() and not self.acceptable(mask, replace_id):
            session.fail(
                f"Not accepted: only {free} of the mask's {int(mask.sum())} pixels are not already "
                "taken by accepted objects. Refine the other object (R) or change the prompts."
            )
            return None
        action = ObjectAction("add", key, 0)
        if replace_id is not None and replace_id in ann.objects:
            action = ObjectAction("replace", key, replace_id, ann.objects[replace_id], ann.labels == replace_id)
        info = session.infos.get(session.active)
        try:
            obj = project.add_object(
                key,
                mask,
                prompts,
                model=info.label if info else "",
                replace_id=replace_id if action.kind == "replace" else None,
            )
        except (ProjectError, OSError) as exc:
            session.fail(f"Not accepted: {exc}")
            return None
        action.object_id = obj.id
        self._undo.setdefault(key, []).append(action)
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
        info = session.infos.get(session.active)
        added = []
        for mask, prompts in items:
            mask = np.asarray(mask, bool)
            if not self.acceptable(mask):
                continue
            try:
                added.append(project.add_object(key, mask, prompts, model=info.label if info else ""))
            except (ProjectError, OSError) as exc:
                session.fail(f"Not accepted: {exc}")
                break
        if added:
            ids = tuple(obj.id for obj in added)
            self._undo.setdefault(key, []).append(ObjectAction("add_many", key, ids[-1], object_ids=ids))
            self._refresh(key)
        return added

    def free_pixels(self, mask: np.ndarray, replace_id: int | None = None) -> int:
        """How many of ``mask``'s pixels an accept would paint (accepted objects are left untouched)."""
        ann = self.session.project.annotations(self.session.key)
        if ann.labels is None:
            return int(np.count_nonzero(mask))
        free = ann.labels == 0
        if replace_id is not None:
            free |= ann.labels == replace_id
        return int(np.count_nonzero(mask & free))

    def acceptable(self, mask: np.ndarray, replace_id: int | None = None) -> bool:
        """False when too little of ``mask`` is left once accepted objects are kept (a sliver, not an object)."""
        total = int(np.count_nonzero(mask))
        return total > 0 and self.free_pixels(mask, replace_id) >= max(MIN_OBJECT_PX, MIN_FREE_FRACTION * total)

    def delete(self, object_id: int) -> bool:
        session, project, key = self.session, self.session.project, self.session.key
        if project is None or key is None or object_id not in project.annotations(key).objects:
            session.tell(f"There is no object {object_id} on this image.")
            return False
        old_mask = project.annotations(key).labels == object_id
        try:
            old = project.remove_object(key, object_id)
        except (ProjectError, OSError) as exc:
            session.fail(f"Delete failed: {exc}")
            return False
        self._undo.setdefault(key, []).append(ObjectAction("delete", key, object_id, old, old_mask))
        self._refresh(key)
        session.tell(f"Deleted object {object_id} (U undoes).")
        return True

    def undo(self) -> bool:
        """Revert the last object change on the shown image."""
        session, project, key = self.session, self.session.project, self.session.key
        stack = self._undo.get(key or "", [])
        if not stack or project is None:
            session.tell("Nothing to undo.")
            return False
        action = stack.pop()
        try:
            if action.kind == "add":
                project.remove_object(key, action.object_id)
            elif action.kind == "add_many":
                for object_id in reversed(action.object_ids):
                    project.remove_object(key, object_id)
            else:
                project.restore_object(key, action.old, action.old_mask)
        except (ProjectError, OSError) as exc:
            session.fail(f"Undo failed: {exc}")
            return False
        self._refresh(key)
        session.tell(f"Undone: {action.kind} of object {action.object_id}")
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
