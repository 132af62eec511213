"""The LLM4Seg dock widget: segment, correct, fine-tune, save.

Three layers, as in napari-nninteractive: the widgets and their arrangement
(:mod:`llm4seg_napari._layout`), the controls class that keeps them and the
session state in step (:mod:`llm4seg_napari._controls`), and this main
class, which runs the jobs. Prompted segmentation (clicks and boxes on one
object, Propagate) is :class:`~llm4seg_napari._prompting.PromptTool`,
``LLM4SegWidget.prompts``. The session state is public:
``LLM4SegWidget.state`` (:class:`~llm4seg_napari.state.WidgetState`); hosts
such as the Qt app read it and call the public methods below.

Rules the widget keeps:

* Nothing long on the Qt main thread: model loading, segmentation,
  fine-tuning, saving and reading a series run in one
  :class:`~llm4seg_napari.jobs.JobRunner`, one job at a time (the job bodies
  are in :mod:`llm4seg_napari._tasks`); their progress reaches the widget as
  Qt signals, and results are written into napari layers on the main thread.
* The mask of image ``X`` is the labels layer ``"X mask"``
  (:mod:`llm4seg_napari.masks`), placed like the image and carrying its
  metadata, so the plugin's writer saves it in the image's geometry. It is
  made, empty, when the image becomes the current one (the controls class,
  :mod:`llm4seg_napari._controls`: building a labels layer inside the click
  froze the window), and made by Segment only when missing. Segment
  gives it the model's label names and colours (from the model's file,
  :func:`llm4seg_core.store.model_profile`) and selects it.
* Corrected slices (edited by a person, or marked as right) are the training
  set of the session: Segment never overwrites them unless "Overwrite
  corrected slices" is ticked (overwritten slices are unmarked).
* Every :class:`~llm4seg_core.errors.LLM4SegError` becomes a napari
  notification; the widget stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QWidget

from llm4seg_core.autosave import load_session, plan_restore
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.metrics import format_metrics
from llm4seg_core.store import ModelStore, TaskProfile, model_profile
from llm4seg_napari._autosave import session_target
from llm4seg_napari._controls import WidgetControls
from llm4seg_napari._prompting import PromptTool
from llm4seg_napari._tasks import (
    FinetuneResult,
    SegmentResult,
    SegmentRun,
    finetune_job,
    load_segmenter,
    segment_job,
    warm_imports,
)
from llm4seg_napari.geometry import VOLUME_KEY, volume_from_layer
from llm4seg_napari.jobs import JobRunner, Outcome
from llm4seg_napari.masks import (
    DICOM_SEG_FILTER,
    MODEL_KEY,
    apply_labels,
    make_mask_layer,
    mask_filters,
    suggested_mask_path,
)

if TYPE_CHECKING:
    import napari

__all__ = ["LLM4SegWidget"]

_log = logging.getLogger(__name__)


class LLM4SegWidget(WidgetControls):
    """Dock widget: image/model/device pickers, Segment, corrections, Fine-tune, Save."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.runner = JobRunner()  # no parent: a worker may report after the widget is gone
        self.runner.progress.connect(self._on_progress)
        self.runner.metrics.connect(self._on_metrics)
        self.runner.message.connect(self.state.set_status)  # e.g. "converting this model ..."
        self.runner.finished.connect(self._on_job_finished)
        self.destroyed.connect(self.runner.cancel)  # closing the viewer stops the job
        self._job_done: Callable[[Any], None] = lambda _value: None
        self._save_handler: Callable[[], Any] | None = None
        self._segmenter_cache: tuple[tuple[str, str], Any] | None = None
        self._run: SegmentRun | None = None
        self._last_loss = ""

        self.series_button.clicked.connect(lambda: self.open_series())
        self.segment_button.clicked.connect(lambda: self.segment())
        self.restore_button.clicked.connect(lambda: self.restore_corrections())
        self.finetune_button.clicked.connect(lambda: self.finetune())
        self.segment_again_button.clicked.connect(lambda: self.segment(scope="volume"))
        self.cancel_button.clicked.connect(self.cancel_job)
        self.save_button.clicked.connect(self._on_save_clicked)

        self.prompts = PromptTool(self)
        self.prompt_button.toggled.connect(self._on_prompt_toggled)
        self.prompt_clicks.toggled.connect(lambda on: self._on_prompt_kind("click", on))
        self.prompt_box.toggled.connect(lambda on: self._on_prompt_kind("box", on))
        self.prompt_guide_check.toggled.connect(
            lambda on: setattr(self.prompts, "use_guide", bool(on)))
        self.prompt_undo_button.clicked.connect(lambda: self.prompts.undo())
        self.prompt_clear_button.clicked.connect(lambda: self.prompts.clear())
        self.propagate_button.clicked.connect(lambda: self.propagate())
        self.prompts.changed.connect(self._show_prompts)
        self.state.job_started.connect(lambda _kind: self._show_prompts())
        self.state.job_finished.connect(lambda _kind, _how: self._show_prompts())
        self._show_prompts()
        warm_imports()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        top = self.window()
        if top is not self:
            self.runner.watch(top)  # closing the window holding the widget stops the job

    # ================================================================== jobs
    def _start_job(self, kind: str, fn: Callable[[Callbacks], Any],
                   done: Callable[[Any], None], text: str) -> bool:
        if self.state.is_busy or self.runner.is_busy:
            show_info(f"wait for the running {self.state.kind or 'job'} to finish (or cancel it)")
            return False
        self._job_done = done
        self.state.set_status(text)
        self.runner.start(kind, fn)
        self.state.begin_job(kind)
        return True

    def _on_job_finished(self, outcome: Outcome) -> None:
        kind, done = outcome.kind, self._job_done
        self._job_done = lambda _value: None
        exc = outcome.error
        try:
            if exc is None:
                done(outcome.value)
            elif isinstance(exc, Cancelled):
                self.state.set_status(f"Cancelled: {exc}")
                show_info(str(exc))
            elif isinstance(exc, LLM4SegError):
                self.state.set_status(f"{kind.capitalize()} failed: {exc}")
                show_error(str(exc))
            else:
                self.state.set_status(f"{kind.capitalize()} failed: {exc!r}")
                _log.error("%s failed:\n%s", kind, outcome.trace)  # details for a bug report
                show_error(f"{kind} failed with an unexpected error: {exc!r}")
        finally:
            if kind == "segment":
                self._run = None
            elif kind == "fine-tune" and self.plot is not None:
                self.plot.finish()  # every point shown, the plot drawn in full
            self.state.end_job(kind, outcome.how)

    def cancel_job(self) -> None:
        """Ask the running job to stop; it ends as "cancelled" (a fine-tune then saves nothing)."""
        if self.state.is_busy:
            self.runner.cancel()
            self.state.set_status(f"Cancelling the {self.state.kind}…")

    def _on_progress(self, done: int, total: int) -> None:
        self.state.set_progress(done, total)
        if self.state.kind == "segment":
            self._show_segmented(done)
        elif self.state.kind == "fine-tune":
            self.loss_label.setText(f"step {done}/{total}" + (f" · {self._last_loss}"
                                                              if self._last_loss else ""))

    # ================================================================== segment
    def _segmenter_key(self, store: ModelStore) -> tuple[str, str]:
        arg = self.state.model_arg
        if arg is None or (arg not in store and arg in store.tasks()):  # a task: its current now
            task = arg or "default"
            return f"{task}:{store.current_name(task)}", self.state.device_arg
        return arg, self.state.device_arg

    def segment(self, scope: str | None = None) -> bool:
        """Segment the whole volume or the current slice (``scope`` "volume"/"slice").

        Returns True when a job started.
        """
        if self.state.is_busy:
            show_info(f"wait for the running {self.state.kind} to finish (or cancel it)")
            return False
        image = self.state.image
        if image is None:
            show_warning("open an image first (File > Open, or the LLM4Seg sample data)")
            return False
        scope = scope or ("slice" if self.scope_slice.isChecked() else "volume")
        try:
            volume = volume_from_layer(image.data, self._layer_state(image))
            shape = volume.spatial_shape
            mask = self.state.mask
            if mask is not None and tuple(mask.data.shape) != tuple(shape):
                raise LLM4SegError(
                    f"the layer {mask.name!r} has shape {tuple(mask.data.shape)} but the image "
                    f"has shape {tuple(shape)}; rename or delete that layer and segment again"
                )
        except LLM4SegError as exc:
            show_error(str(exc))
            return False
        store = ModelStore()
        model_arg, device = self.state.model_arg, self.state.device_arg
        profile = model_profile(model_arg, store)  # its labels; None: untrained or unreadable
        labels = profile.labels if profile is not None else ()
        if mask is None:
            mask = make_mask_layer(self.viewer, image, shape, labels)
            self._sync_mask()
        else:
            apply_labels(mask, labels)
            if mask in self._unused:  # made ahead: selected now, as a mask made here would be
                self.viewer.layers.selection.active = mask
        corrected = set(self.state.corrected_slices)
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
        key = self._segmenter_key(store)
        cached = self._segmenter_cache

        def get_segmenter() -> Any:
            if cached is not None and cached[0] == key:
                return cached[1]
            return load_segmenter(model_arg, device, store)

        self._use_mask(mask)
        run = self._run = SegmentRun(mask, np.zeros(shape, np.uint8), sorted(set(todo)), overwrite)
        skipped = len(wanted) - len(todo)
        return self._start_job(
            "segment", lambda cb: segment_job(get_segmenter, volume, run.order, run.buffer, cb),
            lambda r: self._segment_done(r, key, skipped, profile),
            f"Segmenting {len(todo)} slice(s) of {image.name}"
            + (f" (keeping {skipped} corrected)" if skipped else "") + "…",
        )

    def _show_segmented(self, done: int) -> None:
        """Write the slices the running Segment finished into the mask (``done`` so far)."""
        run = self._run
        if run is None or done <= run.shown:
            return
        zs, run.shown = run.order[run.shown:done], done
        data = run.mask.data
        view = data[None] if data.ndim == 2 else data
        buf = run.buffer[None] if run.buffer.ndim == 2 else run.buffer
        tracker = self._tracker if self._tracker is not None and self._tracker.layer is run.mask \
            else None
        overwritten = []
        for z in zs:
            if tracker is not None and z in tracker:
                if not run.overwrite:  # corrected while the job ran: the person's edit wins
                    run.kept += 1
                    continue
                overwritten.append(z)
            view[z] = buf[z]
        if overwritten and tracker is not None:
            tracker.discard(overwritten)
        run.mask.refresh()

    def _segment_done(self, result: SegmentResult, key: tuple[str, str], skipped: int,
                      profile: TaskProfile | None = None) -> None:
        from llm4seg_core.device import describe_device

        seg = result.segmenter
        fresh = self._segmenter_cache is None or self._segmenter_cache[1] is not seg
        self._segmenter_cache = (key, seg)
        if self._run is not None:  # the model a DICOM-SEG of this mask names as its algorithm
            self._run.mask.metadata[MODEL_KEY] = {"task": seg.task, "model": seg.name}
        kept = skipped + (self._run.kept if self._run is not None else 0)
        model = f"the {profile.task} model ({seg.name})" if profile is not None else seg.name
        text = (f"Segmented {len(result.slices)} slice(s) with {model} on "
                f"{describe_device(seg.device)} in {result.seconds:.1f} s")
        if kept:
            text += f"; {kept} corrected slice(s) kept as you left them"
        text += self._keep_continuations(result)
        if seg.warning:  # not the model asked for: a damaged current version was passed over
            text += f" (WARNING: {seg.warning})"
            if fresh:
                show_warning(seg.warning)
        self.state.set_status(text + ".")
        if not seg.trained:
            show_warning(
                f"{seg.name} is untrained: its mask is not meaningful. Correct a few slices and "
                "Fine-tune, or pick a trained model version"
            )

    def _keep_continuations(self, result: SegmentResult) -> str:
        """The "keep what continues my corrections" step; returns text for the status."""
        mask = self.state.mask
        if (not self.keep_check.isChecked() or mask is None or mask.data.ndim != 3
                or len(result.slices) < 2):
            return ""
        corrected = self.state.corrected_slices
        if not corrected:
            return "; no corrected slices, so no region filtering"
        from llm4seg_core.loop import keep_continuations

        data = np.asarray(mask.data)
        sy, sx = (float(v) for v in mask.scale[-2:])
        kept, summary = keep_continuations(data, corrected, pixel_size=(sy, sx),
                                           fill_between=self.fill_check.isChecked())
        if not summary.seeded:
            return "; your corrected slices hold no label, so no region filtering"
        if summary.changed:
            changed = np.nonzero((kept != data).reshape(data.shape[0], -1).any(1))[0]
            for z in changed:
                mask.data[z] = kept[z]
            mask.refresh()
        return "; " + summary.describe("your")

    # ================================================================== prompts
    def start_prompts(self, kind: str = "click") -> bool:
        """Prompt on the current image: clicks ("click") or a box ("box"); see PromptTool."""
        return self.prompts.start(kind)

    def propagate(self) -> bool:
        """Carry the selected label through the volume from the corrected (and prompted)
        slices; True when the job started."""
        return self.prompts.propagate()

    def _on_prompt_toggled(self, on: bool) -> None:
        if not on:
            self.prompts.stop()
        elif not self.prompts.start("box" if self.prompt_box.isChecked() else "click"):
            self._show_prompts()  # nothing to prompt on: the button goes back up

    def _on_prompt_kind(self, kind: str, on: bool) -> None:
        if on and self.prompts.active and self.prompts.kind != kind:
            self.prompts.start(kind)

    def _show_prompts(self) -> None:
        """The Prompts box in step with the tool (also when the app started it)."""
        tool = self.prompts
        for widget, value in ((self.prompt_button, tool.active),
                              (self.prompt_clicks, tool.kind == "click"),
                              (self.prompt_box, tool.kind == "box")):
            if widget.isChecked() != value:
                widget.blockSignals(True)
                widget.setChecked(value)
                widget.blockSignals(False)
        self.propagate_button.setEnabled(not self.state.is_busy)
        # with the Click/Box tools on, Fine-tune adapts the prompt model they use
        self.finetune_button.setText("Fine-tune prompt model" if tool.active else "Fine-tune")
        self.finetune_button.setToolTip(
            "train the prompt model (task 'prompt') on the corrected slices and save a new "
            "version of it; the Click and Box tools use it next" if tool.active else
            "train the model's small parts on the corrected slices and save a new model version")

    # ================================================================== fine-tune
    def finetune(self) -> bool:
        """Fine-tune the selected model on the corrected slices; returns True when a job started.

        While the prompt tool is on (Click or Box), the model fine-tuned is the prompt
        model it uses (task ``prompt``); its new version becomes that task's current,
        which the tool then answers clicks with. The Segment model is left as it is.
        """
        if self.state.is_busy:
            show_info(f"wait for the running {self.state.kind} to finish (or cancel it)")
            return False
        from llm4seg_core.datasets import CorrectionSet

        image, mask = self.state.image, self.state.mask
        try:
            if image is None:
                raise LLM4SegError("open an image first, segment it and correct a few slices")
            volume = volume_from_layer(image.data, self._layer_state(image))
            labels = np.asarray(mask.data) if mask is not None else np.zeros(
                volume.spatial_shape, np.uint8)
            corrections = CorrectionSet(volume, labels, self.state.corrected_slices)
        except LLM4SegError as exc:
            show_warning(str(exc))
            return False
        model_arg, device = self.state.model_arg, self.state.device_arg
        prompt = self.prompts.active
        if prompt:
            from llm4seg_core.prompts.segment import PROMPT_TASK

            model_arg = self.prompts.model or PROMPT_TASK
        steps = self.steps_spin.value()
        name = image.name
        self._last_loss = ""
        self.loss_label.setText(f"step 0/{steps}")
        if self.plot is not None:
            self.plot.clear(steps)
        return self._start_job(
            "fine-tune",
            lambda cb: finetune_job(model_arg, device, corrections, steps, cb, image_name=name),
            self._finetune_done,
            f"Fine-tuning {'the prompt model ' if prompt else ''}on {len(corrections)} "
            f"corrected slice(s) ({steps} steps)…",
        )

    def _on_metrics(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("loss")
        dice = metrics.get("dice")
        if self.plot is not None and isinstance(metrics.get("step"), int):
            self.plot.add(metrics["step"], loss, dice)
        if isinstance(loss, (int, float)):
            self._last_loss = f"loss {loss:.4f}" + (
                f" · Dice {dice:.3f}" if isinstance(dice, (int, float)) else "")
            step, total = self.state.job_progress
            self.loss_label.setText(f"step {step}/{total} · {self._last_loss}")

    def _finetune_done(self, result: FinetuneResult) -> None:
        info = result.version
        from llm4seg_core.prompts import PromptSegmenter

        if isinstance(result.segmenter, PromptSegmenter):
            self.prompts.adopt(result.segmenter, self.state.device_arg)
            self.state.set_status(
                f"Saved prompt model version {info.name} (fine-tuned from {result.base}) in "
                f"{result.seconds:.1f} s; the Click and Box tools use it now.")
            show_info(f"fine-tuned prompt model saved as version {info.name}")
            return
        self.refresh_models(select=info.name)
        self._remember_choice()  # the new version is this image's model now
        self._segmenter_cache = ((info.name, self.state.device_arg), result.segmenter)
        self._tuned = True
        scores = format_metrics(result.metrics, 2, for_display=True)
        if scores:
            self.loss_label.setText(f"{self.loss_label.text()}\non the corrected slices: {scores}")
        self.state.set_status(
            f"Saved model version {info.name} (fine-tuned from {result.base}) in "
            f"{result.seconds:.1f} s; it is selected now. Segment again to apply it to the "
            "uncorrected slices."
        )
        show_info(f"fine-tuned model saved as version {info.name}")

    # ================================================================== save
    def set_save_handler(self, fn: Callable[[], Any] | None) -> None:
        """What "Save mask…" calls instead of the widget's own file dialog (None: the dialog)."""
        self._save_handler = fn

    def _on_save_clicked(self) -> None:
        if self._save_handler is not None:
            self._save_handler()
            return
        mask = self.state.mask
        if mask is None or self._is_unused(mask):  # none, or still as made ahead: empty
            show_warning("no mask to save yet: Segment first (or paint on the mask)")
            return
        path, chosen = QFileDialog.getSaveFileName(self, "Save mask", suggested_mask_path(mask),
                                                   mask_filters(mask))
        if path and chosen == DICOM_SEG_FILTER and not Path(path).suffix:
            path += ".dcm"
        if path:
            self.save_mask(path)

    def save_mask(self, path: str) -> bool:
        """Write the mask (a snapshot of it now) to ``path`` through the plugin's writer."""
        from llm4seg_napari._writer import write_labels

        mask = self.state.mask
        if mask is None:
            show_warning("no mask to save yet: Segment first")
            return False
        data = np.array(mask.data, copy=True)
        attributes = self._layer_state(mask)
        model = (attributes.get("metadata") or {}).get(MODEL_KEY)
        if isinstance(model, dict) and self.state.corrected_slices:  # a person corrected it
            attributes["metadata"] = {**attributes["metadata"],
                                      MODEL_KEY: {**model, "automatic": False}}

        def done(written: list[str]) -> None:
            self.state.set_status(f"Saved the mask to {written[0]}.")
            show_info(f"mask saved: {written[0]}")

        return self._start_job("save", lambda _cb: write_labels(path, data, attributes), done,
                               f"Saving the mask to {path}…")

    # ================================================================== restore, series
    def restore_corrections(self) -> int:
        """Write the autosaved corrected slices of the current image back into its mask.

        Slices already corrected in the mask layer are never overwritten (a
        notification says which were skipped). Restored slices are marked as
        corrected. Returns the number of slices restored.
        """
        image = self.state.image
        if image is None:
            show_warning("open the image whose corrections you want back first")
            return 0
        folder, info = session_target(image)
        session = load_session(folder)
        if session is None or not session.z:
            show_info("no autosaved corrections for this image")
            self._refresh_restore()
            return 0
        shape = tuple(info["shape"])
        if not session.fits(shape):
            show_warning(f"the autosaved corrections in {folder} do not fit this image's shape")
            return 0
        mask = self.state.mask
        dtype = np.dtype(session.info.get("dtype") or session.labels.dtype)
        if mask is None:
            mask = make_mask_layer(self.viewer, image, shape)
        if (mask.data.dtype != dtype and tuple(mask.data.shape) == shape
                and (mask is not self.state.mask or self._is_unused(mask))):
            mask.data = mask.data.astype(dtype)  # a new (or still empty) mask: the saved type
        self._use_mask(mask)
        self._sync_mask()
        tracker = self._tracker
        if tracker is None or tracker.layer is not mask or tuple(mask.data.shape) != shape:
            show_warning(f"the layer {mask.name!r} does not have the image's shape {shape}")
            return 0
        data = mask.data
        view = data[None] if data.ndim == 2 else data
        plan = plan_restore(session, len(view), tracker.slices)
        for z, labels in plan.slices.items():
            view[z] = labels
        mask.refresh()
        self._autosave.mark_restored(folder)
        tracker.add(plan.restored)  # marks them, and autosaves the union
        text = f"restored {len(plan.restored)} corrected slice(s) of {image.name}"
        if plan.skipped:
            text += (f"; skipped {len(plan.skipped)} slice(s) you already corrected here "
                     f"({', '.join(map(str, plan.skipped))})")
        self.state.set_status(text[0].upper() + text[1:] + ".")
        show_info(text)
        self._refresh_restore()
        return len(plan.restored)

    def open_series(self, uid: str | None = None) -> bool:
        """Read another series of the current image's DICOM folder into a new layer."""
        image = self.state.image
        uid = uid or self.series_combo.currentData()
        record = (image.metadata.get(VOLUME_KEY) or {}) if image is not None else {}
        folder = Path(str(record.get("source") or ""))
        if image is None or not uid or not folder.is_dir():
            show_warning("no other DICOM series to open: open a DICOM folder first")
            return False
        from llm4seg_napari._reader import read_layers

        def run(callbacks: Callbacks) -> Any:
            layer_data = read_layers(folder, series_uid=uid)[0]
            if callbacks.cancelled():
                raise Cancelled("opening the series was cancelled")
            return layer_data

        return self._start_job("open", run, self._series_opened,
                               f"Reading series {self.series_combo.currentText()}…")

    def _series_opened(self, layer_data: Any) -> None:
        from napari.layers import Layer

        from llm4seg_napari._reader import image_notes

        layer = self.viewer.add_layer(Layer.create(*layer_data))
        self.image_combo.setCurrentText(layer.name)
        notes = image_notes(layer.metadata, other_series=False)  # the series list shows those
        self.state.set_status(f"Opened series {layer.name}." + "".join(
            f" WARNING: {note}." for note in notes))
        for note in notes:
            show_warning(f"{layer.name}: {note}")
