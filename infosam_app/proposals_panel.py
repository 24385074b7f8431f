"""The "Segment all" box: propose every object, accept all, refine one, propose on open, suggest next."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from infosam_app.proposals import ProposalController
from infosam_app.state.wording import plural


class ProposalsPanel(QWidget):
    def __init__(self, controller: ProposalController, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.segment_btn = self._button("Segment all", "Propose every object of this image with the model in use", row)
        self.segment_btn.clicked.connect(controller.segment_all)
        self.accept_btn = self._button("Accept all", "Save every proposal shown as an object (U undoes)", row)
        self.accept_btn.clicked.connect(controller.accept_all)
        self.refine_btn = self._button(
            "Refine", "Turn the proposal under the mouse (else the best one) into prompts to correct", row
        )
        self.refine_btn.clicked.connect(self.refine_under_cursor)
        self.clear_btn = self._button("Clear", "Drop all proposals", row)
        self.clear_btn.clicked.connect(controller.clear)
        lay.addLayout(row)
        row2 = QHBoxLayout()
        self.on_open_box = QCheckBox("Propose on open")
        self.on_open_box.setToolTip("Segment all whenever an image without objects is opened")
        self.on_open_box.toggled.connect(self._set_on_open)
        row2.addWidget(self.on_open_box)
        self.suggest_btn = self._button(
            "Suggest next", "Rank the images without objects by the model's uncertainty (list: ★ rank)", row2
        )
        self.suggest_btn.clicked.connect(controller.suggest_next)
        self.goto_btn = self._button("Go to suggested", "Open the most uncertain image without objects", row2)
        self.goto_btn.clicked.connect(controller.show_suggested)
        lay.addLayout(row2)
        self.state_label = QLabel("Click a proposal on the 'proposals' layer to reject it.")
        self.state_label.setWordWrap(True)
        lay.addWidget(self.state_label)
        controller.proposals_changed.connect(self.sync)
        controller.running_changed.connect(lambda _running: self.sync())
        self.sync()

    @staticmethod
    def _button(text: str, tip: str, row: QHBoxLayout) -> QPushButton:
        b = QPushButton(text)
        b.setToolTip(tip)
        row.addWidget(b)
        return b

    def _set_on_open(self, on: bool) -> None:
        self.controller.propose_on_open = bool(on)
        if on:
            self.controller._on_embedding_changed("ready" if self.controller.session.embedding_ready else "")

    def refine_under_cursor(self) -> bool:
        c = self.controller
        if not c.proposals:
            return False
        index = None
        try:
            row, col = c.session.viewer.cursor.position[-2:]
            index = c.index_at(col, row)
        except Exception:  # noqa: BLE001 - no cursor position yet
            index = None
        return c.refine(index if index is not None else 0)

    def sync(self) -> None:
        c = self.controller
        n = len(c.proposals)
        self.segment_btn.setEnabled(not c.running)
        self.accept_btn.setEnabled(n > 0)
        self.refine_btn.setEnabled(n > 0)
        self.clear_btn.setEnabled(n > 0)
        if c.running:
            self.state_label.setText("Proposing ...")
        elif n:
            self.state_label.setText(f"{plural(n, 'proposal')}: click one on the 'proposals' layer to reject it.")
        else:
            self.state_label.setText("No proposals.")
