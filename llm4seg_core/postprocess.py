"""Keep what continues the corrections: the algorithm under ``loop.keep_continuations``.

:func:`keep_seeded_components` keeps, per label value, only the prediction
that continues the outlines on the corrected slices (the "seeds"). A
clinician who outlined a tumour on two slices wants the tumour's
continuation on the other slices, not every bright blob elsewhere in the
scan. Front ends call it through :func:`llm4seg_core.loop.keep_continuations`,
which sums its per-label record into a typed summary.

Two ways to decide what continues an outline:

* ``step_mm`` set (the default, 3 mm): slice by slice outwards from each
  corrected slice. On the next slice the prediction is cut to within
  ``step_mm`` (in-plane) of what was kept on the previous one, and of that
  only the 2-D regions overlapping the previous slice's kept region remain;
  the walk stops at the first slice where nothing remains. A region must
  overlap the previous slice's and can grow by at most ``step_mm`` per
  slice, so a thin bridge (a vessel, the pleura) cannot carry the mask far
  away.
* ``step_mm=None``: 3-D connected regions (26-neighbourhood) touching an
  outlined voxel are kept whole.

Measured in docs/benchmarks.md (few-shot benchmark, run C): with 3-D regions
the lung2 tumour's region leaked along hilar vessels for 16 slices (Dice 0.254
against 0.723 for 3 mm steps on the same prediction). Over the benchmark's
lung2/brain1 cells the 3 mm walk is better in 4 of 6, equal in one, and worse
where one annotated slice holds a lesion's smallest cross-section and the
lesion grows faster than 3 mm a slice (brain1, k = 1).

It is an option ("keep what continues the corrections" in the UIs,
``--seeded`` on the command line): a scan with several separate lesions of
which only one was outlined loses the others.

With ``fill_between=True`` the gaps between two corrected slices that hold
the same label are also filled with the outline interpolated between them
(shape-based interpolation: the two outlines' signed distance maps, from
SimpleITK, blended linearly along z and cut at zero). Only background
voxels are filled, and only where the two outlines are within reach of each
other (in-plane, at most ``step_mm`` per slice of the gap, the limit the
walk puts on a region's movement) or the kept prediction of that label
reaches every slice of the gap, so two separate lesions outlined on two
slices are not morphed into one. docs/benchmarks.md (runs F and G) scores
the interpolation alone as a baseline: past the outermost corrected slices
there is nothing to interpolate, and only the model's prediction carries
the mask on.

Apart from the corrections: :func:`keep_largest_region` keeps, per label and
slice, only the largest 2-D region, for models of pictures that hold one
object (a checkpoint's ``meta["one_object"]``, or ``--largest-region on``; the
Segmenter applies it). In the training masks of the five picture sets the
largest region holds 98.6-100 % of the foreground on average, yet on their
val splits it did not raise Dice (docs/benchmarks.md, session 6): no shipped
model turns it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

__all__ = ["DEFAULT_STEP_MM", "interpolate_between", "keep_largest_region",
           "keep_seeded_components", "pixel_mm"]

DEFAULT_STEP_MM = 3.0
"""How far (mm, in-plane) a kept region may move or grow from one slice to the next."""


def _components(binary: np.ndarray) -> np.ndarray:
    """Connected-component labels (26-neighbourhood in 3-D, 8 in 2-D) via SimpleITK."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(binary.astype(np.uint8))
    cc = sitk.ConnectedComponent(img, True)  # fullyConnected=True
    return sitk.GetArrayViewFromImage(cc).astype(np.int64, copy=True)


def keep_largest_region(labels: np.ndarray) -> np.ndarray:
    """``labels`` (H, W) or (Z, H, W) with, per label value and slice, only the largest
    8-connected region kept (ties: the first); a new array."""
    out = np.array(labels, copy=True)
    view = out[None] if out.ndim == 2 else out
    for z in range(view.shape[0]):
        for value in np.unique(view[z]):
            if value == 0:
                continue
            cc = _components(view[z] == value)
            sizes = np.bincount(cc.ravel())
            if len(sizes) <= 2:  # one region (or none)
                continue
            sizes[0] = 0
            view[z][(view[z] == value) & (cc != int(np.argmax(sizes)))] = 0
    return out


