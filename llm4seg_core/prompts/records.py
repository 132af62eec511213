"""The prompt records: a click, a box, and the prompts of one slice (torch-free).

Coordinates are pixel indices of the slice as read (``y`` row, ``x``
column); a box's corners are both inside it (inclusive). The model grid
never appears here: :mod:`~llm4seg_core.prompts.encode` maps them onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Box", "Point", "SlicePrompts"]


@dataclass(frozen=True)
class Point:
    """A click at pixel (y, x): positive (this is the object) or negative (this is not)."""

    y: int
    x: int
    positive: bool = True


@dataclass(frozen=True)
class Box:
    """A box from (y0, x0) to (y1, x1), both corners included, ``y0 <= y1`` and ``x0 <= x1``."""

    y0: int
    x0: int
    y1: int
    x1: int

    def __post_init__(self) -> None:
        if self.y1 < self.y0 or self.x1 < self.x0:
            raise ValueError(f"box corners out of order: {self}")

    @classmethod
    def spanning(cls, y0: int, x0: int, y1: int, x1: int) -> Box:
        """The box with these two corners, in any order."""
        return cls(min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1))


@dataclass(frozen=True)
class SlicePrompts:
    """What a person (or the simulated user) said about one object on one slice."""

    points: tuple[Point, ...] = ()
    box: Box | None = None

    @property
    def positive(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.positive)

    @property
    def negative(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if not p.positive)

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    def with_point(self, point: Point) -> SlicePrompts:
        """These prompts and one more click (the next correction)."""
        return replace(self, points=(*self.points, point))
