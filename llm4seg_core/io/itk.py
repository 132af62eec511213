"""SimpleITK plumbing shared by the file and DICOM readers.

Reading with checks (empty, 4-D, odd pixel types), the pixels as numpy, the
geometry canonicalised, and ITK's error text shortened for a person.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from llm4seg_core.errors import LLM4SegError

_MULTI_MSG = (
    "4-D images (time series / multi-channel) are not supported; extract one 3-D volume first"
)


def sitk_reason(exc: BaseException) -> str:
    """The most telling line of a SimpleITK/ITK exception, shortened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    best = lines[-1] if lines else type(exc).__name__
    for ln in reversed(lines):
        if "ERROR" in ln or "error" in ln:
            best = ln.split("ERROR:", 1)[-1]
            break
    best = re.sub(r"\b\w+\(0x[0-9a-fA-F]+\):\s*", "", best).strip()  # drop "GDCMImageIO(0x55..): "
    return best[:200]


def sitk_read(path: Path, fmt: str, image_io: str | None = None, *,
              file: Path | None = None) -> sitk.Image:
    """Read one file with ITK; damaged, empty and 4-D files raise LLM4SegError.

    ``file``: what ITK opens when it is not ``path`` itself (a link named with
    the suffix of the format the content shows); messages name ``path``.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file or path))
    if image_io:
        reader.SetImageIO(image_io)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise LLM4SegError(
            f"cannot read {path.name}: not a valid {fmt} file, or it is damaged/truncated "
            f"({sitk_reason(exc)})"
        ) from exc
    size = reader.GetSize()
    if any(int(s) == 0 for s in size):
        raise LLM4SegError(
            f"{path.name} holds an empty image (size {tuple(size)}); choose another file"
        )
    _check_plausible_size(path, tuple(int(s) for s in size), reader, file or path)
    _check_dims(tuple(int(s) for s in size), reader.GetNumberOfComponents(), path)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise LLM4SegError(
            f"cannot read {path.name}: the {fmt} file is damaged or truncated "
            f"({sitk_reason(exc)}); "
            "copy or export it again"
        ) from exc


MAX_IMAGE_BYTES = 32 * 2**30
"""The largest image read (32 GiB): a header announcing more is damaged, or too large here."""

_MAX_RATIO = 1100  # deflate packs at most ~1032:1; a header announcing more than this is wrong


def _check_plausible_size(path: Path, size: tuple[int, ...], reader: sitk.ImageFileReader,
                          file: Path) -> None:
    """Refuse, before ITK allocates it, an image larger than its file can hold (a damaged
    header announcing huge sizes) or larger than :data:`MAX_IMAGE_BYTES`."""
    n = 1
    for s in size:
        n *= s
    try:
        per = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    except Exception:
        per = ""
    width = 8 if "64" in per or "double" in per else 4 if "32" in per or "float" in per else \
        2 if "16" in per else 1
    n_bytes = n * width * max(int(reader.GetNumberOfComponents()), 1)
    if n_bytes > MAX_IMAGE_BYTES:
        raise LLM4SegError(f"{path.name}: its header announces an image of {tuple(size)} voxels "
                           f"({n_bytes / 2**30:.0f} GiB): the header is damaged, or the image is "
                           "too large to read here")
    if path.name.lower().endswith((".mhd", ".nhdr", ".hdr")):
        return  # the pixels are in another file
    try:
        on_disk = file.stat().st_size
    except OSError:
        return
    if n_bytes > _MAX_RATIO * on_disk + 2**20:
        raise LLM4SegError(f"{path.name}: its header announces {tuple(size)} voxels "
                           f"({n_bytes:,} bytes), more than its {on_disk:,} bytes can hold: the "
                           "header is damaged or the file truncated; copy or export it again")


def _check_dims(size: tuple[int, ...], n_components: int, path: Path) -> None:
    if len(size) > 3 and any(s != 1 for s in size[3:]):
        raise LLM4SegError(f"{path.name} has size {size}: {_MULTI_MSG}")
    if n_components not in (1, 2, 3, 4):
        raise LLM4SegError(f"{path.name} has {n_components} values per pixel: {_MULTI_MSG}")


def squeeze_extra_dims(img: sitk.Image, path: Path) -> sitk.Image:
    """Drop trailing axes of size 1 (a 4-D file holding one volume); refuse real 4-D."""
    size = list(img.GetSize())
    if len(size) <= 3:
        return img
    if any(s != 1 for s in size[3:]):
        raise LLM4SegError(f"{path.name} has size {tuple(size)}: {_MULTI_MSG}")
    extract = sitk.ExtractImageFilter()
    extract.SetSize(size[:3] + [0] * (len(size) - 3))
    extract.SetIndex([0] * len(size))
    extract.SetDirectionCollapseToStrategy(sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    try:
        return extract.Execute(img)
    except RuntimeError:
        extract.SetDirectionCollapseToStrategy(sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOIDENTITY)
        return extract.Execute(img)


def pixels(img: sitk.Image, path: Path) -> tuple[np.ndarray, bool]:
    """Array from an image; colour handling: RGB kept, alpha dropped, other vectors refused."""
    n_comp = img.GetNumberOfComponentsPerPixel()
    arr = sitk.GetArrayFromImage(img)
    if n_comp == 1:
        return arr, False
    integer = np.issubdtype(arr.dtype, np.integer)
    if n_comp == 2 and integer:  # gray + alpha
        return np.ascontiguousarray(arr[..., 0]), False
    if n_comp in (3, 4) and integer:
        return np.ascontiguousarray(arr[..., :3]), True
    raise LLM4SegError(f"{path.name} has {n_comp} {arr.dtype} values per pixel: {_MULTI_MSG}")


def geometry(img: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Geometry of an image, canonicalised so that write -> read is a fixed point.

    File formats store geometry with rounding noise (NRRD keeps spacing x
    direction, so 1.0 comes back as 0.9999999999999999). Spacing and origin are
    kept to 12 significant digits and direction cosines to 12 decimals: far
    below any physical meaning, and stable under every later write and read.
    """
    return (
        tuple(float(f"{float(v):.12g}") for v in img.GetSpacing()),
        tuple(float(f"{float(v):.12g}") + 0.0 for v in img.GetOrigin()),
        tuple(round(float(v), 12) + 0.0 for v in img.GetDirection()),
    )


def check_nonempty(arr: np.ndarray, path: Path) -> None:
    if arr.size == 0:
        raise LLM4SegError(
            f"{path.name} holds an empty image (shape {tuple(arr.shape)}); choose another file"
        )
