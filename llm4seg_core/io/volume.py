"""The image records: :class:`Volume` (pixels plus geometry) and :class:`DicomSeries`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from llm4seg_core.errors import LLM4SegError


@dataclass(eq=False)
class Volume:
    """An image in memory: pixels in numpy order plus geometry in ITK order."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    kind: str = "volume"
    modality: str | None = None
    is_rgb: bool = False
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    dicom_files: tuple[str, ...] = ()  # read from DICOM: its files, in slice order (DICOM-SEG refers to them)

    def __post_init__(self) -> None:
        if self.kind not in ("volume", "image2d"):
            raise LLM4SegError(f"unknown image kind {self.kind!r}; use 'volume' or 'image2d'")
        nd = self.ndim
        want = nd + (1 if self.is_rgb else 0)
        if self.array.ndim != want:
            raise LLM4SegError(
                f"a {'RGB ' if self.is_rgb else ''}{self.kind} needs a {want}-D array, got shape "
                f"{tuple(self.array.shape)}; pass (z,y,x) for volumes, (y,x) for 2-D pictures, "
                "plus a last axis of 3 for RGB"
            )
        if self.is_rgb and self.array.shape[-1] != 3:
            raise LLM4SegError(
                f"an RGB image needs a last axis of 3, got shape {tuple(self.array.shape)}"
            )
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in self.direction)
        if len(self.spacing) != nd or len(self.origin) != nd or len(self.direction) != nd * nd:
            raise LLM4SegError(
                f"geometry does not fit a {nd}-D image: spacing {self.spacing}, "
                f"origin {self.origin}, "
                f"direction of length {len(self.direction)} (needs {nd}, {nd} and {nd * nd} values)"
            )

    def __repr__(self) -> str:
        return (
            f"Volume(kind={self.kind!r}, shape={tuple(self.array.shape)}, "
            f"dtype={self.array.dtype}, "
            f"modality={self.modality!r}, is_rgb={self.is_rgb}, spacing={self.spacing}, "
            f"source={self.source!r})"
        )

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions: 3 for a volume, 2 for a 2-D picture."""
        return 3 if self.kind == "volume" else 2

    @property
    def n_slices(self) -> int:
        """Number of z slices (1 for a 2-D picture)."""
        return int(self.array.shape[0]) if self.kind == "volume" else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array shape without the RGB axis: the shape a mask must have."""
        shape = tuple(int(s) for s in self.array.shape)
        return shape[:-1] if self.is_rgb else shape

    @property
    def scale_zyx(self) -> tuple[float, ...]:
        """Spacing in numpy/napari axis order."""
        return tuple(reversed(self.spacing))

    @property
    def translate_zyx(self) -> tuple[float, ...]:
        """Origin in numpy/napari axis order."""
        return tuple(reversed(self.origin))

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as an (ndim, ndim) matrix in ITK (x, y, z) order."""
        nd = self.ndim
        return np.asarray(self.direction, dtype=float).reshape(nd, nd)

    @property
    def affine_zyx(self) -> np.ndarray:
        """Homogeneous (ndim+1)x(ndim+1) matrix from array index (z,y,x) to physical (z,y,x) mm.

        Includes spacing, direction and origin; for napari's ``affine=``.
        """
        nd = self.ndim
        rev = np.eye(nd)[::-1]
        linear = rev @ self.direction_matrix @ np.diag(self.spacing) @ rev
        out = np.eye(nd + 1)
        out[:nd, :nd] = linear
        out[:nd, nd] = self.translate_zyx
        return out

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image holding ``array`` (default: this image's array) in this geometry.

        ``array`` must have this image's spatial shape, optionally with one extra
        last axis of components (e.g. RGB).
        """
        arr = self.array if array is None else np.asarray(array)
        spatial = self.spatial_shape
        if arr.shape == spatial:
            is_vector = False
        elif arr.ndim == len(spatial) + 1 and arr.shape[:-1] == spatial:
            is_vector = True
        else:
            raise LLM4SegError(
                f"array of shape {tuple(arr.shape)} does not fit this image of shape {spatial}"
            )
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=is_vector)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


@dataclass
class DicomSeries:
    """One DICOM series found in a folder (what a series picker shows)."""

    uid: str
    description: str
    modality: str | None
    n_files: int
    files: list[Path]
    n_frames: int = 0  # frames in all files together (a cine file has one file, many frames)
    dropped: list[str] = field(default_factory=list)  # duplicate slices left out, one note each
    problem: str | None = None  # why the files cannot be read as one evenly spaced volume
    positions: list[float | None] = field(default_factory=list)  # of ``files``, along ``normal``
    normal: tuple[float, ...] | None = None  # the slice normal (from ImageOrientationPatient)

    @property
    def label(self) -> str:
        """A one-line description for a picker: description, modality, file count."""
        desc = self.description or "(no description)"
        return (
            f"{desc} [{self.modality or '?'}] {self.n_files} file{'s' if self.n_files != 1 else ''}"
        )


def add_warning(vol: Volume, text: str) -> None:
    """Add ``text`` to ``vol.meta["warning"]``: what a front end shows about how the file was read."""
    old = vol.meta.get("warning")
    vol.meta["warning"] = f"{old}; {text}" if old else text


def unit_geometry(nd: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Pixel-unit geometry of an ``nd``-D image: spacing 1, origin 0, identity direction."""
    return (
        (1.0,) * nd,
        (0.0,) * nd,
        tuple(float(v) for v in np.eye(nd).ravel()),
    )
