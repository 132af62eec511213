"""Post-processing of a segmented volume with what the person has already drawn.

:func:`keep_seeded_components` keeps, per label value, only the 3-D connected
regions of the prediction that touch that label on the corrected slices. A
clinician who outlined a tumour on two slices wants the tumour's continuation
on the other slices, not every bright blob elsewhere in the scan: regions that
never meet an outlined voxel are dropped. Regions that do meet one grow
through the uncorrected slices freely, so a lesion that extends past the
outlined slices is kept whole.

It is an option (``seeded`` in the UIs and ``--seeded`` on the command line):
a scan with several separate lesions of which only one was outlined loses
the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["keep_seeded_components"]


def _components(binary: np.ndarray) -> np.ndarray:
    """Connected-component labels (26-neighbourhood in 3-D, 8 in 2-D) via SimpleITK."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(binary.astype(np.uint8))
    cc = sitk.ConnectedComponent(img, True)  # fullyConnected=True
    return sitk.GetArrayViewFromImage(cc).astype(np.int64, copy=True)


def keep_seeded_components(labels: np.ndarray, corrected: Sequence[int]) -> tuple[np.ndarray, dict]:
    """Drop the regions of ``labels`` that touch no seed on the ``corrected`` slices.

    ``labels``: a (Z, Y, X) or (Y, X) label array whose corrected slices hold
    the person's masks and whose other slices hold the model's prediction.
    Returns the filtered copy (corrected slices unchanged by construction:
    every voxel of a seed belongs to a kept region) and a summary: per label
    value, regions kept and dropped and voxels removed. A label value with no
    seed voxel is left as it is (nothing anchors it), and the summary says so.
    """
    arr = np.asarray(labels)
    out = arr.copy()
    if arr.ndim == 2:
        # a 2-D image: the only slice is the corrected one, nothing to filter
        return out, {"note": "2-D image: nothing to filter"}
    zs = sorted({int(z) for z in corrected if 0 <= int(z) < arr.shape[0]})
    seeded_values = {int(v) for v in np.unique(arr[zs])} - {0} if zs else set()
    summary: dict = {"labels": {}}
    for value in (int(v) for v in np.unique(arr) if v != 0):
        if value not in seeded_values:
            summary["labels"][value] = {"seeded": False}
            continue
        cc = _components(arr == value)
        seeded_ids = np.unique(cc[zs])
        seeded_ids = seeded_ids[seeded_ids != 0]
        all_ids = int(cc.max())
        drop = (cc != 0) & ~np.isin(cc, seeded_ids)
        removed = int(np.count_nonzero(drop))
        out[drop] = 0
        summary["labels"][value] = {
            "seeded": True,
            "regions_kept": int(seeded_ids.size),
            "regions_dropped": all_ids - int(seeded_ids.size),
            "voxels_removed": removed,
        }
    return out, summary
