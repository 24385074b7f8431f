"""Images: open files, a folder or a project; the image list with object counts; previous / next."""

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
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS

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
        self.project_label = QLabel("No project: open images to start one.")
        self.project_label.setWordWrap(True)
        self.project_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.project_label)
        self.list = QListWidget()
        self.list.setToolTip(TOOLTIPS["image_list"])
        self.list.setMinimumHeight(80)
        self.list.setMaximumHeight(160)
        self.list.currentRowChanged.connect(self._on_row_changed)
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
                f"<b>{project.name}</b>: {len(project.images)} images, {total} objects<br><small>{project.root}</small>"
            )
            if self.list.count() != len(project.images):
                self.list.clear()
                for _ in project.images:
                    self.list.addItem(QListWidgetItem())
            for i, entry in enumerate(project.images):
                n = counts.get(entry.key, 0)
                item = self.list.item(i)
                mark = self.suggestion_mark(entry.key) if self.suggestion_mark is not None else ""
                item.setText(f"{entry.name}  —  {n} object{'s' if n != 1 else ''}{mark}")
                item.setToolTip(entry.path)
            if 0 <= self.session.index < self.list.count():
                self.list.setCurrentRow(self.session.index)
        finally:
            self._syncing = False

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