def _dilate(binary: np.ndarray, radius_yx: tuple[int, int]) -> np.ndarray:
    """2-D binary dilation by a box of the given (y, x) radius in pixels (SimpleITK)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(binary.astype(np.uint8))
    out = sitk.BinaryDilate(img, [int(radius_yx[1]), int(radius_yx[0])])  # SimpleITK: (x, y)
    return sitk.GetArrayViewFromImage(out) > 0


def _track(mask: np.ndarray, seeds: list[int], radius_yx: tuple[int, int]) -> np.ndarray:
    """What of ``mask`` (Z, Y, X bool) continues slice by slice from the ``seeds`` slices."""
    kept = np.zeros_like(mask)
    seed_set = set(seeds)
    for z0 in seeds:
        kept[z0] = mask[z0]
    for z0 in seeds:
        for step in (1, -1):
            prev, z = mask[z0], z0 + step
            while 0 <= z < mask.shape[0] and z not in seed_set and prev.any():
                near = mask[z] & _dilate(prev, radius_yx)
                cc = _components(near)
                ids = np.unique(cc[prev])
                cur = np.isin(cc, ids[ids != 0])
                kept[z] |= cur
                prev, z = cur, z + step
    return kept


def _signed_distance(binary: np.ndarray, pixel_size: tuple[float, float]) -> np.ndarray:
    """Signed distance (mm) to the outline of a 2-D mask: negative inside (SimpleITK)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(binary.astype(np.uint8))
    img.SetSpacing((float(pixel_size[1]), float(pixel_size[0])))  # SimpleITK: (x, y)
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True)
    return sitk.GetArrayFromImage(dist)


