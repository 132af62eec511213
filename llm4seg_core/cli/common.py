"""What several subcommands share: the model options, the store, the Segmenter, log lines."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

UNTRAINED_NOTICE = (
    "NOTE: no trained checkpoint is in use: this model is UNTRAINED (random CNN and adapter "
    "weights around the pre-trained LLM layer), so its mask is meaningless. Train or fine-tune "
    "a model first, or pass --model CHECKPOINT."
)

Log = Callable[[str], None]


def log_fn(quiet: bool) -> Log:
    """Print on stderr, or nothing with ``-q``."""
    return (lambda *_: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def add_model_args(sp: argparse.ArgumentParser) -> None:
    """--model, --store, --device, --batch-size, -q (segment, demo)."""
    sp.add_argument("--model", help="checkpoint file, a version in the model store (see "
                    "'llm4seg models'), a task ('default', 'polyp', ...: its current version, else "
                    "its shipped model), or a model spec for an untrained model (preset name such "
                    "as 'llm4seg', 'cmunext', 'llama-3.2-1b', optionally with key=value overrides); "
                    "default: task 'default' (the store's current default version, else the "
                    "shipped default)")
    sp.add_argument("--store", metavar="DIR", help="model store folder (default: the user data "
                    "folder, or $LLM4SEG_HOME/models)")
    sp.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda[:N], mps")
    sp.add_argument("--batch-size", type=int, default=None,
                    help="slices per forward pass (default: 2 on a CPU, 8 on a GPU)")
    sp.add_argument("--engine", choices=("auto", "torch", "openvino"), default="auto",
                    help="the CPU forward: auto (OpenVINO once the model is converted, which a "
                    "volume of 64+ slices does once, ~10 s; else PyTorch), torch, openvino")
    sp.add_argument("--tta", choices=("model", "on", "off"), default="model",
                    help="average each slice over its 8 rotations/flips (8 forwards a slice): "
                    "as the model says (the picture zoo models: on), on, or off; never 'on' for "
                    "a model trained without flips (labels with a side)")
    sp.add_argument("--largest-region", choices=("model", "on", "off"), default="model",
                    help="keep only each label's largest region per slice: as the model says "
                    "(no shipped model turns it on: it did not raise their Dice), on (pictures "
                    "of one object), or off")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def open_store(args: argparse.Namespace) -> Any:
    """The model store ``--store DIR`` names, else the user's (LLM4SEG_HOME or the data folder)."""
    from llm4seg_core.store import ModelStore

    root = getattr(args, "store", None)
    return ModelStore(root) if root else ModelStore()


def load_segmenter(args: argparse.Namespace) -> Any:
    """The Segmenter of ``--model``; a prompt model is refused (``--model prompt`` before
    anything is loaded, even while no prompt model exists)."""
    from llm4seg_core.inference import PROMPT_MODEL_REFUSED, Segmenter
    from llm4seg_core.store.suggest import PROMPT_TASK

    model = getattr(args, "model", None)
    if isinstance(model, str) and model.strip() == PROMPT_TASK:
        from llm4seg_core.errors import LLM4SegError

        raise LLM4SegError(PROMPT_MODEL_REFUSED.format(name=f"task {PROMPT_TASK!r}"))
    return Segmenter.load(model, device=args.device,
                          batch_size=args.batch_size, store=open_store(args),
                          engine=getattr(args, "engine", "auto"),
                          tta=_switch(getattr(args, "tta", "model")),
                          one_object=_switch(getattr(args, "largest_region", "model")))


def _switch(value: str) -> bool | None:
    """A ``model|on|off`` option: None (as the model says), True or False."""
    return {"on": True, "off": False}.get(value)


def describe_segmenter(seg: Any, log: Log) -> None:
    """The model and device in one line; the untrained notice even with ``-q``."""
    from llm4seg_core.device import describe_device

    spec = seg.model.spec
    llm = f"{spec.llm_source} layer {spec.llm_layer}" if spec.has_llm else "none"
    tta = "; each slice averaged over its 8 rotations/flips" if getattr(seg, "tta", False) else ""
    if getattr(seg, "one_object", False):
        tta += "; largest region kept"
    log(f"model: {seg.name} (LLM: {llm}, {spec.llm_mode}); device: {describe_device(seg.device)}"
        f"{tta}")
    if getattr(seg, "warning", None):  # shown even with --quiet: not the model asked for
        print(f"WARNING: {seg.warning}", file=sys.stderr)
    if not seg.trained:  # shown even with --quiet: the mask is meaningless
        print(UNTRAINED_NOTICE, file=sys.stderr)


def report_image(volume: Any, chose_series: bool = False) -> None:
    """What the reader had to decide about the image, on stderr (even with ``-q``): dropped
    duplicate slices, a file read by its content, the other series of a DICOM folder."""
    meta = getattr(volume, "meta", {}) or {}
    if meta.get("warning"):
        print(f"WARNING: {meta['warning']}", file=sys.stderr)
    others = meta.get("other_series")
    if others and not chose_series:
        n = int(meta.get("n_series_in_folder") or 0)
        print(f"note: the folder holds {n} DICOM series; read the largest, "
              f"{meta.get('series_uid', '?')} ({meta.get('n_files', '?')} files); the other"
              f"{'s' if n > 2 else ''}: {others}; choose one with --series UID", file=sys.stderr)
