"""Few-shot fine-tuning of a prompt model on the corrected slices of one volume.

The counterpart of :func:`~llm4seg_core.training.finetune` for a model whose
spec takes prompt channels (``ModelSpec.is_prompt_model``). Its encoder
feature cache does not fit here: the prompt maps enter at the stem and are
drawn anew every step, so every step runs the whole network.

The training items are the objects of the corrections: each label value on a
corrected slice (at least :data:`MIN_PIXELS` pixels) is one object, trained
as the prompt model is trained (:mod:`llm4seg_core.datasets.prompted`, the
same :class:`~llm4seg_core.datasets.prompted.PromptMix`), with fresh
simulated prompts (:mod:`llm4seg_core.prompts.simulate`) at every draw:

- a guide: the same label on the adjacent corrected slice (z +- 1; half the
  time lightly perturbed, as a propagated mask would be), else a perturbed
  copy of the object standing in for a neighbour's or a previous mask;
  sometimes with a corrective click;
- a box (jittered), sometimes with a corrective click;
- else 1-3 clicks (the first inside, the others at the largest error regions
  of a perturbed "previous prediction", given as the guide half the time).

Where a corrected slice's adjacent corrected slice holds a label it does not,
that is an "it ended" item too (the neighbour's mask as the guide, an empty
target): what stops a propagation. Only the corrected slices' labels are read.

The image channels are made as :class:`~llm4seg_core.prompts.PromptSegmenter`
makes them (``slice_stack`` -> ``intensity_range`` -> ``to_model_input``),
then the four prompt maps (:func:`~llm4seg_core.prompts.encode.prompt_maps`).
Each step takes ``batch_size`` objects (in shuffled rounds, so every object
is seen as often), the Trainer's rotations/flips and crops
(:func:`~llm4seg_core.training.augment.augment_batch`, which move the prompt
maps with the image) and the segmentation loss. The same
:class:`~llm4seg_core.training.FinetuneConfig` and
:class:`~llm4seg_core.training.TrainResult` as ``finetune``; ``cache_encoder``
and ``cache_max_mb`` do not apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm4seg_core.device import autocast, flush_denormals, resolve_device
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.training.augment import augment_batch
from llm4seg_core.training.config import FinetuneConfig, TrainResult
from llm4seg_core.training.evaluation import evaluate
from llm4seg_core.training.finetuning import FinetuneRun
from llm4seg_core.training.params import cpu_state, train_mode

__all__ = ["MIN_PIXELS", "PromptObject", "correction_objects", "finetune_prompt"]

MIN_PIXELS = 4
"""An object (a label value on a corrected slice) smaller than this is not trained on."""

NO_OBJECT = (
    "the corrected slices {slices} hold no object of at least {n} pixels: a prompt model learns "
    "the objects you point at, so outline at least one on a corrected slice"
)


@dataclass(frozen=True)
class PromptObject:
    """One training object: slice ``z``, label ``value``; ``neighbours``: (dz, mask) of the
    adjacent corrected slices holding the same label (the guides of a propagation)."""

    z: int
    value: int
    target: np.ndarray  # bool, the slice's size; empty for an "it ended" item
    neighbours: tuple[tuple[int, np.ndarray], ...] = ()

    @property
    def ended(self) -> bool:
        return not self.target.any()


def correction_objects(corrections: Any, min_pixels: int = MIN_PIXELS) -> list[PromptObject]:
    """The objects of a :class:`~llm4seg_core.datasets.CorrectionSet`, in slice and label order."""
    zs = list(corrections.slices)
    labels = {z: np.asarray(corrections.slice_labels(z)) for z in zs}

    def values(z: int) -> list[int]:
        counts = np.bincount(labels[z].ravel(), minlength=256)
        return [v for v in range(1, len(counts)) if counts[v] >= min_pixels]

    present = {z: values(z) for z in zs}
    out: list[PromptObject] = []
    for z in zs:
        near = [(dz, z + dz) for dz in (-1, 1) if z + dz in labels]
        for v in present[z]:
            neighbours = tuple((dz, labels[n] == v) for dz, n in near if v in present[n])
            out.append(PromptObject(z, v, labels[z] == v, neighbours))
        for dz, n in near:  # the object is on the neighbour, not here: it ended
            for v in present[n]:
                if v not in present[z] and not (labels[z] == v).any():
                    out.append(PromptObject(z, v, np.zeros_like(labels[z], bool),
                                            ((dz, labels[n] == v),)))
    return out


def _draw(obj: PromptObject, mix: Any, rng: np.random.Generator) -> tuple[Any, np.ndarray | None]:
    """Simulated prompts and guide for ``obj`` (as :meth:`PromptedSlices.draw` draws them)."""
    from llm4seg_core.prompts.records import SlicePrompts
    from llm4seg_core.prompts.simulate import box_or_clicks, error_clicks, perturb

    target = obj.target
    u = float(rng.uniform())
    kind = "guide" if u < mix.guide or obj.ended else "box" if u < mix.guide + mix.box else "clicks"
    if kind == "guide":
        if obj.neighbours:
            _, guide = obj.neighbours[int(rng.integers(len(obj.neighbours)))]
            if rng.uniform() < mix.perturb_neighbour:
                guide = perturb(guide, rng, strength=0.5)
        else:  # no adjacent corrected slice: a perturbed copy stands for the neighbour's mask
            guide = perturb(target, rng)
        clicks = error_clicks(target, guide, 1, rng) if rng.uniform() < mix.extra_click else []
        return SlicePrompts(tuple(clicks)), guide
    return box_or_clicks(target, kind, rng, mix)


def _first_prompts(obj: PromptObject) -> tuple[Any, np.ndarray | None]:
    """The deterministic prompts the final score uses: one click at the object's centre (an
    "it ended" item: its neighbour's mask as the guide)."""
    from llm4seg_core.prompts.records import SlicePrompts
    from llm4seg_core.prompts.simulate import first_click

    if obj.ended:
        return SlicePrompts(), obj.neighbours[0][1]
    return SlicePrompts((first_click(obj.target),)), None


