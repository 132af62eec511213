from __future__ import annotations

import numpy as np
import pytest

from llm4seg_core.io import Volume


def make_ct(n: int = 5, size: int = 48, seed: int = 0) -> Volume:
    """A small synthetic CT in HU: air, a body ellipse, two lungs, a nodule."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 < 1
    lungs = (((yy - c) / (0.3 * size)) ** 2 + ((np.abs(xx - c) - 0.2 * size) / (0.14 * size)) ** 2) < 1
    sl = np.full((size, size), -1000, np.int16)
    sl[body] = 40
    sl[lungs] = -850
    arr = np.repeat(sl[None], n, axis=0) + rng.integers(-20, 20, (n, size, size)).astype(np.int16)
    return Volume(
        array=arr,
        spacing=(0.8, 0.8, 2.5),
        origin=(-10.0, 5.0, 100.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        kind="volume",
        modality=None,
        is_rgb=False,
        source="synthetic",
        meta={},
    )


@pytest.fixture
def small_ct() -> Volume:
    return make_ct()
