"""The live fine-tune plot of the dock widget: loss and Dice against the step.

matplotlib's Qt canvas, drawn small and in napari's dark colours. Dice is the
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
            self.ax.set_xlim(0, max(self.total, 1))

        def clear(self, total: int) -> None:
            self.total = max(int(total), 1)
            self.steps, self.loss, self.dice = [], [], []
            self._redraw()

        def add(self, step: int, loss: float | None, dice: float | None) -> None:
            self.steps.append(int(step))
            self.loss.append(float("nan") if loss is None else float(loss))
            self.dice.append(float("nan") if dice is None else float(dice))
            self._redraw()

        def series(self) -> dict[str, list[Any]]:
            return {"step": list(self.steps), "loss": list(self.loss), "dice": list(self.dice)}

        def _redraw(self) -> None:
            self.ax.cla()
            self.ax2.cla()
            self._style()
            if self.steps:
                self.ax.plot(self.steps, self.loss, color=_LOSS, lw=1.4, marker=".", ms=3)
                self.ax2.plot(self.steps, self.dice, color=_DICE, lw=1.4, marker=".", ms=3)
                finite = [v for v in self.loss if v == v]
                if finite:
                    self.ax.set_ylim(0, max(finite) * 1.1 + 1e-6)
            self.draw_idle()

    return _Canvas()
