"""Export: label images (TIFF / PNG) per image, COCO JSON of the project, the adapted model's adapter, and the
adapted model itself for other tools (a merged SAM / SAM2 checkpoint or ONNX files: the formats that apply to
its PEFT method, :func:`infosam_core.model_export.formats.formats_for`), written in a background task.

Each action takes an explicit destination (tests, scripts) or asks with a file dialog. Writing happens in
the core (:mod:`infosam_core.annotation.export`, :func:`infosam_core.adapter_files.checkpoint.save_peft_checkpoint`,
:func:`infosam_core.model_export.writer.export_model`), atomically.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFileDialog, QGridLayout, QLabel, QPushButton, QWidget

from infosam_app.session import Session
from infosam_app.shortcuts import TOOLTIPS
from infosam_app.state.wording import plural
from infosam_app.workers import Task


class ExportPanel(QWidget):
    def __init__(self, session: Session, adapt_panel=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.adapt_panel = adapt_panel
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.format_combo = QComboBox()
        self.format_combo.addItem("TIFF (16/32-bit labels)", "tif")
        self.format_combo.addItem("PNG (16-bit labels)", "png")
        self.layout_combo = QComboBox()
        self.layout_combo.setToolTip(TOOLTIPS["label_layout"])
        self.layout_combo.addItem("Instances (object ids)", "instances")
        self.layout_combo.addItem("One label image per category", "per_category")
        self.layout_combo.addItem("Semantic (category ids)", "semantic")
        self.masks_btn = QPushButton("Export masks…")
        self.masks_btn.setToolTip(TOOLTIPS["export_masks"])
        self.coco_btn = QPushButton("Export COCO JSON…")
        self.coco_btn.setToolTip(TOOLTIPS["export_coco"])
        self.adapter_btn = QPushButton("Export adapter…")
        self.adapter_btn.setToolTip(TOOLTIPS["export_adapter"])
        self.model_format_combo = QComboBox()
        self.model_format_combo.setToolTip(TOOLTIPS["export_model"])
        self.model_btn = QPushButton("Export model…")
        self.model_btn.setToolTip(TOOLTIPS["export_model"])
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        grid.addWidget(QLabel("Label format"), 0, 0)
        grid.addWidget(self.format_combo, 0, 1)
        grid.addWidget(QLabel("Label images"), 1, 0)
        grid.addWidget(self.layout_combo, 1, 1)
        grid.addWidget(self.masks_btn, 2, 0, 1, 2)
        grid.addWidget(self.coco_btn, 3, 0, 1, 2)
        grid.addWidget(self.adapter_btn, 4, 0, 1, 2)
        grid.addWidget(self.model_format_combo, 5, 0)
        grid.addWidget(self.model_btn, 5, 1)
        grid.addWidget(self.result_label, 6, 0, 1, 2)
        self.masks_btn.clicked.connect(lambda: self.export_masks())
        self.coco_btn.clicked.connect(lambda: self.export_coco())
        self.adapter_btn.clicked.connect(lambda: self.export_adapter())
        self.model_btn.clicked.connect(lambda: self.export_model())
        session.model_changed.connect(self._sync)
        session.project_changed.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        has_project = self.session.project is not None
        self.masks_btn.setEnabled(has_project)
        self.coco_btn.setEnabled(has_project)
        self.adapter_btn.setEnabled(self.session.has_adapted)
        self._sync_model_formats()

    def _sync_model_formats(self) -> None:
        """The model formats that apply to the adapted model's method (none without an adapted model)."""
        from infosam_core.model_export.formats import FORMAT_TITLES, formats_for

        formats = formats_for(self.session.sams["adapted"]) if self.session.has_adapted else []
        current = self.model_format_combo.currentData()
        self.model_format_combo.clear()
        for fmt in formats:
            self.model_format_combo.addItem(FORMAT_TITLES[fmt], fmt)
        if current in formats:
            self.model_format_combo.setCurrentIndex(formats.index(current))
        self.model_format_combo.setEnabled(bool(formats))
        self.model_btn.setEnabled(bool(formats))

    def _default_dir(self) -> str:
        p = self.session.project
        return str(p.exports_dir) if p is not None else str(Path.home())

    def _done(self, text: str) -> None:
        self.result_label.setText(text)
        self.session.tell(text)

    def export_masks(
        self, out_dir: str | Path | None = None, fmt: str | None = None, layout: str | None = None
    ) -> list[Path]:
        from infosam_core.annotation.export import export_label_images

        project = self.session.project
        if project is None:
            self.session.fail("Open or create a project first.")
            return []
        fmt = fmt or self.format_combo.currentData()
        layout = layout or self.layout_combo.currentData()
        if out_dir is None:
            Path(self._default_dir()).mkdir(parents=True, exist_ok=True)
            out_dir = QFileDialog.getExistingDirectory(self, "Export label images to", self._default_dir())
            if not out_dir:
                return []
        skipped: list[str] = []
        try:
            paths = export_label_images(project, out_dir, fmt=fmt, layout=layout, skipped=skipped)
        except Exception as exc:  # noqa: BLE001 - shown, never fatal
            self.session.fail(f"Export failed: {exc}")
            return []
        self._done(f"Wrote {plural(len(paths), 'label image')} ({fmt.upper()}) to {out_dir}")
        self._report_skipped(skipped)
        return paths

    def _report_skipped(self, skipped: list[str]) -> None:
        if skipped:
            self.session.fail(
                f"Skipped {plural(len(skipped), 'unreadable image')} (no objects, size unknown): {'; '.join(skipped[:3])}"
            )

    def export_coco(self, path: str | Path | None = None) -> Path | None:
        from infosam_core.annotation.export import export_coco

        project = self.session.project
        if project is None:
            self.session.fail("Open or create a project first.")
            return None
        if path is None:
            Path(self._default_dir()).mkdir(parents=True, exist_ok=True)
            path, _ = QFileDialog.getSaveFileName(
                self, "Export COCO JSON", str(Path(self._default_dir()) / "coco.json"), "JSON (*.json)"
            )
            if not path:
                return None
        skipped: list[str] = []
        try:
            out = export_coco(project, path, skipped=skipped)
        except Exception as exc:  # noqa: BLE001
            self.session.fail(f"COCO export failed: {exc}")
            return None
        self._done(f"Wrote {plural(project.total_objects(), 'object')} as COCO JSON to {out}")
        self._report_skipped(skipped)
        return out

    def export_adapter(self, path: str | Path | None = None) -> Path | None:
        from infosam_core.adapter_files.checkpoint import save_peft_checkpoint

        session = self.session
        if not session.has_adapted:
            session.fail("No adapted model to export: adapt or load one first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Export adapter",
                str(Path(self._default_dir()) / "adapter.safetensors"),
                "Adapter (*.json *.safetensors)",
            )
            if not path:
                return None
        summary = {"exported_from": "infosam-studio", "model": session.infos["adapted"].label}
        controller = getattr(self.adapt_panel, "controller", None)
        if (
            controller is not None
            and controller.last_result is not None
            and controller.last_result.model is session.sams["adapted"]
        ):
            summary.update(controller.last_result.summary())
        try:
            tensors_path, json_path = save_peft_checkpoint(session.sams["adapted"], path, summary)
        except Exception as exc:  # noqa: BLE001
            session.fail(f"Adapter export failed: {exc}")
            return None
        self._done(f"Wrote the adapter to {json_path} + {tensors_path.name}")
        return json_path

    def export_model(self, path: str | Path | None = None, fmt: str | None = None) -> Task | None:
        """Write the adapted model as ``fmt`` (default: the format chosen) to ``path`` (a file for checkpoints, a
        folder for ONNX; None: ask), in a background task; the result is shown when it is done."""
        from infosam_core.model_export.formats import ONNX_FORMAT
        from infosam_core.model_export.writer import export_model

        session = self.session
        fmt = fmt or self.model_format_combo.currentData()
        if not session.has_adapted or not fmt:
            session.fail("No adapted model to export (or no format applies to its method): adapt or load one first.")
            return None
        if path is None:
            Path(self._default_dir()).mkdir(parents=True, exist_ok=True)
            if fmt == ONNX_FORMAT:
                path = QFileDialog.getExistingDirectory(self, "Export ONNX files to", self._default_dir())
            else:
                suffix = "pt" if fmt == "sam2" else "pth"
                path, _ = QFileDialog.getSaveFileName(
                    self, "Export model", str(Path(self._default_dir()) / f"model_{fmt}.{suffix}"), f"*.{suffix}"
                )
            if not path:
                return None
        self.model_btn.setEnabled(False)

        def finished(result) -> None:
            self._sync_model_formats()
            self._done(result.summary)

        def failed(exc: BaseException) -> None:
            self._sync_model_formats()
            session.fail(f"Model export failed: {exc}")

        return session.tasks.run(
            export_model,
            session.sams["adapted"],
            fmt,
            path,
            name="export model",
            on_result=finished,
            on_error=failed,
        )
