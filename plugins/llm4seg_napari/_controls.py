"""The dock widget's controls class: the layout's pickers and lists, wired to the session state.

:class:`WidgetControls` keeps :class:`~llm4seg_napari.state.WidgetState` and
the controls in step, both ways: a pick in a combo box changes the state, a
change of the state shows in the controls. It follows the viewer's layers
(which image is current, which labels layer is its mask), tracks the mask's
corrected slices (:mod:`llm4seg_napari._corrections`) and has them
autosaved (:mod:`llm4seg_napari._autosave`). When an image becomes the
current one, the model picker preselects the task the engine suggests for it
(:func:`llm4seg_core.store.suggest_models`; the reason shows under the
picker), unless the person already chose a model for that image. The jobs
(Segment, Fine-tune, Save, opening a series) are the main class's,
:mod:`llm4seg_napari.widget`.

The mask is made ahead: when an image becomes the current one and has no
mask layer, an empty one (named as the mask, placed like the image) is added
on the next event-loop turn, once per image, and the selection is put back as
it was. napari takes 100-200 ms on the main thread to build a labels layer;
made inside the Segment click, that froze the window (docs/benchmarks.md).
The empty mask is tracked like any mask (a stroke in it is a correction), is
what Segment fills, and goes with its image when the image is removed while
still unused and empty (never segmented into, nothing painted or marked).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary, WeakSet

import numpy as np

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QComboBox, QListWidgetItem, QWidget

from llm4seg_core.autosave import restorable_slices
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.store import ImageInfo, ModelStore, TaskProfile, suggest_models, task_profiles
from llm4seg_napari._autosave import CorrectionsAutosave, session_target
from llm4seg_napari._corrections import CORRECTED_KEY, CorrectionTracker
from llm4seg_napari._layout import WidgetLayout
from llm4seg_napari.choices import Choice, device_choices, model_choices, task_arg
from llm4seg_napari.geometry import SERIES_KEY, WINDOW_KEY, volume_from_layer
from llm4seg_napari.masks import find_mask, make_mask_layer, mask_name
from llm4seg_napari.state import AS_LOADED, WidgetState

if TYPE_CHECKING:
    import napari

__all__ = ["WidgetControls"]

_log = logging.getLogger(__name__)

#: The progress bar's unit per job kind.
_UNITS = {"segment": "slices", "fine-tune": "steps", "propagate": "slices"}


class WidgetControls(WidgetLayout):
    """The panel with its pickers, corrections list and job display wired to ``self.state``."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = WidgetState(self)
        self._tracker: CorrectionTracker | None = None
        self._extra_models: list[Choice] = []
        self._tuned = False  # a fine-tune ran: "Segment again" makes sense
        self._profiles: list[TaskProfile] = []  # the tasks the suggestion ranks
        self._chosen: WeakKeyDictionary[Image, str | None] = WeakKeyDictionary()  # per image
        # the mask made ahead for each image (once per image), and those not used yet
        self._ahead: WeakKeyDictionary[Image, weakref.ref[Labels]] = WeakKeyDictionary()
        self._unused: WeakSet[Labels] = WeakSet()
        self._ahead_due = False  # a _make_mask_ahead call is queued
        self._autosave = CorrectionsAutosave(self)
        self._autosave.saved.connect(self._refresh_restore)
        self._autosave.failed.connect(self.state.set_status)

        state = self.state
        state.status_changed.connect(self.status_label.setText)
        state.choices_changed.connect(self._show_choices)
        state.model_changed.connect(lambda _text: self._show_selection())
        state.model_changed.connect(lambda _text: self._show_suggestion())
        state.device_changed.connect(lambda _arg: self._show_selection())
        state.window_changed.connect(self._show_window)
        state.corrections_changed.connect(lambda _zs: self._show_corrections())
        state.job_started.connect(self._show_job_started)
        state.progress.connect(self._show_progress)
        state.job_finished.connect(self._show_job_finished)

        self.image_combo.currentIndexChanged.connect(self._on_image_picked)
        self.model_combo.currentIndexChanged.connect(self._on_model_picked)
        self.refresh_button.clicked.connect(lambda: self.refresh_models())
        self.device_combo.currentIndexChanged.connect(self._on_device_picked)
        self.window_combo.currentTextChanged.connect(self.select_window)
        self.keep_check.toggled.connect(lambda _on: self._show_busy())
        self.corrections_list.itemDoubleClicked.connect(self._on_correction_activated)
        self.mark_button.clicked.connect(self.mark_current_slice)
        self.unmark_button.clicked.connect(self.unmark_selected)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layer_inserted)
        layers.events.removed.connect(self._on_layer_removed)
        layers.events.moved.connect(self._refresh_images)
        for layer in layers:
            layer.events.name.connect(self._refresh_images)

        self.refresh_models()
        state.set_device_choices(device_choices())
        self._show_window(state.window_preset)
        self._refresh_images()
        self._show_corrections()
        self._show_busy()

    # ================================================================== pickers
    def refresh_models(self, select: str | None | object = ...) -> None:
        """Re-read the model store; keep the selection, or select the model ``select``."""
        store = ModelStore()
        try:
            choices = model_choices(store)
        except LLM4SegError as exc:
            show_error(str(exc))
            choices = [Choice(None, "default")]
        try:
            self._profiles = task_profiles(store)
        except (LLM4SegError, OSError) as exc:  # the suggestion is a help, never in the way
            _log.warning("no model suggestions: %s", exc)
            self._profiles = []
        known = {c.arg for c in choices}
        choices += [c for c in self._extra_models if c.arg not in known]
        self.state.set_model_choices(choices, select)

    def select_model(self, arg: str | None, text: str | None = None) -> None:
        """Select the model ``arg`` (a task, a version, a checkpoint path or a spec); listed when absent.

        ``text``: what the picker shows for a model it did not list (default "custom: <arg>").
        The choice is the current image's: a suggestion does not override it.
        """
        if arg not in [c.arg for c in self.state.model_choices]:
            self._extra_models.append(Choice(arg, text or f"custom: {arg}", f"model {arg!r}"))
            self.refresh_models(select=arg)
        else:
            self.state.choose_model(arg)
        self._remember_choice()

    def select_device(self, arg: str) -> bool:
        """Select the device ``arg`` ("auto", "cpu", "cuda:0", ...); False when not usable here."""
        return self.state.choose_device(arg)

    def select_window(self, name: str) -> None:
        """Show the current CT in the display window ``name`` (only the contrast changes)."""
        from llm4seg_core.preprocess import CT_WINDOWS, window_limits

        image = self.state.image
        if image is None or not self.state.window_enabled or name not in self.state.window_choices:
            self._show_window(self.state.window_preset)
            return
        self.state.set_window(name, True)
        if name in CT_WINDOWS:
            image.contrast_limits = window_limits(name)

    def _on_model_picked(self, i: int) -> None:
        choices = self.state.model_choices
        if 0 <= i < len(choices):
            self.state.choose_model(choices[i].arg)
            self._remember_choice()

    # ================================================================== suggestion
    def _remember_choice(self) -> None:
        """The selected model is the person's choice for the current image."""
        image = self.state.image
        if image is not None:
            self._chosen[image] = self.state.model_arg

    def _suggest_for(self, image: Image | None) -> None:
        """Rank the tasks for ``image``; select the best, unless the person chose for it."""
        state = self.state
        suggestions = []
        if image is not None:
            try:
                volume = volume_from_layer(image.data, self._layer_state(image))
                suggestions = suggest_models(ImageInfo.of(volume, image.name),
                                             profiles=self._profiles)
            except LLM4SegError as exc:
                _log.info("no model suggestion for %s: %s", image.name, exc)
        state.set_suggestions(suggestions)
        if image is not None and image in self._chosen:
            state.choose_model(self._chosen[image])  # theirs, never overridden
        else:
            usable = {c.arg for c in state.model_choices if c.enabled}
            for suggestion in suggestions:
                if task_arg(suggestion.task) in usable:
                    state.choose_model(task_arg(suggestion.task))
                    break
        self._show_suggestion()

    def _show_suggestion(self) -> None:
        best = self.state.suggestion
        label = self.suggest_label
        self.image_form.setRowVisible(label, best is not None)
        if best is None:
            label.clear()
            label.setToolTip("")
            return
        if self.state.model_arg == task_arg(best.task):
            label.setText(f"Suggested for this image: {best.reason}.")
        else:
            label.setText(f"Suggested for this image: {best.task} ({best.reason}); "
                          "you chose another model.")
        ranking = "\n".join(f"{i + 1}. {s.task}: {s.reason}"
                            for i, s in enumerate(self.state.suggestions[:8]))
        label.setToolTip("The models for this image, best first (what each model's file says "
                         f"it is for, against the image):\n{ranking}")

    def _on_device_picked(self, i: int) -> None:
        choices = self.state.device_choices
        if 0 <= i < len(choices) and not self.state.choose_device(choices[i].arg or "auto"):
            self._show_selection()

    @staticmethod
    def _fill(combo: QComboBox, choices: list[Choice], current: int) -> None:
        combo.blockSignals(True)
        combo.clear()
        for i, choice in enumerate(choices):
            combo.addItem(choice.text)
            if choice.tip:
                combo.setItemData(i, choice.tip, Qt.ItemDataRole.ToolTipRole)
            if not choice.enabled:
                item = combo.model().item(i)
                if item is not None:
                    item.setEnabled(False)
        combo.setCurrentIndex(current if 0 <= current < len(choices) else 0)
        combo.blockSignals(False)

    def _show_choices(self) -> None:
        state = self.state
        self._fill(self.model_combo, state.model_choices, state.model_index)
        self._fill(self.device_combo, state.device_choices, state.device_index)

    def _show_selection(self) -> None:
        for combo, index in ((self.model_combo, self.state.model_index),
                             (self.device_combo, self.state.device_index)):
            if combo.currentIndex() != index:
                combo.blockSignals(True)
                combo.setCurrentIndex(index)
                combo.blockSignals(False)

    def _show_window(self, preset: str) -> None:
        combo = self.window_combo
        combo.blockSignals(True)
        if combo.count() != len(self.state.window_choices):
            combo.clear()
            combo.addItems(self.state.window_choices)
        combo.setCurrentText(preset)
        combo.setEnabled(self.state.window_enabled)
        combo.blockSignals(False)

    # ================================================================== layers
    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_images)
        self._refresh_images()

    def _on_layer_removed(self, event: Any) -> None:
        try:
            event.value.events.name.disconnect(self._refresh_images)
        except (RuntimeError, ValueError, TypeError):
            pass
        if isinstance(event.value, Image):
            ref = self._ahead.get(event.value)
            mask = ref() if ref is not None else None
            if mask is not None:  # after this removal has ended: napari is still in it
                QTimer.singleShot(0, lambda: self._drop_unused(mask))
        self._refresh_images()

    def _refresh_images(self, *_: Any) -> None:
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        current = self.state.image
        if not any(layer is current for layer in images):
            current = images[-1] if images else None  # the newest image
        combo = self.image_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([layer.name for layer in images])
        if current is not None:
            combo.setCurrentIndex([layer is current for layer in images].index(True))
        combo.blockSignals(False)
        self._set_image(current)

    def _on_image_picked(self, i: int) -> None:
        name = self.image_combo.itemText(i)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        self._set_image(layer if isinstance(layer, Image) else None)

    def _set_image(self, image: Image | None) -> None:
        """Make ``image`` the current one: its window, its series, its mask, its model."""
        changed = image is not self.state.image
        if changed:
            window = image.metadata.get(WINDOW_KEY) if image is not None else None
            window = window if window in self.state.window_choices else AS_LOADED
        else:
            window = self.state.window_preset
        self.state.set_window(window, image is not None and not image.rgb)
        self.state.set_image(image)
        if changed:
            self._suggest_for(image)
        self._refresh_series(image)
        self._sync_mask()

    def _sync_mask(self) -> None:
        """Find the current image's mask layer, and track its corrections."""
        image = self.state.image
        mask = find_mask(self.viewer, image)
        if mask is None and image is not None:
            mask = self._follow_rename(image)
            if mask is None and image not in self._ahead and not self._ahead_due:
                self._ahead_due = True  # after the layer event that brought the image
                QTimer.singleShot(0, self._make_mask_ahead)
        self.state.set_mask(mask)
        self._attach_tracker(mask)

    # ================================================================== the mask made ahead
    def _make_mask_ahead(self) -> None:
        """Add the current image's empty mask now, so that Segment does not have to."""
        self._ahead_due = False
        image = self.state.image
        if image is None or image in self._ahead or mask_name(image.name) in self.viewer.layers:
            return
        try:
            shape = volume_from_layer(image.data, self._layer_state(image)).spatial_shape
        except LLM4SegError:
            return  # nothing Segment could do with it either
        layers = self.viewer.layers
        selection = layers.selection
        before, active = set(selection), selection.active
        mask = make_mask_layer(self.viewer, image, tuple(shape))
        self._ahead[image] = weakref.ref(mask)
        self._unused.add(mask)
        # napari selects a new layer: put the selection back (the image's controls stay)
        if active is not None and active in layers:
            selection.active = active
        else:
            selection.clear()
        selection.update(layer for layer in before if layer in layers)
        self._sync_mask()

    def _is_unused(self, mask: Labels) -> bool:
        """A mask made ahead that is still as made: never segmented into, empty, no slice
        marked."""
        return (mask in self._unused and not mask.metadata.get(CORRECTED_KEY)
                and not np.any(np.asarray(mask.data)))

    def _use_mask(self, mask: Labels) -> None:
        """``mask`` gets content now (Segment, restored corrections): it is a mask like any."""
        self._unused.discard(mask)

    def _drop_unused(self, mask: Labels) -> None:
        """Remove ``mask`` (its image was removed) when it is still unused."""
        if mask in self.viewer.layers and self._is_unused(mask):
            self.viewer.layers.remove(mask)

    def _follow_rename(self, image: Image) -> Labels | None:
        """The image was renamed: its unused made-ahead mask takes the new mask name."""
        ref = self._ahead.get(image)
        mask = ref() if ref is not None else None
        name = mask_name(image.name)
        if (mask is None or mask not in self.viewer.layers or mask.name == name
                or name in self.viewer.layers or not self._is_unused(mask)):
            return None
        mask.name = name  # its name event refreshes the pickers; find_mask finds it now
        return mask

    def _refresh_series(self, image: Image | None) -> None:
        series = (image.metadata.get(SERIES_KEY) if image is not None else None) or []
        combo = self.series_combo
        combo.clear()
        for s in series:
            combo.addItem(f"{s.get('label') or s.get('uid')}", s.get("uid"))
            combo.setItemData(
                combo.count() - 1,
                f"{s.get('modality') or '?'} · {s.get('n_files')} file(s) · UID {s.get('uid')}",
                Qt.ItemDataRole.ToolTipRole,
            )
        self.series_form.setRowVisible(self.series_row, len(series) > 1)

    @staticmethod
    def _layer_state(layer: Any) -> dict[str, Any]:
        return dict(layer.as_layer_data_tuple()[1])

    def _current_slice(self, layer: Any, n_slices: int) -> int:
        if n_slices <= 1 or layer.ndim < 3:
            return 0
        point = list(self.viewer.dims.point)[-layer.ndim:]
        z = int(round(float(layer.world_to_data(point)[0])))
        return min(max(z, 0), n_slices - 1)

    # ================================================================== corrections
    def _attach_tracker(self, mask: Labels | None) -> None:
        if self._tracker is not None and self._tracker.layer is mask:
            self._refresh_restore()
            return
        if self._tracker is not None:
            self._tracker.detach()
        self._tracker = (CorrectionTracker(mask, self._on_corrections_changed)
                         if mask is not None else None)
        self._autosave.follow(self._tracker, self.state.image)
        self.state.set_corrected(self._tracker.slices if self._tracker is not None else [])
        self._show_corrections()
        self._refresh_restore()

    def _on_corrections_changed(self) -> None:
        tracker = self._tracker
        self.state.set_corrected(tracker.slices if tracker is not None else [])
        self._autosave.schedule()
        self._refresh_restore()

    def _show_corrections(self) -> None:
        slices = self.state.corrected_slices
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
            text = f"{len(slices)} corrected slice(s): kept by Segment, used by Fine-tune."
        self.corrections_label.setText(text)

    def mark_current_slice(self) -> None:
        """Count the shown slice as corrected (the model got it right)."""
        mask = self.state.mask
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
        mask = self.state.mask
        if mask is None or mask.ndim < 3:
            return
        z = int(item.data(Qt.ItemDataRole.UserRole))
        world = mask.data_to_world([z, 0, 0])
        self.viewer.dims.set_point(self.viewer.dims.ndim - mask.ndim, float(world[0]))

    def _restorable(self) -> list[int]:
        """The autosaved slices of the current image that are not corrected here."""
        image = self.state.image
        if image is None:
            return []
        folder, info = session_target(image)
        return restorable_slices(folder, info["shape"], self.state.corrected_slices)

    def _refresh_restore(self) -> None:
        n = len(self._restorable())
        self.restore_button.setEnabled(n > 0)
        self.restore_button.setText(f"Restore corrections ({n} slice(s))" if n
                                    else "Restore corrections")

    # ================================================================== job display
    def _show_busy(self) -> None:
        busy = self.state.is_busy
        for w in (self.segment_button, self.finetune_button, self.save_button, self.model_combo,
                  self.refresh_button, self.device_combo, self.image_combo, self.steps_spin,
                  self.overwrite_check, self.scope_volume, self.scope_slice,
                  self.series_combo, self.series_button, self.keep_check):
            w.setEnabled(not busy)
        self.fill_check.setEnabled(not busy and self.keep_check.isChecked())
        self.segment_again_button.setEnabled(not busy and self._tuned)
        self.cancel_button.setEnabled(busy)

    def _show_job_started(self, kind: str) -> None:
        self.progress_bar.setRange(0, 0)  # busy until the first progress report
        self.progress_bar.setFormat(f"{kind}: %v / %m {_UNITS.get(kind, '')}".rstrip())
        self._show_busy()

    def _show_progress(self, done: int, total: int) -> None:
        if self.state.is_busy and total > 0:
            self.progress_bar.setRange(0, max(total, 1))
            self.progress_bar.setValue(done)

    def _show_job_finished(self, kind: str, how: str) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if how == "done" else 0)
        self.progress_bar.setFormat(f"{kind}: {how}")
        self._show_busy()
