"""The live fine-tune plot of the dock widget: loss and Dice against the step.

matplotlib, drawn small and in napari's dark colours, and kept off the main
thread: a fine-tune's worker holds the GIL and both CPU cores, and under that
load even a 15 ms matplotlib draw on the main thread stalled the window 80-140
ms. So the figure is an Agg canvas drawn by a thread of its own; the widget
only paints the latest finished picture (a QImage, well under a millisecond).

* A new point blits the two lines over the saved axes; points that come
  faster than 4 a second are drawn together, at most ``_MIN_GAP_S`` later.
  Each drawing request carries the whole series, so one that is overtaken
  before it is drawn loses nothing: every point is kept and shown.
* The loss axis runs from 0 to a "nice" value (1, 1.2, 1.5, 2, 2.5, 3, 4, 5,
  6, 8 x 10^k) just above the largest loss, so it changes only when the loss
  grows past a step; ``clear`` keeps the axes and empties the lines.
* A change of the axis limits is a full draw with the margins kept; they are
  laid out again (constrained layout) on a resize, when a label no longer
  fits, and at the end of a run when the limits changed during it.
* ``finish`` (the run ended) sends the last points at once and draws the
  final state in full ``_MIN_GAP_S`` later, so that drawing does not compete
  for the GIL with the widget's own end-of-job work.

Dice is the hard Dice of the training batches (the corrected slices,
augmented): it tells how well the model fits what was drawn, not how well it
will do elsewhere, and the legend says so. Without matplotlib the widget shows
the numbers only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["TrainingPlot", "loss_top", "plot_available"]

_log = logging.getLogger(__name__)

_BG = "#262930"  # napari dark theme background
_FG = "#d1d2d4"
_LOSS = "#f0a35e"
_DICE = "#5ec4f0"
_MIN_GAP_S = 0.25  # at most 4 updates a second
_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def loss_top(largest: float) -> float:
    """The top of the loss axis for a largest loss: the next step of the ladder above 1.1 x it."""
    want = float(largest) * 1.1
    if not math.isfinite(want) or want <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(want))
    for s in _STEPS:
        top = s * scale
        if top >= want * (1 - 1e-9):
            return float(f"{top:.6g}")  # 1.2e-1, not 0.12000000000000001
    return 10.0 * scale  # not reached


@dataclass(frozen=True)
class _Request:
    steps: tuple[int, ...]
    loss: tuple[float, ...]
    dice: tuple[float, ...]
    total: int
    size: tuple[int, int, float]  # width, height (logical pixels), device pixel ratio
    full: bool  # draw everything again, margins too


@dataclass(frozen=True)
class _Picture:
    rgba: bytes
    width: int
    height: int
    ratio: float
    request: _Request
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    full: bool  # a full draw (not a blit)
    fits: bool


class _Figure:
    """The matplotlib figure, touched only by its drawing thread (and before it starts)."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 1.5), dpi=100, facecolor=_BG, layout="constrained")
        self.canvas = FigureCanvasAgg(self.figure)
        self.ax = self.figure.add_subplot()
        self.ax2 = self.ax.twinx()
        for a in (self.ax, self.ax2):
            a.set_facecolor(_BG)
            a.tick_params(colors=_FG, labelsize=7, length=2)
            for side in a.spines.values():
                side.set_color("#5a5d63")
        self.ax.set_xlabel("step", color=_FG, fontsize=7, labelpad=1)
        self.ax.set_ylabel("loss", color=_LOSS, fontsize=7, labelpad=1)
        self.ax2.set_ylabel("Dice", color=_DICE, fontsize=7, labelpad=1)
        self.ax2.set_ylim(0, 1.02)
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(0, 1)
        # animated: left out of full draws, drawn over the saved background instead
        (self.loss_line,) = self.ax.plot([], [], color=_LOSS, lw=1.4, marker=".", ms=3,
                                         animated=True)
        (self.dice_line,) = self.ax2.plot([], [], color=_DICE, lw=1.4, marker=".", ms=3,
                                          animated=True)
        self.background: Any = None
        self.size: tuple[int, int, float] | None = None
        self.stale = True  # limits changed since the margins were last laid out

    def render(self, req: _Request) -> _Picture:
        relayout = req.full and self.stale
        if req.size != self.size:
            w, h, ratio = req.size
            self.figure.set_dpi(100 * ratio)
            self.figure.set_size_inches(max(w, 1) / 100, max(h, 1) / 100)
            self.size, relayout = req.size, True
        self.loss_line.set_data(req.steps, req.loss)
        self.dice_line.set_data(req.steps, req.dice)
        finite = [v for v in req.loss if v == v]
        ylim = (0.0, loss_top(max(finite))) if finite else tuple(self.ax.get_ylim())
        xlim = (0.0, float(req.total))
        changed = xlim != tuple(self.ax.get_xlim()) or ylim != tuple(self.ax.get_ylim())
        if changed:
            self.ax.set_xlim(*xlim)
            self.ax.set_ylim(*ylim)
        full = req.full or relayout or changed or self.background is None
        fits = True
        if full:
            self._draw(relayout)
            fits = self.fits()
            if not fits:  # a wider tick label: lay the margins out again
                self._draw(True)
                fits = self.fits()
        else:
            self.canvas.restore_region(self.background)
        self.ax.draw_artist(self.loss_line)
        self.ax2.draw_artist(self.dice_line)
        buf = self.canvas.buffer_rgba()
        return _Picture(bytes(buf), buf.shape[1], buf.shape[0], req.size[2], req,
                        tuple(self.ax.get_xlim()), tuple(self.ax.get_ylim()), full, fits)

    def _draw(self, relayout: bool) -> None:
        self.figure.set_layout_engine("constrained" if relayout else "none")
        self.canvas.draw()
        self.stale = not relayout
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def fits(self) -> bool:
        """Whether the axis labels (placed outside the tick labels) are inside the figure."""
        fig = self.figure.bbox
        renderer = self.canvas.get_renderer()
        for label in (self.ax.xaxis.label, self.ax.yaxis.label, self.ax2.yaxis.label):
            box = label.get_window_extent(renderer)
            if box.x0 < fig.x0 - 0.5 or box.x1 > fig.x1 + 0.5 or box.y0 < fig.y0 - 0.5:
                return False
        return True


