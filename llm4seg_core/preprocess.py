"""Intensity handling and slice preparation.

Two things are kept apart on purpose:

* display windows (:data:`CT_WINDOWS`): what a person sees. Changing the
  window never changes what the model gets;
* model normalisation (:func:`intensity_range`): a fixed HU range for CT, a
  fixed 0..255 range for 8-bit pictures, robust percentiles otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from llm4seg_core.io import Volume

CT_WINDOWS: dict[str, tuple[float, float]] = {
    # name: (level, width) in HU
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""Display presets for CT. They change only what is shown."""

CT_MODEL_RANGE = (-1000.0, 1000.0)
"""HU range the model sees for CT, whatever the display window."""


def window_limits(name: str) -> tuple[float, float]:
    """(low, high) display limits of a CT window preset."""
    level, width = CT_WINDOWS[name]
    return level - width / 2, level + width / 2


def looks_like_ct(volume: Volume) -> bool:
    """True for DICOM CT, or a grayscale integer/float volume holding HU (air near -1000)."""
    if volume.modality:
        return volume.modality.upper() == "CT"
    if volume.is_rgb or volume.kind != "volume":
        return False
    sample = volume.array[:: max(1, volume.array.shape[0] // 8), ::4, ::4]
    return bool(sample.size) and float(sample.min()) <= -500.0 and float(sample.max()) > 0.0


def intensity_range(volume: Volume, scheme: str = "auto") -> tuple[float, float]:
    """The (low, high) intensities mapped to the model's [-1, 1] input range."""
    if scheme == "ct" or (scheme == "auto" and looks_like_ct(volume)):
        return CT_MODEL_RANGE
    if scheme == "auto" and volume.array.dtype == np.uint8:
        return (0.0, 255.0)
    step = max(1, int(np.ceil((volume.array.size / 4_000_000) ** (1 / 3))))
    sample = volume.array[(slice(None, None, step),) * min(volume.array.ndim, 3)]
    lo, hi = np.percentile(sample.astype(np.float32, copy=False), [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def slice_stack(
    volume: Volume, indices: Sequence[int], in_channels: int
) -> np.ndarray:
    """Slices ``indices`` as float32 (B, C, H, W) at native resolution, not normalised.

    Grayscale volumes with 3 input channels get the neighbouring slices
    (z-1, z, z+1, clamped at the ends); RGB gets its colours; RGB into a
    1-channel model becomes luminance.
    """
    arr = volume.array
    if volume.kind == "image2d":
        arr = arr[None]
    n = arr.shape[0]
    out = []
    for z in indices:
        if volume.is_rgb:
            sl = arr[z].astype(np.float32)
            if in_channels == 1:
                sl = sl @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                chans = sl[None]
            else:
                chans = np.moveaxis(sl, -1, 0)
        elif in_channels == 3:
            if volume.kind == "image2d":
                chans = np.repeat(arr[z][None].astype(np.float32), 3, axis=0)
            else:
                chans = np.stack([arr[min(max(k, 0), n - 1)] for k in (z - 1, z, z + 1)]).astype(
                    np.float32
                )
        else:
            chans = arr[z][None].astype(np.float32)
        out.append(chans)
    return np.stack(out)


def to_model_input(
    stack: np.ndarray | torch.Tensor, limits: tuple[float, float], size: int
) -> torch.Tensor:
    """Normalise (B, C, H, W) to [-1, 1] and resize to (size, size)."""
    x = torch.as_tensor(stack, dtype=torch.float32)
    lo, hi = limits
    x = ((x.clamp(lo, hi) - lo) * (2.0 / (hi - lo))) - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def logits_to_labels(logits: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Model logits (B, K, S, S) -> uint8 labels (B, H, W) at the slice's own size.

    Binary (K == 1): logit > 0 (probability > 0.5). Multi-class: argmax.
    """
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(out_hw):
        logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(dim=1).to(torch.uint8)
