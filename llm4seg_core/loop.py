"""The correction loop: fine-tune on the corrected slices, segment the rest, keep what continues.

One headless function per step, shared by the napari widget, the CLI
(``llm4seg finetune --complete``, ``llm4seg demo --fewshot``) and the
few-shot benchmark:

* :func:`finetune_corrections`: a fresh copy of the base model fine-tuned on
  a :class:`~llm4seg_core.datasets.CorrectionSet`, saved as a new store
  version whose parent is the base, in the base's task;
* :func:`segment_rest`: every slice the person did not correct segmented
  into a copy of their labels;
* :func:`keep_continuations`: "keep what continues the corrections", the
  filter of :mod:`llm4seg_core.postprocess` (optionally filling between the
  corrected slices), with a typed :class:`ContinuationSummary`;
* :func:`correction_loop`: the three in a row.

A prompt model (``ModelSpec.is_prompt_model``, task ``prompt``) takes the
same loop: it is fine-tuned by
:func:`~llm4seg_core.training.prompt_finetune.finetune_prompt` (the corrected
objects with simulated prompts), its version is saved in task ``prompt``, and
the rest of the volume is completed by propagation from the corrected slices
(:func:`~llm4seg_core.prompts.propagate.propagate_mask`), never through the
:class:`~llm4seg_core.inference.Segmenter` (which refuses it). That mask
continues the corrections by construction, so the loop does not filter it.

Importing this module is light (numpy only); torch comes with the first call.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.postprocess import DEFAULT_STEP_MM, keep_seeded_components, pixel_mm

if TYPE_CHECKING:
    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.io import Volume
    from llm4seg_core.store import ModelStore, ResolvedModel, VersionInfo
    from llm4seg_core.training import FinetuneConfig, TrainResult

__all__ = [
    "DEFAULT_STEP_MM",
    "ContinuationSummary",
    "FinetuneOutcome",
    "LoopResult",
    "correction_loop",
    "finetune_corrections",
    "is_prompt",
    "keep_continuations",
    "saved_task",
    "segment_rest",
]


# --------------------------------------------------------------------------- keep what continues


@dataclass(frozen=True)
class ContinuationSummary:
    """What "keep what continues the corrections" did, summed over the label values."""

    seeded: bool  # some corrected slice holds a label (else nothing anchors the filter)
    voxels_removed: int = 0
    regions_dropped: int = 0
    voxels_filled: int = 0
    gaps_filled: int = 0
    step_mm: float | None = DEFAULT_STEP_MM
    fill_between: bool = False
    note: str = ""  # why nothing was filtered, e.g. a 2-D image

    @property
    def changed(self) -> bool:
        return bool(self.voxels_removed or self.voxels_filled)

    def describe(self, whose: str = "the") -> str:
        """One short phrase for a status line or a log, e.g. ``kept what continues the
        corrections: 68 voxels in 2 region(s) removed``; ``whose="your"`` for a UI."""
        if self.note:
            return self.note
        if not self.seeded:
            return f"{whose} corrected slices hold no label, so nothing was filtered"
        text = (f"kept what continues {whose} corrections: {self.voxels_removed} voxels in "
                f"{self.regions_dropped} region(s) removed")
        if self.gaps_filled:
            text += (f"; {self.voxels_filled} voxels filled in {self.gaps_filled} gap(s) "
                     "between corrected slices")
        return text

    @classmethod
    def from_info(cls, info: Mapping[str, Any], *, step_mm: float | None = DEFAULT_STEP_MM,
                  fill_between: bool = False) -> ContinuationSummary:
        """Sum the per-label record of :func:`~llm4seg_core.postprocess.keep_seeded_components`."""
        per_label = list((info.get("labels") or {}).values())

        def total(key: str) -> int:
            return sum(int(v.get(key, 0)) for v in per_label)

        return cls(
            seeded=any(v.get("seeded") for v in per_label),
            voxels_removed=total("voxels_removed"),
            regions_dropped=total("regions_dropped"),
            voxels_filled=total("voxels_filled"),
            gaps_filled=total("gaps_filled"),
            step_mm=step_mm,
            fill_between=fill_between,
            note=str(info.get("note", "")),
        )


def keep_continuations(labels: np.ndarray, corrected_slices: Sequence[int], *,
                       pixel_size: tuple[float, float], step_mm: float | None = DEFAULT_STEP_MM,
                       fill_between: bool = True) -> tuple[np.ndarray, ContinuationSummary]:
    """Keep what continues the corrections: a filtered copy of ``labels`` and its summary.

    ``labels`` (Z, Y, X) holds the person's masks on ``corrected_slices`` and
    the model's prediction elsewhere; per label value only the prediction that
    continues the corrected outlines slice by slice (at most ``step_mm`` in-plane
    a slice; None: whole 3-D regions touching them) is kept, and with
    ``fill_between`` the gaps between corrected slices are filled with the
    interpolated outline (:mod:`llm4seg_core.postprocess` says how).
    ``pixel_size``: the in-plane pixel size (y, x) in mm. A 2-D image comes
    back unchanged.
    """
    out, info = keep_seeded_components(labels, corrected_slices, step_mm=step_mm,
                                       pixel_size=pixel_size, fill_between=fill_between)
    return out, ContinuationSummary.from_info(info, step_mm=step_mm, fill_between=fill_between)


# --------------------------------------------------------------------------- fine-tune


INHERITED = ("labels", "fits", "tta", "one_object")
"""What a fine-tuned version keeps of its base's checkpoint metadata: the label
table (names and colours), what images the model suits (model suggestion) and
whether it averages the 8 rotations/flips (the fine-tune trains with them too) and
keeps one region."""


def _inherited(resolved: ResolvedModel) -> dict[str, Any]:
    from llm4seg_core.store import read_checkpoint_info

    if resolved.path is None:
        return {}
    try:
        meta = read_checkpoint_info(resolved.path).meta
    except LLM4SegError:
        return {}
    return {k: meta[k] for k in INHERITED if k in meta}


@dataclass
class FinetuneOutcome:
    """A fine-tune on corrected slices: the new model, where it came from, what it learned."""

    model: Any  # the fine-tuned LLM4SegNet (on the CPU or the device it trained on)
    base: ResolvedModel  # what it started from
    config: FinetuneConfig
    result: TrainResult
    version: VersionInfo | None  # the saved store version, None when not saved
    seconds: float  # the whole call: loading, fine-tuning, saving
    metrics: dict[str, Any] | None = None  # the record saved with the model (JSON-safe)

    @property
    def parent(self) -> str | None:
        """The base's name as a parent (a version or a checkpoint file); None when untrained."""
        return self.base.name if self.base.trained else None

    @property
    def task(self) -> str:
        """Where the version was (or would be) saved: the base's task; for a prompt model
        whose base names no task of its own (a spec, a file without one), task ``prompt``."""
        return saved_task(self.base)


