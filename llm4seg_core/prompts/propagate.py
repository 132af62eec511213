"""Through a volume from seed slices: each next slice segmented with the previous mask as guide.

Seeds are slices whose mask of the object is known: prompted slices (their
prediction) or slices a person corrected. From each seed a walk goes slice
by slice, the mask it got on one slice the guide of the next, and stops at
the first slice where the prediction is empty (the object ended there).

- Outside the outermost seeds: a walk outwards from each, to the volume's end
  or the object's.
- Between two seeds: each slice takes the prediction of the walk from its
  nearer seed (an equidistant middle slice: the lower seed's). A mask is
  carried best by the nearest outline, and both halves are walked in the
  same passes, so each slice is segmented once. Where one walk stops early
  (it predicted nothing) and the other reached its half's end, the other
  walk carries on into the first one's half, up to and including the slice
  where that one stopped: the object ends between two seeds only where
  walks from both sides say so. An empty seed (the object is not on that
  corrected slice) starts no walk and bounds the others.

Seed slices are never changed. All walks advance together, one slice each
per pass, and a pass's slices go to the model as one batch. ``callbacks``
hear ``progress(slices segmented, upper bound)`` after every pass and the
cancel flag is checked before each (:class:`~llm4seg_core.errors.Cancelled`).
The segmenter is anything with ``segment_slices(volume, requests)`` (a
:class:`~llm4seg_core.prompts.segment.PromptSegmenter`).

:func:`propagate_mask` does this for each label value of a mask's corrected
slices; :func:`segment_prompted` segments prompted slices and, optionally,
propagates from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.prompts.records import SlicePrompts
from llm4seg_core.prompts.segment import SliceRequest

__all__ = ["Propagation", "propagate", "propagate_mask", "segment_prompted"]


@dataclass
class Propagation:
    """A propagated object: its mask (uint8 0/1, the image's spatial shape), the slices the
    model segmented (seeds excluded) and those where a walk stopped on an empty prediction."""

    mask: np.ndarray
    segmented: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)

    def describe(self) -> str:
        m = self.mask if self.mask.ndim == 3 else self.mask[None]
        zs = [int(z) for z in np.nonzero(m.reshape(m.shape[0], -1).any(1))[0]]
        span = f"slices {zs[0]}..{zs[-1]}" if zs else "no slice"
        return (f"{len(self.segmented)} slice(s) segmented; the object is on {span}"
                + (f"; walks stopped at {self.stopped}" if self.stopped else ""))


@dataclass
class _Walk:
    z: int  # the last slice it segmented (or its seed): its mask is the next guide
    step: int  # +1 up, -1 down
    last: int  # the last slice it may segment (inclusive)
    guide: np.ndarray
    stopped_at: int | None = None  # the slice whose prediction was empty

    @property
    def active(self) -> bool:
        return self.stopped_at is None and self.z != self.last


def _run(segmenter: Any, volume: Any, walks: list[_Walk], out: np.ndarray, result: Propagation,
         cb: Callbacks, total: int, min_pixels: int) -> None:
    """Advance ``walks`` together until each stops or reaches its last slice."""
    while True:
        live = [w for w in walks if w.active]
        if not live:
            return
        if cb.cancelled():
            raise Cancelled(f"propagation cancelled after {len(result.segmented)} slices")
        reqs = [SliceRequest(w.z + w.step, None, w.guide) for w in live]
        masks = segmenter.segment_slices(volume, reqs)
        for w, m in zip(live, masks, strict=True):
            w.z += w.step
            m = (np.asarray(m) > 0).astype(np.uint8)
            result.segmented.append(w.z)
            if int(m.sum()) < max(min_pixels, 1):
                w.stopped_at = w.z
                out[w.z] = 0
                result.stopped.append(w.z)
            else:
                out[w.z] = m
                w.guide = m
        cb.progress(min(len(result.segmented), total), total)


def propagate(segmenter: Any, volume: Any, seeds: Mapping[int, np.ndarray], *,
              callbacks: Callbacks | None = None, min_pixels: int = 1) -> Propagation:
    """The object through ``volume`` from the ``seeds`` (slice -> its mask of the object).

    ``min_pixels``: a prediction with fewer pixels counts as empty (the walk stops).
    """
    cb = callbacks or Callbacks()
    if volume.kind != "volume":
        raise LLM4SegError("propagation needs a volume; this image is a 2-D picture")
    shape = tuple(int(s) for s in volume.spatial_shape)
    n = shape[0]
    if not seeds:
        raise LLM4SegError("propagation needs at least one seed slice")
    out = np.zeros(shape, np.uint8)
    zs = sorted(int(z) for z in seeds)
    for z in zs:
        m = np.asarray(seeds[z])
        if not 0 <= z < n:
            raise LLM4SegError(f"seed slice {z} does not exist (the volume has slices 0..{n - 1})")
        if m.shape != shape[1:]:
            raise LLM4SegError(f"the mask of seed slice {z} has shape {m.shape}; the slices are "
                               f"{shape[1:]}")
        out[z] = (m > 0).astype(np.uint8)
    result = Propagation(out)
    total = n - len(zs)
    filled = {z: bool(out[z].any()) for z in zs}

    def walk(z: int, step: int, last: int) -> _Walk:
        return _Walk(z, step, last, out[z].copy())

    walks: list[_Walk] = []
    if zs[0] > 0 and filled[zs[0]]:
        walks.append(walk(zs[0], -1, 0))
    if zs[-1] < n - 1 and filled[zs[-1]]:
        walks.append(walk(zs[-1], +1, n - 1))
    gaps: list[tuple[_Walk, _Walk]] = []  # both seeds of a gap hold the object
    for a, b in zip(zs, zs[1:], strict=False):
        if b - a < 2:
            continue
        if filled[a] and filled[b]:
            half = a + (b - a) // 2  # the last slice nearer to a (an odd gap's middle one too)
            lo, hi = walk(a, +1, half), walk(b, -1, half + 1)  # hi may have nothing to do
            walks += [lo, hi]
            gaps.append((lo, hi))
        elif filled[a]:
            walks.append(walk(a, +1, b - 1))  # b is corrected and empty: it bounds the walk
        elif filled[b]:
            walks.append(walk(b, -1, a + 1))
    cb.progress(0, total)
    _run(segmenter, volume, walks, out, result, cb, total, min_pixels)
    # a walk that reached its half's end carries on where the other side's walk stopped early,
    # up to and including that slice
    more: list[_Walk] = []
    for lo, hi in gaps:
        if lo.stopped_at is None and hi.stopped_at is not None and hi.stopped_at > lo.z:
            more.append(_Walk(lo.z, +1, hi.stopped_at, lo.guide))
        elif hi.stopped_at is None and lo.stopped_at is not None and lo.stopped_at < hi.z:
            more.append(_Walk(hi.z, -1, lo.stopped_at, hi.guide))
    if more:
        _run(segmenter, volume, more, out, result, cb, total, min_pixels)
        for w in more:
            if w.stopped_at is None:  # it found the object where the other walk had stopped
                result.stopped = [z for z in result.stopped if z != w.last]
    result.segmented = sorted(set(result.segmented))
    result.stopped = sorted(set(result.stopped))
    cb.progress(total, total)
    return result


def propagate_mask(segmenter: Any, volume: Any, mask: np.ndarray, slices: Sequence[int], *,
                   callbacks: Callbacks | None = None) -> tuple[np.ndarray, dict[int, Propagation]]:
    """Each label value of ``mask``'s corrected ``slices`` propagated through the volume.

    The corrected slices keep exactly their labels; on the others a label
    fills only voxels no smaller label value took (values in increasing order).
    What the other slices of ``mask`` held is replaced. Returns the labels and
    each value's :class:`Propagation`.
    """
    cb = callbacks or Callbacks()
    shape = tuple(int(s) for s in volume.spatial_shape)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise LLM4SegError(f"the mask has shape {mask.shape}; the image needs {shape}")
    n = shape[0]
    zs = sorted({int(z) for z in slices})
    bad = [z for z in zs if not 0 <= z < n]
    if bad:
        raise LLM4SegError(f"slices {bad} are outside the image's slices 0..{n - 1}")
    values = sorted(int(v) for v in np.unique(mask[zs]) if v)
    if not values:
        raise LLM4SegError(f"the mask holds no label on slice(s) {zs}: nothing to propagate")
    out = np.zeros(shape, np.uint8)
    done: dict[int, Propagation] = {}
    for i, v in enumerate(values):
        sub = Callbacks(on_progress=lambda d, t, i=i: cb.progress(i * t + d, len(values) * t),
                        cancel=cb.cancel, on_log=cb.on_log)
        prop = propagate(segmenter, volume, {z: mask[z] == v for z in zs}, callbacks=sub)
        free = (out == 0) & (prop.mask > 0)
        out[free] = v
        done[v] = prop
    out[zs] = mask[zs]
    return out, done


def segment_prompted(segmenter: Any, volume: Any, prompts: Mapping[int, SlicePrompts], *,
                     propagate_from: bool = False,
                     callbacks: Callbacks | None = None) -> Propagation:
    """The object on the prompted slices and, with ``propagate_from``, through the volume from them.

    Returns a :class:`Propagation` whose ``segmented`` lists every slice the model ran on.
    """
    cb = callbacks or Callbacks()
    if not prompts:
        raise LLM4SegError("no prompts: give at least one point or box")
    if propagate_from and volume.kind != "volume":
        raise LLM4SegError("--propagate needs a volume; this image is a 2-D picture")
    zs = sorted(int(z) for z in prompts)
    masks = segmenter.segment_slices(volume, [SliceRequest(z, prompts[z]) for z in zs])
    seeds = {z: (np.asarray(m) > 0).astype(np.uint8) for z, m in zip(zs, masks, strict=True)}
    for z, m in seeds.items():
        if not m.any():
            cb.log(f"the prompts on slice {z} gave an empty mask")
    if propagate_from:
        prop = propagate(segmenter, volume, seeds, callbacks=cb)
        prop.segmented = sorted(set(prop.segmented) | set(zs))
        return prop
    out = np.zeros(tuple(int(s) for s in volume.spatial_shape), np.uint8)
    view = out if volume.kind == "volume" else out[None]
    for z, m in seeds.items():
        view[z] = m
    return Propagation(out, zs, [])
