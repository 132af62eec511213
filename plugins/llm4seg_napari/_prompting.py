"""Prompted segmentation in the dock widget: clicks and a box point at one object, slice by slice.

:class:`PromptTool` (``LLM4SegWidget.prompts``) puts two layers on the
current image, placed like it: ``"prompts: clicks"`` (a napari Points layer;
each click's ``positive`` feature colours it, green for "the object", red for
"not the object") and ``"prompts: box"`` (a napari Shapes layer; a rectangle
is the box; one box a slice, a newer one replaces the older). In the clicks
layer's add mode, a left click adds a positive click; a right click, or a
click with Ctrl, Alt or Shift held, a negative one (:func:`_click_sign`). The
engine side is :mod:`llm4seg_core.prompts.session` (layer data to prompts,
the merge into the mask, the worker) and :mod:`llm4seg_core.prompts`.

Every change of the prompts of a slice (a click added, moved or deleted, a
box drawn, moved or deleted) re-segments that slice with the prompt model,
off the main thread, in one worker thread where the newest request of a slice
wins: a request replaced before it ran never runs, and the result of one
superseded while it ran is dropped (the widget's JobRunner is not used: it
runs one long job at a time and would refuse the next click). A slice with
only "not the object" clicks is not segmented (it says so).

Guide: with "Guide with the slice's mask" unticked (the default), the model
gets the prompts alone. Ticked, it also gets the slice's mask of the label as
it is when the request is made: a Segment's output or the person's painting
on the first click, then the previous prompt's result (the "previous
prediction" guide the prompt model was trained with).

The result replaces the slice's pixels of the mask's selected label (other
labels' pixels kept: the object never overwrites another label) as one step
of the mask layer's own napari undo history (``Labels.data_setitem``, one
history item), so the Undo button, Ctrl+Z on the mask and the app's Edit >
Undo take it back. The prompted slice counts as corrected: Segment keeps it
and Fine-tune trains on it (the napari paint event the step emits reaches the
widget's :class:`~llm4seg_napari._corrections.CorrectionTracker`).

Propagate carries the selected label through the volume from the corrected
slices (prompted or painted; one without the label bounds the walk), with
:func:`llm4seg_core.prompts.propagate`, as a job of the widget's JobRunner
(progress, Cancel), and writes it as one undoable step too; the propagated
slices are model output, not corrections, and slices corrected while it ran
are left as they are.

The model: :attr:`PromptTool.model` (None: the store's task ``prompt``, else
its shipped model; a path, version or spec otherwise), on the widget's
device, loaded in the worker on first use and kept while the store's current
version and the device stay. While the tool is on, the widget's Fine-tune
("Fine-tune prompt model") trains this model on the corrected slices and the
tool answers with the new version (:meth:`PromptTool.adopt`). Every error (no prompt model, a click outside
the image, Propagate on a 2-D picture) is a napari notification.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, QTimer, Signal

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.prompts.records import SlicePrompts
from llm4seg_core.prompts.session import (
    Done,
    LatestPerKey,
    LayerPrompts,
    layer_prompts,
    merge_object,
    merge_propagation,
    outside_message,
    propagation_seeds,
    segmentable,
)
from llm4seg_napari.masks import make_mask_layer

if TYPE_CHECKING:
    from llm4seg_core.io import Volume
    from llm4seg_core.jobs import Callbacks
    from llm4seg_napari.widget import LLM4SegWidget

__all__ = ["BOX_NAME", "NEGATIVE_COLOUR", "POINTS_NAME", "POSITIVE_COLOUR", "PromptTool"]

_log = logging.getLogger(__name__)

#: The layers of the prompts.
POINTS_NAME = "prompts: clicks"
BOX_NAME = "prompts: box"
#: A click's colour: "the object" and "not the object".
POSITIVE_COLOUR = "lime"
NEGATIVE_COLOUR = "red"
#: Key, in the prompt layers' ``metadata``, of the image they are for (its name).
FOR_KEY = "llm4seg_prompts_for"
#: The modifiers that make a click negative.
NEGATIVE_MODIFIERS = ("Control", "Alt", "Shift", "Meta")

_PLACEMENT = ("scale", "translate", "rotate", "shear", "affine")
_LAYER_MODES = {"click": "add", "box": "add_rectangle"}


def _click_sign(layer: Points, event: Any) -> None:
    """On a press in the clicks layer's add mode: the click napari adds on release is negative
    for a right click or a click with Ctrl/Alt/Shift (Meta) held, else positive."""
    if str(layer.mode) != "add":
        return
    modifiers = getattr(event, "modifiers", None) or ()
    negative = getattr(event, "button", 1) == 2 or any(m in modifiers
                                                       for m in NEGATIVE_MODIFIERS)
    if _default_sign(layer) == negative:
        layer.feature_defaults = {"positive": not negative}


def _default_sign(layer: Points) -> bool:
    try:
        return bool(layer.feature_defaults["positive"].iloc[0])
    except (KeyError, IndexError, AttributeError):
        return True


@dataclass(frozen=True)
class _Request:
    """One slice to segment: the image, its prompts and guide, where the result goes."""

    volume: Volume
    z: int
    prompts: SlicePrompts
    guide: np.ndarray | None
    mask: Labels
    value: int
    model: str | None
    device: str


@dataclass(frozen=True)
class _Result:
    request: _Request
    mask: np.ndarray  # the object, 0/1, the slice's size
    seconds: float
    segmenter: Any


class PromptTool(QObject):
    """Clicks and boxes on the current image segment one object, slice by slice (see the
    module docstring). Owned by the widget: ``LLM4SegWidget.prompts``."""

    #: Turned on or off, its layers made, or a layer's mode changed (hosts update their tools).
    changed = Signal()
    #: The mask changed in a way napari announces no edit for (Undo): the mask layer.
    edited = Signal(object)
    _delivered = Signal(object)  # a worker's Done, to the main thread

    def __init__(self, widget: LLM4SegWidget) -> None:
        super().__init__(widget)
        self.widget = widget
        self.viewer = widget.viewer
        self.state = widget.state
        #: The prompt model (anything ``PromptSegmenter.load`` takes; None: task "prompt").
        self.model: str | None = None
        #: Give the model the slice's mask of the label as its guide (see the module docstring).
        self.use_guide = False
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        #: The results written into the mask, and those dropped (superseded or stale).
        self.applied = 0
        self.dropped = 0
        self.kind = "click"  # the prompt kind last started: "click" or "box"
        self._image: Image | None = None
        self._volume: tuple[weakref.ref, Any, Volume] | None = None
        self._seen: dict[int, SlicePrompts] = {}
        self._active = False
        self._undelivered = 0  # results handed to the main thread, not shown yet
        self._count_lock = threading.Lock()
        self._tidy_due = False
        self._segmenter: tuple[tuple, Any] | None = None
        self._load_lock = threading.Lock()
        self._warned: set[str] = set()
        self._worker = LatestPerKey(self._run, self._deliver)
        self._delivered.connect(self._on_delivered, Qt.ConnectionType.QueuedConnection)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.state.image_changed.connect(self._on_image_changed)
        worker = self._worker
        widget.destroyed.connect(lambda *_: worker.close())

    # ================================================================== state
    @property
    def active(self) -> bool:
        """Prompt changes are being segmented."""
        return self._active

    @property
    def idle(self) -> bool:
        """No prompt request runs, waits, or has a result still to show."""
        with self._count_lock:
            undelivered = self._undelivered
        return undelivered == 0 and not self._worker.busy

    @property
    def mode(self) -> str:
        """"click" or "box" when that prompt layer is the active one, in its add mode; else ""."""
        active = self.viewer.layers.selection.active
        if active is None:
            return ""
        if active is self.points and str(active.mode) == _LAYER_MODES["click"]:
            return "click"
        if active is self.boxes and str(active.mode) == _LAYER_MODES["box"]:
            return "box"
        return ""

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process Qt events until :attr:`idle` (True) or ``timeout`` seconds (scripts)."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while not self.idle and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        return self.idle

    # ================================================================== on and off
    def start(self, kind: str = "click") -> bool:
        """Turn prompting on for the current image: its prompt layers (made or reused), the
        clicks layer (``kind`` "click") or the box layer ("box") active in its add mode.

        Returns False (with a notification) when there is no image to prompt on.
        """
        if kind not in _LAYER_MODES:
            raise ValueError(f"prompt kind {kind!r}: use 'click' or 'box'")
        image = self.state.image
        if image is None:
            show_warning("open an image first, then click on the object to segment")
            return False
        if self.viewer.dims.ndisplay == 3:
            show_warning("prompts are given on a slice: switch the viewer to its 2-D view first")
            return False
        try:
            volume = self._volume_of(image)
            if self._mask_for(image, volume) is None:
                return False
        except LLM4SegError as exc:
            show_error(str(exc))
            return False
        self._ensure_layers(image, volume)
        if not self._active:
            self._active = True
            self._seen = self._read().slices  # what is there now is not segmented again
        self.kind = kind
        layer = self.points if kind == "click" else self.boxes
        assert layer is not None
        layer.visible = True
        self.viewer.layers.selection.active = layer
        layer.mode = _LAYER_MODES[kind]
        self.state.set_status(
            "Click on the object (right or Ctrl/Alt/Shift+click: not the object): each click "
            "segments it on that slice." if kind == "click" else
            "Drag a box around the object: it is segmented on that slice.")
        self.changed.emit()
        return True

    def stop(self) -> None:
        """Turn prompting off: the prompt layers stay, changes to them segment nothing."""
        was = self._active
        self._active = False
        for layer in (self.points, self.boxes):
            if layer is not None and layer in self.viewer.layers:
                layer.mode = "pan_zoom"
        if was:
            self.changed.emit()

    def clear(self) -> None:
        """Remove every click and box (the mask stays as it is); results still due are dropped."""
        self._worker.forget()
        if self.points is not None:
            self.points.data = np.zeros((0, self.points.ndim))
        if self.boxes is not None and self.boxes.nshapes:
            self.boxes.data = []
        self._seen = {}
        self.state.set_status("Prompts cleared: click on the next object.")

    def undo(self) -> bool:
        """Undo the last change of the mask (napari's history); False when there is none."""
        mask = self.state.mask
        if mask is None or not getattr(mask, "_undo_history", True):
            show_info("nothing to undo on the mask")
            return False
        mask.undo()
        self.edited.emit(mask)
        self.state.set_status("Undid the last change of the mask.")
        return True

    # ================================================================== layers
    def _ensure_layers(self, image: Image, volume: Volume) -> None:
        """The prompt layers of ``image``: reused when they are for it, else made anew."""
        ndim = len(volume.spatial_shape)
        h, w = volume.spatial_shape[-2:]
        for name, kind in ((POINTS_NAME, Points), (BOX_NAME, Shapes)):
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
            fits = (isinstance(layer, kind) and layer.ndim == ndim
                    and layer.metadata.get(FOR_KEY) == image.name)
            if layer is not None and not fits:
                self.viewer.layers.remove(layer)
                layer = None
            if layer is None:
                layer = self._make_points(image, ndim, max(h, w)) if kind is Points \
                    else self._make_boxes(image, ndim, max(h, w))
            self._follow(layer)
        self._image = image

    def _make_points(self, image: Image, ndim: int, size: int) -> Points:
        layer = self.viewer.add_points(
            np.zeros((0, ndim)), ndim=ndim, name=POINTS_NAME,
            features={"positive": np.zeros(0, bool)}, face_color="positive",
            face_color_cycle={True: POSITIVE_COLOUR, False: NEGATIVE_COLOUR},
            border_color="white", border_width=0.15, size=max(3.0, 0.02 * size),
            metadata={FOR_KEY: image.name}, **{key: getattr(image, key) for key in _PLACEMENT})
        layer.feature_defaults = {"positive": True}
        return layer

    def _make_boxes(self, image: Image, ndim: int, size: int) -> Shapes:
        return self.viewer.add_shapes(
            None, ndim=ndim, name=BOX_NAME, edge_color="yellow", face_color=[0.0, 0.0, 0.0, 0.0],
            edge_width=max(1.0, 0.004 * size), metadata={FOR_KEY: image.name},
            **{key: getattr(image, key) for key in _PLACEMENT})

    def _follow(self, layer: Points | Shapes) -> None:
        """Listen to ``layer``'s changes (once)."""
        attr = "points" if isinstance(layer, Points) else "boxes"
        if getattr(self, attr) is layer:
            return
        setattr(self, attr, layer)
        layer.events.data.connect(self._on_prompts_changed)
        layer.events.mode.connect(self._on_mode)
        if isinstance(layer, Points):
            if "positive" not in layer.features:  # a layer of ours always has it
                layer.features = {"positive": np.ones(len(layer.data), bool)}
            if _click_sign not in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.insert(0, _click_sign)

    def _on_mode(self, *_: Any) -> None:
        self.changed.emit()

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if layer is self.points or layer is self.boxes:
            for emitter, slot in ((layer.events.data, self._on_prompts_changed),
                                  (layer.events.mode, self._on_mode)):
                try:
                    emitter.disconnect(slot)
                except (RuntimeError, ValueError, TypeError):
                    pass
            if layer is self.points:
                self.points = None
            else:
                self.boxes = None
            self.stop()
        elif layer is self._image:
            self._image = self._volume = None
            self._worker.forget()
            self.stop()

    def _on_image_changed(self, image: Any) -> None:
        # a result still due goes to its own image's mask (its request names that mask)
        if image is not self._image:
            if self._active:
                self.stop()
                self.state.set_status("The prompts were for another image: press Click/box "
                                      "prompts again to prompt on this one.")

    # ================================================================== prompts to requests
    def _image_coords(self, layer: Points | Shapes | None, coords: np.ndarray) -> np.ndarray:
        """``coords`` (N, D) of ``layer``'s data as the image's voxel coordinates."""
        coords = np.asarray(coords, float).reshape(-1, layer.ndim if layer is not None else 0)
        image = self._image
        if image is None or layer is None or not len(coords):
            return coords
        return np.array([image.world_to_data(layer.data_to_world(c)) for c in coords], float)

    def _read(self) -> LayerPrompts:
        """The prompts in the two layers now, per slice of the image."""
        image = self._image
        if image is None:
            return LayerPrompts()
        shape = self._volume_of(image).spatial_shape
        pts = np.zeros((0, len(shape)))
        flags: list[bool] = []
        if self.points is not None and len(self.points.data):
            pts = self._image_coords(self.points, self.points.data)
            feats = self.points.features
            flags = (list(feats["positive"].astype(bool)) if "positive" in feats
                     else [True] * len(pts))
        boxes = [self._image_coords(self.boxes, v) for v in self.boxes.data] \
            if self.boxes is not None else []
        return layer_prompts(pts, flags, boxes, shape)

    def _on_prompts_changed(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "") or "")
        if action in ("adding", "changing", "removing") or not self._active:
            return
        image = self._image
        if image is None or image not in self.viewer.layers:
            return
        try:
            found = self._read()
            volume = self._volume_of(image)
        except LLM4SegError as exc:
            show_error(str(exc))
            return
        message = outside_message(found, volume.spatial_shape)
        if message:
            show_warning(message)
        if found.outside_points or found.outside_boxes or found.replaced_boxes:
            self._schedule_tidy()
        new = found.slices
        changed = sorted(z for z in set(new) | set(self._seen) if new.get(z) != self._seen.get(z))
        self._seen = dict(new)
        for z in changed:
            prompts = new.get(z)
            if segmentable(prompts):
                self._submit(image, volume, z, prompts)
                continue
            mask = self.state.mask
            if mask is not None:  # a result for the prompts that were there is not wanted
                self._worker.forget(self._key(mask, z))
            if prompts is not None:
                self.state.set_status(f"Slice {z}: only 'not the object' clicks; add a click on "
                                      "the object or a box to say which object to segment.")

    def _schedule_tidy(self) -> None:
        """Remove clicks and boxes outside the image, and boxes a newer one replaced, on the
        next event-loop turn (not inside napari's own event)."""
        if not self._tidy_due:
            self._tidy_due = True
            QTimer.singleShot(0, self._tidy)

    def _tidy(self) -> None:
        self._tidy_due = False
        if self._image is None:
            return
        try:
            found = self._read()
        except LLM4SegError:
            return
        if self.points is not None and found.outside_points:
            self.points.selected_data = set()
            self.points.remove(list(found.outside_points))
        drop = sorted(set(found.outside_boxes) | set(found.replaced_boxes))
        if self.boxes is not None and drop:
            self.boxes.selected_data = set(drop)
            self.boxes.remove_selected()

    def _submit(self, image: Image, volume: Volume, z: int, prompts: SlicePrompts) -> None:
        mask = self._mask_for(image, volume)
        if mask is None:
            return
        value = self._label(mask)
        guide = None
        if self.use_guide:
            data = np.asarray(mask.data)
            sl = (data[z] if data.ndim == 3 else data) == value
            guide = sl.astype(np.uint8) if sl.any() else None
        request = _Request(volume, z, prompts, guide, mask, value, self.model,
                           self.state.device_arg)
        self._worker.submit(self._key(mask, z), request)
        where = f"slice {z}" if len(volume.spatial_shape) == 3 else "the picture"
        self.state.set_status(f"Segmenting the object on {where} (label {value})…")

    # ================================================================== the worker's side
    def segmenter(self, model: str | None = None, device: str = "auto") -> Any:
        """The prompt model (loaded once; again when the store's current version or the
        device changed). Thread-safe; raises LLM4SegError when there is none."""
        from llm4seg_core.prompts.segment import PROMPT_TASK, PromptSegmenter
        from llm4seg_core.store import ModelStore

        with self._load_lock:
            store = ModelStore()
            current = store.current_name(PROMPT_TASK) if PROMPT_TASK in store.tasks() else None
            key = (model, device, current)
            if self._segmenter is not None and self._segmenter[0] == key:
                return self._segmenter[1]
            seg = PromptSegmenter.load(model, store=store, device=device)
            self._segmenter = (key, seg)
            return seg

    def adopt(self, segmenter: Any, device: str = "auto") -> None:
        """Answer clicks with ``segmenter`` from now on: a prompt model fine-tuned here, whose
        version is the current of task ``prompt`` (the tool then follows that task)."""
        from llm4seg_core.prompts.segment import PROMPT_TASK
        from llm4seg_core.store import ModelStore

        with self._load_lock:
            store = ModelStore()
            current = store.current_name(PROMPT_TASK) if PROMPT_TASK in store.tasks() else None
            self.model = None
            self._segmenter = ((None, device, current), segmenter)

    def _run(self, request: _Request) -> _Result:
        """In the worker thread: the object on the request's slice."""
        t0 = time.perf_counter()
        seg = self.segmenter(request.model, request.device)
        obj = seg.segment_slice(request.volume, request.z, request.prompts, request.guide)
        return _Result(request, np.asarray(obj), time.perf_counter() - t0, seg)

    def _deliver(self, done: Done) -> None:
        """In the worker thread: hand ``done`` to the main thread (a queued signal)."""
        with self._count_lock:
            self._undelivered += 1
        try:
            self._delivered.emit(done)
        except RuntimeError:  # the tool is gone (its widget closed)
            with self._count_lock:
                self._undelivered -= 1

    def _on_delivered(self, done: Done) -> None:
        with self._count_lock:
            self._undelivered = max(self._undelivered - 1, 0)
        if not self._worker.is_current(done.key, done.number):
            self.dropped += 1  # a newer request of that slice came meanwhile
            return
        if done.error is not None:
            exc = done.error
            if isinstance(exc, LLM4SegError):
                self.state.set_status(f"Prompt failed: {exc}")
                show_error(str(exc))
            else:
                _log.error("the prompt model failed:\n%s", done.trace)
                self.state.set_status(f"Prompt failed: {exc!r}")
                show_error(f"the prompt model failed with an unexpected error: {exc!r}")
            return
        try:
            self._apply(done.value)
        except LLM4SegError as exc:
            self.dropped += 1
            show_error(str(exc))

    def _apply(self, result: _Result) -> None:
        """Write the object into its slice of the mask: one undoable step, a corrected slice."""
        req = result.request
        mask = req.mask
        if mask not in self.viewer.layers or tuple(mask.data.shape) != tuple(
                req.volume.spatial_shape):
            self.dropped += 1
            self.state.set_status("The prompt's mask layer is gone or changed shape: its result "
                                  "was not written.")
            return
        data = mask.data
        old = np.asarray(data[req.z] if data.ndim == 3 else data)
        new = merge_object(old, result.mask, req.value)
        idx = np.nonzero(old != new)
        index = (np.full(idx[0].size, req.z), *idx) if data.ndim == 3 else idx
        self.widget._use_mask(mask)
        if idx[0].size:
            mask.data_setitem(index, new[idx])  # one item of the mask's undo history
        tracker = self.widget._tracker
        if tracker is not None and tracker.layer is mask:
            tracker.add([req.z])  # also when the result is what the slice held
        self.applied += 1
        where = f"slice {req.z}" if data.ndim == 3 else "the picture"
        self.state.set_status(
            f"Segmented the object on {where} (label {req.value}, {int(result.mask.sum())} "
            f"pixels) with {result.segmenter.name} in {result.seconds:.2f} s; Undo takes it back.")
        self._warn_untrained(result.segmenter)

    def _warn_untrained(self, seg: Any) -> None:
        if not getattr(seg, "trained", True) and seg.name not in self._warned:
            self._warned.add(seg.name)
            show_warning(f"{seg.name} is an untrained prompt model: its masks are not "
                         "meaningful. Use a trained prompt model (task 'prompt')")

    # ================================================================== propagate
    def propagate(self) -> bool:
        """Carry the selected label through the volume from the corrected slices (a job of the
        widget's runner: progress, Cancel); True when the job started."""
        state = self.state
        if state.is_busy:
            show_info(f"wait for the running {state.kind} to finish (or cancel it)")
            return False
        if not self.idle:
            show_info("wait for the prompt's result on the slice, then Propagate")
            return False
        image, mask = state.image, state.mask
        if image is None:
            show_warning("open a volume first, then prompt or correct the object on a slice")
            return False
        try:
            volume = self._volume_of(image)
            if volume.kind != "volume":
                raise LLM4SegError("Propagate carries an object through the slices of a volume; "
                                   "this image is a 2-D picture (its prompts segment it already)")
            if mask is None or tuple(mask.data.shape) != tuple(volume.spatial_shape):
                raise LLM4SegError("no mask of this image yet: prompt (click or box) or correct "
                                   "the object on a slice first")
            value = self._label(mask)
            seeds = propagation_seeds(np.asarray(mask.data), state.corrected_slices, value)
        except LLM4SegError as exc:
            show_warning(str(exc))
            return False
        model, device = self.model, state.device_arg

        def run(callbacks: Callbacks) -> tuple[Any, Any]:
            from llm4seg_core.prompts.propagate import propagate

            seg = self.segmenter(model, device)
            if callbacks.cancelled():
                raise Cancelled("propagation cancelled before it started")
            return propagate(seg, volume, seeds, callbacks=callbacks), seg

        zs = sorted(seeds)
        return self.widget._start_job(
            "propagate", run, lambda out: self._propagated(out, mask, value, zs),
            f"Propagating label {value} from {len(zs)} corrected slice(s) through "
            f"{volume.n_slices} slices…")

    def _propagated(self, out: tuple[Any, Any], mask: Labels, value: int,
                    seeds: list[int]) -> None:
        prop, seg = out
        if mask not in self.viewer.layers or tuple(mask.data.shape) != prop.mask.shape:
            show_warning("the mask layer is gone or changed shape: the propagation was not "
                         "written")
            return
        tracker = self.widget._tracker
        tracker = tracker if tracker is not None and tracker.layer is mask else None
        keep = set(seeds) | set(tracker.slices if tracker is not None else ())
        data = np.asarray(mask.data)
        new = merge_propagation(data, prop.mask, value, keep)
        idx = np.nonzero(data != new)
        if idx[0].size:
            if tracker is not None:
                with tracker.ignoring():  # model output: not corrections
                    mask.data_setitem(idx, new[idx])
            else:
                mask.data_setitem(idx, new[idx])
        later = sorted(keep - set(seeds))
        text = (f"Propagated label {value} from slice(s) {', '.join(map(str, seeds))} with "
                f"{seg.name}: {prop.describe()}")
        if later:
            text += f"; {len(later)} slice(s) corrected meanwhile kept as they are"
        self.state.set_status(text + ". Undo takes it back.")
        self._warn_untrained(seg)

    # ================================================================== helpers
    def _volume_of(self, image: Image) -> Volume:
        """The image as the engine's Volume (kept while its data is the same object, so the
        prompt model's intensity range is computed once)."""
        from llm4seg_napari.geometry import volume_from_layer

        data = image.data
        cached = self._volume
        if cached is not None and cached[0]() is image and cached[1] is data:
            return cached[2]
        volume = volume_from_layer(data, self.widget._layer_state(image))
        self._volume = (weakref.ref(image), data, volume)
        return volume

    def _mask_for(self, image: Image, volume: Volume) -> Labels | None:
        """The image's mask layer, made (empty, placed like the image) when missing."""
        shape = tuple(volume.spatial_shape)
        mask = self.state.mask if self.state.image is image else None
        if mask is None:
            mask = make_mask_layer(self.viewer, image, shape)
            self.widget._sync_mask()
        if tuple(mask.data.shape) != shape:
            show_error(f"the layer {mask.name!r} has shape {tuple(mask.data.shape)} but the "
                       f"image has shape {shape}; rename or delete that layer first")
            return None
        return mask

    @staticmethod
    def _key(mask: Labels, z: int) -> tuple[int, int]:
        """The worker's key of slice ``z`` of ``mask``: the newest request of each wins."""
        return id(mask), int(z)

    @staticmethod
    def _label(mask: Labels) -> int:
        """The label the prompts segment: the mask's selected label (1 when it is 0)."""
        top = int(np.iinfo(mask.data.dtype).max) if mask.data.dtype.kind in "ui" else 255
        value = int(mask.selected_label)
        return value if 1 <= value <= top else 1
