"""Test-time augmentation: a slice's prediction averaged over the 8 rotations/flips.

A model trained with the 8 rotations/flips (the default ``--augment
dihedral``) answers each of them; the answers, turned back, are averaged as
probabilities (nnU-Net's mirroring does the same with flips). Eight forwards
a slice: cheap for a picture, costly for a volume on a CPU, so it is a
choice of the model (its checkpoint's ``meta["tta"]``) and of the caller.
A model trained without them (labels with a side) must not use it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llm4seg_core.training.augment import dihedral

__all__ = ["VARIANTS", "averaged_logits", "model_logits", "undo_dihedral"]

VARIANTS = 8


def undo_dihedral(t: torch.Tensor, d: int) -> torch.Tensor:
    """The inverse of :func:`~llm4seg_core.training.augment.dihedral` ``d``."""
    if d & 3:
        t = torch.rot90(t, -(d & 3), dims=(-2, -1))
    return t.flip(-1) if d & 4 else t


def model_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 model: torch.nn.Module, tta: bool) -> torch.Tensor:
    """``forward``'s logits for ``x``: one pass, or with ``tta`` the 8 variants averaged.

    A torch ``model`` as the forward gets its input channels-last (its convolutions
    run faster so on a CPU); another forward (OpenVINO) takes it as it is."""
    if forward is model:
        def prepare(t: torch.Tensor) -> torch.Tensor:
            return t.contiguous(memory_format=torch.channels_last)
    else:
        def prepare(t: torch.Tensor) -> torch.Tensor:
            return t
    return averaged_logits(forward, x, prepare) if tta else forward(prepare(x))


def averaged_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """Logits (B, K, S, S) whose labels are those of the mean probability over the
    8 variants of ``x`` (``prepare`` readies each variant for ``forward``).

    Binary (K == 1): the logit of the mean sigmoid; multi-class: the log of the
    mean softmax (argmax as of the mean)."""
    total = None
    for d in range(VARIANTS):
        out = undo_dihedral(forward(prepare(dihedral(x, d).contiguous())).float(), d)
        p = torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
        total = p if total is None else total + p
    mean = total / VARIANTS
    if mean.shape[1] == 1:
        return torch.logit(mean, eps=1e-6)
    return torch.log(mean.clamp_min(1e-12))
