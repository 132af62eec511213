"""The fast CPU forward: a model converted for OpenVINO and run by its CPU plugin.

On the 2-core development CPU OpenVINO runs our network's forward 1.9x as
fast as the model as built and 1.5x as fast as PyTorch's channels-last
forward, on a par with ONNX Runtime, which needs three packages where this
needs one (docs/benchmarks.md, "CPU inference speed"): it fuses the convolutions with their batch norms and activations, and its
depthwise and attention kernels are quicker. Precision stays fp32 (OpenVINO
would pick bf16 on CPUs that have it, which changes labels).

The converted model is a rebuildable pair of files in the user cache,
``<cache>/openvino/<key>.xml`` + ``.bin``, with a ``<key>.json`` record. The
key is a sha256 of everything that decides the graph: every tensor of the
model (so a fine-tuned model is a new key) and its spec (input size and
channels); the record holds the versions of torch and openvino it was built
with and the files' sha256. A pair whose record names other versions, or
whose bytes no longer match the record, is stale and is rebuilt; a build that
fails, or whose labels differ from PyTorch's on the check input, is recorded
as refused for those versions, and the PyTorch forward is used.

Nothing here downloads anything; without openvino installed every call
answers "not available" and the Segmenter stays on PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
"""Bumped when what this module writes changes meaning."""

CHECK_MIN_EQUAL = 0.9999
"""Share of check-input labels that must equal PyTorch's for a graph to be used."""

_compiled: dict[str, object] = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether OpenVINO can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def library_versions() -> dict[str, str]:
    import openvino

    return {"torch": torch.__version__, "openvino": openvino.__version__, "format": str(FORMAT)}


def cache_dir() -> Path:
    from llm4seg_core.paths import cache_root

    return cache_root() / "openvino"


def model_key(model) -> str:
    """sha256 of the model's tensors (parameters and buffers) and spec."""
    h = hashlib.sha256()
    h.update(model.spec.to_json().encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


@dataclass
class CompiledForward:
    """A callable like the model's forward: (B, C, S, S) float32 in, logits out (CPU tensors)."""

    compiled: object
    key: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, xml: Path, threads: int, key: str) -> CompiledForward:
        import openvino

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": max(1, threads),
                  "INFERENCE_PRECISION_HINT": "f32"}
        return cls(openvino.Core().compile_model(str(xml), "CPU", config), key)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._lock:  # one request at a time: a compiled model's request is not shared
            out = self.compiled(arr)[0]
        return torch.from_numpy(np.array(out, copy=True))


def _paths(key: str) -> tuple[Path, Path, Path]:
    d = cache_dir()
    return d / f"{key}.xml", d / f"{key}.bin", d / f"{key}.json"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files_sha256(key: str) -> str | None:
    xml, bin_, _ = _paths(key)
    if not (xml.is_file() and bin_.is_file()):
        return None
    return _file_sha256(xml)[:32] + _file_sha256(bin_)[:32]


def cached_state(key: str) -> str:
    """"ready", "refused" (a failed or unequal build with these versions), "stale" or "absent"."""
    record = _paths(key)[2]
    if not record.is_file():
        return "absent"
    try:
        rec = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "stale"
    if rec.get("versions") != library_versions():
        return "stale"
    if rec.get("refused"):
        return "refused"
    if rec.get("sha256") is None or rec.get("sha256") != _files_sha256(key):
        return "stale"
    return "ready"


