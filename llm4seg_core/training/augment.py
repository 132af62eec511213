"""Augmentation: the 8 rotations/flips (RandomRotate90 + flip) and random crops.

Every draw comes from a ``torch.Generator`` the caller seeds, so a run is the
same for a seed (and a resumed run the same as an uninterrupted one).
"""

from __future__ import annotations

import torch

__all__ = ["augment_batch", "crop_offset", "dihedral"]


def dihedral(t: torch.Tensor, d: int) -> torch.Tensor:
    """One of the 8 rotations/flips of the last two axes (d in 0..7)."""
    if d & 4:
        t = t.flip(-1)
    return torch.rot90(t, d & 3, dims=(-2, -1)) if d & 3 else t


def crop_offset(label: torch.Tensor, crop: int, gen: torch.Generator, fg_prob: float,
                align: int) -> tuple[int, int]:
    """Top-left corner of a ``crop`` square, a multiple of ``align``.

    With chance ``fg_prob`` the crop is centred (as far as the edges allow) on
    a labelled pixel of ``label``; otherwise it is uniform.
    """
    h, w = label.shape[-2:]
    u = torch.rand((), generator=gen).item()
    if fg_prob > 0 and u < fg_prob:
        fg = torch.nonzero(label)
        if len(fg):
            cy, cx = fg[int(torch.randint(len(fg), (), generator=gen))].tolist()
            oy, ox = cy - crop // 2, cx - crop // 2
            oy = min(max(0, round(oy / align) * align), h - crop)
            ox = min(max(0, round(ox / align) * align), w - crop)
            return oy, ox
    ny, nx = (h - crop) // align + 1, (w - crop) // align + 1
    return (int(torch.randint(ny, (), generator=gen)) * align,
            int(torch.randint(nx, (), generator=gen)) * align)


def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, augment: bool,
                  crop: int | None, fg_prob: float = 0.0, align: int = 1
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomRotate90 + flip (each of the 8 with equal chance) and an optional random crop."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        if augment:
            d = int(torch.randint(8, (), generator=gen))
            xi, yi = dihedral(xi, d), dihedral(yi, d)
        if crop is not None and crop < yi.shape[-1]:
            oy, ox = crop_offset(yi, crop, gen, fg_prob, align)
            xi, yi = xi[:, oy:oy + crop, ox:ox + crop], yi[oy:oy + crop, ox:ox + crop]
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs).contiguous(), torch.stack(ys).contiguous()