def interpolate_between(lower: np.ndarray, upper: np.ndarray, n: int,
                        pixel_size: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """The ``n`` slices between two 2-D outlines, by shape-based interpolation.

    Each outline's signed distance map (mm, negative inside) is blended
    linearly by the slice's position in the gap; the blend's negative part is
    the interpolated outline. Returns a (n, Y, X) bool array; empty when
    either outline is empty.
    """
    lower, upper = np.asarray(lower, bool), np.asarray(upper, bool)
    if n <= 0 or not lower.any() or not upper.any():
        return np.zeros((max(n, 0), *lower.shape), bool)
    return _blend(_signed_distance(lower, pixel_size), _signed_distance(upper, pixel_size), n)


def _blend(d0: np.ndarray, d1: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` interpolated outlines between two signed distance maps (negative inside)."""
    out = np.zeros((n, *d0.shape), bool)
    for i in range(n):
        w = (i + 1) / (n + 1)
        out[i] = (1.0 - w) * d0 + w * d1 <= 0.0
    return out


def _fill_gaps(out: np.ndarray, keep: np.ndarray, value: int, zs: list[int],
               pixel_size: tuple[float, float], step_mm: float) -> tuple[int, int]:
    """Fill background voxels between consecutive corrected slices holding ``value``.

    A gap is filled only when one outline is within reach of the other
    (in-plane distance at most ``step_mm`` per slice from one to the other,
    the walk's own limit) or ``keep`` (what is kept of the label) reaches
    every slice in it: else they may be two lesions. Returns (gaps filled,
    voxels filled)."""
    gaps = voxels = 0
    for a, b in pairwise(zs):
        if b - a < 2:
            continue
        lower, upper = out[a] == value, out[b] == value
        if not (lower.any() and upper.any()):
            continue
        d0 = _signed_distance(lower, pixel_size)
        crossed = keep[a + 1 : b].reshape(b - a - 1, -1).any(1).all()
        if not crossed and float(d0[upper].min()) > step_mm * (b - a):  # mm; < 0: overlap
            continue  # too far apart for one structure and nothing across: two lesions?
        shape = _blend(d0, _signed_distance(upper, pixel_size), b - a - 1)
        new = shape & (out[a + 1 : b] == 0)
        out[a + 1 : b][new] = value
        gaps += 1
        voxels += int(np.count_nonzero(new))
    return gaps, voxels


def pixel_mm(volume: object) -> tuple[float, float]:
    """The in-plane pixel size (y, x) in mm of a :class:`~llm4seg_core.io.Volume`."""
    sp = tuple(float(v) for v in getattr(volume, "spacing", (1.0, 1.0)))
    return (sp[1], sp[0]) if len(sp) >= 2 else (1.0, 1.0)


def keep_seeded_components(labels: np.ndarray, corrected: Sequence[int], *,
                           step_mm: float | None = DEFAULT_STEP_MM,
                           pixel_size: tuple[float, float] = (1.0, 1.0),
                           fill_between: bool = False) -> tuple[np.ndarray, dict]:
    """Drop what of ``labels`` does not continue the outlines on the ``corrected`` slices.

    ``labels``: a (Z, Y, X) or (Y, X) label array whose corrected slices hold
    the person's masks and whose other slices hold the model's prediction.
    ``step_mm``: see the module docstring (None: whole 3-D connected regions);
    ``pixel_size``: the in-plane pixel size (y, x) in mm (:func:`pixel_mm`);
    ``fill_between``: also fill the gaps between corrected slices with the
    interpolated outline (module docstring).
    Returns the filtered copy (corrected slices unchanged by construction:
    every voxel of a seed belongs to a kept region, and filling touches only
    the slices between) and a summary: per label value, regions kept and
    dropped, voxels removed, and with ``fill_between`` gaps and voxels
    filled. A label value with no seed voxel is left as it is (nothing
    anchors it), and the summary says so.
    """
    arr = np.asarray(labels)
    out = arr.copy()
    if arr.ndim == 2:
        # a 2-D image: the only slice is the corrected one, nothing to filter
        return out, {"note": "2-D image: nothing to filter"}
    zs = sorted({int(z) for z in corrected if 0 <= int(z) < arr.shape[0]})
    seeded_values = {int(v) for v in np.unique(arr[zs])} - {0} if zs else set()
    summary: dict = {"labels": {}}
    keeps: dict[int, np.ndarray] = {}
    for value in (int(v) for v in np.unique(arr) if v != 0):
        if value not in seeded_values:
            summary["labels"][value] = {"seeded": False}
            continue
        mask = arr == value
        cc = _components(mask)
        all_ids = int(cc.max())
        if step_mm is None:
            seeded_ids = np.unique(cc[zs])
            keep = np.isin(cc, seeded_ids[seeded_ids != 0])
        else:
            radius = tuple(max(1, round(step_mm / max(float(p), 1e-6))) for p in pixel_size)
            keep = _track(mask, zs, radius)
        kept_ids = np.unique(cc[keep])
        kept_ids = kept_ids[kept_ids != 0]
        drop = mask & ~keep
        removed = int(np.count_nonzero(drop))
        out[drop] = 0
        summary["labels"][value] = {
            "seeded": True,
            "regions_kept": int(kept_ids.size),
            "regions_dropped": all_ids - int(kept_ids.size),
            "voxels_removed": removed,
            "slices_kept": [int(z) for z in np.nonzero(keep.reshape(keep.shape[0], -1).any(1))[0]],
        }
        keeps[value] = keep
    if fill_between:
        # after every label is filtered, so what is removed does not depend on the order of
        # the labels; a gap fills background voxels only
        for value, keep in keeps.items():
            gaps, filled = _fill_gaps(out, keep, value, zs, pixel_size,
                                      DEFAULT_STEP_MM if step_mm is None else step_mm)
            summary["labels"][value].update(gaps_filled=gaps, voxels_filled=filled)
    summary["step_mm"] = step_mm
    summary["fill_between"] = fill_between
    return out, summary
