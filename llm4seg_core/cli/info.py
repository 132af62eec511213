"""``llm4seg info``: versions, device, LLM layer sources; with --model its parameter counts."""

from __future__ import annotations

import argparse
import time

from llm4seg_core.cli.common import open_store
from llm4seg_core.errors import LLM4SegError

COMMAND = "info"
HELP = "versions, device, LLM layer sources; --model: parameter counts"


def run(args: argparse.Namespace) -> int:
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
    p.add_argument("--model", help="a model spec or checkpoint: print its parameter counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--store", metavar="DIR", help="model store folder")
