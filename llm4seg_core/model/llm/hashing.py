"""The sha256 that identifies an LLM layer's weights.

Checkpoints store it (``llm_sha256``) and refuse to load onto a layer whose digest
differs, so the byte layout fed to the hash must never change.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

RANDOM_INIT_HASH = "random-init"  # the digest recorded for a random-initialised layer


class TensorHasher:
    """sha256 over tensors in the order added (callers add them sorted by name).

    Per tensor: ``name``, dtype as stored in the source, shape, byte count, then the
    raw bytes as stored in the source (GGUF: quantised blocks; safetensors: e.g. bf16).
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._names: list[str] = []

    def add(
        self, name: str, dtype: str, shape: tuple[int, ...] | list[int], raw: np.ndarray
    ) -> None:
        data = np.ascontiguousarray(raw)
        header = f"{name}|{dtype}|{','.join(str(int(s)) for s in shape)}|{data.nbytes}\n"
        self._h.update(header.encode("utf-8"))
        self._h.update(memoryview(data).cast("B"))
        self._names.append(name)

    def add_torch(self, name: str, t: torch.Tensor) -> None:
        flat = t.detach().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, dtype=np.uint8)
        self.add(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), raw)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
