"""A front end's prompting session, without Qt: prompts from layer data, results into a mask.

What the napari widget's prompt tool (``llm4seg_napari._prompting``) needs
that is not about Qt or napari, testable without a screen:

- :func:`layer_prompts`: clicks (points with a positive/negative flag) and
  rectangles, in the image's voxel coordinates as floats (napari data
  coordinates: a pixel's centre is its integer index), to
  :class:`~llm4seg_core.prompts.records.SlicePrompts` per slice. A click
  takes the pixel it falls in; a rectangle the pixels whose centres it
  covers, clipped to the image; one box per slice, the newest (the last in
  the list) wins. Clicks and boxes outside the image are left out and
  listed, with :func:`outside_message` to say so.
- :func:`merge_object`: one object's mask (0/1) into a label slice as the
  label ``value``: that value's old pixels are replaced, other labels' pixels
  are kept (the object never overwrites another label).
- :func:`propagation_seeds` and :func:`merge_propagation`: the seeds of a
  propagation (the corrected slices, with or without the object) and its
  result merged into the label volume (seed and other kept slices untouched).
- :class:`LatestPerKey`: one worker thread that runs the newest request of
  each key (a slice); a request that a newer one for the same key replaced
  before it started is never run, and a result whose request was superseded
  while it ran is marked stale (:meth:`LatestPerKey.is_current`), so a front
  end drops it.

Slices are z indices; a 2-D picture has one slice, 0.
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.prompts.records import Box, Point, SlicePrompts

__all__ = [
    "Done",
    "LatestPerKey",
    "LayerPrompts",
    "layer_prompts",
    "merge_object",
    "merge_propagation",
    "outside_message",
    "propagation_seeds",
    "segmentable",
]

_log = logging.getLogger(__name__)


# ------------------------------------------------------------------ prompts from layers
@dataclass(frozen=True)
class LayerPrompts:
    """The prompts of a clicks layer and a boxes layer, per slice.

    ``outside_points`` / ``outside_boxes``: indices (into the layers' data) of
    clicks and boxes outside the image, left out; ``replaced_boxes``: boxes on
    a slice that also has a newer box (left out: one box per slice).
    """

    slices: dict[int, SlicePrompts] = field(default_factory=dict)
    outside_points: tuple[int, ...] = ()
    outside_boxes: tuple[int, ...] = ()
    replaced_boxes: tuple[int, ...] = ()


def segmentable(prompts: SlicePrompts | None) -> bool:
    """Whether ``prompts`` say which object to segment: a positive click or a box."""
    return prompts is not None and (bool(prompts.positive) or prompts.box is not None)


def _pixel(v: float) -> int:
    """The index of the pixel whose extent holds coordinate ``v`` (centres at integers)."""
    return int(math.floor(float(v) + 0.5))


def _split(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3:
        return shape
    raise LLM4SegError(f"prompts are for a 2-D picture or a 3-D volume, not shape {shape}")


def layer_prompts(points: Any, positive: Sequence[bool] | None, boxes: Iterable[Any],
                  shape: Sequence[int]) -> LayerPrompts:
    """Clicks and boxes in voxel coordinates of an image of spatial ``shape``, per slice.

    ``points``: (N, D) coordinates, D the image's dimensions (z, y, x or y, x);
    ``positive``: N flags (None: all positive); ``boxes``: each a (K, D)
    array of a rectangle's vertices (its bounding box is the box; its slice
    is the vertices' mean z).
    """
    n, h, w = _split(shape)
    nd = len(tuple(shape))
    pts = np.asarray(points, float).reshape(-1, nd) if np.size(points) else np.zeros((0, nd))
    flags = [True] * len(pts) if positive is None else [bool(p) for p in positive]
    if len(flags) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(flags)} positive flags")
    clicks: dict[int, list[Point]] = {}
    outside_points: list[int] = []
    for i, (coord, flag) in enumerate(zip(pts, flags, strict=True)):
        z = _pixel(coord[0]) if nd == 3 else 0
        y, x = _pixel(coord[-2]), _pixel(coord[-1])
        if not (0 <= z < n and 0 <= y < h and 0 <= x < w) or not np.all(np.isfinite(coord)):
            outside_points.append(i)
            continue
        clicks.setdefault(z, []).append(Point(y, x, flag))
    by_slice: dict[int, tuple[int, Box]] = {}
    outside_boxes: list[int] = []
    replaced: list[int] = []
    for i, vertices in enumerate(boxes):
        v = np.asarray(vertices, float).reshape(-1, nd)
        if not len(v) or not np.all(np.isfinite(v)):
            outside_boxes.append(i)
            continue
        z = _pixel(v[:, 0].mean()) if nd == 3 else 0
        y0, y1 = _pixel(v[:, -2].min()), _pixel(v[:, -2].max())
        x0, x1 = _pixel(v[:, -1].min()), _pixel(v[:, -1].max())
        if not 0 <= z < n or y1 < 0 or y0 > h - 1 or x1 < 0 or x0 > w - 1:
            outside_boxes.append(i)
            continue
        box = Box(max(y0, 0), max(x0, 0), min(y1, h - 1), min(x1, w - 1))
        if z in by_slice:
            replaced.append(by_slice[z][0])
        by_slice[z] = (i, box)
    out = {z: SlicePrompts(tuple(clicks.get(z, ())), by_slice[z][1] if z in by_slice else None)
           for z in sorted(set(clicks) | set(by_slice))}
    return LayerPrompts(out, tuple(outside_points), tuple(outside_boxes), tuple(sorted(replaced)))


def outside_message(found: LayerPrompts, shape: Sequence[int]) -> str:
    """One line saying which clicks and boxes are outside the image ("" when none is)."""
    parts = []
    if found.outside_points:
        k = len(found.outside_points)
        parts.append(f"{k} click{'s' if k > 1 else ''}")
    if found.outside_boxes:
        k = len(found.outside_boxes)
        parts.append(f"{k} box{'es' if k > 1 else ''}")
    if not parts:
        return ""
    n, h, w = _split(shape)
    extent = f"rows 0..{h - 1}, columns 0..{w - 1}"
    if len(tuple(shape)) == 3:
        extent = f"slices 0..{n - 1}, " + extent
    return (f"{' and '.join(parts)} outside the image ({extent}) left out: click or draw on "
            "the image")


# ------------------------------------------------------------------ results into a mask
def merge_object(labels: np.ndarray, obj: np.ndarray, value: int) -> np.ndarray:
    """``labels`` (a slice or a volume) with label ``value`` replaced by the object ``obj``.

    Pixels of ``value`` outside the object become background; object pixels
    that are background become ``value``; other labels are kept as they are.
    Returns a new array of ``labels``' dtype.
    """
    labels = np.asarray(labels)
    obj = np.asarray(obj)
    if obj.shape != labels.shape:
        raise LLM4SegError(f"the object's mask has shape {obj.shape}; the labels {labels.shape}")
    if labels.dtype.kind not in "ui" or not 0 < int(value) <= np.iinfo(labels.dtype).max:
        raise LLM4SegError(f"label {value} does not fit a mask of type {labels.dtype}")
    out = labels.copy()
    out[out == value] = 0
    out[(obj > 0) & (out == 0)] = value
    return out


def propagation_seeds(labels: np.ndarray, corrected: Iterable[int],
                      value: int) -> dict[int, np.ndarray]:
    """The seeds of propagating label ``value``: each corrected slice's mask of it.

    A corrected slice without the label is an empty seed: it bounds the walks
    (the object is known to be absent there). Refused, with a one-line
    message, for a 2-D picture, without corrected slices, or when none of
    them holds the label.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise LLM4SegError("Propagate carries an object through the slices of a volume; this "
                           "image is a 2-D picture")
    n = labels.shape[0]
    zs = sorted({int(z) for z in corrected if 0 <= int(z) < n})
    if not zs:
        raise LLM4SegError("nothing to propagate from: prompt (click or box) or correct the "
                           "object on at least one slice first")
    seeds = {z: (labels[z] == value).astype(np.uint8) for z in zs}
    if not any(m.any() for m in seeds.values()):
        raise LLM4SegError(f"label {value} is on none of the corrected slices {_short(zs)}: "
                           "prompt or paint the object on one of them first (or pick its label)")
    return seeds


def merge_propagation(labels: np.ndarray, mask: np.ndarray, value: int,
                      keep: Iterable[int]) -> np.ndarray:
    """``labels`` with label ``value`` replaced by the propagated ``mask`` on every slice not
    in ``keep`` (the seeds and other corrected slices); other labels are kept."""
    labels = np.asarray(labels)
    mask = np.asarray(mask)
    if mask.shape != labels.shape:
        raise LLM4SegError(f"the propagated mask has shape {mask.shape}; the labels "
                           f"{labels.shape}")
    free = np.ones(labels.shape[0], bool)
    kept = [int(z) for z in keep if 0 <= int(z) < labels.shape[0]]
    free[kept] = False
    out = labels.copy()
    out[free] = merge_object(labels[free], mask[free], value)
    return out


def _short(zs: Sequence[int], k: int = 8) -> str:
    shown = ", ".join(map(str, zs[:k]))
    return f"({shown}{', ...' if len(zs) > k else ''})"


# ------------------------------------------------------------------ the latest request wins
@dataclass(frozen=True)
class Done:
    """A request's end: its key and number, its value or its error (with the traceback)."""

    key: Hashable
    number: int
    value: Any = None
    error: BaseException | None = None
    trace: str = ""


class LatestPerKey:
    """One worker thread running ``run(payload)`` for the newest request of each key.

    :meth:`submit` returns the request's number. A request waiting for the
    thread is replaced by a newer one of the same key (it never runs);
    requests of different keys run one after the other, oldest first. Each
    run ends with ``deliver(Done)``, called in the worker thread; a front end
    hands it to its main thread and drops it unless :meth:`is_current` (no
    newer request of that key came meanwhile). The thread starts with the
    first request and ends with :meth:`close`.
    """

    def __init__(self, run: Callable[[Any], Any], deliver: Callable[[Done], None],
                 name: str = "llm4seg-prompts") -> None:
        self._run = run
        self._deliver = deliver
        self._name = name
        self._cond = threading.Condition()
        self._pending: dict[Hashable, tuple[int, Any]] = {}  # insertion order: oldest first
        self._latest: dict[Hashable, int] = {}
        self._count = 0
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, payload: Any) -> int:
        """Queue ``payload`` as the newest request of ``key``; returns its number."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the prompt worker is closed")
            self._count += 1
            number = self._count
            self._latest[key] = number
            self._pending.pop(key, None)  # superseded before it ran
            self._pending[key] = (number, payload)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
            return number

    def is_current(self, key: Hashable, number: int) -> bool:
        """Whether request ``number`` is still the newest of ``key``."""
        with self._cond:
            return self._latest.get(key) == number

    def forget(self, key: Hashable | None = None) -> None:
        """Make the requests of ``key`` (None: all) stale: their results will be dropped."""
        with self._cond:
            keys = list(self._latest) if key is None else [key]
            for k in keys:
                self._count += 1
                self._latest[k] = self._count
                self._pending.pop(k, None)

    @property
    def busy(self) -> bool:
        """A request runs or waits."""
        with self._cond:
            return self._running or bool(self._pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request runs or waits (True), or ``timeout`` seconds passed."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running and not self._pending, timeout)

    def close(self) -> None:
        """Stop the thread after the running request; waiting ones are dropped."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or bool(self._pending))
                if self._closed:
                    self._cond.notify_all()
                    return
                key = next(iter(self._pending))
                number, payload = self._pending.pop(key)
                self._running = True
            try:
                done = Done(key, number, self._run(payload))
            except Exception as exc:  # noqa: BLE001 - every error reaches the person
                done = Done(key, number, None, exc, traceback.format_exc())
            try:
                self._deliver(done)
            except Exception:  # noqa: BLE001 - a front end gone (its window closed)
                _log.debug("a prompt result could not be delivered", exc_info=True)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
