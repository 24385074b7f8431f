"""Model: the bundled tiny SAM or a SAM checkpoint; the device; loading errors shown, never fatal."""

from __future__ import annotations

from html import escape
from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS
from infosam_app.state.inference_options import PRECISION_CHOICES, precision_text
from infosam_core.models.registry import MODELS, checkpoint_model_type, model_choices


class ModelPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.type_combo = QComboBox()
        for text, value in model_choices():
            self.type_combo.addItem(text, value)
        self.type_combo.setToolTip(TOOLTIPS["model_type"])
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("checkpoint file (.pth / .safetensors)")
        self.checkpoint_edit.setToolTip(TOOLTIPS["checkpoint"])
        browse = QPushButton("…")
        browse.setFixedWidth(28)
        browse.clicked.connect(self.choose_checkpoint)
        self.load_btn = QPushButton("Load model")
        self.load_btn.setToolTip(TOOLTIPS["load_model"])
        self.load_btn.clicked.connect(self.load_selected)
        self.info_label = QLabel("No model loaded")
        self.info_label.setWordWrap(True)
        self.precision_combo = QComboBox()
        for value in PRECISION_CHOICES:
            self.precision_combo.addItem(value, value)
        self.precision_combo.setCurrentIndex(self.precision_combo.findData(session.precision))
        self.precision_combo.setToolTip(TOOLTIPS["precision"])
        self.precision_combo.activated.connect(self._precision_chosen)
        self.store_label = QLabel()
        self.store_label.setWordWrap(True)
        self.store_label.setToolTip(TOOLTIPS["embedding_store"])
        store_btn = QPushButton("Store…")
        store_btn.setToolTip(TOOLTIPS["embedding_store"])
        store_btn.clicked.connect(self.choose_store)
        self.clear_store_btn = QPushButton("No store")
        self.clear_store_btn.clicked.connect(lambda: self.session.set_embedding_store(None))
        grid.addWidget(QLabel("Model"), 0, 0)
        grid.addWidget(self.type_combo, 0, 1)
        grid.addWidget(self.load_btn, 0, 2)
        ck = QHBoxLayout()
        ck.addWidget(self.checkpoint_edit)
        ck.addWidget(browse)
        grid.addLayout(ck, 1, 0, 1, 3)
        grid.addWidget(self.info_label, 2, 0, 1, 3)
        grid.addWidget(QLabel("Precision"), 3, 0)
        grid.addWidget(self.precision_combo, 3, 1)
        grid.addWidget(self.store_label, 4, 0, 1, 3)
        st = QHBoxLayout()
        st.addWidget(store_btn)
        st.addWidget(self.clear_store_btn)
        grid.addLayout(st, 5, 0, 1, 3)
        self.type_combo.currentIndexChanged.connect(self._sync_enabled)
        session.model_changed.connect(self.refresh)
        session.model_loading.connect(self._on_loading)
        session.error.connect(self._on_error)
        session.project_changed.connect(self._sync_store)
        self._sync_enabled()
        self._sync_store()

    def _sync_enabled(self) -> None:
        self.checkpoint_edit.setEnabled(self.type_combo.currentData() != "tiny" or bool(self.checkpoint_edit.text()))

    def set_choice(self, model_type: str, checkpoint: str | None) -> None:
        i = self.type_combo.findData(model_type)
        if i >= 0:
            self.type_combo.setCurrentIndex(i)
        self.checkpoint_edit.setText(checkpoint or "")
        self._sync_enabled()

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM checkpoint", str(Path.home()), "Checkpoints (*.pth *.pt *.safetensors);;All files (*)"
        )
        if path:
            self.use_checkpoint(path)

    def use_checkpoint(self, path: str) -> None:
        """Put ``path`` in the checkpoint field and select the model type the file holds (read from its tensor
        names and shapes, not its weights), saying so; an unrecognised file leaves the type as chosen."""
        self.checkpoint_edit.setText(path)
        found = checkpoint_model_type(path)
        if found is not None:
            self.type_combo.setCurrentIndex(self.type_combo.findData(found))
            self.info_label.setText(f"{escape(Path(path).name)}: <b>{escape(MODELS[found].title)}</b> (detected)")
        else:
            self.info_label.setText(
                f"{escape(Path(path).name)}: model type not recognised; choose it above before loading"
            )
        self._sync_enabled()

    def _precision_chosen(self, _index: int) -> None:
        if not self.session.set_precision(self.precision_combo.currentData()):
            self.precision_combo.setCurrentIndex(self.precision_combo.findData(self.session.precision))

    def choose_store(self) -> None:
        start = str(self.session.project.root) if self.session.project is not None else str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Embedding store (made by infosam embed)", start)
        if path:
            self.session.set_embedding_store(path)

    def _sync_store(self) -> None:
        store = self.session.embedding_store
        if self.session.project is None:
            self.store_label.setText("Embedding store: open a project first")
        elif store is None:
            self.store_label.setText("Embedding store: none (images are embedded here)")
        else:
            self.store_label.setText(f"Embedding store: <b>{escape(store.path.name)}</b> ({len(store)} embeddings)")
        self.clear_store_btn.setEnabled(store is not None)

    def load_selected(self) -> None:
        model_type = self.type_combo.currentData()
        checkpoint = self.checkpoint_edit.text().strip() or None
        self.session.load_model(model_type, checkpoint)

    def _on_loading(self, loading: bool) -> None:
        self.load_btn.setEnabled(not loading)
        if loading:
            self.info_label.setText("Loading the model …")
        else:
            self.refresh()

    def _on_error(self, message: str) -> None:
        if message.startswith("Cannot load the model"):
            self.refresh()
            self.info_label.setText(f"<span style='color:#ff6b6b'>{escape(message)}</span><br>{self.info_label.text()}")

    def refresh(self) -> None:
        s = self.session
        if not s.infos:
            self.info_label.setText("No model loaded")
            return
        base = s.infos["base"]
        text = f"Base: <b>{base.label}</b> on <b>{base.device}</b>"
        if "adapted" in s.infos:
            text += f"<br>Adapted: <b>{s.infos['adapted'].label}</b>"
        predictor = s.predictors.get("base")
        if predictor is not None:
            text += f"<br>precision: {escape(precision_text(predictor))}"
        self.info_label.setText(text)
        self.precision_combo.setCurrentIndex(self.precision_combo.findData(s.precision))
