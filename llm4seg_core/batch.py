"""Folders of pictures: segment every picture of a folder, score a folder of masks against another.

A folder of PNG/JPG/BMP/TIFF pictures (ultrasound frames, dermoscopy, endoscopy)
is segmented picture by picture into an output folder, one mask per picture
with the same stem. A picture that cannot be read is reported and skipped;
the others go on. A folder holding DICOM files is a series, not a batch
(:func:`is_picture_folder` says which). Scoring pairs masks by stem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.jobs import Callbacks

__all__ = ["CaseScores", "FolderRun", "FolderScores", "PictureResult", "is_picture_folder",
           "list_pictures", "score_folders", "segment_folder", "stem_of"]


def stem_of(path: Path) -> str:
    """The file name without its (longest known) suffix: ``a.nii.gz`` -> ``a``."""
    from llm4seg_core.io import suffix_of

    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _files(folder: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files directly in ``folder`` (not in sub-folders, not hidden) with one of
    ``suffixes``, sorted by name."""
    from llm4seg_core.io import suffix_of

    return sorted(p for p in Path(folder).expanduser().iterdir()
                  if p.is_file() and not p.name.startswith(".") and suffix_of(p) in suffixes)


def list_pictures(folder: str | Path) -> list[Path]:
    """The PNG/JPG/BMP/TIFF pictures directly in ``folder``, sorted by name."""
    from llm4seg_core.io import PICTURE_SUFFIXES

    return _files(folder, PICTURE_SUFFIXES)


def is_picture_folder(folder: str | Path) -> bool:
    """True for a folder of pictures to segment one by one; False for a DICOM folder (a series)."""
    from llm4seg_core.io import folder_has_dicom

    folder = Path(folder).expanduser()
    return folder.is_dir() and not folder_has_dicom(folder) and bool(list_pictures(folder))


@dataclass
class PictureResult:
    """One picture of a batch: where its mask went, or why it has none."""

    source: Path
    output: Path | None = None
    foreground: int = 0  # labelled pixels
    seconds: float = 0.0
    error: str | None = None


@dataclass
class FolderRun:
    results: list[PictureResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> list[PictureResult]:
        return [r for r in self.results if r.error is None]

    @property
    def failed(self) -> list[PictureResult]:
        return [r for r in self.results if r.error is not None]


def segment_folder(segmenter: Any, folder: str | Path, out_folder: str | Path,
                   callbacks: Callbacks | None = None) -> FolderRun:
    """Segment every picture of ``folder`` into ``out_folder`` (``<stem>.png``, or the suffix
    the picture's geometry needs). Progress counts pictures; cancelling stops between two.
    A prompt model (or a PromptSegmenter) is refused with the Segmenter's message: it segments
    the object prompts point at, not whole pictures."""
    from llm4seg_core.inference import check_segmentation_model
    from llm4seg_core.io import mask_suffix_for, read_image, write_mask

    model = getattr(segmenter, "model", None)
    check_segmentation_model(getattr(model, "spec", None), getattr(segmenter, "name", ""))
    cb = callbacks or Callbacks()
    pictures = list_pictures(folder)
    if not pictures:
        raise LLM4SegError(f"{folder} holds no PNG/JPG/BMP/TIFF picture to segment")
    out = Path(out_folder).expanduser()
    if out.exists() and not out.is_dir():
        raise LLM4SegError(f"{out} is a file; for a folder of pictures -o names an output folder")
    stems = [stem_of(p) for p in pictures]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise LLM4SegError(f"several pictures share a name, so their masks would collide: "
                           f"{', '.join(twice[:5])}; rename them or segment them apart")
    out.mkdir(parents=True, exist_ok=True)
    run = FolderRun()
    t0 = time.perf_counter()
    segmenter.forward_for(len(pictures), cb.log)  # the fast path, converted now if it pays
    cb.progress(0, len(pictures))
    for i, (path, stem) in enumerate(zip(pictures, stems, strict=True)):
        if cb.cancelled():
            raise Cancelled(f"stopped after {i} of {len(pictures)} pictures; "
                            f"their masks are in {out}")
        result = PictureResult(path)
        t = time.perf_counter()
        try:
            volume = read_image(path)
            if volume.kind != "image2d":
                raise LLM4SegError(f"not a 2D picture ({volume.kind}, shape {volume.array.shape})")
            labels = segmenter.segment(volume)
            result.output = write_mask(labels, volume, out / f"{stem}{mask_suffix_for(volume)}")
            result.foreground = int(np.count_nonzero(labels))
        except LLM4SegError as exc:
            result.error = str(exc)
        result.seconds = time.perf_counter() - t
        run.results.append(result)
        cb.progress(i + 1, len(pictures))
    run.seconds = time.perf_counter() - t0
    return run


@dataclass
class CaseScores:
    name: str
    labels: dict[int, Any]  # label value -> metrics.Scores


@dataclass
class FolderScores:
    cases: list[CaseScores] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # references without a prediction
    unmatched: list[str] = field(default_factory=list)  # predictions without a reference

    def mean(self, label: int, metric: str) -> float | None:
        """The mean of ``metric`` for ``label`` over the cases where it is defined."""
        values = [c.labels[label].to_dict()[metric] for c in self.cases if label in c.labels]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    @property
    def label_values(self) -> list[int]:
        return sorted({k for c in self.cases for k in c.labels})


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    from llm4seg_core.io import PICTURE_SUFFIXES, SUPPORTED_MASK_SUFFIXES

    return {stem_of(p): p for p in _files(folder, SUPPORTED_MASK_SUFFIXES + PICTURE_SUFFIXES)}


def score_folders(pred_folder: str | Path, ref_folder: str | Path, *,
                  with_hd95: bool = True) -> FolderScores:
    """Score every reference mask of ``ref_folder`` against the prediction of the same stem."""
    from llm4seg_core.io import mask_labels, read_image, read_mask
    from llm4seg_core.metrics import score_labels

    preds = _masks_by_stem(Path(pred_folder).expanduser())
    refs = _masks_by_stem(Path(ref_folder).expanduser())
    if not refs:
        raise LLM4SegError(f"{ref_folder} holds no mask to score against")
    out = FolderScores(missing=sorted(set(refs) - set(preds)),
                       unmatched=sorted(set(preds) - set(refs)))
    pairs = []
    for name in sorted(set(refs) & set(preds)):
        ref_vol = read_image(refs[name])  # its spacing is the one HD95 is measured in
        ref, pred = mask_labels(ref_vol, refs[name]), read_mask(preds[name])
        if pred.shape != ref.shape:
            raise LLM4SegError(f"{preds[name].name} has shape {pred.shape} but its reference "
                               f"{refs[name].name} has shape {ref.shape}")
        pairs.append((name, pred, ref, ref_vol.scale_zyx))
    # every label of the folder is scored in every case: a case where both masks lack it
    # scores 1.0 (nothing to find, nothing found), as for one mask
    labels = sorted(set().union(*({int(v) for v in np.unique(a)} for _, p, r, _ in pairs
                                  for a in (p, r))) - {0})
    for name, pred, ref, spacing in pairs:
        out.cases.append(CaseScores(name, score_labels(pred, ref, spacing_zyx=spacing,
                                                       labels=labels, with_hd95=with_hd95)))
    if not out.cases:
        raise LLM4SegError(f"no prediction in {pred_folder} has the name of a mask in {ref_folder}")
    return out
