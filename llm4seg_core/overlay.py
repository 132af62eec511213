"""Overlay pictures: a windowed slice with a mask (and optionally a reference contour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llm4seg_core.atomic import atomic_write
from llm4seg_core.io import Volume
from llm4seg_core.preprocess import looks_like_ct, window_limits


def _contour(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def overlay_rgb(
    volume: Volume,
    labels: np.ndarray,
    z: int = 0,
    *,
    window: str | tuple[float, float] = "lung",
    reference: np.ndarray | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """uint8 RGB picture of slice ``z``: prediction filled in red, reference outlined in green."""
    img = volume.array if volume.kind == "volume" else volume.array[None]
    lab = labels if volume.kind == "volume" else labels[None]
    sl = img[z].astype(np.float32)
    if volume.is_rgb:
        base = np.clip(sl, 0, 255) if volume.array.dtype == np.uint8 else sl / max(sl.max(), 1) * 255
    else:
        if looks_like_ct(volume):
            lo, hi = window_limits(window) if isinstance(window, str) else window
        else:
            lo, hi = np.percentile(sl, [0.5, 99.5])
            hi = max(hi, lo + 1)
        gray = (np.clip(sl, lo, hi) - lo) / (hi - lo) * 255
        base = np.repeat(gray[..., None], 3, axis=-1)
    rgb = base.astype(np.float32)
    fg = lab[z] > 0
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * np.array([255, 40, 40], np.float32)
    if reference is not None:
        ref = (reference if volume.kind == "volume" else reference[None])[z] > 0
        rgb[_contour(ref)] = (60, 255, 60)
    return rgb.round().astype(np.uint8)


def write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB array as PNG, atomically."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(rgb, isVector=True)
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp), suffix=".png", staged=True)
