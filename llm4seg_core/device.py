"""Device choice: ``auto`` = CUDA, then Apple MPS, then CPU; always overridable."""

from __future__ import annotations

import contextlib

import torch

from llm4seg_core.errors import LLM4SegError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name`` ("auto", "cpu", "cuda", "cuda:1", "mps").

    Asking for a GPU that is not there is a user error with a clear message,
    not a silent fall-back: the user asked for speed they would not get.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LLM4SegError(
                "no CUDA GPU is available to this torch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                "use --device cpu, or install a CUDA build of torch"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LLM4SegError(
                f"{name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if name == "mps":
        if not _mps_available():
            raise LLM4SegError("Apple MPS is not available here; use --device cpu")
        return torch.device("mps")
    raise LLM4SegError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)} or cuda:N")


def describe_device(device: torch.device) -> str:
    """A short human description, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def flush_denormals() -> bool:
    """Make the calling thread treat denormal floats as zero (x86 FTZ/DAZ); False if unsupported.

    During fine-tuning some weights and gradients decay into the denormal
    range, where CPU float arithmetic is many times slower (measured in
    docs/benchmarks.md, "What changed since the earlier runs"); values below
    about 1e-38 become 0, which no segmentation can see. The mode is per
    thread and torch's intra-op workers copy it from the thread that starts
    them, so every engine entry point (building a network, ``Segmenter.segment``,
    ``Trainer.fit``, ``finetune``) and each UI worker thread calls this first.
    It is left on.
    """
    return bool(torch.set_flush_denormal(True))


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (no fast bf16 on these CPUs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