class _Inputs:
    """The network inputs of the objects: image channels once per slice, prompt maps per draw."""

    def __init__(self, spec: Any, corrections: Any) -> None:
        from llm4seg_core.datasets.items import ModelGrid
        from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

        volume = corrections.volume
        grid = ModelGrid.of(spec)
        self.size = grid.image_size
        shape = tuple(int(s) for s in volume.spatial_shape)
        self.hw = (shape[-2], shape[-1])
        limits = intensity_range(volume, grid.intensity)
        zs = list(corrections.slices)
        x = to_model_input(slice_stack(volume, zs, grid.in_channels), limits, self.size)
        self.image = {z: x[k] for k, z in enumerate(zs)}

    def item(self, obj: PromptObject, prompts: Any,
             guide: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        from llm4seg_core.prompts.encode import grid_index, prompt_maps

        s = self.size
        maps = torch.from_numpy(prompt_maps(prompts, guide, self.hw, s))
        t = obj.target
        y = t[np.ix_(grid_index(t.shape[0], s), grid_index(t.shape[1], s))].astype(np.uint8)
        return torch.cat([self.image[obj.z], maps]), torch.from_numpy(np.ascontiguousarray(y))


def finetune_prompt(model: LLM4SegNet, corrections: Any, config: FinetuneConfig | None = None,
                    callbacks: Callbacks | None = None, *, mix: Any = None,
                    min_pixels: int = MIN_PIXELS) -> TrainResult:
    """Fine-tune the prompt model ``model`` in place on the objects of ``corrections``.

    ``corrections``: a :class:`~llm4seg_core.datasets.CorrectionSet` (only its
    slices' labels are read); ``mix``: the prompt kinds' shares (default the
    prompt model's training mix). As :func:`~llm4seg_core.training.finetune`:
    ``config.trainable`` says which parameters train (Adam), BatchNorm keeps its
    statistics with ``freeze_bn``, progress is reported per step and metrics
    about 20 times a run, the cancel flag is checked before every step, and on
    cancel (or an error) the model gets back the weights it started with. The
    result's ``best_metrics`` are ``train_loss`` / ``train_dice`` / ``train_iou``
    of every object prompted by one click at its centre (the "it ended" items by
    their neighbour's mask). Raises :class:`LLM4SegError` for a model that is
    not a prompt model, or corrections holding no object.
    """
    from llm4seg_core.datasets.prompted import PromptMix

    flush_denormals()
    cfg = config or FinetuneConfig()
    cb = callbacks or Callbacks()
    mix = mix or PromptMix()
    spec = model.spec
    if not spec.is_prompt_model:
        raise LLM4SegError("finetune_prompt trains a prompt model; this model takes no prompt "
                           "channels (use training.finetune)")
    device = resolve_device(cfg.device)
    objects = correction_objects(corrections, min_pixels)
    if not any(not o.ended for o in objects):
        raise LLM4SegError(NO_OBJECT.format(slices=list(corrections.slices), n=min_pixels))
    inputs = _Inputs(spec, corrections)
    s = inputs.size
    crop = cfg.crop_size if cfg.crop_size is not None and cfg.crop_size < s else None
    n = len(objects)
    batch = min(cfg.batch_size, n)

    run = FinetuneRun(model, cfg, cb, device)  # as finetune: never trains channels-last
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    cancelled = False
    try:
        train_mode(model, freeze_all_bn=cfg.freeze_bn)
        for step in range(cfg.steps):
            if cb.cancelled():
                cancelled = True
                break
            picks = []
            for k in range(batch):
                if not order:
                    order = torch.randperm(n, generator=gen).tolist()
                i = order.pop()
                rng = np.random.default_rng([cfg.seed, step, k])
                picks.append(inputs.item(objects[i], *_draw(objects[i], mix, rng)))
            x, y = augment_batch(torch.stack([a for a, _ in picks]),
                                 torch.stack([b for _, b in picks]), gen, augment=cfg.augment,
                                 crop=crop, fg_prob=cfg.fg_crop_prob)
            x, y = x.to(device), y.to(device)
            with autocast(device, cfg.amp):
                logits = model(x)
            run.step(logits, y)
    except BaseException:
        run.restore()
        raise
    finally:
        run.release()
    result = TrainResult(history=run.history, steps=run.done, cancelled=cancelled)
    if cancelled:
        run.restore()
    else:
        scored = [inputs.item(o, *_first_prompts(o)) for o in objects]
        scores = evaluate(model, scored, device=device, batch_size=4, bce_weight=cfg.bce_weight,
                          amp=cfg.amp)
        result.best_metrics = {k.replace("val_", "train_"): v for k, v in scores.items()}
    result.best_state = cpu_state(model)
    result.seconds = time.perf_counter() - run.t0
    result.info = {"cached_encoder": False, "prompt_model": True, "objects": n,
                   "ended_items": sum(o.ended for o in objects),
                   "slices": list(corrections.slices), "trainable": cfg.trainable,
                   "config": cfg.to_dict()}
    return result
