"""Tasks of the few-shot volume-completion benchmark (bench/bench_fewshot.py).

A task is one real image volume with one real binary mask (see shared/DATA.md):

    lung2                 demo case lung2: chest CT, expert tumour mask (pyradiomics-bhklab sdist)
    brain1                demo case brain1: MRI, expert lesion mask
    colin-hippocampus-l   Colin27 T1 (ch2.nii.gz) + AAL Hippocampus_L   (Debian mricron-data)
    colin-caudate-r       Colin27 T1 + AAL Caudate_R
    colin-thalamus-l      Colin27 T1 + AAL Thalamus_L
    mni152-brain          MNI152 2009a 1 mm template + its brain mask   (PyPI nilearn, offline)

Any other AAL structure is reachable as ``aal:<Name>`` (a name from aal.nii.txt).
The slice axis is the volume's first numpy axis (z), as the Segmenter uses.

Also here: :func:`choose_slices` (the k annotated slices, evenly spaced inside
the structure's z-extent, deterministic) and :func:`score_other_slices` (Dice
on every slice that was not annotated, slices without the structure included,
so false positives there lower the score).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm4seg_core.slices import choose_slices, structure_slices
from llm4seg_core.io import Volume, read_image, read_mask
from llm4seg_core.metrics import score

__all__ = [
    "AAL_TASKS",
    "DEFAULT_TASKS",
    "MRICRON_TEMPLATES",
    "Task",
    "TaskUnavailable",
    "choose_slices",
    "load_task",
    "score_other_slices",
    "structure_slices",
    "task_names",
    "volume_from_nibabel",
]

MRICRON_TEMPLATES = Path(os.environ.get("MRICRON_TEMPLATES", "/usr/share/mricron/templates"))
"""Where Debian's mricron-data puts Colin27 (ch2.nii.gz) and the AAL atlas."""

AAL_TASKS: dict[str, str] = {
    "colin-hippocampus-l": "Hippocampus_L",
    "colin-caudate-r": "Caudate_R",
    "colin-thalamus-l": "Thalamus_L",
}

DEFAULT_TASKS: tuple[str, ...] = (
    "lung2", "brain1", *AAL_TASKS, "mni152-brain",
)


class TaskUnavailable(Exception):
    """The data of a task is not on this machine (the message says how to get it)."""


@dataclass
class Task:
    name: str
    description: str
    volume: Volume
    mask: np.ndarray  # uint8 0/1, the volume's spatial shape
    source: str
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.mask.shape) != tuple(self.volume.spatial_shape):
            raise ValueError(
                f"task {self.name}: mask shape {self.mask.shape} != image shape "
                f"{self.volume.spatial_shape}"
            )
        self.mask = np.ascontiguousarray(self.mask > 0, dtype=np.uint8)
        if not self.mask.any():
            raise ValueError(f"task {self.name}: the mask is empty")

    @property
    def structure_slices(self) -> list[int]:
        return structure_slices(self.mask)


# --------------------------------------------------------------------------- slices, scoring


def score_other_slices(pred: np.ndarray, ref: np.ndarray, annotated: Sequence[int]) -> dict:
    """Overlap of ``pred`` with ``ref`` on every slice except ``annotated``.

    Slices without the structure count: predicted voxels there are false
    positives. Returns dice, precision, sensitivity and voxel counts, plus the
    number of scored slices and the predicted voxels on structure-free slices.
    """
    s = score(pred, ref, exclude_slices=list(annotated), with_hd95=False)
    keep = np.ones(ref.shape[0], bool)
    keep[list(annotated)] = False
    empty = keep & ~ref.reshape(ref.shape[0], -1).any(1)
    fp_empty = int(np.count_nonzero(pred[empty]))
    return {
        "dice": s.dice,
        "precision": s.precision,
        "sensitivity": s.sensitivity,
        "voxels_pred": s.voxels_pred,
        "voxels_ref": s.voxels_ref,
        "scored_slices": int(keep.sum()),
        "fp_voxels_on_empty_slices": fp_empty,
    }


# --------------------------------------------------------------------------- loaders


def _demo(case: str, what: str) -> Task:
    from llm4seg_core.data import demo_case, demo_data_available

    if not demo_data_available():
        raise TaskUnavailable("demo data not fetched: run `llm4seg data fetch`")
    image, label = demo_case(case)
    vol = read_image(image)
    mask = read_mask(label, reference=vol)
    return Task(case, what, vol, (mask > 0).astype(np.uint8),
                "PyPI sdist pyradiomics-bhklab==3.1.4 (BSD-3)", {"label_values": [
                    int(v) for v in np.unique(mask) if v]})


