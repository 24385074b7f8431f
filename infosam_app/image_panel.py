"""Images: open files, a folder or a project; import existing labels; the image list with object counts;
previous / next."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS
from infosam_app.state.wording import plural
from infosam_core.annotation.records import ProjectError

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp);;All files (*)"


class ImagePanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.open_images_btn = self._button("Images…", "open_images", self.choose_images, row)
        self.open_folder_btn = self._button("Folder…", "open_folder", self.choose_folder, row)
        self.open_project_btn = self._button("Project…", "open_project", self.choose_project, row)
        self.new_project_btn = self._button("New…", "new_project", self.choose_new_project, row)
        lay.addLayout(row)
        self.import_btn = QPushButton("Import labels…")
        self.import_btn.setToolTip(TOOLTIPS["import_labels"])
        menu = QMenu(self.import_btn)
        menu.addAction("Label images or masks (folder)…", lambda: self.import_labels(kind="folder"))
        menu.addAction("COCO JSON file…", lambda: self.import_labels(kind="coco"))
        menu.addAction("Selected napari Labels layer (this image)", lambda: self.import_labels_layer())
        self.import_btn.setMenu(menu)
        lay.addWidget(self.import_btn)
        self.project_label = QLabel("No project: open images to start one.")
        self.project_label.setWordWrap(True)
        self.project_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.project_label)
        self.list = QListWidget()
        self.list.setToolTip(TOOLTIPS["image_list"])
        self.list.setMinimumHeight(80)
        self.list.setMaximumHeight(160)
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._show_context_menu)
        self.list.installEventFilter(self)  # N / P work while the list has the keyboard focus
        lay.addWidget(self.list)
        nav = QHBoxLayout()
        self.prev_btn = QPushButton("◀ Previous (P)")
        self.next_btn = QPushButton("Next (N) ▶")
        self.prev_btn.clicked.connect(lambda: session.next_image(-1))
        self.next_btn.clicked.connect(lambda: session.next_image(1))
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        lay.addLayout(nav)
        self._syncing = False
        #: key -> text appended to the image's row (the "suggested next" rank), set by the widget
        self.suggestion_mark: Callable[[str], str] | None = None
        session.images_changed.connect(self.refresh)
        session.project_changed.connect(self.refresh)
        session.image_changed.connect(self._on_image_changed)
        self.refresh()

    def _button(self, text: str, tip: str, slot, row: QHBoxLayout) -> QPushButton:
        b = QPushButton(text)
        b.setToolTip(TOOLTIPS[tip])
        b.clicked.connect(slot)
        row.addWidget(b)
        return b

    # ---- import (the work is in infosam_core.annotation.importing: checked first, all or nothing)
    def import_labels(self, labels: str | Path | None = None, kind: str = "auto"):
        """Import a folder of label images / masks or a COCO file for the project's images; objects of label
        images take the current category. ``kind``: "folder" or "coco" pick the dialog; else passed to the core.
        Returns the :class:`ImportSummary` (None when refused: the message says why, nothing was written)."""
        from infosam_core.annotation.importing import import_labels

        session = self.session
        project = session.project
        if project is None or not project.images:
            session.fail("Add the images first (Images… or Folder…), then import their labels.")
            return None
        if labels is None:
            if kind == "coco":
                labels, _ = QFileDialog.getOpenFileName(self, "Import COCO JSON", str(Path.home()), "JSON (*.json)")
            else:
                labels = QFileDialog.getExistingDirectory(self, "Import label images or masks", str(Path.home()))
            if not labels:
                return None
        images = []
        for entry in project.images:
            try:
                images.append(project.image_path(entry))
            except ProjectError:
                continue
        category = project.category(session.category_id).name if session.category_id else None
        try:
            summary = import_labels(
                project, images, labels, kind if kind not in ("folder",) else "auto", category=category
            )
        except (ProjectError, OSError) as exc:
            session.fail(f"Import refused, nothing imported: {exc}")
            return None
        self._after_import(summary)
        return summary

    def import_labels_layer(self, layer=None):
        """Import the selected napari Labels layer (not one of the studio's) as objects of the image shown, in
        the current category."""
        from napari.layers import Labels

        from infosam_core.annotation.importing import import_label_array

        session = self.session
        project, key = session.project, session.key
        if project is None or key is None:
            session.fail("Show an image first; its labels come from the selected Labels layer.")
            return None
        ours = {id(x) for x in (session.layers.objects, session.layers.preview, session.layers.proposals) if x}
        if layer is None:
            layer = session.viewer.layers.selection.active
        if not isinstance(layer, Labels) or id(layer) in ours:
            session.fail("Select a napari Labels layer of your own (not objects/preview/proposals) to import.")
            return None
        try:
            summary = import_label_array(
                project,
                project.image_path(key),
                layer.data,
                category=project.category(session.category_id).name,
                source=f"Labels layer {layer.name!r}",
            )
        except (ProjectError, OSError) as exc:
            session.fail(f"Import refused, nothing imported: {exc}")
            return None
        self._after_import(summary)
        return summary

    def _after_import(self, summary) -> None:
        session = self.session
        session.category_changed.emit()  # COCO may have brought categories
        if session.key is not None:
            session.show_objects(session.key)
        session.images_changed.emit()
        session.tell(summary.describe().capitalize() + ".")

    # ---- dialogs (thin: the work is in Session)
    def choose_images(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add images", str(Path.home()), IMAGE_FILTER)
        if files:
            self.session.add_images(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images", str(Path.home()))
        if folder:
            self.session.add_images([folder])

    def choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder", str(Path.home()))
        if folder:
            self.session.open_project(folder, create=False)

    def choose_new_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "New project: choose an empty folder", str(Path.home()))
        if folder:
            self.session.open_project(folder, create=True)

    # ---- list
    def refresh(self) -> None:
        project = self.session.project
        self._syncing = True
        try:
            if project is None:
                self.list.clear()
                self.project_label.setText("No project: open images to start one.")
                return
            counts = project.object_counts()
            total = sum(counts.values())
            self.project_label.setText(
                f"<b>{project.name}</b>: {plural(len(project.images), 'image')}, {plural(total, 'object')}"
                f"<br><small>{project.root}</small>"
            )
            if self.list.count() != len(project.images):
                self.list.clear()
                for _ in project.images:
                    self.list.addItem(QListWidgetItem())
            for i, entry in enumerate(project.images):
                n = counts.get(entry.key, 0)
                item = self.list.item(i)
                mark = self.suggestion_mark(entry.key) if self.suggestion_mark is not None else ""
                item.setText(f"{entry.name}  —  {plural(n, 'object')}{mark}")
                item.setToolTip(entry.path)
            if 0 <= self.session.index < self.list.count():
                self.list.setCurrentRow(self.session.index)
        finally:
            self._syncing = False

    def eventFilter(self, obj, event) -> bool:
        """N / P in the image list go to the next / previous image (as on the canvas), not to list search."""
        from qtpy.QtCore import QEvent

        if obj is self.list and event.type() == QEvent.Type.KeyPress and not event.modifiers():
            step = {Qt.Key.Key_N: 1, Qt.Key.Key_P: -1}.get(event.key())
            if step is not None:
                self.session.next_image(step)
                return True
        return super().eventFilter(obj, event)

    def context_menu_for(self, row: int) -> QMenu | None:
        """The image list's right-click menu for ``row`` (None outside the rows)."""
        project = self.session.project
        if project is None or not 0 <= row < len(project.images):
            return None
        entry = project.images[row]
        menu = QMenu(self.list)
        action = menu.addAction("Remove from project")
        action.setToolTip("Take this image, its objects and its cached embeddings out of the project (the file stays)")
        action.triggered.connect(lambda _=False, key=entry.key: self.remove_image(key, ask=True))
        return menu

    def _show_context_menu(self, pos) -> None:
        menu = self.context_menu_for(self.list.indexAt(pos).row())
        if menu is not None:
            menu.exec(self.list.viewport().mapToGlobal(pos))
            menu.deleteLater()  # not while its signal runs: Qt deletes it when control is back in the event loop

    def remove_image(self, key: str, ask: bool = False) -> bool:
        """Remove image ``key`` from the project; with ``ask``, confirm first when it has objects."""
        project = self.session.project
        if project is None:
            return False
        n = project.object_count(key)
        if ask and n:
            from qtpy.QtWidgets import QMessageBox

            name = project.entry(key).name
            answer = QMessageBox.question(
                self,
                "Remove from project",
                f"Remove {name} and its {plural(n, 'object')} from the project? The image file is kept; the objects "
                "are deleted.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return False
        return self.session.remove_image(key)

    def count_text(self, row: int) -> str:
        return self.list.item(row).text()

    def _on_row_changed(self, row: int) -> None:
        if not self._syncing and row >= 0 and row != self.session.index:
            self.session.show_image(row)

    def _on_image_changed(self, index: int) -> None:
        self._syncing = True
        try:
            if index != self.list.currentRow() and 0 <= index < self.list.count():
                self.list.setCurrentRow(index)
        finally:
            self._syncing = False
