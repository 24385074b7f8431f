"""Categories: the project's list (combo), the category new objects take (K cycles), adding one, colouring the
objects by category. The state is the session's (:meth:`Session.set_category`); the list is the project's."""

from __future__ import annotations

from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QInputDialog, QLabel, QPushButton, QWidget

from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS


def _swatch(color: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class CategoryPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Category (K)"))
        self.combo = QComboBox()
        self.combo.setToolTip(TOOLTIPS["category"])
        row.addWidget(self.combo, 1)
        self.add_btn = QPushButton("+")
        self.add_btn.setToolTip(TOOLTIPS["add_category"])
        self.add_btn.setMaximumWidth(32)
        row.addWidget(self.add_btn)
        self.color_check = QCheckBox("colour by category")
        self.color_check.setToolTip(TOOLTIPS["color_by_category"])
        row.addWidget(self.color_check)
        self._syncing = False
        self.combo.currentIndexChanged.connect(self._on_index)
        self.add_btn.clicked.connect(lambda: self.add_category())
        self.color_check.toggled.connect(session.set_color_by_category)
        session.category_changed.connect(self.refresh)
        session.project_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        project = self.session.project
        self._syncing = True
        try:
            self.combo.clear()
            if project is not None:
                for c in project.categories:
                    self.combo.addItem(_swatch(c.color), c.name, c.id)
                index = self.combo.findData(self.session.category_id)
                self.combo.setCurrentIndex(max(index, 0))
        finally:
            self._syncing = False
        self.combo.setEnabled(project is not None)

    def _on_index(self, index: int) -> None:
        if not self._syncing and index >= 0:
            self.session.set_category(int(self.combo.itemData(index)))

    def add_category(self, name: str | None = None) -> int | None:
        """Add a category (asked for without ``name``) and make it current."""
        if name is None:
            name, ok = QInputDialog.getText(self, "New category", "Name of the new category:")
            if not ok or not name.strip():
                return None
        return self.session.add_category(name)
