"""The dock widget's controls and their arrangement: widgets, texts and tooltips, no logic.

:class:`WidgetLayout` builds the panel (image and model pickers, Segment,
Prompts, Corrections, Fine-tune, Job, Save) inside a scroll area, so that on a short
screen the panel scrolls instead of squeezing its boxes. The controls class
(:mod:`llm4seg_napari._controls`) wires these widgets to the session state;
the widget (:mod:`llm4seg_napari.widget`) runs the jobs.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
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

from llm4seg_core.training.config import FinetuneConfig
from llm4seg_napari._plot import TrainingPlot, plot_available

__all__ = ["WidgetLayout"]


class WidgetLayout(QWidget):
    """The panel's widgets, built in :meth:`_build_layout`; subclasses give them behaviour."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._build_layout()

    def _build_layout(self) -> None:
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
        form.addRow("Image", self.image_combo)
        # DICOM folders with several series: the reader opened the largest; pick another
        self.series_combo = self._combo("the series of this DICOM folder; Open adds it as a layer")
        self.series_button = self._button(
            "Open", "read the chosen series of the folder into a new image layer"
        )
        self.series_row = QWidget()
        row = QHBoxLayout(self.series_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.series_combo, 1)
        row.addWidget(self.series_button)
        form.addRow("Series", self.series_row)
        self.series_form = self.image_form = form
        form.setRowVisible(self.series_row, False)  # shown for folders with several series
        self.model_combo = self._combo("model: a task (its current version), a version of the "
                                       "model store, or untrained")
        self.model_combo.setMinimumContentsLength(22)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip("re-read the model store")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.refresh_button)
        form.addRow("Model", row)
        # why the picker holds the model it holds: the engine's suggestion for the image
        self.suggest_label = QLabel()
        self.suggest_label.setWordWrap(True)
        self.suggest_label.setStyleSheet("font-size: 11px")
        self.suggest_label.setTextFormat(Qt.TextFormat.PlainText)
        form.addRow("", self.suggest_label)
        form.setRowVisible(self.suggest_label, False)  # shown once an image is open
        self.device_combo = self._combo("where the model runs; auto = CUDA, then MPS, then CPU")
        form.addRow("Device", self.device_combo)
        self.window_combo = self._combo("CT display window: changes only the contrast shown")
        form.addRow("CT window", self.window_combo)
        root.addWidget(box)

        # ---- segment
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.scope_volume = QRadioButton("Whole volume")
        self.scope_slice = QRadioButton("Current slice")
        self.scope_volume.setChecked(True)
        scope_group = QButtonGroup(self)
        scope_group.addButton(self.scope_volume)
        scope_group.addButton(self.scope_slice)
        row.addWidget(self.scope_volume)
        row.addWidget(self.scope_slice)
        row.addStretch(1)
        lay.addLayout(row)
        self.overwrite_check = self._check(
            "Overwrite corrected slices",
            "unticked: slices you corrected keep your edits; ticked: they get model output "
            "again (and are unmarked)"
        )
        lay.addWidget(self.overwrite_check)
        self.keep_check = self._check(
            "Keep only what continues my corrections",
            "after a whole-volume Segment, keep of each label only what continues your corrected "
            "slices' outline of it, slice by slice, moving or growing at most 3 mm a slice; "
            "stray false positives elsewhere go. Leave unticked when there are other lesions "
            "you have not outlined yet."
        )
        lay.addWidget(self.keep_check)
        self.fill_check = self._check(
            "... and fill between my corrected slices",
            "with the box above: between two corrected slices that hold a label, add the outline "
            "interpolated from yours (shape-based: blended distance maps) where the model left "
            "background. Only when your two outlines are at most 3 mm a slice apart or the "
            "model's mask reaches every slice between them, so two separate lesions are not "
            "joined; other labels are never overwritten."
        )
        self.fill_check.setChecked(True)
        self.fill_check.setEnabled(False)  # only with the box above
        lay.addWidget(self.fill_check)
        self.segment_button = self._button(
            "Segment", "run the model; the mask goes to the layer '<image> mask'"
        )
        lay.addWidget(self.segment_button)
        root.addWidget(box)

        # ---- prompts (llm4seg_napari._prompting)
        box = QGroupBox("Prompts")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.prompt_button = self._button(
            "Click/box prompts",
            "point at one object: each click or box segments it on that slice at once with the "
            "prompt model (the label selected in the mask); the layers 'prompts: clicks' and "
            "'prompts: box' hold your prompts"
        )
        self.prompt_button.setCheckable(True)
        row.addWidget(self.prompt_button, 1)
        self.prompt_clicks = QRadioButton("Clicks")
        self.prompt_clicks.setToolTip("left click: the object; right click or Ctrl/Alt/Shift+"
                                      "click: not the object")
        self.prompt_box = QRadioButton("Box")
        self.prompt_box.setToolTip("drag a rectangle around the object (one box a slice: a new "
                                   "one replaces the old)")
        self.prompt_clicks.setChecked(True)
        prompt_group = QButtonGroup(self)
        prompt_group.addButton(self.prompt_clicks)
        prompt_group.addButton(self.prompt_box)
        row.addWidget(self.prompt_clicks)
        row.addWidget(self.prompt_box)
        lay.addLayout(row)
        self.prompt_guide_check = self._check(
            "Guide with the slice's mask",
            "ticked: the slice's mask of the label (as it is when you click: a Segment's output, "
            "your painting, or the last prompt's result) goes to the model with the prompts; "
            "unticked: the prompts alone"
        )
        lay.addWidget(self.prompt_guide_check)
        row = QHBoxLayout()
        self.prompt_undo_button = self._button(
            "Undo", "undo the last change of the mask (a prompt's result, a propagation or a "
            "stroke: napari's own undo history, as Ctrl+Z on the mask layer)"
        )
        self.prompt_clear_button = self._button(
            "Clear prompts", "remove every click and box (the mask stays): start on another object"
        )
        self.propagate_button = self._button(
            "Propagate",
            "carry the object (the selected label) through the volume from your corrected and "
            "prompted slices, both ways, until it ends; those slices stay as they are"
        )
        row.addWidget(self.prompt_undo_button)
        row.addWidget(self.prompt_clear_button)
        row.addWidget(self.propagate_button)
        lay.addLayout(row)
        self.prompt_hint = QLabel("Left click: the object · right or Ctrl/Alt/Shift+click: not "
                                  "the object · Box: drag a rectangle.")
        self.prompt_hint.setWordWrap(True)
        self.prompt_hint.setStyleSheet("font-size: 11px")
        lay.addWidget(self.prompt_hint)
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
        lay.addWidget(self.corrections_list)
        row = QHBoxLayout()
        self.mark_button = self._button(
            "Mark current slice", "the model got this slice right: use it for fine-tuning as is"
        )
        self.unmark_button = self._button(
            "Unmark selected", "not a correction: Segment may overwrite it, Fine-tune skips it"
        )
        row.addWidget(self.mark_button)
        row.addWidget(self.unmark_button)
        lay.addLayout(row)
        self.restore_button = self._button(
            "Restore corrections",
            "put back the corrected slices autosaved for this image (e.g. before a crash); "
            "slices you already corrected here are left as they are"
        )
        self.restore_button.setEnabled(False)
        lay.addWidget(self.restore_button)
        root.addWidget(box)

        # ---- fine-tune
        box = QGroupBox("Fine-tune on corrected slices")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Steps"))
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(FinetuneConfig().steps)
        self.steps_spin.setToolTip("training steps (about 0.25 s each on a 2-core CPU)")
        row.addWidget(self.steps_spin)
        row.addStretch(1)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.finetune_button = self._button(
            "Fine-tune",
            "train the model's small parts on the corrected slices and save a new model version"
        )
        self.segment_again_button = self._button(
            "Segment again", "segment the uncorrected slices with the fine-tuned model"
        )
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
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status_label)
        root.addWidget(box)

        self.save_button = self._button(
            "Save mask…", "NIfTI, NRRD or MetaImage in the image's geometry; PNG for pictures"
        )
        root.addWidget(self.save_button)
        root.addStretch(1)
        self._content = content
        self._fit_width()

    def _fit_width(self) -> None:
        """Wide enough for the content beside a vertical scroll bar (size hints settle once
        the style is applied, so showEvent calls this again)."""
        bar = self.scroll_area.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(max(330, self._content.minimumSizeHint().width() + bar + 2))

    @staticmethod
    def _button(text: str, tip: str) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        return button

    @staticmethod
    def _check(text: str, tip: str) -> QCheckBox:
        check = QCheckBox(text)
        check.setToolTip(tip)
        return check

    @staticmethod
    def _combo(tip: str) -> QComboBox:
        combo = QComboBox()
        combo.setToolTip(tip)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(14)
        combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        return combo

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._fit_width()
