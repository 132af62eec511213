#!/usr/bin/env python3
"""CPU forward engines side by side: which one the Segmenter should run (issue 15).

One model (the shipped default, 256 x 256, 1 channel), one real input (two
middle slices of the demo CT, preprocessed as the Segmenter does), in one
process, interleaved rounds; per engine: ms per slice (median over rounds),
its one-time cost, and how far its logits and labels are from the plain
forward's:

  plain b1        the model as built (fp32, default memory format), batch 1: the naive loop
  channels-last   the model in channels-last memory format, batch 2 (the Segmenter before)
  torch.compile   inductor with freezing, channels-last, batch 2 (needs a C++ compiler)
  onnxruntime     torch.onnx (dynamo) export, ONNX Runtime CPU, batch 2 (needs onnxruntime,
                  onnx, onnxscript: not dependencies of the product; skipped when absent)
  openvino        openvino.convert_model, CPU plugin, LATENCY hint, fp32, batch 2 (the fast path)

    .venv/bin/python bench/bench_cpu_engines.py [--rounds 3] [--skip compile,onnxruntime]

Run it alone on the machine (pause training): every figure is a wall time.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def real_input() -> torch.Tensor:
    from llm4seg_core.data import demo_case
    from llm4seg_core.io import read_image
    from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

    vol = read_image(demo_case("lung1")[0])
    mid = vol.n_slices // 2
    return to_model_input(slice_stack(vol, [mid, mid + 1], 1), intensity_range(vol, "auto"), 256)


def engines(model, x: torch.Tensor, skip: set[str]) -> dict[str, tuple[object, int, float]]:
    """name -> (callable on a (B, C, S, S) tensor returning logits, batch, one-time seconds)."""
    out: dict[str, tuple[object, int, float]] = {"plain b1": (model, 1, 0.0)}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out["channels-last"] = (lambda t: cl(t.contiguous(memory_format=torch.channels_last)), 2, 0.0)
    if "compile" not in skip:
        import torch._inductor.config as inductor

        inductor.freezing = True
        t0 = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(cl), dynamic=False)
        with torch.inference_mode():
            compiled(x.contiguous(memory_format=torch.channels_last))
        out["torch.compile"] = (lambda t: compiled(t.contiguous(memory_format=torch.channels_last)),
                                2, time.perf_counter() - t0)
    if "onnxruntime" not in skip:
        try:
            import onnxruntime as ort
            import onnxscript  # noqa: F401
        except ImportError:
            print("onnxruntime: skipped (pip install onnxruntime onnx onnxscript to include it)")
        else:
            path = Path(tempfile.mkdtemp()) / "m.onnx"
            t0 = time.perf_counter()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), str(path), dynamo=True,
                                  dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            out["onnxruntime"] = (lambda t: torch.from_numpy(session.run(None, {name: t.numpy()})[0]),
                                  2, time.perf_counter() - t0)
    if "openvino" not in skip:
        from llm4seg_core import fastpath

        with tempfile.TemporaryDirectory() as d:
            fastpath.cache_dir = lambda: Path(d)  # a fresh cache: the one-time cost is paid here
            t0 = time.perf_counter()
            fwd = fastpath.compiled_forward(model, build_if_missing=True)
            out["openvino"] = (fwd, 2, time.perf_counter() - t0)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=4, help="timed calls per engine per round")
    p.add_argument("--skip", default="", help="comma-separated: compile, onnxruntime, openvino")
    args = p.parse_args()
    from llm4seg_core.device import flush_denormals
    from llm4seg_core.store import resolve_model

    flush_denormals()
    model = resolve_model("default", None, device="cpu").model.eval()
    x = real_input()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; input {tuple(x.shape)} "
          "(2 demo CT slices)")
    found = engines(model, x, set(filter(None, args.skip.split(","))))
    with torch.inference_mode():
        ref = model(x)
        times: dict[str, list[float]] = {k: [] for k in found}
        for _ in range(args.rounds):
            for name, (fn, batch, _once) in found.items():
                xb = x[:batch]
                fn(xb)
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    fn(xb)
                    times[name].append((time.perf_counter() - t0) / batch)
        print("| engine | ms / slice (median) | vs plain b1 | one-time s | max abs logit diff | "
              "labels equal |")
        print("|---|---|---|---|---|---|")
        base = float(np.median(times["plain b1"]))
        for name, (fn, batch, once) in found.items():
            ms = float(np.median(times[name]))
            got = fn(x[:2]) if batch == 2 else torch.cat([fn(x[:1]), fn(x[1:2])])
            diff = float((got - ref).abs().max())
            equal = float(((got > 0) == (ref > 0)).float().mean())
            print(f"| {name} | {1000 * ms:.0f} | {base / ms:.2f}x | {once:.1f} | {diff:.1e} | "
                  f"{100 * equal:.4f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
