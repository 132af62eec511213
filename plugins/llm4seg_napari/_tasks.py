"""What the dock widget's jobs do, without Qt: the bodies its JobRunner runs in a thread.

Plain Python on llm4seg_core: :func:`segment_job` segments the chosen slices
into a buffer, :func:`finetune_job` fine-tunes the chosen model on the
corrected slices and saves the new version (:func:`llm4seg_core.loop.
finetune_corrections`). Both report through the job's
:class:`~llm4seg_core.jobs.Callbacks` and stop when it cancels. :class:`SegmentRun`
is the record of a running Segment (where its slices go, which are shown).
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm4seg_core.errors import Cancelled
from llm4seg_core.io import Volume
from llm4seg_core.jobs import Callbacks
from llm4seg_core.store import ModelStore, VersionInfo

__all__ = [
    "FinetuneResult",
    "SegmentResult",
    "SegmentRun",
    "finetune_job",
    "load_segmenter",
    "segment_job",
    "warm_imports",
]

_log = logging.getLogger(__name__)
_WARM = threading.Lock()
_WARMED = False
#: Imported by the warm-up, in this order: what the first Segment's main-thread work needs
#: (napari's Labels layer builds its features table with pandas), the engine, then what
#: loading a model imports lazily (llm4seg_core.model.llm, the store): in a worker those
#: imports hold the GIL for up to ~0.2 s at a time, freezing the window.
_WARM_MODULES = (
    "pandas",
    "llm4seg_core.datasets",
    "llm4seg_core.inference",
    "llm4seg_core.loop",
    "llm4seg_core.postprocess",
    "llm4seg_core.training.finetuning",
    "safetensors.torch",
    "gguf.quants",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen2.modeling_qwen2",
)


@dataclass
class SegmentRun:
    """A running Segment: where its slices go, and which of them are shown already."""

    mask: Any  # the napari Labels layer the slices go into
    buffer: np.ndarray
    order: list[int]  # the slices to segment, in the order the job does them
    overwrite: bool
    shown: int = 0  # order[:shown] are written into the mask
    kept: int = 0  # corrected while the job ran: the person's edit was kept


def warm_imports() -> None:
    """Import the engine (torch, transformers, ...) in a background thread, once.

    The first Segment otherwise imports them on the Qt main thread (the imports
    inside the widget's methods) or in its worker, where an import holds the GIL
    for long stretches: a few hundred ms to seconds of frozen window, seen with
    ``bench/bench_event_loop.py --trace-stalls`` (docs/benchmarks.md); it also reads
    the bundled LLM's header, which the first model load would parse. The
    warm-up ends with a full garbage collection, so that the next one (about
    0.3 s with the GIL held: it freezes the window from any thread) is not due
    during the first jobs.
    """
    global _WARMED
    with _WARM:
        if _WARMED:
            return
        _WARMED = True

    def run() -> None:
        _warm_vispy()
        for name in _WARM_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the real import reports it later, in context
                _log.debug("warm-up import of %s failed", name, exc_info=True)
        _warm_llm_header()
        gc.collect()

    threading.Thread(target=run, name="llm4seg-warm-imports", daemon=True).start()


def _warm_llm_header() -> None:
    """Read the bundled LLM's GGUF header (cached while the file is unchanged): parsing it
    (its ~49k-token vocabulary, pure Python) otherwise holds the GIL for ~50 ms in the first
    Segment's worker, just when the window repaints after the click."""
    try:
        from llm4seg_core.model.llm.sources import GGUFFileSource

        GGUFFileSource.bundled().header()
    except Exception:  # noqa: BLE001 - an optimisation only; the model load reports it
        _log.debug("warm-up of the LLM header failed", exc_info=True)


def _warm_vispy() -> None:
    """Fill vispy's cache of dash patterns (pure numpy), which the first labels layer's
    polygon overlay otherwise computes on the main thread."""
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception:  # noqa: BLE001 - an optimisation only
        _log.debug("vispy warm-up failed", exc_info=True)


@dataclass
class SegmentResult:
    segmenter: Any
    slices: list[int]
    seconds: float


def load_segmenter(model_arg: str | None, device: str, store: ModelStore | None = None) -> Any:
    """``Segmenter.load`` (imported lazily: torch is slow to import)."""
    from llm4seg_core.inference import Segmenter

    return Segmenter.load(model_arg, device=device,
                          store=store if store is not None else ModelStore())


def segment_job(get_segmenter: Callable[[], Any], volume: Volume, slices: Sequence[int],
                out: np.ndarray, callbacks: Callbacks) -> SegmentResult:
    """Segment ``slices`` of ``volume`` into ``out`` (only those slices are written).

    The slices are done in ascending order; when ``callbacks`` hear
    ``progress(done, total)``, the first ``done`` of them are final in ``out``,
    so a front end can show them while the rest runs.
    """
    t0 = time.perf_counter()
    segmenter = get_segmenter()
    if callbacks.cancelled():
        raise Cancelled("segmentation cancelled before it started")
    order = sorted({int(z) for z in slices})
    segmenter.segment(volume, slices=order, callbacks=callbacks, out=out)
    return SegmentResult(segmenter, order, time.perf_counter() - t0)


@dataclass
class FinetuneResult:
    version: VersionInfo
    segmenter: Any
    metrics: dict[str, Any]
    seconds: float
    base: str = ""  # what the model was fine-tuned from, in words


def finetune_job(model_arg: str | None, device: str, corrections: Any, steps: int,
                 callbacks: Callbacks, *, store: ModelStore | None = None,
                 image_name: str = "") -> FinetuneResult:
    """Fine-tune ``model_arg`` on ``corrections`` and save a new version (parent = that model).

    A fresh copy of the model is loaded (a cached Segmenter keeps its
    weights); the new version joins the base's task and becomes its current one. Raises
    Cancelled when the callbacks cancel it: nothing is saved then.
    """
    from llm4seg_core.inference import Segmenter, checkpoint_meta
    from llm4seg_core.loop import finetune_corrections, is_prompt
    from llm4seg_core.store import resolve_model
    from llm4seg_core.training.config import FinetuneConfig

    store = store if store is not None else ModelStore()
    base = resolve_model(model_arg, store, load=False)  # loaded by finetune_corrections
    config = FinetuneConfig(steps=int(steps), device=device)
    source = corrections.volume.source or image_name
    outcome = finetune_corrections(
        base, corrections, config, callbacks, store=store,
        data={
            "image": source,
            "image_name": image_name,
            "slices": list(corrections.slices),
            "shape": list(corrections.volume.spatial_shape),
            "steps": config.steps,
            "base_model": base.name,
        },
        note=f"fine-tuned in napari on {len(corrections)} corrected slice(s) of "
        f"{image_name or source or 'an image'}, from {base.name}",
    )
    info = outcome.version
    if is_prompt(outcome.model):  # a prompt model answers prompts, not Segment
        from llm4seg_core.prompts import PromptSegmenter

        segmenter = PromptSegmenter(outcome.model, device=device, trained=True, name=info.name)
    else:
        meta = checkpoint_meta(base)  # the new version segments as its base did
        segmenter = Segmenter(outcome.model, device=device, trained=True, name=info.name,
                              tta=bool(meta.get("tta")), one_object=bool(meta.get("one_object")))
    return FinetuneResult(info, segmenter, dict(outcome.result.best_metrics), outcome.seconds,
                          base.name)
