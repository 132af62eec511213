"""The simulated user of interactive-segmentation papers (numpy + scipy, no torch).

From a ground-truth mask of one object on one slice:

- :func:`first_click`: a positive click inside the object, at the point
  farthest from its boundary (the image border counts as boundary);
- :func:`box_of`: the box around it;
- :func:`next_click`: given the model's current mask, a click at the centre
  (the point farthest from its boundary) of the largest error region,
  positive where the object was missed, negative where the mask is wrong
  (Xu et al. 2016; RITM, Sofiiuk et al. 2022, use the same protocol);
- :func:`click_until`: the loop of the NoC@85/90 benchmarks.

Without ``rng`` every function is deterministic; with a seeded
``numpy.random.Generator`` (training) the click is drawn from the inner part
of its region and the box's sides are jittered, the same for the same seed.
:func:`perturb` makes the imperfect masks training uses for "previous
prediction" and "neighbouring slice" guides.

Regions are 4-connected (scipy's default structuring element).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from llm4seg_core.prompts.records import Box, Point, SlicePrompts

__all__ = ["box_of", "box_or_clicks", "click_until", "error_clicks", "first_click",
           "inner_distance", "next_click", "perturb"]

INNER_SHARE = 0.5
"""With ``rng``, a click is drawn among the region's pixels at least this share of its
largest boundary distance away from the boundary (the inner part)."""


def inner_distance(region: np.ndarray) -> np.ndarray:
    """Distance (pixels) of each region pixel to the nearest pixel outside it or the image."""
    padded = np.pad(np.asarray(region, bool), 1)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def _centre(region: np.ndarray, rng: np.random.Generator | None) -> tuple[int, int]:
    dist = inner_distance(region)
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return int(y), int(x)
    cand = np.argwhere(dist >= max(INNER_SHARE * float(dist.max()), min(1.0, float(dist.max()))))
    y, x = cand[int(rng.integers(len(cand)))]
    return int(y), int(x)


def first_click(mask: np.ndarray, rng: np.random.Generator | None = None) -> Point | None:
    """A positive click inside the object (its most interior point); None for an empty mask."""
    m = np.asarray(mask) > 0
    if not m.any():
        return None
    y, x = _centre(m, rng)
    return Point(y, x, True)


def box_of(mask: np.ndarray, rng: np.random.Generator | None = None,
           jitter: float = 0.1) -> Box | None:
    """The tight box around the object; with ``rng`` each side moves by up to ``jitter`` of
    the object's extent, in or out (kept inside the image). None for an empty mask."""
    m = np.asarray(mask) > 0
    if not m.any():
        return None
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    if rng is not None and jitter > 0:
        hy, hx = (y1 - y0 + 1) * jitter, (x1 - x0 + 1) * jitter
        dy0, dy1 = (round(float(v)) for v in rng.uniform(-hy, hy, 2))
        dx0, dx1 = (round(float(v)) for v in rng.uniform(-hx, hx, 2))
        h, w = m.shape
        y0, y1 = min(max(y0 + dy0, 0), h - 1), min(max(y1 + dy1, 0), h - 1)
        x0, x1 = min(max(x0 + dx0, 0), w - 1), min(max(x1 + dx1, 0), w - 1)
    return Box.spanning(y0, x0, y1, x1)


def _error_regions(gt: np.ndarray, pred: np.ndarray) -> list[tuple[int, bool, np.ndarray]]:
    """(area, positive?, region) of every error region, largest first (missed object first
    on equal areas)."""
    g, p = np.asarray(gt) > 0, np.asarray(pred) > 0
    if g.shape != p.shape:
        raise ValueError(f"mask shapes differ: {g.shape} and {p.shape}")
    out = []
    for positive, err in ((True, g & ~p), (False, p & ~g)):
        lab, n = ndimage.label(err)
        if n:
            areas = np.bincount(lab.ravel())[1:]
            out += [(int(areas[k]), positive, lab == k + 1) for k in range(n)]
    out.sort(key=lambda t: (-t[0], not t[1]))
    return out


def error_clicks(gt: np.ndarray, pred: np.ndarray, n: int,
                 rng: np.random.Generator | None = None) -> list[Point]:
    """Up to ``n`` clicks, one in each of the ``n`` largest error regions of ``pred``."""
    return [Point(*_centre(region, rng), positive)
            for _, positive, region in _error_regions(gt, pred)[:max(n, 0)]]