def saved_task(resolved: ResolvedModel) -> str:
    """The task a fine-tune of ``resolved`` saves in: its own, but never ``default`` for a
    prompt model (Segment would then refuse the default task's current): ``prompt`` there."""
    from llm4seg_core.store.tasks import DEFAULT_TASK

    if resolved.task == DEFAULT_TASK and resolved.spec.is_prompt_model:
        from llm4seg_core.store.suggest import PROMPT_TASK

        return PROMPT_TASK
    return resolved.task


def _fresh_model(base: str | Path | None | ResolvedModel,
                 store: ModelStore) -> tuple[Any, ResolvedModel]:
    """A model of its own for ``base`` (the base itself stays as it is) on the CPU."""
    from llm4seg_core.store import ResolvedModel, load_checkpoint, resolve_model

    if not isinstance(base, ResolvedModel):
        resolved = resolve_model(base, store, device="cpu")
        return resolved.model, resolved
    if base.model is not None:
        return copy.deepcopy(base.model).cpu(), base
    if base.version is not None:
        model, _ = store.load(base.version, device="cpu")
    elif base.path is not None:
        model, _ = load_checkpoint(base.path, device="cpu")
    else:
        from llm4seg_core.model.network import build_model

        model = build_model(base.spec, device="cpu")
    return model, base


def _saved_metrics(result: TrainResult) -> dict[str, Any]:
    m = {k: (None if isinstance(v, float) and math.isnan(v) else v)
         for k, v in result.best_metrics.items()}
    m["seconds"] = round(result.seconds, 2)
    return m