class _Painter(threading.Thread):
    """Draws the latest request (older ones waiting are dropped) and hands the picture over."""

    def __init__(self, figure: _Figure, deliver: Callable[[_Picture], None]) -> None:
        super().__init__(name="llm4seg-plot", daemon=True)
        self.figure, self.deliver = figure, deliver
        self._cond = threading.Condition()
        self._pending: _Request | None = None
        self._stopped = False

    def request(self, req: _Request) -> None:
        with self._cond:
            self._pending = req
            self._cond.notify()

    def stop(self, *_: Any) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                req, self._pending = self._pending, None
            try:
                picture = self.figure.render(req)
            except Exception:  # noqa: BLE001 (a plot must not end the app)
                _log.exception("the fine-tune plot could not be drawn")
                continue
            try:
                self.deliver(picture)
            except RuntimeError:  # the widget is gone
                return


class _Bridge(QObject):
    ready = Signal(object)  # a _Picture, from the drawing thread to the main thread


def TrainingPlot(parent: QWidget | None = None) -> QWidget:  # noqa: N802 (a widget factory)
    """A plot with ``clear(total_steps)``, ``add(step, loss, dice)`` and ``finish()``.

    ``flush()`` sends the points that wait for the next update at once;
    ``series()`` holds every point added, ``shown()`` those of the picture on
    screen. Needs matplotlib.
    """

    class _Plot(QWidget):
        def __init__(self) -> None:
            super().__init__(parent)
            self.setFixedHeight(150)
            self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.steps: list[int] = []
            self.loss: list[float] = []
            self.dice: list[float] = []
            self.total = 1
            self.full_draws = 0  # pictures shown, for tests and benchmarks
            self.blits = 0
            self.picture: _Picture | None = None
            self._image: QImage | None = None
            self._last_sent = 0.0
            self._full_wanted = True
            self._timer = QTimer(self)
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.flush)
            self._final = QTimer(self)  # finish: the full draw, a little after the run's end
            self._final.setSingleShot(True)
            self._final.timeout.connect(self._draw_final)
            # no parent: the drawing thread may still emit after this widget is deleted, so
            # the bridge lives as long as the thread holds it (a deleted sender would crash);
            # the queued connection to this widget ends with the widget
            self._bridge = _Bridge()
            self._bridge.ready.connect(self._on_picture, Qt.ConnectionType.QueuedConnection)
            self._figure = _Figure()
            self._painter = _Painter(self._figure, self._bridge.ready.emit)
            self.destroyed.connect(self._painter.stop)
            self._painter.start()

        # ------------------------------------------------------------ API
        def clear(self, total: int) -> None:
            """A new run of ``total`` steps: empty lines; the loss axis waits for the first point."""
            self._final.stop()
            self.total = max(int(total), 1)
            self.steps, self.loss, self.dice = [], [], []
            self.flush()

        def add(self, step: int, loss: float | None, dice: float | None) -> None:
            self.steps.append(int(step))
            self.loss.append(float("nan") if loss is None else float(loss))
            self.dice.append(float("nan") if dice is None else float(dice))
            wait = _MIN_GAP_S - (time.perf_counter() - self._last_sent)
            if wait <= 0:
                self.flush()
            elif not self._timer.isActive():
                self._timer.start(max(1, math.ceil(wait * 1e3)))

        def finish(self) -> None:
            """The run ended: every point now; the whole plot drawn again a moment later."""
            self.flush()
            self._final.start(math.ceil(_MIN_GAP_S * 1e3))

        def _draw_final(self) -> None:
            self._full_wanted = True
            self.flush()

        def flush(self) -> None:
            """Send every point to the drawing thread now."""
            self._timer.stop()
            self._last_sent = time.perf_counter()
            ratio = float(self.devicePixelRatioF())
            self._painter.request(_Request(
                tuple(self.steps), tuple(self.loss), tuple(self.dice), self.total,
                (self.width(), self.height(), ratio), self._full_wanted))
            self._full_wanted = False

        def series(self) -> dict[str, list[Any]]:
            return {"step": list(self.steps), "loss": list(self.loss), "dice": list(self.dice)}

        def shown(self) -> dict[str, list[Any]]:
            """The points of the picture on screen (``series`` once it is drawn)."""
            req = self.picture.request if self.picture is not None else None
            if req is None:
                return {"step": [], "loss": [], "dice": []}
            return {"step": list(req.steps), "loss": list(req.loss), "dice": list(req.dice)}

        # ------------------------------------------------------------ Qt
        def _on_picture(self, picture: _Picture) -> None:
            image = QImage(picture.rgba, picture.width, picture.height,
                           4 * picture.width, QImage.Format.Format_RGBA8888)
            image.setDevicePixelRatio(picture.ratio)
            self.picture, self._image = picture, image  # the picture keeps the bytes alive
            if picture.full:
                self.full_draws += 1
            else:
                self.blits += 1
            self.update()

        def paintEvent(self, _event: Any) -> None:  # noqa: N802 (Qt API)
            painter = QPainter(self)
            painter.fillRect(self.rect(), QColor(_BG))
            if self._image is not None:
                painter.drawImage(0, 0, self._image)
            painter.end()

        def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
            super().resizeEvent(event)
            self._full_wanted = True
            self.flush()

    return _Plot()
