"""``PROMPTS.json``: reading and checking prompts against the image they are for (torch-free).

The file holds a list of prompts, in voxel indices of the image as read
(:mod:`llm4seg_core.io` axis order)::

    [{"type": "point", "zyx": [12, 80, 64], "positive": true},
     {"type": "point", "zyx": [12, 90, 70], "positive": false},
     {"type": "box", "z": 12, "yx0": [60, 40], "yx1": [110, 95]}]

For a 2-D picture z is dropped: ``"yx": [y, x]`` for a point and no ``"z"``
for a box. ``positive`` defaults to true; a box's corners may come in any
order and are both inside it. All prompts are of one object. Every mistake
is an :class:`~llm4seg_core.errors.LLM4SegError` with a one-line message
naming the prompt (1-based) and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.prompts.records import Box, Point, SlicePrompts

__all__ = ["parse_prompts", "read_prompts"]

_KEYS = {"point": {"type", "zyx", "yx", "positive"}, "box": {"type", "z", "yx0", "yx1"}}


def read_prompts(path: str | Path, volume: Any) -> dict[int, SlicePrompts]:
    """The prompts of the file ``path`` for ``volume``, by slice (a 2-D picture: slice 0)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LLM4SegError(f"prompt file not found: {p}" if not p.exists()
                           else f"{p} is not a prompt file (a JSON list of prompts)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LLM4SegError(f"cannot read the prompt file {p}: {exc}") from None
    if not text.strip():
        raise LLM4SegError(f"the prompt file {p} is empty; it must hold a JSON list of prompts")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LLM4SegError(f"the prompt file {p} is not valid JSON (line {exc.lineno}, column "
                           f"{exc.colno}: {exc.msg})") from None
    return parse_prompts(data, volume, where=str(p))


def parse_prompts(data: Any, volume: Any, where: str = "the prompts") -> dict[int, SlicePrompts]:
    """Prompts (the file's parsed JSON) checked against ``volume``, grouped by slice, sorted."""
    if not isinstance(data, list):
        raise LLM4SegError(f"{where} must hold a JSON list of prompts "
                           f'([{{"type": "point", ...}}, ...]), not {_kind(data)}')
    if not data:
        raise LLM4SegError(f"{where} holds no prompts; give at least one point or box")
    is_2d = volume.kind == "image2d"
    shape = tuple(int(s) for s in volume.spatial_shape)
    hw = shape[-2:]
    n = 1 if is_2d else shape[0]
    points: dict[int, list[Point]] = {}
    boxes: dict[int, tuple[int, Box]] = {}
    for i, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise LLM4SegError(f"prompt {i} in {where} is {_kind(entry)}, not an object "
                               '({"type": "point", ...})')
        kind = entry.get("type")
        if kind not in _KEYS:
            raise LLM4SegError(f"prompt {i} in {where}: "
                               + ("no type" if kind is None else f"unknown type {kind!r}")
                               + "; use 'point' or 'box'")
        what = f"prompt {i} ({kind}) in {where}"
        unknown = sorted(set(entry) - _KEYS[kind])
        if unknown:
            raise LLM4SegError(f"{what}: unknown key {unknown[0]!r}; a {kind} has "
                               + ", ".join(sorted(_KEYS[kind])))
        if kind == "point":
            z, y, x = _point_coords(entry, what, is_2d, n)
            positive = entry.get("positive", True)
            if not isinstance(positive, bool):
                raise LLM4SegError(f"{what}: positive must be true or false, not {positive!r}")
            _check_yx(y, x, hw, what)
            points.setdefault(z, []).append(Point(y, x, positive))
        else:
            z = _box_slice(entry, what, is_2d, n)
            y0, x0 = _ints(entry.get("yx0"), 2, "yx0", "[y0, x0]", what)
            y1, x1 = _ints(entry.get("yx1"), 2, "yx1", "[y1, x1]", what)
            _check_yx(y0, x0, hw, what, "yx0")
            _check_yx(y1, x1, hw, what, "yx1")
            if z in boxes:
                raise LLM4SegError(f"prompts {boxes[z][0]} and {i} in {where} are two boxes on "
                                   f"{_slice_name(z, is_2d)}; give one box per slice (one object)")
            boxes[z] = (i, Box.spanning(y0, x0, y1, x1))
    out: dict[int, SlicePrompts] = {}
    for z in sorted(set(points) | set(boxes)):
        sp = SlicePrompts(tuple(points.get(z, ())), boxes[z][1] if z in boxes else None)
        if not sp.positive and sp.box is None:
            raise LLM4SegError(f"{where}: {_slice_name(z, is_2d)} has only negative clicks; add a "
                               "positive click or a box there to say which object to segment")
        out[z] = sp
    return out


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _slice_name(z: int, is_2d: bool) -> str:
    return "the picture" if is_2d else f"slice {z}"


def _ints(value: Any, count: int, key: str, form: str, what: str) -> list[int]:
    ok = isinstance(value, list) and len(value) == count and all(
        isinstance(v, int) and not isinstance(v, bool)
        or isinstance(v, float) and v.is_integer() for v in value)
    if not ok:
        shown = "missing" if value is None else json.dumps(value)
        raise LLM4SegError(f"{what}: {key} must be {count} integers {form} (voxel indices), "
                           f"not {shown}")
    return [int(v) for v in value]


def _point_coords(entry: dict, what: str, is_2d: bool, n: int) -> tuple[int, int, int]:
    if is_2d:
        if "zyx" in entry:
            raise LLM4SegError(f"{what}: the image is a 2-D picture; give the point as "
                               '"yx": [y, x] (no z)')
        y, x = _ints(entry.get("yx"), 2, "yx", "[y, x]", what)
        return 0, y, x
    if "yx" in entry:
        raise LLM4SegError(f"{what}: the image is a volume of {n} slice(s); give the point as "
                           '"zyx": [z, y, x]')
    z, y, x = _ints(entry.get("zyx"), 3, "zyx", "[z, y, x]", what)
    _check_z(z, n, what)
    return z, y, x


def _box_slice(entry: dict, what: str, is_2d: bool, n: int) -> int:
    if is_2d:
        if "z" in entry:
            raise LLM4SegError(f"{what}: the image is a 2-D picture; give the box without z")
        return 0
    if "z" not in entry:
        raise LLM4SegError(f"{what}: the image is a volume of {n} slice(s); say the box's slice "
                           'with "z"')
    (z,) = _ints([entry["z"]] if not isinstance(entry["z"], list) else entry["z"], 1, "z",
                 "(one slice index)", what)
    _check_z(z, n, what)
    return z


def _check_z(z: int, n: int, what: str) -> None:
    if not 0 <= z < n:
        raise LLM4SegError(f"{what}: slice z={z} does not exist (the volume has slices 0..{n - 1})")


def _check_yx(y: int, x: int, hw: tuple[int, ...], what: str, key: str = "") -> None:
    for name, v, size in (("y", y, hw[0]), ("x", x, hw[1])):
        if not 0 <= v < size:
            axis = "rows" if name == "y" else "columns"
            raise LLM4SegError(f"{what}: {key + ' ' if key else ''}{name}={v} is outside the image "
                               f"({axis} 0..{size - 1})")