def finetune_corrections(base: str | Path | None | ResolvedModel, corrections: CorrectionSet,
                         config: FinetuneConfig | None = None, callbacks: Callbacks | None = None,
                         *, store: ModelStore | None = None, save: bool = True,
                         name: str | None = None, data: dict | None = None,
                         note: str = "") -> FinetuneOutcome:
    """Fine-tune a fresh copy of ``base`` on ``corrections``; with ``save`` store it as a version.

    ``base``: anything :func:`~llm4seg_core.store.resolve_model` takes (None:
    the current model), or a :class:`~llm4seg_core.store.ResolvedModel` (a
    loaded one is copied; one resolved with ``load=False`` is loaded now).
    The device is checked before anything is loaded. Raises
    :class:`~llm4seg_core.errors.Cancelled`, saving nothing, when the
    callbacks cancel it. The saved version (``name``, default the next
    ``v0001``...) records ``data`` (default: the image, slices, shape and
    settings), the training metrics and ``note``; its parent is the base's
    version or checkpoint file (none for an untrained spec). It is saved in
    the base's task (:attr:`~llm4seg_core.store.ResolvedModel.task`) and
    becomes that task's current version; other tasks keep theirs. A
    ``name`` that is taken (or being saved by a running process) is refused
    before any training. A prompt model is fine-tuned by
    :func:`~llm4seg_core.training.finetune_prompt` and saved in its task,
    ``prompt`` unless it has another (:func:`saved_task`).
    """
    from llm4seg_core.device import resolve_device
    from llm4seg_core.store import ModelStore
    from llm4seg_core.training import FinetuneConfig, finetune, finetune_prompt

    t0 = time.perf_counter()
    cfg = config if config is not None else FinetuneConfig()
    cb = callbacks if callbacks is not None else Callbacks()
    store = store if store is not None else ModelStore()
    resolve_device(cfg.device)  # a missing GPU is an error before any loading
    if save and name is not None:
        store.check_new_name(name)  # a taken name fails now, not after training
    model, resolved = _fresh_model(base, store)
    if cb.cancelled():
        raise Cancelled("fine-tuning cancelled before it started; nothing was saved")
    train = finetune_prompt if model.spec.is_prompt_model else finetune
    result = train(model, corrections, cfg, cb)
    if result.cancelled:
        raise Cancelled(f"fine-tuning cancelled after {result.steps} of {cfg.steps} steps; "
                        "nothing was saved")
    metrics = _saved_metrics(result)
    outcome = FinetuneOutcome(model, resolved, cfg, result, None, 0.0, metrics)
    if save:
        volume = corrections.volume
        image = volume.source or ""
        record = data if data is not None else {
            "image": image,
            "slices": list(corrections.slices),
            "shape": list(volume.spatial_shape),
            "finetune": cfg.to_dict(),
            "base_model": resolved.name,
        }
        outcome.version = store.save(
            model, name=name, parent=outcome.parent, data=record, metrics=metrics,
            task=outcome.task, inherit=_inherited(resolved),
            note=note or (f"fine-tuned on {len(corrections.slices)} corrected slice(s) of "
                          f"{Path(image).name if image else 'an image'}, from {resolved.name}"),
        )
    outcome.seconds = time.perf_counter() - t0
    return outcome


# --------------------------------------------------------------------------- segment the rest


def _uncorrected(n_slices: int, corrected_slices: Sequence[int]) -> list[int]:
    done = {int(z) for z in corrected_slices}
    return [z for z in range(n_slices) if z not in done]


def is_prompt(model_or_segmenter: Any) -> bool:
    """Whether this model (or the model of this segmenter) is a prompt model."""
    model = getattr(model_or_segmenter, "model", model_or_segmenter)
    return bool(getattr(getattr(model, "spec", None), "is_prompt_model", False))


