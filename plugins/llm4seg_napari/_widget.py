"""The LLM4Seg dock widget: segment, correct, fine-tune, save.

Layers of this module (as in napari-nninteractive): the pickers and buttons
are built in :meth:`LLM4SegWidget._build_ui`; the handlers below it wire them
to the engine. The work itself lives in :mod:`llm4seg_napari._workers`
(Qt-free) and runs in napari thread workers, one job at a time; correction
tracking lives in :mod:`llm4seg_napari._corrections`.

Rules the widget keeps:

* Nothing long on the Qt main thread: model loading, segmentation,
  fine-tuning and saving run in workers; their progress reaches the widget
  through Qt signals (queued to the main thread), and the result is written
  into napari layers on the main thread.
* The mask of image ``X`` is the labels layer ``"X mask"``, placed like the
  image (scale, translate, rotate, shear, affine) and carrying its metadata
  (the ``llm4seg_volume`` record), so the plugin's writer saves it in the
  image's geometry.
* Corrected slices (edited by a person, or marked as right) are the training
  set of the session: Segment never overwrites them unless "Overwrite
  corrected slices" is ticked (overwritten slices are unmarked).
* Every :class:`~llm4seg_core.errors.LLM4SegError` becomes a napari
  notification; the widget stays usable.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from llm4seg_core.store import ModelStore
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.preprocess import CT_WINDOWS, window_limits
from llm4seg_napari._corrections import CorrectionTracker
from llm4seg_napari._geometry import SERIES_KEY, VOLUME_KEY, WINDOW_KEY
from llm4seg_napari._plot import TrainingPlot, plot_available
from llm4seg_napari._session import load_session, read_info, save_session, session_dir
from llm4seg_napari._workers import (
    Choice,
    FinetuneResult,
    SegmentResult,
    device_choices,
    finetune_job,
    load_segmenter,
    metrics_text,
    model_choices,
    segment_job,
    volume_from_layer,
)

if TYPE_CHECKING:
    import napari

__all__ = ["LLM4SegWidget"]

_log = logging.getLogger(__name__)

_AS_LOADED = "as loaded"
#: Debounce of the corrections autosave: painting stays smooth, a crash loses at most one edit.
AUTOSAVE_MS = 400
_MASK_FILTERS = (
    "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha);;PNG, 2-D pictures only (*.png)"
)


_WARM = threading.Lock()
_WARMED = False


DEFAULT_FINETUNE_STEPS = 180
"""FinetuneConfig.steps, repeated here so that building the panel does not import the trainer."""


def _warm_imports() -> None:
    """Import the engine (torch, transformers, ...) in a background thread, once.

    The first Segment otherwise imports them on the Qt main thread (the imports
    inside the widget's methods): a few hundred ms to seconds of frozen window,
    seen with ``bench/bench_event_loop.py --trace-stalls``.
    """
    global _WARMED
    with _WARM:
        if _WARMED:
            return
        _WARMED = True

    def run() -> None:
        try:
            import llm4seg_core.datasets  # noqa: F401
            import llm4seg_core.inference  # noqa: F401
            import llm4seg_core.postprocess  # noqa: F401
            import llm4seg_core.training  # noqa: F401
        except Exception:  # noqa: BLE001 - the real import reports it later, in context
            _log.debug("warm-up import failed", exc_info=True)

    threading.Thread(target=run, name="llm4seg-warm-imports", daemon=True).start()


def mask_name(image_name: str) -> str:
    """The name of the labels layer that holds the mask of image ``image_name``."""
    return f"{image_name} mask"


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    trace: str = ""


def guarded(fn: Callable[[], Any]) -> Callable[[], _Outcome]:
    """``fn`` for a worker thread: its value or its error (with the traceback) as an _Outcome."""

    def run() -> _Outcome:
        try:
            from llm4seg_core.device import flush_denormals

            flush_denormals()  # the thread's torch workers inherit it (see its docstring)
            return _Outcome(fn())
        except Exception as exc:  # noqa: BLE001 - every error reaches the person
            return _Outcome(None, exc, traceback.format_exc())

    return run


class _Relay(QObject):
    """Signals a worker thread emits; Qt queues them to the widget on the main thread."""

    progress = Signal(int, int)
    slices_done = Signal(object)
    metrics = Signal(object)


class _JobState:
    """The running job's cancel flag; plain Python, so it outlives the widget's Qt object."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.kind: str | None = None

    def cancel_now(self, *_: Any) -> None:
        self.cancel.set()


class _CloseWatcher(QObject):
    """Sets the cancel flag when the window holding the widget closes (viewer closed)."""

    def __init__(self, state: _JobState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = state

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            self._state.cancel_now()
        return False


@dataclass
class _SegmentContext:
    mask: Labels
    buffer: np.ndarray
    overwrite: bool
    written: int = 0
    kept: int = 0


class LLM4SegWidget(QWidget):
    """Dock widget: image/model/device pickers, Segment, corrections, Fine-tune, Save."""

    #: A job started: its kind ("segment", "fine-tune", "save"). For hosts such as the Qt app.
    job_started = Signal(str)
    #: A job ended: its kind and how ("done", "cancelled" or "failed").
    job_finished = Signal(str, str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._state = _JobState()
        self._relay = _Relay()  # no parent: worker threads may emit after the widget is gone
        self._job_done: Callable[[Any], None] = lambda _value: None
        self._worker: Any = None
        self._tracker: CorrectionTracker | None = None
        self._segmenter_cache: tuple[tuple[str, str], Any] | None = None
        self._seg_ctx: _SegmentContext | None = None
        self._model_list: list[Choice] = []
        self._extra_models: list[Choice] = []
        self._device_list: list[Choice] = []
        self._last_loss: str = ""
        self._tuned = False
        self._close_watcher = _CloseWatcher(self._state, self)
        self._watched: QWidget | None = None
        # autosave of the corrected slices (see llm4seg_napari._session)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self._autosave_now)
        self._autosave_target: tuple[Path, dict[str, Any]] | None = None
        self._edit_layer: Labels | None = None
        self._restored: set[Path] = set()  # sessions restored (or superseded) in this widget

        self._build_ui()
        self._relay.progress.connect(self._on_progress)
        self._relay.slices_done.connect(self._on_slices_done)
        self._relay.metrics.connect(self._on_metrics)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layer_removed)
        layers.events.moved.connect(self._refresh_images)
        for layer in layers:
            layer.events.name.connect(self._refresh_images)
        # closing the viewer (or the app) while a job runs stops the job
        self.destroyed.connect(self._state.cancel_now)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._state.cancel_now)
        _warm_imports()

        self._refresh_models()
        self._refresh_devices()
        self._refresh_images()
        self._set_busy(False)

    # ================================================================== layout
    def _build_ui(self) -> None:
        self.setMinimumWidth(330)
        # everything in a scroll area: on a short screen the panel scrolls instead of
        # squeezing its boxes (the fine-tune plot first)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        outer.addWidget(self.scroll_area)
        content = QWidget()
        self.scroll_area.setWidget(content)
        root = QVBoxLayout(content)
        root.setContentsMargins(6, 6, 6, 6)
        root.setSpacing(8)

        # ---- image & model
        box = QGroupBox("Image and model")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.image_combo = self._combo("image layer to segment")
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Image", self.image_combo)
        # DICOM folders with several series: the reader opened the largest; pick another
        self.series_combo = self._combo("the series of this DICOM folder; Open adds it as a layer")
        self.series_button = QPushButton("Open")
        self.series_button.setToolTip("read the chosen series of the folder into a new image layer")
        self.series_button.clicked.connect(lambda: self.open_series())
        self.series_row = QWidget()
        row = QHBoxLayout(self.series_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.series_combo, 1)
        row.addWidget(self.series_button)
        form.addRow("Series", self.series_row)
        self._series_form = form
        form.setRowVisible(self.series_row, False)
        self.model_combo = self._combo("model: a version of the model store, or untrained")
        self.model_combo.setMinimumContentsLength(22)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip("re-read the model store")
        self.refresh_button.clicked.connect(lambda: self._refresh_models())
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.refresh_button)
        form.addRow("Model", row)
        self.device_combo = self._combo("where the model runs; auto = CUDA, then MPS, then CPU")
        form.addRow("Device", self.device_combo)
        self.window_combo = self._combo("CT display window: changes only the contrast shown")
        self.window_combo.addItems([_AS_LOADED, *CT_WINDOWS])
        self.window_combo.currentTextChanged.connect(self._on_window_changed)
        form.addRow("CT window", self.window_combo)
        root.addWidget(box)

        # ---- segment
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.scope_volume = QRadioButton("Whole volume")
        self.scope_slice = QRadioButton("Current slice")
        self.scope_volume.setChecked(True)
        self._scope_group = QButtonGroup(self)
        self._scope_group.addButton(self.scope_volume)
        self._scope_group.addButton(self.scope_slice)
        row.addWidget(self.scope_volume)
        row.addWidget(self.scope_slice)
        row.addStretch(1)
        lay.addLayout(row)
        self.overwrite_check = QCheckBox("Overwrite corrected slices")
        self.overwrite_check.setToolTip(
            "unticked: slices you corrected keep your edits; ticked: they get model output "
            "again (and are unmarked)"
        )
        lay.addWidget(self.overwrite_check)
        self.seeded_check = QCheckBox("Keep only what continues my corrections")
        self.seeded_check.setToolTip(
            "after a whole-volume Segment, keep of each label only what continues your corrected "
            "slices' outline of it, slice by slice, moving or growing at most 3 mm a slice; "
            "stray false positives elsewhere go. Leave unticked when there are other lesions "
            "you have not outlined yet."
        )
        lay.addWidget(self.seeded_check)
        self.fill_check = QCheckBox("... and fill between my corrected slices")
        self.fill_check.setToolTip(
            "with the box above: between two corrected slices that hold a label, add the outline "
            "interpolated from yours (shape-based: blended distance maps) where the model left "
            "background. Only when your two outlines are at most 3 mm a slice apart or the "
            "model's mask reaches every slice between them, so two separate lesions are not "
            "joined; other labels are never overwritten."
        )
        self.fill_check.setChecked(True)
        self.fill_check.setEnabled(False)
        self.seeded_check.toggled.connect(
            lambda on: self.fill_check.setEnabled(bool(on) and not self.is_busy))
        lay.addWidget(self.fill_check)
        self.segment_button = QPushButton("Segment")
        self.segment_button.setToolTip("run the model; the mask goes to the layer '<image> mask'")
        self.segment_button.clicked.connect(lambda: self.segment())
        lay.addWidget(self.segment_button)
        root.addWidget(box)

        # ---- corrections
        box = QGroupBox("Corrections")
        lay = QVBoxLayout(box)
        self.corrections_label = QLabel()
        self.corrections_label.setWordWrap(True)
        lay.addWidget(self.corrections_label)
        self.corrections_list = QListWidget()
        self.corrections_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.corrections_list.setMinimumHeight(60)
        self.corrections_list.setMaximumHeight(110)
        self.corrections_list.setToolTip("double-click: go to the slice")
        self.corrections_list.itemDoubleClicked.connect(self._on_correction_activated)
        lay.addWidget(self.corrections_list)
        row = QHBoxLayout()
        self.mark_button = QPushButton("Mark current slice")
        self.mark_button.setToolTip("the model got this slice right: use it for fine-tuning as is")
        self.mark_button.clicked.connect(self.mark_current_slice)
        self.unmark_button = QPushButton("Unmark selected")
        self.unmark_button.setToolTip("not a correction: Segment may overwrite it, Fine-tune skips it")
        self.unmark_button.clicked.connect(self.unmark_selected)
        row.addWidget(self.mark_button)
        row.addWidget(self.unmark_button)
        lay.addLayout(row)
        self.restore_button = QPushButton("Restore corrections")
        self.restore_button.setToolTip(
            "put back the corrected slices autosaved for this image (e.g. before a crash); "
            "slices you already corrected here are left as they are"
        )
        self.restore_button.setEnabled(False)
        self.restore_button.clicked.connect(lambda: self.restore_corrections())
        lay.addWidget(self.restore_button)
        root.addWidget(box)

        # ---- fine-tune
        box = QGroupBox("Fine-tune on corrected slices")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Steps"))
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(DEFAULT_FINETUNE_STEPS)
        self.steps_spin.setToolTip("training steps (about 0.25 s each on a 2-core CPU)")
        row.addWidget(self.steps_spin)
        row.addStretch(1)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.setToolTip(
            "train the model's small parts on the corrected slices and save a new model version"
        )
        self.finetune_button.clicked.connect(lambda: self.finetune())
        self.segment_again_button = QPushButton("Segment again")
        self.segment_again_button.setToolTip(
            "segment the uncorrected slices with the fine-tuned model"
        )
        self.segment_again_button.clicked.connect(lambda: self.segment(scope="volume"))
        row.addWidget(self.finetune_button)
        row.addWidget(self.segment_again_button)
        lay.addLayout(row)
        self.loss_label = QLabel("loss: –")
        self.loss_label.setWordWrap(True)
        lay.addWidget(self.loss_label)
        self.plot = TrainingPlot(box) if plot_available() else None
        if self.plot is not None:
            self.plot.setToolTip(
                "live fine-tune curves: loss, and the Dice of the model on the corrected slices "
                "it trains on (a fit, not a score on unseen slices)"
            )
            caption = QLabel("<span style='color:#f0a35e'>loss</span> and "
                             "<span style='color:#5ec4f0'>Dice on the corrected slices</span> "
                             "(a fit, not a score on unseen slices)")
            caption.setWordWrap(True)
            caption.setStyleSheet("font-size: 11px")
            lay.addWidget(caption)
            lay.addWidget(self.plot)
        root.addWidget(box)

        # ---- job + save
        box = QGroupBox("Job")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("no job running")
        row.addWidget(self.progress_bar, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status_label)
        root.addWidget(box)

        self.save_button = QPushButton("Save mask…")
        self.save_button.setToolTip("NIfTI, NRRD or MetaImage in the image's geometry; PNG for pictures")
        self.save_button.clicked.connect(self._on_save_clicked)
        root.addWidget(self.save_button)
        root.addStretch(1)
        self._update_corrections_view()
        self._content = content
        self._fit_width()

    def _fit_width(self) -> None:
        """Wide enough for the content beside a vertical scroll bar (size hints settle once
        the style is applied, so showEvent calls this again)."""
        bar = self.scroll_area.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(max(330, self._content.minimumSizeHint().width() + bar + 2))

    @staticmethod
    def _combo(tip: str) -> QComboBox:
        combo = QComboBox()
        combo.setToolTip(tip)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(14)
        combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        return combo

    # ================================================================== pickers
    @staticmethod
    def _fill(combo: QComboBox, choices: list[Choice], keep: int) -> None:
        combo.blockSignals(True)
        combo.clear()
        for i, choice in enumerate(choices):
            combo.addItem(choice.label)
            if choice.tooltip:
                combo.setItemData(i, choice.tooltip, Qt.ItemDataRole.ToolTipRole)
            if not choice.enabled:
                item = combo.model().item(i)
                if item is not None:
                    item.setEnabled(False)
        combo.setCurrentIndex(keep if 0 <= keep < len(choices) else 0)
        combo.blockSignals(False)

    def _refresh_models(self, select: str | None | object = ...) -> None:
        """Re-read the model store; keep the selection, or select the version ``select``."""
        want = self.model_arg if select is ... else select
        try:
            choices = model_choices(ModelStore())
        except LLM4SegError as exc:
            show_error(str(exc))
            choices = [Choice("default", None)]
        known = {c.arg for c in choices}
        choices += [c for c in self._extra_models if c.arg not in known]
        self._model_list = choices
        args = [c.arg for c in choices]
        self._fill(self.model_combo, choices, args.index(want) if want in args else 0)

    def _refresh_devices(self) -> None:
        self._device_list = device_choices()
        self._fill(self.device_combo, self._device_list, 0)

    @property
    def model_arg(self) -> str | None:
        """The selected model's argument (None = default)."""
        i = self.model_combo.currentIndex()
        return self._model_list[i].arg if 0 <= i < len(self._model_list) else None

    @property
    def device_arg(self) -> str:
        i = self.device_combo.currentIndex()
        return self._device_list[i].arg or "auto" if 0 <= i < len(self._device_list) else "auto"

    def set_model(self, arg: str | None, label: str | None = None) -> None:
        """Select the model ``arg`` (a version, a checkpoint path or a spec); adds it when absent."""
        if arg not in [c.arg for c in self._model_list]:
            self._extra_models.append(Choice(label or f"custom: {arg}", arg, f"model {arg!r}"))
        self._refresh_models(select=arg)

    # ================================================================== layers
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    @property
    def image_layer(self) -> Image | None:
        name = self.image_combo.currentText()
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            return layer if isinstance(layer, Image) else None
        return None

    @property
    def mask_layer(self) -> Labels | None:
        image = self.image_layer
        if image is None:
            return None
        name = mask_name(image.name)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            return self.viewer.layers[name]
        return None

    @property
    def corrected_slices(self) -> list[int]:
        return self._tracker.slices if self._tracker is not None else []

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_images)
        self._refresh_images()

    def _on_layer_removed(self, event: Any) -> None:
        try:
            event.value.events.name.disconnect(self._refresh_images)
        except (RuntimeError, ValueError, TypeError):
            pass
        self._refresh_images()

    def _refresh_images(self, *_: Any) -> None:
        names = [layer.name for layer in self._image_layers()]
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentIndex(names.index(current))
        elif names:
            self.image_combo.setCurrentIndex(len(names) - 1)  # the newest image
        self.image_combo.blockSignals(False)
        self._on_image_changed()

    def _on_image_changed(self, *_: Any) -> None:
        image = self.image_layer
        self.window_combo.blockSignals(True)
        window = image.metadata.get(WINDOW_KEY) if image is not None else None
        self.window_combo.setCurrentText(window if window in CT_WINDOWS else _AS_LOADED)
        self.window_combo.setEnabled(image is not None and not image.rgb)
        self.window_combo.blockSignals(False)
        self._refresh_series(image)
        self._attach_tracker(self.mask_layer)

    # ================================================================== DICOM series
    def _refresh_series(self, image: Image | None) -> None:
        series = (image.metadata.get(SERIES_KEY) if image is not None else None) or []
        self.series_combo.clear()
        for s in series:
            self.series_combo.addItem(f"{s.get('label') or s.get('uid')}", s.get("uid"))
            self.series_combo.setItemData(
                self.series_combo.count() - 1,
                f"{s.get('modality') or '?'} · {s.get('n_files')} file(s) · UID {s.get('uid')}",
                Qt.ItemDataRole.ToolTipRole,
            )
        self._series_form.setRowVisible(self.series_row, len(series) > 1)

    def open_series(self, uid: str | None = None) -> bool:
        """Read another series of the current image's DICOM folder into a new layer."""
        image = self.image_layer
        uid = uid or self.series_combo.currentData()
        record = (image.metadata.get(VOLUME_KEY) or {}) if image is not None else {}
        folder = Path(str(record.get("source") or ""))
        if image is None or not uid or not folder.is_dir():
            show_warning("no other DICOM series to open: open a DICOM folder first")
            return False
        from llm4seg_napari._reader import read_series

        state = self._state

        def run() -> Any:
            data = read_series(folder, uid)
            if state.cancel.is_set():
                raise Cancelled("opening the series was cancelled")
            return data

        return self._start_job("open", run, self._series_opened,
                               f"Reading series {self.series_combo.currentText()}…")

    def _series_opened(self, layer_data: Any) -> None:
        from napari.layers import Layer

        layer = self.viewer.add_layer(Layer.create(*layer_data))
        self.image_combo.setCurrentText(layer.name)
        self.status_label.setText(f"Opened series {layer.name}.")

    def _attach_tracker(self, mask: Labels | None) -> None:
        if self._tracker is not None and self._tracker.layer is mask:
            self._refresh_restore()
            return
        if self._autosave_timer.isActive():  # the old layer's last edit is saved first
            self._autosave_timer.stop()
            self._autosave_now()
        if self._tracker is not None:
            self._tracker.detach()
            self._tracker = None
        if self._edit_layer is not None:
            try:
                self._edit_layer.events.paint.disconnect(self._schedule_autosave)
            except (RuntimeError, ValueError, TypeError):
                pass
            self._edit_layer = None
        self._autosave_target = None
        if mask is not None:
            self._tracker = CorrectionTracker(mask, self._on_corrections_changed)
            # every edit, also one on an already corrected slice, is autosaved
            mask.events.paint.connect(self._schedule_autosave)
            self._edit_layer = mask
            image = self.image_layer
            if image is not None:
                self._autosave_target = self._session_target(image)
        self._update_corrections_view()
        self._refresh_restore()

    def _on_window_changed(self, name: str) -> None:
        image = self.image_layer
        if image is None or name not in CT_WINDOWS:
            return
        image.contrast_limits = window_limits(name)

    def _layer_state(self, layer: Any) -> dict[str, Any]:
        return dict(layer.as_layer_data_tuple()[1])

    def _current_slice(self, layer: Any, n_slices: int) -> int:
        if n_slices <= 1 or layer.ndim < 3:
            return 0
        point = list(self.viewer.dims.point)[-layer.ndim:]
        z = int(round(float(layer.world_to_data(point)[0])))
        return min(max(z, 0), n_slices - 1)

    def _make_mask_layer(self, image: Image, shape: tuple[int, ...]) -> Labels:
        metadata = {k: (dict(v) if isinstance(v, dict) else v) for k, v in image.metadata.items()}
        return self.viewer.add_labels(
            np.zeros(shape, np.uint8),
            name=mask_name(image.name),
            scale=image.scale,
            translate=image.translate,
            rotate=image.rotate,
            shear=image.shear,
            affine=image.affine,
            metadata=metadata,
            opacity=0.5,
        )

    # ================================================================== autosave
    def _session_target(self, image: Image) -> tuple[Path, dict[str, Any]]:
        """The session folder of ``image`` and the record saved with its corrections."""
        record = image.metadata.get(VOLUME_KEY) or {}
        source = str(record.get("source") or "")
        if not source:
            path = getattr(getattr(image, "source", None), "path", None)
            source = str(path) if path else f"layer:{image.name}"
        shape = volume_shape = tuple(int(s) for s in np.shape(image.data))
        if image.rgb:
            volume_shape = shape[:-1]
        info = {
            "source": source,
            "image": image.name,
            "shape": list(volume_shape),
            "scale": [float(v) for v in image.scale[-len(volume_shape):]],
            "translate": [float(v) for v in image.translate[-len(volume_shape):]],
        }
        return session_dir(source, volume_shape), info

    def _on_corrections_changed(self) -> None:
        self._update_corrections_view()
        self._schedule_autosave()
        self._refresh_restore()

    def _schedule_autosave(self, *_: Any) -> None:
        if self._tracker is not None and self._autosave_target is not None:
            self._autosave_timer.start()  # restarts: one save after a burst of edits

    def _autosave_now(self) -> bool:
        """Write the corrected slices of the tracked mask to its session folder now."""
        tracker, target = self._tracker, self._autosave_target
        if tracker is None or target is None:
            return False
        folder, info = target
        data = np.asarray(tracker.layer.data)
        view = data[None] if data.ndim == 2 else data
        slices = {z: np.array(view[z], copy=True) for z in tracker.slices if 0 <= z < len(view)}
        if folder not in self._restored:
            # a session saved before (and not restored yet) keeps its other slices: a first
            # edit in a new viewer must not wipe what Restore can still bring back
            old = load_session(folder)
            if old is not None:
                for z, labels in old.slices().items():
                    if z not in slices and labels.shape == view.shape[1:]:
                        slices[z] = labels
        info = dict(info, mask=tracker.layer.name, dtype=str(data.dtype))
        try:
            save_session(folder, slices, info)
        except OSError as exc:
            _log.warning("autosave of the corrections to %s failed: %s", folder, exc)
            self.status_label.setText(f"Autosave of the corrections failed: {exc}")
            return False
        self._refresh_restore()
        return True

    def _restorable(self) -> tuple[Path, list[int]] | None:
        """The session folder of the current image and its saved slices not corrected here."""
        image = self.image_layer
        if image is None:
            return None
        folder, info = self._session_target(image)
        record = read_info(folder)
        if not record or list(record.get("shape") or []) != info["shape"]:
            return None
        done = set(self.corrected_slices)
        zs = [int(z) for z in record.get("z") or [] if int(z) not in done]
        return (folder, zs) if zs else None

    def _refresh_restore(self) -> None:
        found = self._restorable()
        n = len(found[1]) if found else 0
        self.restore_button.setEnabled(n > 0)
        self.restore_button.setText(f"Restore corrections ({n} slice(s))" if n
                                    else "Restore corrections")

    def restore_corrections(self) -> int:
        """Write the autosaved corrected slices of the current image back into its mask.

        Slices already corrected in the mask layer are never overwritten (a
        notification says which were skipped). Restored slices are marked as
        corrected. Returns the number of slices restored.
        """
        image = self.image_layer
        if image is None:
            show_warning("open the image whose corrections you want back first")
            return 0
        folder, info = self._session_target(image)
        session = load_session(folder)
        if session is None or not session.z:
            show_info("no autosaved corrections for this image")
            self._refresh_restore()
            return 0
        shape = tuple(info["shape"])
        if list(session.info.get("shape") or shape) != list(shape) or (
                session.labels.shape[1:] != (shape[1:] if len(shape) == 3 else shape)):
            show_warning(f"the autosaved corrections in {folder} do not fit this image's shape")
            return 0
        mask = self.mask_layer
        if mask is None:
            dtype = np.dtype(session.info.get("dtype") or session.labels.dtype)
            mask = self._make_mask_layer(image, shape)
            if mask.data.dtype != dtype:
                mask.data = mask.data.astype(dtype)
        self._attach_tracker(mask)
        tracker = self._tracker
        if tracker is None or tuple(mask.data.shape) != shape:
            show_warning(f"the layer {mask.name!r} does not have the image's shape {shape}")
            return 0
        data = mask.data
        view = data[None] if data.ndim == 2 else data
        restored, skipped = [], []
        for z, labels in session.slices().items():
            if not 0 <= z < len(view):
                continue
            if z in tracker:
                skipped.append(z)
                continue
            view[z] = labels
            restored.append(z)
        mask.refresh()
        self._restored.add(folder)
        tracker.add(restored)  # marks them, and autosaves the union
        text = f"restored {len(restored)} corrected slice(s) of {image.name}"
        if skipped:
            text += (f"; skipped {len(skipped)} slice(s) you already corrected here "
                     f"({', '.join(map(str, skipped))})")
        self.status_label.setText(text[0].upper() + text[1:] + ".")
        show_info(text)
        self._refresh_restore()
        return len(restored)

    # ================================================================== corrections
    def _update_corrections_view(self) -> None:
        slices = self.corrected_slices
        self.corrections_list.clear()
        for z in slices:
            item = QListWidgetItem(f"slice {z}")
            item.setData(Qt.ItemDataRole.UserRole, z)
            self.corrections_list.addItem(item)
        if self._tracker is None:
            text = "Segment first; your edits of the mask are then tracked per slice."
        elif not slices:
            text = "No corrected slices yet: paint, fill or erase on the mask."
        else:
            text = (f"{len(slices)} corrected slice(s): kept by Segment, used by Fine-tune.")
        self.corrections_label.setText(text)

    def mark_current_slice(self) -> None:
        """Count the shown slice as corrected (the model got it right)."""
        mask = self.mask_layer
        if mask is None or self._tracker is None:
            show_warning("no mask yet: Segment first, then mark or correct slices")
            return
        self._tracker.add([self._current_slice(mask, self._tracker.n_slices)])

    def unmark_selected(self) -> None:
        if self._tracker is None:
            return
        zs = [item.data(Qt.ItemDataRole.UserRole) for item in self.corrections_list.selectedItems()]
        self._tracker.discard(zs)

    def _on_correction_activated(self, item: QListWidgetItem) -> None:
        mask = self.mask_layer
        if mask is None or mask.ndim < 3:
            return
        z = int(item.data(Qt.ItemDataRole.UserRole))
        world = mask.data_to_world([z, 0, 0])
        self.viewer.dims.set_point(self.viewer.dims.ndim - mask.ndim, float(world[0]))

    # ================================================================== jobs
    @property
    def is_busy(self) -> bool:
        return self._worker is not None

    def _set_busy(self, busy: bool) -> None:
        for w in (self.segment_button, self.finetune_button, self.save_button, self.model_combo,
                  self.refresh_button, self.device_combo, self.image_combo, self.steps_spin,
                  self.overwrite_check, self.scope_volume, self.scope_slice,
                  self.series_combo, self.series_button, self.seeded_check):
            w.setEnabled(not busy)
        self.fill_check.setEnabled(not busy and self.seeded_check.isChecked())
        self.segment_again_button.setEnabled(not busy and self._tuned)
        self.cancel_button.setEnabled(busy)

    def _start_job(self, kind: str, fn: Callable[[], Any], done: Callable[[Any], None],
                   text: str, unit: str = "") -> bool:
        if self.is_busy:
            show_info(f"wait for the running {self._state.kind} to finish (or cancel it)")
            return False
        self._state.cancel = threading.Event()
        self._state.kind = kind
        worker = create_worker(guarded(fn), _start_thread=False)
        self._job_done = done
        # bound methods: Qt drops these connections if the widget is deleted mid-job
        worker.returned.connect(self._on_job_returned)
        worker.finished.connect(self._on_job_finished)
        self._worker = worker
        self.progress_bar.setRange(0, 0)  # busy until the first progress report
        self.progress_bar.setFormat(f"{kind}: %v / %m {unit}".rstrip())
        self.status_label.setText(text)
        self._set_busy(True)
        worker.start()
        self.job_started.emit(kind)
        return True

    def _on_job_returned(self, outcome: _Outcome) -> None:
        kind, done = self._state.kind or "job", self._job_done
        self._worker = None
        self._state.kind = None
        self._set_busy(False)
        self.progress_bar.setRange(0, 1)
        exc = outcome.error
        if exc is None:
            self.progress_bar.setValue(1)
            self.progress_bar.setFormat(f"{kind}: done")
            done(outcome.value)
        elif isinstance(exc, Cancelled):
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat(f"{kind}: cancelled")
            self.status_label.setText(f"Cancelled: {exc}")
            show_info(str(exc))
        elif isinstance(exc, LLM4SegError):
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat(f"{kind}: failed")
            self.status_label.setText(f"{kind.capitalize()} failed: {exc}")
            show_error(str(exc))
        else:
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat(f"{kind}: failed")
            self.status_label.setText(f"{kind.capitalize()} failed: {exc!r}")
            _log.error("%s failed:\n%s", kind, outcome.trace)  # details for a bug report
            show_error(f"{kind} failed with an unexpected error: {exc!r}")
        if kind == "segment":
            self._seg_ctx = None
        self.job_finished.emit(kind, "done" if exc is None else
                               "cancelled" if isinstance(exc, Cancelled) else "failed")

    def _on_job_finished(self) -> None:
        # safety net: a worker that ended without returning (it should not happen)
        if self._worker is not None and not self._worker.is_running:
            self._worker = None
            self._set_busy(False)

    def cancel_job(self) -> None:
        if self.is_busy:
            self._state.cancel_now()
            self.status_label.setText(f"Cancelling the {self._state.kind}…")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        if self._state.kind == "fine-tune":
            self.loss_label.setText(f"step {done}/{total}" + (f" · {self._last_loss}"
                                                              if self._last_loss else ""))

    def _on_metrics(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("loss")
        dice = metrics.get("dice")
        if self.plot is not None and isinstance(metrics.get("step"), int):
            self.plot.add(metrics["step"], loss, dice)
        if isinstance(loss, (int, float)):
            self._last_loss = f"loss {loss:.4f}" + (
                f" · Dice {dice:.3f}" if isinstance(dice, (int, float)) else "")
            step = self.progress_bar.value()
            total = self.progress_bar.maximum()
            self.loss_label.setText(f"step {step}/{total} · {self._last_loss}")

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._fit_width()
        top = self.window()
        if top is not self and top is not self._watched:
            if self._watched is not None:
                self._watched.removeEventFilter(self._close_watcher)
            top.installEventFilter(self._close_watcher)
            self._watched = top

    # ================================================================== segment
    def _segmenter_key(self, store: ModelStore) -> tuple[str, str]:
        arg = self.model_arg
        return (arg if arg is not None else f"default:{store.current_name()}", self.device_arg)

    def segment(self, scope: str | None = None) -> bool:
        """Segment the whole volume or the current slice (``scope`` "volume"/"slice").

        Returns True when a job started.
        """
        if self.is_busy:
            show_info(f"wait for the running {self._state.kind} to finish (or cancel it)")
            return False
        image = self.image_layer
        if image is None:
            show_warning("open an image first (File > Open, or the LLM4Seg sample data)")
            return False
        scope = scope or ("slice" if self.scope_slice.isChecked() else "volume")
        try:
            volume = volume_from_layer(image.data, self._layer_state(image))
            shape = volume.spatial_shape
            mask = self.mask_layer
            if mask is not None and tuple(mask.data.shape) != tuple(shape):
                raise LLM4SegError(
                    f"the layer {mask.name!r} has shape {tuple(mask.data.shape)} but the image "
                    f"has shape {tuple(shape)}; rename or delete that layer and segment again"
                )
        except LLM4SegError as exc:
            show_error(str(exc))
            return False
        if mask is None:
            mask = self._make_mask_layer(image, shape)
            self._attach_tracker(mask)
        tracker = self._tracker
        corrected = set(tracker.slices) if tracker is not None else set()
        overwrite = self.overwrite_check.isChecked()
        n = volume.n_slices
        wanted = list(range(n)) if scope == "volume" else [self._current_slice(image, n)]
        todo = wanted if overwrite else [z for z in wanted if z not in corrected]
        if not todo:
            show_info(
                "every slice asked for is corrected, so Segment leaves it as it is; tick "
                "'Overwrite corrected slices' to replace your corrections with model output"
            )
            return False
        store = ModelStore()
        key = self._segmenter_key(store)
        cached = self._segmenter_cache
        model_arg, device = self.model_arg, self.device_arg

        def get_segmenter() -> Any:
            if cached is not None and cached[0] == key:
                return cached[1]
            return load_segmenter(model_arg, device, store)

        self._seg_ctx = _SegmentContext(mask, np.zeros(shape, np.uint8), overwrite)
        ctx = self._seg_ctx
        cancel_holder = self._state
        relay = self._relay

        def run() -> SegmentResult:
            return segment_job(get_segmenter, volume, todo, ctx.buffer,
                               cancel=cancel_holder.cancel, progress=relay.progress.emit,
                               slices_done=relay.slices_done.emit)

        skipped = len(wanted) - len(todo)
        return self._start_job(
            "segment", run, lambda r: self._segment_done(r, key, skipped),
            f"Segmenting {len(todo)} slice(s) of {image.name}"
            + (f" (keeping {skipped} corrected)" if skipped else "") + "…",
            unit="slices",
        )

    def _on_slices_done(self, zs: list[int]) -> None:
        ctx = self._seg_ctx
        if ctx is None or not zs:
            return
        data = ctx.mask.data
        view = data[None] if data.ndim == 2 else data
        buf = ctx.buffer[None] if ctx.buffer.ndim == 2 else ctx.buffer
        tracker = self._tracker if self._tracker is not None and self._tracker.layer is ctx.mask else None
        overwritten = []
        for z in zs:
            if tracker is not None and z in tracker:
                if not ctx.overwrite:  # corrected while the job ran: the person's edit wins
                    ctx.kept += 1
                    continue
                overwritten.append(z)
            view[z] = buf[z]
            ctx.written += 1
        if overwritten and tracker is not None:
            tracker.discard(overwritten)
        ctx.mask.refresh()

    def _segment_done(self, result: SegmentResult, key: tuple[str, str], skipped: int) -> None:
        from llm4seg_core.device import describe_device

        seg = result.segmenter
        self._segmenter_cache = (key, seg)
        kept = skipped + (self._seg_ctx.kept if self._seg_ctx is not None else 0)
        text = (f"Segmented {len(result.slices)} slice(s) with {seg.name} on "
                f"{describe_device(seg.device)} in {result.seconds:.1f} s")
        if kept:
            text += f"; {kept} corrected slice(s) kept as you left them"
        text += self._apply_seeded(result)
        self.status_label.setText(text + ".")
        if not seg.trained:
            show_warning(
                f"{seg.name} is untrained: its mask is not meaningful. Correct a few slices and "
                "Fine-tune, or pick a trained model version"
            )

    def _apply_seeded(self, result: SegmentResult) -> str:
        """The "keep only what continues my corrections" step; returns text for the status."""
        mask = self.mask_layer
        if (not self.seeded_check.isChecked() or mask is None or mask.data.ndim != 3
                or len(result.slices) < 2):
            return ""
        seeds = self.corrected_slices
        if not seeds:
            return "; no corrected slices, so no region filtering"
        from llm4seg_core.postprocess import keep_seeded_components

        data = np.asarray(mask.data)
        sy, sx = (float(v) for v in mask.scale[-2:])
        fill = self.fill_check.isChecked()
        filtered, info = keep_seeded_components(data, seeds, pixel_size=(sy, sx),
                                                fill_between=fill)
        labels = info.get("labels", {})
        removed = sum(v.get("voxels_removed", 0) for v in labels.values())
        dropped = sum(v.get("regions_dropped", 0) for v in labels.values())
        filled = sum(v.get("voxels_filled", 0) for v in labels.values())
        gaps = sum(v.get("gaps_filled", 0) for v in labels.values())
        if not any(v.get("seeded") for v in labels.values()):
            return "; your corrected slices hold no label, so no region filtering"
        if removed or filled:
            changed = np.nonzero((filtered != data).reshape(data.shape[0], -1).any(1))[0]
            for z in changed:
                mask.data[z] = filtered[z]
            mask.refresh()
        text = (f"; kept what continues your corrections: {removed} voxels in "
                f"{dropped} region(s) removed")
        if gaps:
            text += f"; {filled} voxels filled in {gaps} gap(s) between corrected slices"
        return text

    # ================================================================== fine-tune
    def finetune(self) -> bool:
        """Fine-tune the selected model on the corrected slices; returns True when a job started."""
        if self.is_busy:
            show_info(f"wait for the running {self._state.kind} to finish (or cancel it)")
            return False
        from llm4seg_core.datasets import CorrectionSet

        image, mask = self.image_layer, self.mask_layer
        try:
            if image is None:
                raise LLM4SegError("open an image first, segment it and correct a few slices")
            volume = volume_from_layer(image.data, self._layer_state(image))
            labels = np.asarray(mask.data) if mask is not None else np.zeros(
                volume.spatial_shape, np.uint8)
            corrections = CorrectionSet(volume, labels, self.corrected_slices)
        except LLM4SegError as exc:
            show_warning(str(exc))
            return False
        model_arg, device, steps = self.model_arg, self.device_arg, self.steps_spin.value()
        state, relay, name = self._state, self._relay, image.name
        self._last_loss = ""
        self.loss_label.setText(f"step 0/{steps}")
        if self.plot is not None:
            self.plot.clear(steps)

        def run() -> FinetuneResult:
            return finetune_job(model_arg, device, corrections, steps, cancel=state.cancel,
                                progress=relay.progress.emit, metrics=relay.metrics.emit,
                                image_name=name)

        return self._start_job(
            "fine-tune", run, self._finetune_done,
            f"Fine-tuning on {len(corrections)} corrected slice(s) ({steps} steps)…",
            unit="steps",
        )

    def _finetune_done(self, result: FinetuneResult) -> None:
        info = result.version
        self._refresh_models(select=info.name)
        self._segmenter_cache = ((info.name, self.device_arg), result.segmenter)
        self._tuned = True
        self._set_busy(False)
        scores = metrics_text(result.metrics)
        if scores:
            self.loss_label.setText(f"{self.loss_label.text()}\non the corrected slices: {scores}")
        self.status_label.setText(
            f"Saved model version {info.name} (fine-tuned from {result.base}) in "
            f"{result.seconds:.1f} s; it is selected now. Segment again to apply it to the "
            "uncorrected slices."
        )
        show_info(f"fine-tuned model saved as version {info.name}")

    # ================================================================== save
    def _suggested_path(self, mask: Labels) -> str:
        record = mask.metadata.get(VOLUME_KEY) or {}
        source = Path(str(record.get("source") or ""))
        folder = source.parent if str(source) not in ("", ".") else Path.home()
        if source.is_dir():
            folder = source
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", mask.name).strip("_") or "mask"
        suffix = ".png" if record.get("kind") == "image2d" else ".nii.gz"
        return str(folder / f"{stem}{suffix}")

    def _on_save_clicked(self) -> None:
        mask = self.mask_layer
        if mask is None:
            show_warning("no mask to save yet: Segment first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", self._suggested_path(mask),
                                              _MASK_FILTERS)
        if path:
            self.save_mask(path)

    def save_mask(self, path: str) -> bool:
        """Write the mask (a snapshot of it now) to ``path`` through the plugin's writer."""
        from llm4seg_napari._writer import write_labels

        mask = self.mask_layer
        if mask is None:
            show_warning("no mask to save yet: Segment first")
            return False
        data = np.array(mask.data, copy=True)
        attributes = self._layer_state(mask)

        def done(written: list[str]) -> None:
            self.status_label.setText(f"Saved the mask to {written[0]}.")
            show_info(f"mask saved: {written[0]}")

        return self._start_job("save", lambda: write_labels(path, data, attributes), done,
                               f"Saving the mask to {path}…")