def next_click(gt: np.ndarray, pred: np.ndarray,
               rng: np.random.Generator | None = None) -> Point | None:
    """The correction a user makes next: a click at the centre of the largest error region,
    positive if it is missed object, negative if it is not the object; None when none."""
    clicks = error_clicks(gt, pred, 1, rng)
    return clicks[0] if clicks else None


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def click_until(gt: np.ndarray, predict: Callable[[SlicePrompts, np.ndarray | None], np.ndarray],
                *, target_iou: float = 0.9, max_clicks: int = 20,
                previous_as_guide: bool = True) -> list[float]:
    """The IoU after each click of a simulated session, up to ``target_iou`` or ``max_clicks``.

    ``predict(prompts, guide)`` is the model: the clicks so far and (with
    ``previous_as_guide``) its own previous mask as the guide. The number of
    clicks to reach an IoU t (NoC@t) is the index of the first IoU >= t, plus
    one; ``max_clicks`` when never reached.
    """
    gt = np.asarray(gt) > 0
    click = first_click(gt)
    if click is None:
        raise ValueError("the ground truth is empty: nothing to click on")
    prompts = SlicePrompts((click,))
    pred, scores = None, []
    for _ in range(max_clicks):
        pred = np.asarray(predict(prompts, pred if previous_as_guide else None)) > 0
        scores.append(iou(pred, gt))
        if scores[-1] >= target_iou:
            break
        click = next_click(gt, pred)
        if click is None:
            break
        prompts = prompts.with_point(click)
    return scores


def box_or_clicks(target: np.ndarray, kind: str, rng: np.random.Generator, mix: object,
                  ) -> tuple[SlicePrompts, np.ndarray | None]:
    """A simulated user's box (``kind`` "box") or clicks (else) on ``target``, and the guide.

    ``mix`` gives ``max_clicks``, ``extra_click`` and ``previous_as_guide`` (a
    :class:`~llm4seg_core.datasets.prompted.PromptMix`). A box is jittered and,
    sometimes, corrected by one click; clicks are a first one inside the object
    and 0 to ``max_clicks - 1`` more at the largest errors of a perturbed
    "previous prediction", which is then the guide half the time. The training
    items and the prompt fine-tune draw their prompts here (in this order of
    random draws: a seed gives the same items).
    """
    guide = None
    if kind == "box":
        box = box_of(target, rng)
        points: list[Point] = []
        if rng.uniform() < mix.extra_click:
            previous = perturb(target, rng)
            points = error_clicks(target, previous, 1, rng)
            guide = previous if rng.uniform() < mix.previous_as_guide else None
        return SlicePrompts(tuple(points), box), guide
    points = [first_click(target, rng)]
    extra = int(rng.integers(mix.max_clicks))
    if extra:
        previous = perturb(target, rng)
        points += error_clicks(target, previous, extra, rng)
        guide = previous if rng.uniform() < mix.previous_as_guide else None
    return SlicePrompts(tuple(points)), guide


def perturb(mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """An imperfect copy of ``mask`` (bool), as a model's previous mask or a neighbouring
    slice might be: shifted, grown or shrunk, sometimes cut or with a stray blob.

    Changes scale with the object's radius (and ``strength``); never empty
    for a non-empty ``mask``.
    """
    m = np.asarray(mask) > 0
    if not m.any():
        return m.copy()
    h, w = m.shape
    r = float(np.sqrt(m.sum() / np.pi))
    out = m
    shift = rng.uniform(-0.15, 0.15, 2) * r * strength
    out = ndimage.shift(out.astype(np.uint8), shift, order=0, mode="constant") > 0
    k = int(round(float(rng.uniform(-0.2, 0.2)) * r * strength))
    if k > 0:
        out = ndimage.binary_dilation(out, iterations=k)
    elif k < 0:
        eroded = ndimage.binary_erosion(out, iterations=-k)
        out = eroded if eroded.any() else out
    u = float(rng.uniform())
    if u < 0.25 * strength:  # cut off a part beyond a random line near the centre
        ys, xs = np.nonzero(out)
        cy, cx = ys.mean(), xs.mean()
        angle = float(rng.uniform(0, 2 * np.pi))
        yy, xx = np.mgrid[:h, :w]
        along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        side = along > float(rng.uniform(0.3, 0.8)) * r
        cut = out & ~side
        out = cut if cut.any() else out
    elif u < 0.5 * strength:  # a stray blob near the object
        ys, xs = np.nonzero(m)
        i = int(rng.integers(len(ys)))
        angle = float(rng.uniform(0, 2 * np.pi))
        d = float(rng.uniform(0.8, 1.5)) * r
        by, bx = ys[i] + d * np.sin(angle), xs[i] + d * np.cos(angle)
        br = max(1.0, float(rng.uniform(0.1, 0.35)) * r)
        yy, xx = np.mgrid[:h, :w]
        out = out | ((yy - by) ** 2 + (xx - bx) ** 2 <= br * br)
    return out if out.any() else m.copy()
