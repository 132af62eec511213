"""The live fine-tune plot: every point kept and shown, cheap updates, limits that contain the data.

The figure is drawn by a thread of its own; ``shown()`` and ``picture`` are
what the widget paints. Run under Xvfb (QT_QPA_PLATFORM=xcb), like the widget
tests.
"""

from __future__ import annotations

import math
import threading

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("pytestqt")

from llm4seg_napari._plot import TrainingPlot, loss_top  # noqa: E402

pytestmark = pytest.mark.gui
WAIT_MS = 5000


@pytest.fixture
def plot(qtbot):
    p = TrainingPlot()
    qtbot.addWidget(p)
    p.resize(330, 150)
    p.show()
    qtbot.waitExposed(p)
    qtbot.waitUntil(lambda: p.picture is not None and p.picture.width == 330, timeout=WAIT_MS)
    return p


def _drawn(plot, qtbot) -> None:
    """Wait until the picture on screen holds every point."""
    qtbot.waitUntil(lambda: plot.shown() == plot.series()
                    and plot.picture.request.total == plot.total, timeout=WAIT_MS)


def test_loss_top_is_a_coarse_step_above_the_data() -> None:
    assert loss_top(0.5) == 0.6
    assert loss_top(0.9) == 1.0
    assert loss_top(1.0) == 1.2
    assert loss_top(0.0123) == 0.015
    assert loss_top(37.0) == 50.0
    assert loss_top(float("nan")) == 1.0 and loss_top(0.0) == 1.0
    for v in (1e-4, 0.031, 0.27, 0.5, 0.99, 1.3, 2.2, 7.9, 123.0):
        top = loss_top(v)
        assert v * 1.1 <= top * (1 + 1e-9) <= v * 1.1 * 1.26  # contains it, not much more
    # steps: many maxima, few distinct tops (the axis is not redrawn for each)
    assert len({loss_top(0.4 + i * 0.01) for i in range(60)}) <= 5


def test_drawn_off_the_main_thread(plot) -> None:
    assert plot._painter.is_alive() and plot._painter is not threading.main_thread()
    assert plot.picture.height == 150 and len(plot.picture.rgba) == 330 * 150 * 4


def test_every_point_is_kept_and_shown(plot, qtbot) -> None:
    plot.clear(50)
    for step in range(1, 51):  # faster than 4 a second: drawn together
        plot.add(step, 1.0 / step, min(1.0, step / 40))
    assert plot.series()["step"] == list(range(1, 51))
    _drawn(plot, qtbot)  # the last ones too, by the timer
    assert plot.shown() == plot.series()
    assert plot.blits + plot.full_draws < 10  # not one picture per point


def test_none_values_are_gaps(plot, qtbot) -> None:
    plot.clear(3)
    plot.add(1, None, None)
    plot.add(2, 0.5, 0.7)
    plot.flush()
    _drawn(plot, qtbot)
    curve = plot.shown()
    assert math.isnan(curve["loss"][0]) and math.isnan(curve["dice"][0])
    assert plot.picture.ylim == (0.0, loss_top(0.5))


def test_limits_contain_the_data_and_grow_in_steps(plot, qtbot) -> None:
    plot.clear(20)
    plot.add(1, 0.8, 0.1)
    plot.flush()
    _drawn(plot, qtbot)
    assert plot.picture.xlim == (0.0, 20.0)
    top = plot.picture.ylim[1]
    assert plot.picture.ylim[0] == 0.0 and 0.8 * 1.1 <= top
    draws = plot.full_draws
    for step, loss in enumerate((0.82, 0.85, 0.7, 0.6), start=2):  # below the step: blits only
        plot.add(step, loss, 0.5)
        plot.flush()
        _drawn(plot, qtbot)
        assert not plot.picture.full
    assert plot.picture.ylim[1] == top and plot.full_draws == draws
    plot.add(6, 3.0, 0.5)  # past the step: the axis grows to contain it, a full draw
    plot.flush()
    _drawn(plot, qtbot)
    assert plot.picture.full and plot.picture.ylim == (0.0, loss_top(3.0))
    assert plot.picture.ylim[1] >= 3.3 and plot.picture.fits


def test_clear_resets_the_data_not_the_axes(plot, qtbot) -> None:
    plot.clear(10)
    for step in range(1, 4):
        plot.add(step, 0.5, 0.5)
    plot.finish()
    _drawn(plot, qtbot)
    ylim = plot.picture.ylim
    plot.clear(10)  # same run length: the lines emptied by a blit
    assert plot.series() == {"step": [], "loss": [], "dice": []}
    _drawn(plot, qtbot)
    assert plot.shown() == {"step": [], "loss": [], "dice": []}
    assert plot.picture.ylim == ylim and not plot.picture.full
    plot.clear(30)  # another length: the step axis follows
    _drawn(plot, qtbot)
    assert plot.picture.xlim == (0.0, 30.0) and plot.picture.full


def test_finish_shows_every_point_and_draws_in_full(plot, qtbot) -> None:
    plot.clear(4)
    plot.add(1, 0.6, 0.2)
    plot.flush()
    _drawn(plot, qtbot)
    plot.add(2, 0.5, 0.3)  # within the gap: waits for the timer
    plot.add(3, 0.4, 0.4)
    assert plot.shown()["step"] == [1]
    draws = plot.full_draws
    plot.finish()  # the points at once
    _drawn(plot, qtbot)
    assert plot.shown()["step"] == [1, 2, 3]
    qtbot.waitUntil(lambda: plot.full_draws > draws, timeout=WAIT_MS)  # then a full draw
    assert plot.picture.full and plot.picture.fits and plot.shown()["step"] == [1, 2, 3]


def test_a_tiny_loss_still_fits(plot, qtbot) -> None:
    plot.clear(30)
    plot.add(1, 0.00123, 0.3)  # wide tick labels: the margins are laid out again
    plot.flush()
    _drawn(plot, qtbot)
    assert plot.picture.ylim == (0.0, 0.0015) and plot.picture.fits

