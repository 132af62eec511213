"""Segmentation of a whole volume (or some of its slices) with an LLM4Seg model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from llm4seg_core.device import flush_denormals, resolve_device
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.io import Volume
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.preprocess import intensity_range, logits_to_labels, slice_stack, to_model_input
from llm4seg_core.tta import model_logits

DEFAULT_BATCH = {"cpu": 2, "cuda": 8, "mps": 8}
"""Slices per forward pass when none is given. On a CPU batch 2 is the fastest
per slice (docs/benchmarks.md, "Engine benchmark", CPU: Segmentation)."""

ENGINES = ("auto", "torch", "openvino")
"""The CPU forward: ``auto`` (OpenVINO where the model's converted form is
cached, or a call is long enough to pay for converting it, else PyTorch),
``torch``, ``openvino`` (converted now if need be). Other devices always use
PyTorch (:mod:`llm4seg_core.fastpath`)."""

FAST_BUILD_MIN_SLICES = 64
"""``auto`` converts a model held only in memory (a fresh fine-tune about to
segment the rest of its volume) only for a call of at least this many
slices: conversion takes ~8 s once and saves ~0.1 s a 256-grid slice on the
2-core CPU, so it pays back after ~80 slices."""

PROMPT_MODEL_REFUSED = (
    "{name} is a prompt model: give it --prompts FILE or --from-mask MASK --slices LIST "
    "('llm4seg segment'), or use the Click tool; it segments the object you point at, not a "
    "whole image"
)
"""What a :class:`Segmenter` (and everything built on it) says to a prompt model."""

FAST_BUILD_MIN_SLICES_SAVED = 8
"""The same for a model read from a file (a shipped task, a store version):
it is used again, and every later call finds it converted, so any volume
pays the one-time cost at its first Segment; a single picture never waits."""


def check_segmentation_model(spec, name: str) -> None:
    """A clear :class:`LLM4SegError` when ``spec`` is a prompt model's
    (``ModelSpec.is_prompt_model``): it takes prompt maps, a Segmenter gives it none."""
    if getattr(spec, "is_prompt_model", False):
        raise LLM4SegError(PROMPT_MODEL_REFUSED.format(name=name or "this model"))


class Segmenter:
    """Volume in, uint8 label volume of the same shape out.

    Slices go through the model ``batch_size`` at a time: each batch is
    normalised and resized on the CPU, moved to the device, run under
    ``torch.inference_mode`` (and bf16 autocast on CUDA), and its logits are
    resized back and turned into labels on the device before the next batch.
    Peak memory is one batch, never the whole volume in floating point.

    The model is moved to the device and to channels-last memory format (its
    convolutions run 25-35 % faster so on this CPU kind, measured), and on
    CUDA a frozen LLM layer is cast to bf16: the Segmenter owns the model it
    is given. ``batch_size`` None picks :data:`DEFAULT_BATCH` for the device:
    small batches on a CPU, where batch 8 is slower per slice than batch 2.
    On a CPU the forward is the model's OpenVINO form where ``engine``
    (:data:`ENGINES`) allows it; each call's choice goes to ``callbacks.log``.
    A prompt model is refused (:func:`check_segmentation_model`): it segments the
    object prompts point at (:class:`~llm4seg_core.prompts.PromptSegmenter`).
    """

    def __init__(
        self,
        model: LLM4SegNet,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        trained: bool = True,
        name: str = "",
        engine: str = "auto",
        tta: bool = False,
        one_object: bool = False,
    ) -> None:
        check_segmentation_model(model.spec, name or ("untrained model" if not trained else ""))
        self.device = resolve_device(device)
        if engine not in ENGINES:
            raise LLM4SegError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
        self.engine = engine
        self.convert_min_slices = FAST_BUILD_MIN_SLICES  # load() lowers it for saved models
        if batch_size is None:
            batch_size = DEFAULT_BATCH.get(self.device.type, 8)
        if batch_size < 1:
            raise LLM4SegError("batch size must be at least 1")
        if self.device.type == "cuda" and model.llm_block is not None and model.spec.freeze_llm:
            model.llm_block.llm.to(torch.bfloat16)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.batch_size = batch_size
        self.tta = bool(tta)  # average the 8 rotations/flips of each slice (llm4seg_core.tta)
        # keep each label's largest region per slice (postprocess.keep_largest_region)
        self.one_object = bool(one_object)
        self.trained = trained
        self.name = name or ("untrained " if not trained else "") + "model"
        self.warning: str | None = None  # e.g. a damaged current version was passed over (load)
        self.task = "default"  # the model's task (load sets it)
        self.labels: tuple = ()  # the model's label table (io.labels.Label: value, name, colour)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        *,
        spec=None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        store=None,
        engine: str = "auto",
        tta: bool | None = None,
        one_object: bool | None = None,
    ) -> Segmenter:
        """A Segmenter for ``checkpoint``, or an untrained ``spec``.

        ``checkpoint`` is anything :func:`llm4seg_core.store.resolve_model`
        accepts: a checkpoint file, a version in the model store (``store``,
        default the user's), ``current``, or a spec string. With neither
        ``checkpoint`` nor ``spec``: the store's current version, else the
        shipped default checkpoint, else the untrained default spec.
        ``tta`` None: as the checkpoint's ``meta["tta"]`` says (the picture zoo
        models average the 8 rotations/flips; :mod:`llm4seg_core.tta`); ``one_object``
        likewise from ``meta["one_object"]`` (keep each label's largest region:
        :func:`~llm4seg_core.postprocess.keep_largest_region`; no shipped model sets it).
        """
        from llm4seg_core.store import resolve_model
        from llm4seg_core.model.network import build_model

        dev = resolve_device(device)
        if checkpoint is None and spec is not None:
            check_segmentation_model(spec, "this untrained spec")  # before building it
            model = build_model(spec, device="cpu")
            return cls(model, device=dev, batch_size=batch_size, trained=False, engine=engine,
                       tta=bool(tta), one_object=bool(one_object))
        r = resolve_model(checkpoint, store, device="cpu")
        seg = cls(r.model, device=dev, batch_size=batch_size, trained=r.trained, name=r.name,
                  engine=engine)
        seg.warning, seg.task = r.warning, r.task
        if r.path is not None:
            seg.convert_min_slices = FAST_BUILD_MIN_SLICES_SAVED
        meta = checkpoint_meta(r)
        seg.labels = model_labels(r, meta)
        seg.tta = bool(meta.get("tta", False)) if tta is None else bool(tta)
        seg.one_object = (bool(meta.get("one_object", False)) if one_object is None
                          else bool(one_object))
        return seg

    def label_table(self, values=()) -> tuple:
        """The model's labels, with ``values`` (those a mask holds) named too."""
        from llm4seg_core.io.labels import label_table

        return label_table(values, meta_labels=[lab.to_dict() for lab in self.labels],
                           names=self.model.spec.label_names)

    def forward_for(self, n_slices: int, log=lambda _t: None):
        """The forward a call of ``n_slices`` slices runs: the model, or its OpenVINO
        form (:mod:`llm4seg_core.fastpath`) on a CPU; ``log`` hears the choice."""
        if self.device.type != "cpu" or self.engine == "torch":
            return self.model
        from llm4seg_core import fastpath

        fwd = fastpath.compiled_forward(
            self.model, log=log,
            build_if_missing=self.engine == "openvino" or n_slices >= self.convert_min_slices)
        if fwd is None and self.engine == "openvino":
            raise LLM4SegError("the OpenVINO engine is not available for this model (openvino "
                               "missing, or its conversion was refused): use --engine torch")
        return fwd if fwd is not None else self.model

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def segment(
        self,
        volume: Volume,
        *,
        slices: Iterable[int] | None = None,
        callbacks: Callbacks | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Labels for ``volume`` (all slices, or only ``slices``).

        With ``out`` (a uint8 array of the volume's spatial shape) only the
        chosen slices are written into it and it is returned; other slices are
        left as they are. ``callbacks`` hear ``progress(slices done, total)``
        after every batch; when they cancel (checked before every batch) this
        raises :class:`Cancelled`, and the slices done so far are already in
        ``out``.
        """
        cb = callbacks if callbacks is not None else Callbacks()
        flush_denormals()
        spec = self.model.spec
        shape = volume.spatial_shape
        n = volume.n_slices
        if out is None:
            out = np.zeros(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise LLM4SegError(
                f"label array has shape {out.shape} ({out.dtype}); the image needs {shape} uint8"
            )
        view = out[None] if volume.kind == "image2d" else out
        order = list(range(n)) if slices is None else sorted(set(int(z) for z in slices))
        if any(z < 0 or z >= n for z in order):
            raise LLM4SegError(f"slice indices must be within 0..{n - 1}")
        limits = intensity_range(volume, spec.intensity)
        hw = tuple(view.shape[1:3])
        pin = self.device.type == "cuda"
        done = 0
        forward = self.forward_for(len(order), cb.log)
        cb.progress(0, len(order))
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(order), self.batch_size):
                if cb.cancelled():
                    raise Cancelled(f"segmentation cancelled after {done} of {len(order)} slices")
                batch = order[start : start + self.batch_size]
                x = to_model_input(slice_stack(volume, batch, spec.in_channels), limits, spec.image_size)
                if pin:
                    x = x.pin_memory()
                logits = model_logits(forward, x.to(self.device, non_blocking=pin),
                                      model=self.model, tta=self.tta)
                labels = logits_to_labels(logits, hw).cpu().numpy()
                if self.one_object:
                    from llm4seg_core.postprocess import keep_largest_region

                    labels = keep_largest_region(labels)
                for k, z in enumerate(batch):
                    view[z] = labels[k]
                done += len(batch)
                cb.progress(done, len(order))
        return out


def checkpoint_meta(resolved) -> dict:
    """A resolved model's checkpoint metadata; empty for a spec or an unreadable header."""
    from llm4seg_core.store import read_checkpoint_info

    if resolved.path is None:
        return {}
    try:
        return read_checkpoint_info(resolved.path).meta
    except LLM4SegError:
        return {}


def model_labels(resolved, meta: dict | None = None) -> tuple:
    """The label table a resolved model records (checkpoint ``meta["labels"]``, spec
    ``label_names``); empty when it records none."""
    from llm4seg_core.io.labels import label_table

    meta = checkpoint_meta(resolved) if meta is None else meta
    return label_table(meta_labels=meta.get("labels"), names=resolved.spec.label_names)
