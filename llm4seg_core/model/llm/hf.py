"""Hugging Face model folders: config, the local hub cache, one layer's safetensors.

A folder is ``config.json`` + ``*.safetensors`` (single file or sharded with
``model.safetensors.index.json``). Hub ids resolve OFFLINE in the local cache
(never downloaded); only the shards that hold the wanted layer are opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.llm.arch import SUPPORTED_ARCHS, config_class, unsupported_arch
from llm4seg_core.model.llm.hashing import TensorHasher

# --------------------------------------------------------------------------- #
# The local hub cache
# --------------------------------------------------------------------------- #


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub cache folders to search, most specific first (existing ones only)."""
    candidates: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            candidates.append(Path(value).expanduser())
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        candidates.append(Path(hf_home).expanduser() / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        candidates.append(Path(xdg).expanduser() / "huggingface" / "hub")
    candidates.append(Path.home() / ".cache" / "huggingface" / "hub")
    seen: set[Path] = set()
    out: list[Path] = []
    for c in candidates:
        try:
            key = c.resolve()
        except OSError:
            continue
        if key in seen or not c.is_dir():
            continue
        seen.add(key)
        out.append(c)
    return out


def searched_cache_dirs_text() -> str:
    dirs = hf_cache_dirs()
    if dirs:
        return ", ".join(str(d) for d in dirs)
    return "no cache folder exists (HF_HUB_CACHE / HF_HOME/hub / ~/.cache/huggingface/hub)"


def snapshot_in_repo_dir(repo_dir: Path) -> Path | None:
    """The snapshot folder of a cached model repo: refs/main if present, else the newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        try:
            rev = ref.read_text(encoding="utf-8").strip()
        except OSError:
            rev = ""
        if rev and (snapshots / rev / "config.json").is_file():
            return snapshots / rev
    found = [d for d in snapshots.iterdir() if d.is_dir() and (d / "config.json").is_file()]
    if not found:
        return None
    return max(found, key=lambda d: (d.stat().st_mtime, d.name))


def find_in_hf_cache(hub_id: str) -> Path | None:
    folder_name = "models--" + hub_id.replace("/", "--")
    for cache in hf_cache_dirs():
        repo_dir = cache / folder_name
        if repo_dir.is_dir():
            snap = snapshot_in_repo_dir(repo_dir)
            if snap is not None:
                return snap
    return None



def cached_models() -> Iterator[tuple[str, Path]]:
    """``(hub_id, snapshot folder)`` of every model in the cache folders, in search order.

    An id cached in several folders comes once per folder; callers keep the first usable.
    """
    for cache in hf_cache_dirs():
        try:
            repo_dirs = sorted(
                d for d in cache.iterdir() if d.is_dir() and d.name.startswith("models--")
            )
        except OSError:
            continue
        for repo_dir in repo_dirs:
            snap = snapshot_in_repo_dir(repo_dir)
            if snap is not None:
                yield repo_dir.name[len("models--") :].replace("--", "/"), snap


# --------------------------------------------------------------------------- #
# Config and tensors of one folder
# --------------------------------------------------------------------------- #


def hf_config(folder: Path) -> Any:
    """The LlamaConfig / Qwen2Config of `folder`'s config.json."""
    cfg_path = folder / "config.json"
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LLM4SegError(f"{cfg_path} not found; point to a Hugging Face model folder") from exc
    except (OSError, ValueError) as exc:
        raise LLM4SegError(
            f"cannot read {cfg_path}: {exc}; the model folder looks damaged"
        ) from exc
    if not isinstance(raw, dict):
        raise LLM4SegError(f"{cfg_path} is not a JSON object; the model folder looks damaged")
    arch = str(raw.get("model_type", "")).lower()
    if arch not in SUPPORTED_ARCHS:
        raise unsupported_arch(arch or "unknown", cfg_path)
    raw = dict(raw)
    # This is a library-internal config, the rest of the model is not built.
    for key in ("_name_or_path", "transformers_version"):
        raw.pop(key, None)
    try:
        config = config_class(arch).from_dict(raw)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise LLM4SegError(f"cannot build a {arch} config from {cfg_path}: {exc}") from exc
    return config


def has_safetensors(folder: Path) -> bool:
    return (folder / "model.safetensors.index.json").is_file() or any(
        folder.glob("*.safetensors")
    )


def _hf_layer_prefixes(layer: int) -> tuple[str, ...]:
    return (f"model.layers.{layer}.", f"layers.{layer}.")


def _hf_shards_for_layer(folder: Path, layer: int) -> list[Path]:
    prefixes = _hf_layer_prefixes(layer)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LLM4SegError(
                f"cannot read {index}: {exc}; the model folder looks damaged"
            ) from exc
        files = sorted({str(f) for k, f in weight_map.items() if k.startswith(prefixes)})
        shards = [folder / f for f in files]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise LLM4SegError(
                f"{folder} lacks shard {missing[0].name} listed in {index.name}; "
                "finish the download or re-copy the folder"
            )
        return shards
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        bins = sorted(folder.glob("*.bin"))
        extra = " (it has only .bin files: convert them to safetensors)" if bins else ""
        raise LLM4SegError(
            f"{folder} has no *.safetensors weights{extra}; "
            "point to a model folder with config.json and *.safetensors"
        )
    return shards


def hf_layer_tensors(
    folder: Path, layer: int, hasher: TensorHasher, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Layer `layer`'s tensors in `dtype`, named as in the transformers layer.

    The tensors as stored (e.g. bf16) go to `hasher`, in key order.
    """
    from safetensors import safe_open

    prefixes = _hf_layer_prefixes(layer)
    shards = _hf_shards_for_layer(folder, layer)
    located: dict[str, Path] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefixes):
                        located[key] = shard
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise LLM4SegError(
                f"cannot read {shard}: {exc}; the file is damaged or not safetensors"
            ) from exc
    if not located:
        raise LLM4SegError(
            f"{folder} has no tensors for layer {layer} (looked for 'model.layers.{layer}.*')"
        )
    # use one prefix consistently (a folder mixing both forms would be odd)
    prefix = next(p for p in prefixes if any(k.startswith(p) for k in located))
    keys = sorted(k for k in located if k.startswith(prefix))
    out: dict[str, torch.Tensor] = {}
    by_shard: dict[Path, list[str]] = {}
    for k in keys:
        by_shard.setdefault(located[k], []).append(k)
    raw_tensors: dict[str, torch.Tensor] = {}
    for shard, shard_keys in by_shard.items():
        with safe_open(str(shard), framework="pt") as f:
            for k in shard_keys:
                raw_tensors[k] = f.get_tensor(k)
    for k in keys:  # sorted order for the hash
        t = raw_tensors.pop(k)
        hasher.add_torch(k, t)
        out[k[len(prefix) :]] = t.to(dtype).contiguous() if t.dtype != dtype else t.contiguous()
        del t
    return out
