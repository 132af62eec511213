"""Prompts to the model's prompt channels: four maps at the model grid (numpy, no torch).

Channel order (after the image channels, :data:`CHANNELS`): positive clicks,
negative clicks, the box, the guide mask. Every map is 0 or 1.

- A click is a filled disc of :data:`CLICK_RADIUS` model pixels around the
  model-grid position of the clicked pixel's centre (a fixed size on the
  grid, whatever the slice's size: the network sees the same mark for the
  same gesture). Discs rather than Gaussian blobs: a binary mark stays the
  same mark under the training's rotations, flips and crops, and RITM-style
  disc maps are what interactive segmentation models train well with.
- A box is a filled rectangle, not its outline: every pixel of the box then
  says "inside" to the first convolutions, which are 3 x 3 (an outline would
  leave the inside to be inferred from a border up to 128 pixels away), and a
  filled box can never vanish or break when the grid is coarser than the
  slice.
- The guide mask (a neighbouring slice's mask, or the previous prediction of
  this slice) is resized with nearest neighbour.

Coordinates map from the slice's own size (H, W) to the S x S grid as the
image is resized: a pixel's centre ``y + 0.5`` lands at ``(y + 0.5) * S / H``.
The box and the guide use the same "nearest-exact" index map as the labels
of the training items (:mod:`llm4seg_core.datasets.items`), so a box drawn
on a label's extent covers the same grid pixels as that label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llm4seg_core.prompts.records import Box, Point, SlicePrompts

__all__ = ["CHANNELS", "CLICK_RADIUS", "box_map", "click_map", "grid_index", "guide_map",
           "prompt_maps", "to_grid"]

CHANNELS = ("positive clicks", "negative clicks", "box", "guide mask")
"""The prompt channels, in the order the network takes them."""

CLICK_RADIUS = 3.0
"""A click's disc radius in model pixels (29 pixels of the grid)."""


def grid_index(n: int, size: int) -> np.ndarray:
    """For each of ``size`` grid rows, the source row (of ``n``) it takes: torch's
    ``nearest-exact``, ``floor((i + 0.5) * n / size)``."""
    idx = np.floor((np.arange(size) + 0.5) * (n / size)).astype(np.int64)
    return np.minimum(idx, n - 1)


def to_grid(y: float, x: float, hw: tuple[int, int], size: int) -> tuple[float, float]:
    """The grid position (row, column; fractional) of pixel (y, x)'s centre of an (H, W) slice."""
    h, w = hw
    return (y + 0.5) * size / h - 0.5, (x + 0.5) * size / w - 0.5


def click_map(points: Sequence[Point], hw: tuple[int, int], size: int,
              radius: float = CLICK_RADIUS) -> np.ndarray:
    """A disc of ``radius`` grid pixels at each click (their union), float32 (S, S)."""
    out = np.zeros((size, size), np.float32)
    if not points:
        return out
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for p in points:
        gy, gx = to_grid(p.y, p.x, hw, size)
        out[(yy - gy) ** 2 + (xx - gx) ** 2 <= radius * radius] = 1.0
        # a click always marks the grid pixel it falls in (radius < 0.5 aside)
        out[min(max(round(gy), 0), size - 1), min(max(round(gx), 0), size - 1)] = 1.0
    return out


def _covered(lo: int, hi: int, n: int, size: int) -> np.ndarray:
    """Grid rows whose source row is in [lo, hi]; the nearest one when none is (a thin box)."""
    src = grid_index(n, size)
    rows = (src >= lo) & (src <= hi)
    if not rows.any():
        centre = (lo + hi + 1) / 2 * size / n - 0.5
        rows[min(max(round(centre), 0), size - 1)] = True
    return rows


def box_map(box: Box | None, hw: tuple[int, int], size: int) -> np.ndarray:
    """The filled box on the grid, float32 (S, S); zeros without a box."""
    out = np.zeros((size, size), np.float32)
    if box is None:
        return out
    rows = _covered(box.y0, box.y1, hw[0], size)
    cols = _covered(box.x0, box.x1, hw[1], size)
    out[np.ix_(rows, cols)] = 1.0
    return out


def guide_map(guide: np.ndarray | None, size: int) -> np.ndarray:
    """The guide mask (any non-zero is the object) resized to (S, S) by nearest neighbour."""
    if guide is None:
        return np.zeros((size, size), np.float32)
    g = np.asarray(guide)
    if g.ndim != 2:
        raise ValueError(f"a guide mask is one slice (H, W), not shape {g.shape}")
    return (g[np.ix_(grid_index(g.shape[0], size), grid_index(g.shape[1], size))] > 0).astype(
        np.float32)


def prompt_maps(prompts: SlicePrompts | None, guide: np.ndarray | None, hw: tuple[int, int],
                size: int) -> np.ndarray:
    """The four prompt channels (:data:`CHANNELS`) of one slice of size ``hw``: (4, S, S) float32.

    ``guide`` must have the slice's size ``hw`` (or be None).
    """
    if guide is not None and tuple(np.shape(guide)) != tuple(hw):
        raise ValueError(f"the guide mask has shape {np.shape(guide)}, the slice {tuple(hw)}")
    p = prompts or SlicePrompts()
    return np.stack([click_map(p.positive, hw, size), click_map(p.negative, hw, size),
                     box_map(p.box, hw, size), guide_map(guide, size)])
