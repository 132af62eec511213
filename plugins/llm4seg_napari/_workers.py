"""The dock widget's work, without Qt: choices to offer, and the jobs it runs in threads.

Everything here is plain Python on llm4seg_core (no napari, no Qt), so the
widget stays a thin layer of buttons over these functions:

* :func:`model_choices` / :func:`device_choices`: what the pickers list;
* :func:`volume_from_layer`: an image layer's pixels and geometry as a
  :class:`~llm4seg_core.io.Volume` (from the reader's ``llm4seg_volume``
  record, else from the layer's scale/translate/affine);
* :func:`segment_job` and :func:`finetune_job`: the bodies the widget runs in
  napari thread workers. They report through plain callbacks (which the
  widget turns into Qt signals) and stop when the cancel event is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llm4seg_core.store import ModelStore, VersionInfo, default_checkpoint
from llm4seg_core.device import describe_device, resolve_device
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.io import Volume
from llm4seg_napari._geometry import VOLUME_KEY, reference_from_layer, reference_from_record

ProgressFn = Callable[[int, int], None]

#: Untrained specs offered in the model picker: (label, spec argument).
UNTRAINED_CHOICES: tuple[tuple[str, str], ...] = (
    ("untrained LLM4Seg (SmolLM2 layer)", "llm4seg"),
    ("untrained CMUNeXt (no LLM layer)", "cmunext"),
)
_METRIC_KEYS = ("val_dice", "dice", "train_dice", "val_iou", "train_iou", "val_loss", "train_loss", "loss")


# --------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class Choice:
    """One entry of a picker: the text shown, the argument it stands for."""

    label: str
    arg: str | None
    tooltip: str = ""
    enabled: bool = True


def metrics_text(metrics: Mapping[str, Any], limit: int = 2) -> str:
    """'dice 0.83 · loss 0.210' from a metrics record (the keys people look for first)."""
    parts = []
    for key in _METRIC_KEYS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            word = key.split("_", 1)[-1]
            if word not in (p.split(" ")[0] for p in parts):
                parts.append(f"{word} {value:.3f}")
        if len(parts) >= limit:
            break
    return " · ".join(parts)


def _version_choice(v: VersionInfo, current: str | None) -> Choice:
    bits = [v.name]
    if v.name == current:
        bits.append("(current)")
    if v.damaged:
        bits.append("(damaged)")
    else:
        text = metrics_text(v.metrics)
        if text:
            bits.append("· " + text)
    tip = [f"model version {v.name}", f"LLM layer: {v.llm}", f"created {v.created}"]
    if v.parent:
        tip.append(f"fine-tuned from {v.parent}")
    if v.note:
        tip.append(v.note)
    if v.damaged:
        tip.append(f"cannot be used: {v.damaged}")
    return Choice(" ".join(bits), v.name, "\n".join(tip), enabled=v.ok)


def model_choices(store: ModelStore) -> list[Choice]:
    """The model picker's entries: default, the store's versions (newest first), untrained specs."""
    current = store.current()
    if current is not None:
        default = Choice(f"default: current version ({current.name})", None,
                         "the model store's current version")
    elif default_checkpoint() is not None:
        default = Choice("default: shipped model", None, str(default_checkpoint()))
    else:
        default = Choice("default: untrained LLM4Seg (no trained model yet)", None,
                         "no model version and no shipped checkpoint: fine-tune one first")
    versions = [_version_choice(v, current.name if current else None)
                for v in reversed(store.versions())]
    untrained = [Choice(label, arg, f"model spec {arg!r}, random weights")
                 for label, arg in UNTRAINED_CHOICES]
    return [default, *versions, *untrained]


def auto_device_text() -> str:
    """What ``auto`` resolves to here, e.g. 'cpu, 2 threads' or 'cuda:0, NVIDIA H100'."""
    try:
        text = describe_device(resolve_device("auto"))
    except Exception:  # noqa: BLE001 - a broken driver must not break the picker
        return "cpu"
    return text.replace(" (", ", ").rstrip(")")


def device_choices() -> list[Choice]:
    """auto (showing what it resolves to), cpu, and the GPUs; absent ones listed but disabled."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    out = [Choice(f"auto ({auto_device_text()})", "auto", "CUDA GPU, else Apple MPS, else CPU"),
           Choice("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append(Choice(f"cuda:{i} ({torch.cuda.get_device_name(i)})", f"cuda:{i}"))
    else:
        out.append(Choice("cuda (no CUDA GPU here)", "cuda",
                          f"torch {torch.__version__} sees no CUDA GPU", enabled=False))
    if has_mps:
        out.append(Choice("mps (Apple GPU)", "mps"))
    return out


# --------------------------------------------------------------------------- image


def volume_from_layer(data: Any, attributes: Mapping[str, Any]) -> Volume:
    """An image layer as a Volume: its pixels plus geometry (``attributes`` = layer state).

    The geometry comes from ``metadata["llm4seg_volume"]`` when the LLM4Seg
    reader made the layer, else from its scale/translate/rotate/affine.
    """
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        data = data[0]  # multiscale: the full-resolution level
    array = np.asarray(data)
    rgb = bool(attributes.get("rgb"))
    spatial = tuple(int(s) for s in (array.shape[:-1] if rgb else array.shape))
    if len(spatial) not in (2, 3):
        raise LLM4SegError(
            f"the image layer has shape {array.shape}: LLM4Seg segments 2-D pictures and 3-D "
            "volumes (z, y, x); split other data into such layers first"
        )
    metadata = attributes.get("metadata") or {}
    record = metadata.get(VOLUME_KEY) if isinstance(metadata, Mapping) else None
    if record:
        ref = reference_from_record(record, spatial)
    else:
        ref = reference_from_layer(attributes, spatial)
    return Volume(
        array=array,
        spacing=ref.spacing,
        origin=ref.origin,
        direction=ref.direction,
        kind=ref.kind,
        modality=ref.modality,
        is_rgb=rgb,
        source=ref.source,
        meta=dict(ref.meta),
    )


# --------------------------------------------------------------------------- jobs


@dataclass
class SegmentResult:
    segmenter: Any
    slices: list[int]
    seconds: float


def load_segmenter(model_arg: str | None, device: str, store: ModelStore | None = None) -> Any:
    """``Segmenter.load`` (imported lazily: torch is slow to import)."""
    from llm4seg_core.inference import Segmenter

    return Segmenter.load(model_arg, device=device, store=store if store is not None else ModelStore())


def segment_job(
    get_segmenter: Callable[[], Any],
    volume: Volume,
    slices: Sequence[int],
    out: np.ndarray,
    *,
    cancel: threading.Event,
    progress: ProgressFn | None = None,
    slices_done: Callable[[list[int]], None] | None = None,
) -> SegmentResult:
    """Segment ``slices`` of ``volume`` into ``out`` (only those slices are written).

    ``slices_done(zs)`` hears each finished batch (its slices of ``out`` are
    final), so a front end can show them while the rest runs.
    """
    t0 = time.perf_counter()
    segmenter = get_segmenter()
    if cancel.is_set():
        raise Cancelled("segmentation cancelled before it started")
    order = sorted({int(z) for z in slices})
    reported = 0

    def on_progress(done: int, total: int) -> None:
        nonlocal reported
        if slices_done is not None and done > reported:
            slices_done(order[reported:done])
        reported = done
        if progress is not None:
            progress(done, total)

    segmenter.segment(volume, slices=order, progress=on_progress, cancel=cancel, out=out)
    return SegmentResult(segmenter, order, time.perf_counter() - t0)


@dataclass
class FinetuneResult:
    version: VersionInfo
    segmenter: Any
    metrics: dict[str, Any]
    seconds: float
    base: str = ""  # what the model was fine-tuned from, in words


def finetune_job(
    model_arg: str | None,
    device: str,
    corrections: Any,
    steps: int,
    *,
    cancel: threading.Event,
    store: ModelStore | None = None,
    progress: ProgressFn | None = None,
    metrics: Callable[[dict[str, Any]], None] | None = None,
    image_name: str = "",
) -> FinetuneResult:
    """Fine-tune ``model_arg`` on ``corrections``, save a new version (parent = that model).

    A fresh copy of the model is loaded (a cached Segmenter keeps its weights).
    The new version becomes the store's current one. Raises Cancelled when
    the cancel event stops training: nothing is saved then.
    """
    from llm4seg_core.store import resolve_model
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.training import Callbacks, FinetuneConfig, finetune

    t0 = time.perf_counter()
    store = store if store is not None else ModelStore()
    resolve_device(device)  # a missing GPU is an error before any loading
    resolved = resolve_model(model_arg, store, device="cpu")
    if cancel.is_set():
        raise Cancelled("fine-tuning cancelled before it started")
    config = FinetuneConfig(steps=int(steps), device=device)
    result = finetune(resolved.model, corrections, config,
                      Callbacks(on_progress=progress, on_metrics=metrics, cancel=cancel))
    if result.cancelled:
        raise Cancelled(f"fine-tuning cancelled after {result.steps} of {config.steps} steps; "
                        "nothing was saved")
    parent = resolved.version.name if resolved.version is not None else None
    source = corrections.volume.source or image_name
    info = store.save(
        resolved.model,
        parent=parent,
        data={
            "image": source,
            "image_name": image_name,
            "slices": list(corrections.slices),
            "shape": list(corrections.volume.spatial_shape),
            "steps": config.steps,
            "base_model": resolved.name,
        },
        metrics={**result.best_metrics, "seconds": round(result.seconds, 2)},
        note=f"fine-tuned in napari on {len(corrections)} corrected slice(s) of "
        f"{image_name or source or 'an image'}, from {resolved.name}",
    )
    segmenter = Segmenter(resolved.model, device=device, trained=True, name=info.name)
    return FinetuneResult(info, segmenter, dict(result.best_metrics), time.perf_counter() - t0,
                          resolved.name)
