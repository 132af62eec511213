"""Fixtures for the Qt app tests (run under Xvfb with QT_QPA_PLATFORM=xcb).

No modal dialog may block a test: QMessageBox, QFileDialog and QInputDialog
are replaced in the app's modules by recorders that answer as a test says.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy import sip  # noqa: E402
from qtpy.QtCore import QSettings  # noqa: E402
from qtpy.QtWidgets import QMessageBox  # noqa: E402

#: A tiny CMUNeXt: every job takes well under a second on a 2-core CPU.
TINY = "cmunext,image_size=64,dims=8:8:16:16:32"
JOB_TIMEOUT_MS = 60_000
SPACING_XYZ = (0.8, 0.7, 2.5)
ORIGIN_XYZ = (3.0, -5.0, 10.0)


class Dialogs:
    """What the app asked and showed; ``answers`` says how the person replies."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str, str]] = []  # (kind, title, text)
        self.answers: dict[str, Any] = {}  # "question" -> StandardButton, "save" -> path ...
        self.save_filters: list[str] = []  # the filters each Save dialog offered

    def texts(self, kind: str | None = None) -> list[str]:
        return [text for k, _title, text in self.shown if kind is None or k == kind]


#: The app's modules that open dialogs (each imports the dialog classes it uses).
DIALOG_MODULES = ("actions", "closing", "editing", "opening", "saving", "status", "window")


@pytest.fixture
def dialogs(monkeypatch) -> Dialogs:
    import importlib

    record = Dialogs()

    class FakeMessageBox(QMessageBox):
        @staticmethod
        def critical(parent, title, text, *args, **kwargs):
            record.shown.append(("critical", title, text))
            return QMessageBox.StandardButton.Ok

        @staticmethod
        def warning(parent, title, text, *args, **kwargs):
            record.shown.append(("warning", title, text))
            return QMessageBox.StandardButton.Ok

        @staticmethod
        def information(parent, title, text, *args, **kwargs):
            record.shown.append(("information", title, text))
            return QMessageBox.StandardButton.Ok

        @staticmethod
        def question(parent, title, text, *args, **kwargs):
            record.shown.append(("question", title, text))
            answers = record.answers.get("question", QMessageBox.StandardButton.Discard)
            if isinstance(answers, list):
                return answers.pop(0)
            return answers

    class FakeFileDialog:
        @staticmethod
        def getSaveFileName(parent, caption="", directory="", filter="", *args,  # noqa: N802
                            **kwargs):
            record.shown.append(("save-dialog", caption, directory))
            record.save_filters.append(filter)
            # "save-filter": the filter the person picked (default: none)
            return record.answers.get("save", ""), record.answers.get("save-filter", "")

        @staticmethod
        def getOpenFileName(parent, caption="", directory="", *args, **kwargs):  # noqa: N802
            record.shown.append(("open-dialog", caption, directory))
            return record.answers.get("open", ""), ""

        @staticmethod
        def getExistingDirectory(parent, caption="", directory="", *args, **kwargs):  # noqa: N802
            record.shown.append(("folder-dialog", caption, directory))
            return record.answers.get("folder", "")

    class FakeInputDialog:
        @staticmethod
        def getItem(parent, title, label, items, current=0, editable=False, *a, **k):  # noqa: N802
            record.shown.append(("series-picker", title, "\n".join(items)))
            pick = record.answers.get("series")
            if pick is None:
                return "", False
            return items[pick], True

    fakes = {"QMessageBox": FakeMessageBox, "QFileDialog": FakeFileDialog,
             "QInputDialog": FakeInputDialog}
    for name in DIALOG_MODULES:
        module = importlib.import_module(f"llm4seg_app.{name}")
        for attr, fake in fakes.items():
            if hasattr(module, attr):
                monkeypatch.setattr(module, attr, fake)
    return record


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: OpenMP threads spinning against a busy neighbour process on a
    2-core machine make the tiny model ~100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / "settings" / "llm4seg-app.ini"


@pytest.fixture
def make_window(qtbot, dialogs, settings_file):
    """Make app windows on a private settings file; each is closed (changes discarded) after."""
    from llm4seg_app.window import MainWindow

    windows = []

    def make(show: bool = True) -> MainWindow:
        window = MainWindow(QSettings(str(settings_file), QSettings.Format.IniFormat))
        windows.append(window)
        if show:
            window.show()
            qtbot.waitExposed(window)
        return window

    yield make
    for window in windows:
        if not window._closed:
            if window.is_busy:
                window.cancel_job()
                window.wait_idle(JOB_TIMEOUT_MS / 1000)
            dialogs.answers["question"] = QMessageBox.StandardButton.Discard
            window.close()
        # delete the C++ window now (deleteLater is not always processed before the next
        # test): napari's own viewer fixture (tests/napari) fails on QtViewer instances
        # left over from earlier tests in the same session
        if not sip.isdeleted(window):
            sip.delete(window)
    windows.clear()
    qtbot.wait(50)
    gc.collect()
    # A Python QtViewer wrapper can outlive its deleted C++ window here (a reference the
    # session keeps; a real app has one window per process). It is inert, but napari's
    # make_napari_viewer fixture counts QtViewer._instances and would blame the next
    # napari test for it: forget the dead ones.
    from napari._qt.qt_viewer import QtViewer

    for viewer in list(QtViewer._instances):
        if sip.isdeleted(viewer):
            QtViewer._instances.discard(viewer)


def wait_idle(qtbot, window) -> None:
    qtbot.waitUntil(lambda: not window.is_busy and not window.is_opening, timeout=JOB_TIMEOUT_MS)


def synthetic_ct(n: int = 6, size: int = 48) -> np.ndarray:
    """A CT-like volume in HU: air, a soft-tissue body and a dense disc."""
    rng = np.random.default_rng(0)
    vol = np.full((n, size, size), -1000.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    vol[:, (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2] = 40.0
    vol[:, (yy - size / 2) ** 2 + (xx - size / 2 + 6) ** 2 < (size * 0.15) ** 2] = 300.0
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    return vol.astype(np.int16)


@pytest.fixture
def small_ct(tmp_path: Path) -> Path:
    """A small NIfTI CT with a non-trivial geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(synthetic_ct())
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    path = tmp_path / "images" / "small_ct.nii.gz"
    path.parent.mkdir(parents=True)
    sitk.WriteImage(img, str(path))
    return path