def _check_input(spec, batch: int = 2) -> torch.Tensor:
    """Deterministic inputs in the model's range: smooth structure plus noise."""
    g = torch.Generator().manual_seed(1234)
    s = spec.image_size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    base = torch.stack([torch.sin(3 * xx + k) * torch.cos(2 * yy - k) for k in range(batch)])
    x = base[:, None].expand(batch, spec.total_in_channels, s, s).clone()
    return (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _labels(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(1)


def _convert(model, key: str) -> None:
    """The model converted (batch dimension free) and saved as ``<key>.xml/.bin``; quiet."""
    import openvino

    xml, bin_, _ = _paths(key)
    xml.parent.mkdir(parents=True, exist_ok=True)
    spec = model.spec
    shape = openvino.PartialShape([-1, spec.total_in_channels, spec.image_size, spec.image_size])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = openvino.convert_model(model, example_input=_check_input(spec), input=[shape])
    tmp = xml.with_name(f".{key}.partial.xml")  # the pair is published by the record, written last
    openvino.save_model(converted, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(bin_)
    tmp.replace(xml)


def build(model, key: str, threads: int) -> tuple[CompiledForward | None, dict]:
    """Convert, compile and check ``model``; the record written either way."""
    from llm4seg_core.atomic import atomic_write_text

    xml, bin_, record = _paths(key)
    record.unlink(missing_ok=True)  # from here until the new record, the pair is not trusted
    rec: dict = {"versions": library_versions(), "spec": model.spec.to_dict(),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    fwd = None
    was_training = model.training
    model.eval()
    try:
        _convert(model, key)
        rec["convert_s"] = round(time.perf_counter() - t0, 2)
        fwd = CompiledForward.load(xml, threads, key)
        x = _check_input(model.spec)
        with torch.inference_mode():
            ref = model(x.contiguous(memory_format=torch.channels_last)).float()
        got = fwd(x)
        equal = float((_labels(ref) == _labels(got)).float().mean())
        rec.update(check_equal=equal, check_max_abs_diff=float((ref - got).abs().max()))
        if equal < CHECK_MIN_EQUAL:
            rec["refused"] = f"labels differ from PyTorch's on {100 * (1 - equal):.3f} % of the check input"
            fwd = None
        else:
            rec["sha256"] = _files_sha256(key)
    except Exception as exc:  # any converter or runtime failure: stay on PyTorch
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        rec["refused"] = f"{type(exc).__name__}: {first}"
        fwd = None
    finally:
        model.train(was_training)
    if fwd is None:
        xml.unlink(missing_ok=True)
        bin_.unlink(missing_ok=True)
    rec["build_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(record, json.dumps(rec, indent=1) + "\n", fsync=False)
    return fwd, rec


def compiled_forward(model, *, build_if_missing: bool, threads: int | None = None,
                     log: Callable[[str], None] = lambda _t: None) -> CompiledForward | None:
    """The model's OpenVINO forward: from memory, from the cache, or built now
    (only with ``build_if_missing``); None where it is not available or was refused.
    ``log`` hears the decision in one line."""
    if not available():
        return None
    threads = threads or torch.get_num_threads()
    key = model_key(model)
    with _lock:
        if key in _compiled:
            return _compiled[key]
        state = cached_state(key)
        if state == "refused":
            log("fast CPU path: refused for this model earlier (see its record in the cache); PyTorch forward")
            return None
        if state == "ready":
            try:
                fwd = CompiledForward.load(_paths(key)[0], threads, key)
            except Exception:  # unreadable despite its record: rebuild below
                state = "stale"
            else:
                _compiled[key] = fwd
                log("fast CPU path: OpenVINO (compiled model from the cache)")
                return fwd
        if not build_if_missing:
            log("fast CPU path: not built for this model yet and too few slices to pay for it; "
                "PyTorch forward")
            return None
        log("fast CPU path: converting this model for OpenVINO (once per model, ~10 s)"
            + (" (the cached graph was stale)" if state == "stale" else ""))
        fwd, rec = build(model, key, threads)
        if fwd is None:
            log(f"fast CPU path: not used ({rec.get('refused')}); PyTorch forward")
            return None
        log(f"fast CPU path: OpenVINO (built in {rec['build_s']:.1f} s)")
        _compiled[key] = fwd
        return fwd


def forget_compiled() -> None:
    """Drop the in-memory sessions (tests; freeing memory)."""
    with _lock:
        _compiled.clear()