def _complete(model_or_segmenter: Any, volume: Volume, labels: np.ndarray,
              corrected_slices: Sequence[int], callbacks: Callbacks | None, device: str,
              batch_size: int | None) -> tuple[np.ndarray, list[int]]:
    """:func:`segment_rest` and the slices the model ran on."""
    from llm4seg_core.inference import Segmenter

    out = np.array(labels, dtype=np.uint8, copy=True)
    others = _uncorrected(volume.n_slices, corrected_slices)
    if not others:
        return out, []
    seg = model_or_segmenter
    if is_prompt(seg):
        from llm4seg_core.prompts.propagate import propagate_mask
        from llm4seg_core.prompts.segment import PromptSegmenter

        if not isinstance(seg, PromptSegmenter):
            seg = PromptSegmenter(seg, device=device, batch_size=batch_size)
        out, props = propagate_mask(seg, volume, out, corrected_slices, callbacks=callbacks)
        return out, sorted({z for p in props.values() for z in p.segmented})
    if not isinstance(seg, Segmenter):
        seg = Segmenter(seg, device=device, batch_size=batch_size)
    seg.segment(volume, slices=others, callbacks=callbacks, out=out)
    return out, others


def segment_rest(model_or_segmenter: Any, volume: Volume, labels: np.ndarray,
                 corrected_slices: Sequence[int], callbacks: Callbacks | None = None, *,
                 device: str = "auto", batch_size: int | None = None) -> np.ndarray:
    """``labels`` with every slice not in ``corrected_slices`` completed by the model.

    Works on a copy (uint8): the corrected slices keep their labels.
    ``model_or_segmenter``: a :class:`~llm4seg_core.inference.Segmenter`, or
    a model to wrap in one on ``device`` (the Segmenter then owns it).

    A prompt model (or a :class:`~llm4seg_core.prompts.PromptSegmenter`) is never
    run through the Segmenter: each label of the corrected slices is propagated
    through the volume from them (:func:`~llm4seg_core.prompts.propagate.propagate_mask`;
    ``callbacks`` hear its slices), and the other slices hold what the walks
    reached (nothing beyond where the object ended). Corrected slices without any
    label are an :class:`~llm4seg_core.errors.LLM4SegError` then: nothing to carry on.
    """
    return _complete(model_or_segmenter, volume, labels, corrected_slices, callbacks, device,
                     batch_size)[0]


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopResult:
    outcome: FinetuneOutcome
    raw: np.ndarray  # the completed mask before the filter
    labels: np.ndarray  # the final mask (== raw when keep=False)
    summary: ContinuationSummary | None  # None when keep=False
    segmented: list[int]  # the slices the model segmented (a prompt model: those its walks reached)


def correction_loop(base: str | Path | None | ResolvedModel, corrections: CorrectionSet,
                    config: FinetuneConfig | None = None, callbacks: Callbacks | None = None, *,
                    store: ModelStore | None = None, save: bool = True, keep: bool = True,
                    fill_between: bool = True, step_mm: float | None = DEFAULT_STEP_MM,
                    device: str = "auto", batch_size: int | None = None,
                    segment_callbacks: Callbacks | None = None, name: str | None = None,
                    data: dict | None = None, note: str = "") -> LoopResult:
    """Fine-tune on the corrections, segment the other slices, keep what continues the corrections.

    ``callbacks`` hear the fine-tune (steps), ``segment_callbacks`` the
    segmentation (slices). ``device`` is where the model segments, and where
    it trains when no ``config`` is given. With ``keep=False`` the completed
    mask is returned unfiltered.

    A prompt model completes the rest by propagation from the corrected
    slices (:func:`segment_rest`); that continues the corrections by
    construction, so with ``keep`` nothing is filtered and the summary's note
    says so.
    """
    from llm4seg_core.training import FinetuneConfig

    cfg = config if config is not None else FinetuneConfig(device=device)
    outcome = finetune_corrections(base, corrections, cfg, callbacks, store=store, save=save,
                                   name=name, data=data, note=note)
    volume, zs = corrections.volume, list(corrections.slices)
    raw, segmented = _complete(outcome.model, volume, corrections.labels, zs, segment_callbacks,
                               device, batch_size)
    if not keep:
        return LoopResult(outcome, raw, raw, None, segmented)
    if is_prompt(outcome.model):
        note = ("the rest was propagated from the corrected slices, which continues them by "
                "construction: nothing was filtered")
        return LoopResult(outcome, raw, raw, ContinuationSummary(
            seeded=True, step_mm=step_mm, fill_between=fill_between, note=note), segmented)
    labels, summary = keep_continuations(raw, zs, pixel_size=pixel_mm(volume), step_mm=step_mm,
                                         fill_between=fill_between)
    return LoopResult(outcome, raw, labels, summary, segmented)