def aal_labels(path: Path | None = None) -> dict[str, int]:
    """AAL structure name -> voxel value, from aal.nii.txt (``value name code`` per line)."""
    path = path or MRICRON_TEMPLATES / "aal.nii.txt"
    out: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[parts[1]] = int(parts[0])
    return out


_colin_cache: dict[str, object] = {}


def _colin(structure: str, name: str) -> Task:
    ch2 = MRICRON_TEMPLATES / "ch2.nii.gz"
    aal = MRICRON_TEMPLATES / "aal.nii.gz"
    txt = MRICRON_TEMPLATES / "aal.nii.txt"
    if not (ch2.is_file() and aal.is_file() and txt.is_file()):
        raise TaskUnavailable(
            f"Colin27/AAL not found in {MRICRON_TEMPLATES}: apt-get install -y mricron-data"
        )
    names = aal_labels(txt)
    if structure not in names:
        raise TaskUnavailable(f"no AAL structure {structure!r} in {txt}")
    if "vol" not in _colin_cache:
        import SimpleITK as sitk

        vol = read_image(ch2)
        lab_img = sitk.ReadImage(str(aal))
        same = (lab_img.GetSize() == tuple(reversed(vol.spatial_shape))
                and np.allclose(lab_img.GetSpacing(), vol.spacing)
                and np.allclose(lab_img.GetOrigin(), vol.origin)
                and np.allclose(lab_img.GetDirection(), vol.direction))
        if not same:  # put the atlas on the image grid (nearest neighbour keeps labels)
            lab_img = sitk.Resample(lab_img, vol.to_sitk(), sitk.Transform(),
                                    sitk.sitkNearestNeighbor, 0, lab_img.GetPixelID())
        _colin_cache["vol"] = vol
        _colin_cache["labels"] = sitk.GetArrayFromImage(lab_img)
        _colin_cache["resampled"] = not same
    vol = _colin_cache["vol"]
    labels = _colin_cache["labels"]
    value = names[structure]
    mask = (labels == value).astype(np.uint8)
    return Task(name, f"Colin27 T1 MRI, AAL {structure}", vol, mask,  # type: ignore[arg-type]
                "Debian mricron-data (ch2.nii.gz + aal.nii.gz)",
                {"aal_value": value, "atlas_resampled": _colin_cache["resampled"]})


def volume_from_nibabel(img, source: str = "") -> Volume:
    """A nibabel image (RAS affine, x-y-z array) as our Volume (LPS geometry, z-y-x array)."""
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {data.shape}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(img.affine, dtype=float)
    lin = lps[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    return Volume(
        array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=tuple(spacing), origin=tuple(lps[:3, 3]),
        direction=tuple(direction.reshape(-1)),
        kind="volume", modality="MR", source=source,
    )


def _mni152(name: str) -> Task:
    try:
        from nilearn import datasets
    except ImportError:
        raise TaskUnavailable("nilearn not installed: pip install nilearn") from None
    t = datasets.load_mni152_template(resolution=1)
    m = datasets.load_mni152_brain_mask(resolution=1)
    if t.shape != m.shape or not np.allclose(t.affine, m.affine):
        raise TaskUnavailable("nilearn's MNI152 template and brain mask are on different grids")
    vol = volume_from_nibabel(t, "nilearn MNI152 2009a template (1 mm)")
    mask = volume_from_nibabel(m).array
    return Task(name, "MNI152 2009a T1 template, brain mask", vol, (mask > 0).astype(np.uint8),
                "PyPI nilearn (bundled, offline)")


LOADERS: dict[str, Callable[[], Task]] = {
    "lung2": lambda: _demo("lung2", "chest CT, tumour"),
    "brain1": lambda: _demo("brain1", "brain MRI, lesion"),
    **{name: (lambda s=s, n=name: _colin(s, n)) for name, s in AAL_TASKS.items()},
    "mni152-brain": lambda: _mni152("mni152-brain"),
}


def task_names() -> list[str]:
    return list(LOADERS)


def load_task(name: str) -> Task:
    """Load a task by name (``aal:<Name>`` for any AAL structure on Colin27)."""
    if name.startswith("aal:"):
        structure = name[4:]
        return _colin(structure, f"colin-{structure.lower().replace('_', '-')}")
    if name not in LOADERS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(LOADERS)} or aal:<Name>")
    return LOADERS[name]()
