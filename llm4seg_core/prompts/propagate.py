"""Through a volume from seed slices: outward walks with a shrinking guide, and between seeds
the interpolated outline as each slice's guide.

Seeds are slices whose mask of the object is known: prompted slices (their
prediction) or slices a person corrected.

- Between two seeds that both hold the object, each slice is segmented with
  the outline interpolated between the two seeds (shape-based, as
  ``postprocess.interpolate_between``; its mm pixel size) as its guide, all of
  them in batches: the model corrects the interpolation against the image,
  and no error is carried from slice to slice.
- Outside the outermost seeds, and from a seed towards a corrected empty
  slice (which bounds the object), a walk goes slice by slice, the mask it got
  on one slice the guide of the next, and stops at the first slice where the
  prediction is empty. The model copies much of its guide, so such a walk
  rarely ends on its own (measured: on Colin27/AAL it ran on far past the
  structures); each step therefore shrinks the guide by :data:`SHRINK` slice
  spacings in mm (the fractions carried from slice to slice), and a walk whose
  guide vanishes ends there. Where the image holds the object the model grows
  the shrunk guide back; where it ends the mask dwindles. The value was chosen
  on the val splits of msd_hippocampus and openkbp_hn_ct (docs/benchmarks.md).

Seed slices are never changed. A pass's slices go to the model as one batch
(all walks advance together). ``callbacks`` hear ``progress(slices
segmented, upper bound)`` after every pass and the cancel flag is checked
before each (:class:`~llm4seg_core.errors.Cancelled`). The segmenter is
anything with ``segment_slices(volume, requests)`` (a
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
from scipy import ndimage

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.postprocess import interpolate_between, pixel_mm
from llm4seg_core.prompts.records import SlicePrompts
from llm4seg_core.prompts.segment import SliceRequest

__all__ = ["SHRINK", "Propagation", "propagate", "propagate_mask", "segment_prompted"]

SHRINK = 0.75
"""A walk's guide shrinks by this many slice spacings (in mm) per slice. On the val splits,
with 2 corrected slices (Dice on the other slices): msd_hippocampus, 6 cases, 0.5 / 0.75 / 1 /
1.5 -> 0.578 / 0.628 / 0.621 / 0.600; openkbp_hn_ct, 3 cases, 0.5 / 0.75 / 1 / 1.5 / 2 -> 0.544 /
0.517 / 0.449 / 0.399 / 0.306 (unshrunk: 0.311 and 0.253); 0.75 has the best mean."""

PASS = 8
"""Between-seed slices sent to the model per pass (progress and cancel between passes)."""


@dataclass
class Propagation:
    """A propagated object: its mask (uint8 0/1, the image's spatial shape), the slices the
    model segmented (seeds excluded) and those where a walk stopped (an empty prediction, or
    its shrunk guide vanished)."""

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
    shrink_px: float  # guide erosion per slice, in pixels
    carry: float = 0.0
    stopped_at: int | None = None  # where it ended: an empty prediction or a vanished guide

    @property
    def active(self) -> bool:
        return self.stopped_at is None and self.z != self.last

    def next_guide(self) -> np.ndarray | None:
        """The guide of the next slice: this one's mask shrunk; None when nothing is left."""
        self.carry += self.shrink_px
        k = int(self.carry)
        self.carry -= k
        g = self.guide > 0
        if k:
            g = ndimage.binary_erosion(g, iterations=k)
        return g.astype(np.uint8) if g.any() else None


def _run(segmenter: Any, volume: Any, walks: list[_Walk], out: np.ndarray, result: Propagation,
         cb: Callbacks, total: int, min_pixels: int) -> None:
    """Advance ``walks`` together until each stops or reaches its last slice."""
    while True:
        live = []
        for w in (w for w in walks if w.active):
            guide = w.next_guide()
            if guide is None:
                w.stopped_at = w.z + w.step
                result.stopped.append(w.stopped_at)
            else:
                live.append((w, guide))
        if not live:
            return
        if cb.cancelled():
            raise Cancelled(f"propagation cancelled after {len(result.segmented)} slices")
        masks = segmenter.segment_slices(volume, [SliceRequest(w.z + w.step, None, g)
                                                  for w, g in live])
        for (w, _), m in zip(live, masks, strict=True):
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


def _fill_between(segmenter: Any, volume: Any, gaps: list[tuple[int, int]], out: np.ndarray,
                  result: Propagation, cb: Callbacks, total: int, min_pixels: int) -> None:
    """Each slice between two filled seeds, guided by the outline interpolated between them."""
    px = pixel_mm(volume)
    reqs = []
    for a, b in gaps:
        between = interpolate_between(out[a], out[b], b - a - 1, px)
        reqs += [SliceRequest(z, None, g.astype(np.uint8))
                 for z, g in zip(range(a + 1, b), between, strict=True) if g.any()]
    for i in range(0, len(reqs), PASS):
        if cb.cancelled():
            raise Cancelled(f"propagation cancelled after {len(result.segmented)} slices")
        batch = reqs[i:i + PASS]
        for r, m in zip(batch, segmenter.segment_slices(volume, batch), strict=True):
            m = (np.asarray(m) > 0).astype(np.uint8)
            out[r.z] = m if int(m.sum()) >= max(min_pixels, 1) else 0
            result.segmented.append(r.z)
        cb.progress(min(len(result.segmented), total), total)


def propagate(segmenter: Any, volume: Any, seeds: Mapping[int, np.ndarray], *,
              callbacks: Callbacks | None = None, min_pixels: int = 1,
              shrink: float = SHRINK) -> Propagation:
    """The object through ``volume`` from the ``seeds`` (slice -> its mask of the object).

    ``min_pixels``: a prediction with fewer pixels counts as empty (a walk stops).
    ``shrink``: a walk's guide erosion per slice in slice spacings (0: none).
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
    spacing = tuple(float(v) for v in getattr(volume, "spacing", ()))
    dz = spacing[2] if len(spacing) > 2 else 1.0
    shrink_px = max(0.0, float(shrink)) * dz / min(pixel_mm(volume))

    def walk(z: int, step: int, last: int) -> _Walk:
        return _Walk(z, step, last, out[z].copy(), shrink_px)

    walks: list[_Walk] = []
    if zs[0] > 0 and filled[zs[0]]:
        walks.append(walk(zs[0], -1, 0))
    if zs[-1] < n - 1 and filled[zs[-1]]:
        walks.append(walk(zs[-1], +1, n - 1))
    gaps: list[tuple[int, int]] = []  # both seeds of a gap hold the object
    for a, b in zip(zs, zs[1:], strict=False):
        if b - a < 2:
            continue
        if filled[a] and filled[b]:
            gaps.append((a, b))
        elif filled[a]:
            walks.append(walk(a, +1, b - 1))  # b is corrected and empty: it bounds the walk
        elif filled[b]:
            walks.append(walk(b, -1, a + 1))
    cb.progress(0, total)
    _fill_between(segmenter, volume, gaps, out, result, cb, total, min_pixels)
    _run(segmenter, volume, walks, out, result, cb, total, min_pixels)
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
