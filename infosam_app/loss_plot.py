"""A small live line plot painted with QPainter (napari ships no matplotlib; no new dependency).

``LossPlot(panels=[["seg"], ["L_r", "L_d"]])`` draws one panel per group, stacked, each with its own
y-range, a legend with the latest (smoothed) values, and the step axis shared. Each series is drawn raw
(thin, faded) and smoothed (exponential moving average, bold): per-step losses of small batches are noisy.
``add(step, {"seg": 0.4, ...})`` appends values and repaints (cheap: a few hundred points at most are
drawn; older ones are decimated).
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

TERM_LABELS = {"l_r": "L_r", "l_d": "L_d"}  # distiller term name -> legend label
COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176"]
MAX_DRAWN = 400
FLAG_COLOR = "#ff5252"
SMOOTHING = 0.8  # EMA weight of the past


class LossPlot(QWidget):
    def __init__(self, panels: list[list[str]] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.panels = panels or [["seg"], ["L_r", "L_d"]]
        self.series: dict[str, list[tuple[float, float]]] = {n: [] for p in self.panels for n in p}
        self.colors = {n: QColor(COLORS[i % len(COLORS)]) for i, n in enumerate(self.series)}
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training losses per step: segmentation (top), InfoSAM L_r and L_d (bottom)")
        self.flag = ""  # a warning drawn over the plot (the distillation collapse, issue 31); "" = none

    def set_panels(self, panels: list[list[str]]) -> None:
        """Show these series (one list per panel; e.g. another distiller's terms); clears the plot."""
        self.panels = panels
        self.series = {n: [] for p in self.panels for n in p}
        self.colors = {n: QColor(COLORS[i % len(COLORS)]) for i, n in enumerate(self.series)}
        self.update()

    def set_flag(self, text: str) -> None:
        """Show ``text`` as a warning in the plot's top right corner ("" hides it)."""
        if text != self.flag:
            self.flag = text
            self.update()

    def sizeHint(self) -> QSize:
        return QSize(320, 220)

    def clear(self) -> None:
        for v in self.series.values():
            v.clear()
        self.update()

    def add(self, step: float, values: dict[str, float | None]) -> None:
        for name, value in values.items():
            if name in self.series and value is not None and math.isfinite(float(value)):
                self.series[name].append((float(step), float(value)))
        self.update()

    def point_count(self) -> int:
        return sum(len(v) for v in self.series.values())

    # ---- painting
    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#1e1f24"))
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        steps = [s for v in self.series.values() for s, _ in v]
        x0, x1 = (min(steps), max(steps)) if steps else (0.0, 1.0)
        if x1 <= x0:
            x1 = x0 + 1
        n = len(self.panels)
        left = max(fm.horizontalAdvance(t) for t in self._axis_labels()) + 8 if steps else 8
        right, top, gap, bottom = 8, 4, 6, fm.height() + 4
        h = (self.height() - top - bottom - gap * (n - 1)) / n
        for i, names in enumerate(self.panels):
            rect = QRectF(left, top + i * (h + gap), self.width() - left - right, h)
            self._paint_panel(p, rect, names, x0, x1, fm)
        p.setPen(QColor("#9e9e9e"))
        p.drawText(
            QRectF(left, self.height() - bottom, self.width() - left - right, bottom),
            Qt.AlignmentFlag.AlignCenter,
            f"step {int(x0)} .. {int(x1)}" if steps else "no training yet",
        )
        if self.flag:
            p.setPen(QColor(FLAG_COLOR))
            p.drawText(
                QRectF(left, top, self.width() - left - right - 4, fm.height() + 2),
                Qt.AlignmentFlag.AlignRight,
                self.flag,
            )
        p.end()

    def _range(self, names: list[str]) -> tuple[float, float] | None:
        values = [v for n in names for _, v in self.series[n]]
        if not values:
            return None
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad

    def _axis_labels(self) -> list[str]:
        out = []
        for names in self.panels:
            r = self._range(names)
            if r is not None:
                out += [f"{r[0]:.3g}", f"{r[1]:.3g}"]
        return out or ["0"]

    @staticmethod
    def _smooth(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out, ema = [], None
        for s, v in points:
            ema = v if ema is None else SMOOTHING * ema + (1 - SMOOTHING) * v
            out.append((s, ema))
        return out

    def _paint_panel(self, p: QPainter, rect: QRectF, names: list[str], x0: float, x1: float, fm) -> None:
        p.setPen(QPen(QColor("#555"), 1))
        p.drawRect(rect)
        r = self._range(names)
        if r is None:
            p.setPen(QColor("#777"))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, " / ".join(names))
            return
        lo, hi = r

        def to_px(s: float, v: float) -> QPointF:
            return QPointF(
                rect.left() + (s - x0) / (x1 - x0) * rect.width(), rect.bottom() - (v - lo) / (hi - lo) * rect.height()
            )

        if lo < 0 < hi:  # zero line
            p.setPen(QPen(QColor("#444"), 1, Qt.PenStyle.DashLine))
            z = to_px(x0, 0.0).y()
            p.drawLine(QPointF(rect.left(), z), QPointF(rect.right(), z))
        p.setPen(QColor("#9e9e9e"))
        p.drawText(QRectF(0, rect.top() - 2, rect.left() - 4, fm.height()), Qt.AlignmentFlag.AlignRight, f"{hi:.3g}")
        p.drawText(
            QRectF(0, rect.bottom() - fm.height() + 2, rect.left() - 4, fm.height()),
            Qt.AlignmentFlag.AlignRight,
            f"{lo:.3g}",
        )
        legend_x = rect.left() + 6
        for name in names:
            pts = self.series[name]
            if not pts:
                continue
            color = self.colors[name]
            smooth = self._smooth(pts)
            faded = QColor(color)
            faded.setAlpha(90)
            self._polyline(p, pts, to_px, QPen(faded, 1.0))
            self._polyline(p, smooth, to_px, QPen(color, 2.0))
            label = f"{name} {smooth[-1][1]:.3f}"
            box = QRectF(legend_x - 3, rect.top() + 2, fm.horizontalAdvance(label) + 6, fm.height() + 2)
            p.fillRect(box, QColor(30, 31, 36, 200))
            p.setPen(color)
            p.drawText(QPointF(legend_x, rect.top() + fm.ascent() + 3), label)
            legend_x += fm.horizontalAdvance(label) + 14

    @staticmethod
    def _polyline(p: QPainter, pts: list[tuple[float, float]], to_px, pen: QPen) -> None:
        stride = max(1, len(pts) // MAX_DRAWN)
        drawn = pts[::stride]
        if drawn[-1] is not pts[-1]:
            drawn = drawn + [pts[-1]]
        path = QPainterPath(to_px(*drawn[0]))
        for s, v in drawn[1:]:
            path.lineTo(to_px(s, v))
        p.setPen(pen)
        p.drawPath(path)
