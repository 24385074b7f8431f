"""Accepted objects: the acceptance rule and the per-image undo stack of object edits.

:class:`ObjectEdits` makes each change through the core's :class:`~infosam_core.annotation.project.Project`
(which saves it at once, atomically) and records it so that U / Ctrl+Z can revert it (an undo is saved at
once too). :class:`infosam_app.objects.ObjectEditor` wraps it with the app's messages and the objects layer.

The acceptance rule: accepted objects are never painted over, so an accept keeps only the mask's free pixels;
a mask with too few of them (fewer than :data:`MIN_OBJECT_PX`, or than :data:`MIN_FREE_FRACTION` of the mask)
would be a sliver, not an object, and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from infosam_core.annotation.project import Project, ProjectError
from infosam_core.annotation.records import AnnotatedObject, ObjectPrompts

MIN_OBJECT_PX = 10  # an accepted object keeps at least this many pixels ...
MIN_FREE_FRACTION = 0.05  # ... and this share of its mask once accepted objects are left untouched

EditKind = Literal["add", "replace", "delete", "add_many", "category"]


@dataclass
class ObjectAction:
    """One undoable change: ``old``/``old_mask`` are what a replaced or deleted object was (for "category":
    ``old`` is the object with its former category)."""

    kind: EditKind
    key: str
    object_id: int
    old: AnnotatedObject | None = None
    old_mask: np.ndarray | None = None
    object_ids: tuple[int, ...] = ()  # "add_many": the objects added, in order


class NotAcceptable(ValueError):
    """A mask too little of which is free of accepted objects (see :func:`acceptable`)."""

    def __init__(self, free: int, total: int):
        super().__init__(
            f"only {free} of the mask's {total} pixels are not already taken by accepted objects. "
            "Refine the other object (R) or change the prompts."
        )
        self.free, self.total = free, total


def free_pixels(labels: np.ndarray | None, mask: np.ndarray, replace_id: int | None = None) -> int:
    """How many of ``mask``'s pixels an accept would paint, given the image's object ``labels`` (accepted
    objects are left untouched; the object being replaced frees its own pixels)."""
    if labels is None:
        return int(np.count_nonzero(mask))
    free = labels == 0
    if replace_id is not None:
        free |= labels == replace_id
    return int(np.count_nonzero(mask & free))


def acceptable(labels: np.ndarray | None, mask: np.ndarray, replace_id: int | None = None) -> bool:
    """False when too little of ``mask`` is left once accepted objects are kept (a sliver, not an object)."""
    total = int(np.count_nonzero(mask))
    return total > 0 and free_pixels(labels, mask, replace_id) >= max(MIN_OBJECT_PX, MIN_FREE_FRACTION * total)


class ObjectEdits:
    """Accept, delete and undo objects of a project's images; one undo stack per image key."""

    def __init__(self) -> None:
        self._undo: dict[str, list[ObjectAction]] = {}  # image key -> changes, oldest first

    def depth(self, key: str) -> int:
        """How many changes of image ``key`` can be undone."""
        return len(self._undo.get(key, []))

    def _record(self, action: ObjectAction) -> None:
        self._undo.setdefault(action.key, []).append(action)

    def accept(
        self,
        project: Project,
        key: str,
        mask: np.ndarray,
        prompts: ObjectPrompts,
        model: str = "",
        replace_id: int | None = None,
        category: int = 1,
    ) -> AnnotatedObject:
        """Save ``mask`` as a new object, or as the new shape and prompts of ``replace_id`` (when it exists).

        Raises :class:`NotAcceptable` (nothing saved) for a non-empty mask the rule refuses, and the project's
        :class:`ProjectError` / ``OSError`` when saving fails. ``category``: a new object's category id (a
        replaced object keeps its own).
        """
        ann = project.annotations(key)
        mask = np.asarray(mask, bool)
        if mask.any() and not acceptable(ann.labels, mask, replace_id):
            raise NotAcceptable(free_pixels(ann.labels, mask, replace_id), int(mask.sum()))
        action = ObjectAction("add", key, 0)
        if replace_id is not None and replace_id in ann.objects:
            action = ObjectAction(
                "replace", key, replace_id, ann.objects[replace_id], np.asarray(ann.labels == replace_id)
            )
        if action.kind == "replace" and action.old is not None:
            category = action.old.category
        obj = project.add_object(
            key,
            mask,
            prompts,
            model=model,
            replace_id=replace_id if action.kind == "replace" else None,
            category=category,
        )
        action.object_id = obj.id
        self._record(action)
        return obj

    def accept_many(
        self,
        project: Project,
        key: str,
        items: list[tuple[np.ndarray, ObjectPrompts]],
        model: str = "",
        category: int = 1,
    ) -> tuple[list[AnnotatedObject], ProjectError | OSError | None]:
        """Save several masks as new objects, in order; one undo step for all.

        A mask the rule refuses (mostly covered by objects accepted before) is skipped. A save that fails
        stops there: returns the objects saved before it and the error (None when all went well).
        """
        added: list[AnnotatedObject] = []
        error: ProjectError | OSError | None = None
        for mask, prompts in items:
            mask = np.asarray(mask, bool)
            if not acceptable(project.annotations(key).labels, mask):
                continue
            try:
                added.append(project.add_object(key, mask, prompts, model=model, category=category))
            except (ProjectError, OSError) as exc:
                error = exc
                break
        if added:
            ids = tuple(obj.id for obj in added)
            self._record(ObjectAction("add_many", key, ids[-1], object_ids=ids))
        return added, error

    def delete(self, project: Project, key: str, object_id: int) -> AnnotatedObject | None:
        """Delete object ``object_id`` of image ``key`` (None: there is no such object). Raises the project's
        errors when saving fails (nothing is recorded then)."""
        ann = project.annotations(key)
        if object_id not in ann.objects:
            return None
        old_mask = np.asarray(ann.labels == object_id)
        old = project.remove_object(key, object_id)
        self._record(ObjectAction("delete", key, object_id, old, old_mask))
        return old

    def set_category(self, project: Project, key: str, object_id: int, category: int) -> AnnotatedObject | None:
        """Give object ``object_id`` of image ``key`` the category ``category`` (an id of the project's list).
        None: there is no such object, or it has that category already (nothing recorded). Raises the project's
        errors when saving fails (nothing is recorded then)."""
        old = project.annotations(key).objects.get(object_id)
        if old is None or old.category == category:
            return None
        obj = project.set_object_category(key, object_id, category)
        self._record(ObjectAction("category", key, object_id, old))
        return obj

    def undo(self, project: Project, key: str) -> ObjectAction | None:
        """Revert the last change of image ``key``; returns it (None: nothing to undo). The change is dropped
        from the stack even when reverting it raises the project's errors."""
        stack = self._undo.get(key, [])
        if not stack:
            return None
        action = stack.pop()
        if action.kind == "add":
            project.remove_object(key, action.object_id)
        elif action.kind == "add_many":
            for object_id in reversed(action.object_ids):
                project.remove_object(key, object_id)
        elif action.kind == "category":
            assert action.old is not None  # a category change keeps the object as it was
            project.set_object_category(key, action.object_id, action.old.category)
        else:
            assert action.old is not None and action.old_mask is not None  # "replace" and "delete" keep them
            project.restore_object(key, action.old, action.old_mask)
        return action
