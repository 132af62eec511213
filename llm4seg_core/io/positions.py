"""Slice positions of a DICOM series: duplicates dropped, gaps and uneven spacing refused.

ITK stacks a series' files on a uniform grid from the first position to the
last (spacing ``(last - first) / (n - 1)``). A duplicate slice, a missing one,
or uneven spacing therefore moves every real slice after it, and a mask drawn
on that grid lands beside the anatomy it was drawn on. So, before reading:

- slices at the same position are duplicates: the first (by InstanceNumber,
  then file name) is kept, the others dropped, and the read says so;
- when most positions hold several slices (cardiac phases, echoes, a 4-D
  series in one SeriesInstanceUID) nothing is dropped: the series is refused;
- when the kept slices are not evenly spaced (a gap, a slice moved to another
  series, variable spacing) the series is refused with one message saying
  where, by how much, and what to do.

Refusing rather than resampling onto a uniform grid with the gaps marked:
a grid with made-up slices would give a mask whose slices match no file of
the series (a DICOM-SEG could not reference them), the model would segment
blank slices, and a person could not tell the real slices from the filled
ones. A complete export of the series is what every peer tool needs too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAME_POSITION_MM = 0.01
"""Slices whose positions along the normal differ by less than this are at the same place."""

UNIFORM_TOLERANCE = 0.1
"""The most a real slice may sit off the uniform grid, as a fraction of the slice spacing."""


@dataclass
class SlicePlan:
    """What to read of a series: the slices kept (indices into the sorted files) and why not others."""

    keep: list[int]
    dropped: list[str] = field(default_factory=list)  # one note per dropped duplicate
    problem: str | None = None  # why the kept slices cannot be read as one uniform volume
    spacing: float | None = None  # the uniform slice spacing, when there is one


def _mm(v: float) -> str:
    return f"{v:.3g} mm"


def plan_slices(names: list[str], positions: list[float | None],
                sop_uids: list[str | None]) -> SlicePlan:
    """The plan for a series whose files (sorted along the normal) are ``names``.

    ``positions``: each file's position along the slice normal (mm; None when
    it has no ImagePositionPatient: then nothing can be checked and all are kept).
    """
    n = len(names)
    if n < 2 or any(p is None for p in positions):
        return SlicePlan(list(range(n)))
    pos = [float(p) for p in positions]  # type: ignore[arg-type]
    keep = [0]
    dropped: list[str] = []
    n_dup = 0
    for i in range(1, n):
        j = keep[-1]
        if abs(pos[i] - pos[j]) < SAME_POSITION_MM:
            n_dup += 1
            how = ("an exact copy (same SOPInstanceUID)" if sop_uids[i] and sop_uids[i] == sop_uids[j]
                   else "another slice at the same position")
            dropped.append(f"dropped {names[i]}: {how} as {names[j]} (at {pos[j]:.2f} mm)")
        else:
            keep.append(i)
    n_pos = len(keep)
    if n_dup and n_dup >= n_pos:
        return SlicePlan(keep, [], (
            f"{n} slices at only {n_pos} positions: several slices at each position (cardiac "
            "phases, echoes or time points in one series); export one phase or echo as its own "
            "series"))
    plan = SlicePlan(keep, dropped)
    if n_pos < 3:
        if n_pos == 2:
            plan.spacing = pos[keep[1]] - pos[keep[0]]
        return plan
    p = np.array([pos[k] for k in keep])
    step = (p[-1] - p[0]) / (n_pos - 1)  # the spacing ITK gives the stack
    off = p - (p[0] + step * np.arange(n_pos))
    worst = float(np.max(np.abs(off)))
    if worst <= max(UNIFORM_TOLERANCE * abs(step), SAME_POSITION_MM):
        plan.spacing = float(step)
        return plan
    d = np.diff(p)
    typical = float(np.median(d))
    big = [i for i in range(len(d)) if d[i] > 1.5 * typical]
    if big:
        i = big[0]
        missing = int(round(d[i] / typical)) - 1
        where = (f"a gap of {_mm(d[i])} between {names[keep[i]]} and {names[keep[i + 1]]} "
                 f"(at {p[i]:.2f} and {p[i + 1]:.2f} mm; the other slices are {_mm(typical)} "
                 f"apart): {'about ' + str(missing) if missing > 1 else 'one'} slice"
                 f"{'s' if missing > 1 else ''} missing")
        if len(big) > 1:
            where += f", and {len(big) - 1} more gap{'s' if len(big) > 2 else ''}"
    else:
        where = f"uneven slice spacing, from {_mm(float(d.min()))} to {_mm(float(d.max()))}"
    plan.problem = (
        f"{where}; read as one volume, real slices would move by up to {_mm(worst)}, so the "
        "mask would not fit the scan. Export the complete series again (or resample it to even "
        "spacing first, e.g. in 3D Slicer)")
    return plan


def gap_positions(positions: list[float], spacing_hint: float | None = None) -> list[tuple[float, float]]:
    """The (start, end) of the gaps in sorted ``positions`` (steps over 1.5 times the typical one)."""
    if len(positions) < 3:
        return []
    p = np.sort(np.asarray(positions, float))
    d = np.diff(p)
    typical = spacing_hint or float(np.median(d))
    return [(float(p[i]), float(p[i + 1])) for i in range(len(d)) if d[i] > 1.5 * typical]


def series_refusal(chosen, series: list, folder) -> str:
    """The one message refusing ``chosen`` (a :class:`~llm4seg_core.io.DicomSeries` with a
    ``problem``), naming files of other series of ``folder`` that lie in its gaps."""
    text = f"DICOM series {chosen.uid} ({chosen.label}) in {folder.name}: {chosen.problem}"
    known = [p for p in chosen.positions if p is not None]
    gaps = gap_positions(known)
    strays = []
    for other in series:
        if other is chosen or other.normal is None or chosen.normal is None:
            continue
        if not np.allclose(other.normal, chosen.normal, atol=1e-3):
            continue
        for f, p in zip(other.files, other.positions):
            if p is not None and any(a + SAME_POSITION_MM < p < b - SAME_POSITION_MM for a, b in gaps):
                strays.append(f"{f.name} (series {other.uid})")
    if strays:
        one = len(strays) == 1
        text += (f". {', '.join(strays[:3])}{' and more' if len(strays) > 3 else ''} "
                 f"{'lies' if one else 'lie'} in the gap: if {'it belongs' if one else 'they belong'}"
                 f" to this series, {'its' if one else 'their'} SeriesInstanceUID is wrong")
    return text
