"""``llm4seg info``: versions, device, LLM layer sources; with --model its parameter counts.

``llm4seg info FILE``: an image's or mask's format, shape and spacing; a mask's labels
(names and colours from its sidecar, a DICOM-SEG's segments or an RTSTRUCT's ROIs, those two
with ``--reference IMAGE``), their voxels and volumes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from llm4seg_core.cli.common import open_store
from llm4seg_core.errors import LLM4SegError

COMMAND = "info"
HELP = "versions, device, LLM layer sources; --model: parameter counts; FILE: its labels"


def _read_file(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(what the file is, the grid its labels lie on, its LabelVolume or the reason it is none)."""
    from llm4seg_core.io import (
        LabelVolume,
        format_name,
        label_object_kind,
        mask_labels,
        read_image,
        read_labels,
        suffix_of,
    )
    from llm4seg_core.io.labels import read_label_sidecar

    kind = label_object_kind(args.path)
    if kind:
        name = {"seg": "DICOM-SEG", "rtstruct": "RTSTRUCT"}[kind]
        if not args.reference:
            article = "an" if kind == "rtstruct" else "a"
            raise LLM4SegError(f"{args.path} is {article} {name}: give the image it was made on "
                               "with --reference IMAGE (it is read onto that image's grid)")
        grid = read_image(args.reference)
        return f"{name} on the reference's grid", grid, read_labels(args.path, grid)
    grid = read_image(args.path)
    what = f"{format_name(suffix_of(args.path))} {grid.kind} {grid.array.dtype}"
    try:
        labels = mask_labels(grid, args.path)
    except LLM4SegError as exc:
        return what, grid, str(exc)
    return what, grid, LabelVolume(labels, read_label_sidecar(args.path) or ())


def describe_file(args: argparse.Namespace) -> int:
    """An image or mask file: what it is; for a mask, its named labels."""
    import sys

    from llm4seg_core.io.labels import describe_labels

    what, grid, mask = _read_file(args)
    print(f"{args.path}: {what}, {'x'.join(str(s) for s in grid.spatial_shape)}, spacing "
          f"{' x '.join(f'{v:.4g}' for v in grid.spacing)} mm")
    if isinstance(mask, str):
        print(f"not a label mask ({mask})")
        return 0
    for note in mask.notes:
        print(f"WARNING: {note}", file=sys.stderr)
    lines = describe_labels(mask.labels, mask.table, grid.spacing)
    named = "named" if mask.table else "unnamed (no label table beside it)"
    print(f"labels: {len(lines)}, {named}" if lines else "labels: none (an empty mask)")
    for line in lines:
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.path:
        return describe_file(args)
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from llm4seg_core import __version__
    from llm4seg_core.device import describe_device, resolve_device
    from llm4seg_core.model.llm import available_llm_sources
    from llm4seg_core.store import resolve_model

    print(f"llm4seg {__version__}; python {platform.python_version()}; torch {torch.__version__}")
    for name in ("transformers", "SimpleITK", "gguf", "safetensors", "numpy", "pydicom"):
        try:
            print(f"  {name} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name}: not installed")
    cuda = torch.cuda.is_available()
    print(f"CUDA: {'yes, ' + str(torch.cuda.device_count()) + ' device(s)' if cuda else 'no'}"
          f" (torch built with CUDA {torch.version.cuda or 'none'})")
    print(f"device in use for --device {args.device}: {describe_device(resolve_device(args.device))}")
    print("LLM layer sources:")
    for src in available_llm_sources():
        found = "found" if src.get("found", True) else "MISSING"
        details = ", ".join(
            f"{k} {src[k]}" for k in ("arch", "hidden_size", "num_layers") if src.get(k) is not None
        )
        print(f"  {src.get('name')}: {found} {src.get('path') or ''} {('(' + details + ')') if details else ''}")
        if not src.get("found", True) and src.get("hint"):
            print(f"    {src['hint']}")
    store = open_store(args)
    if args.model:
        from llm4seg_core.model.network import build_model

        resolved = resolve_model(args.model, store, load=False)
        spec = resolved.spec
        print(f"model: {resolved.source}")
        print(f"model spec: {spec.to_json()}")
        t0 = time.perf_counter()
        model = build_model(spec)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        for line in model.param_counts().lines():
            print(line)
    else:
        print(f"model store: {store.root}")
        try:
            print(f"default model: {resolve_model(None, store, load=False).source}")
        except LLM4SegError as exc:
            print(f"default model: unusable: {exc}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="an image or mask file: its format, shape and labels")
    p.add_argument("--reference", metavar="IMAGE",
                   help="with a DICOM-SEG or RTSTRUCT FILE: the image it was made on")
    p.add_argument("--model", help="a model spec or checkpoint: print its parameter counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--store", metavar="DIR", help="model store folder")
