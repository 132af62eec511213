"""The live fine-tune plot of the dock widget: loss and Dice against the step.

matplotlib's Qt canvas, drawn small and in napari's dark colours. A new point
only blits the two lines over the saved axes (a full draw, about 50-100 ms of
the main thread, only when the axis limits or the size change), so a per-step
point does not stall the window during training. Dice is the
hard Dice of the training batches (the corrected slices, augmented): it tells
how well the model fits what was drawn, not how well it will do elsewhere, and
the legend says so. Without matplotlib the widget shows the numbers only.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["TrainingPlot", "plot_available"]

_BG = "#262930"  # napari dark theme background
_FG = "#d1d2d4"
_LOSS = "#f0a35e"
_DICE = "#5ec4f0"


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def TrainingPlot(parent: QWidget | None = None) -> QWidget:  # noqa: N802 (a widget factory)
    """A canvas with ``clear(total_steps)`` and ``add(step, loss, dice)``; needs matplotlib."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    class _Canvas(FigureCanvasQTAgg):
        def __init__(self) -> None:
            fig = Figure(figsize=(3.2, 1.5), dpi=100, facecolor=_BG, layout="constrained")
            super().__init__(fig)
            self.setParent(parent)
            self.setFixedHeight(150)
            self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.ax = fig.add_subplot()
            self.ax2 = self.ax.twinx()
            self.steps: list[int] = []
            self.loss: list[float] = []
            self.dice: list[float] = []
            self.total = 1
            self._style()
            # animated: left out of full draws, drawn over the saved background instead
            (self._loss_line,) = self.ax.plot([], [], color=_LOSS, lw=1.4, marker=".", ms=3,
                                              animated=True)
            (self._dice_line,) = self.ax2.plot([], [], color=_DICE, lw=1.4, marker=".", ms=3,
                                               animated=True)
            self._background: Any = None
            self.mpl_connect("draw_event", self._on_draw)
            self.draw_idle()

        def _style(self) -> None:
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

        def clear(self, total: int) -> None:
            self.total = max(int(total), 1)
            self.steps, self.loss, self.dice = [], [], []
            self._update()

        def add(self, step: int, loss: float | None, dice: float | None) -> None:
            self.steps.append(int(step))
            self.loss.append(float("nan") if loss is None else float(loss))
            self.dice.append(float("nan") if dice is None else float(dice))
            self._update()

        def series(self) -> dict[str, list[Any]]:
            return {"step": list(self.steps), "loss": list(self.loss), "dice": list(self.dice)}

        def _update(self) -> None:
            """Show the series: a full draw when the axis limits change, else a blit."""
            self._loss_line.set_data(self.steps, self.loss)
            self._dice_line.set_data(self.steps, self.dice)
            finite = [v for v in self.loss if v == v]
            ylim = (0.0, max(finite) * 1.1 + 1e-6) if finite else (0.0, 1.0)
            if (0, self.total) != self.ax.get_xlim() or ylim != self.ax.get_ylim():
                self.ax.set_xlim(0, self.total)
                self.ax.set_ylim(*ylim)
                self._background = None
            if self._background is None:
                self.figure.set_layout_engine("constrained")  # the tick labels may move
                self.draw_idle()
                return
            self.restore_region(self._background)
            self._draw_lines()
            self.blit(self.figure.bbox)

        def _on_draw(self, _event: Any) -> None:
            """After a full draw: keep it as the background, freeze the margins, add the lines."""
            self._background = self.copy_from_bbox(self.figure.bbox)
            self.figure.set_layout_engine("none")  # a blit must not move the axes
            self._draw_lines()

        def _draw_lines(self) -> None:
            self.ax.draw_artist(self._loss_line)
            self.ax2.draw_artist(self._dice_line)

        def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
            self._background = None
            self.figure.set_layout_engine("constrained")
            super().resizeEvent(event)

    return _Canvas()
