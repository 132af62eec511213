"""The supported decoder architectures (llama, qwen2) and their transformers classes.

What every source and the layer builder share: the config and decoder-layer class of
each architecture, config facts the model code needs (rope theta, head dim), and
layers built without weights (on the meta device, or random-initialised).
transformers is imported lazily here (it takes seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llm4seg_core.errors import LLM4SegError

SUPPORTED_ARCHS = ("llama", "qwen2")


def arch_of(config: Any) -> str:
    return str(getattr(config, "model_type", "")).lower()


def unsupported_arch(arch: str, where: Path) -> LLM4SegError:
    return LLM4SegError(
        f"unsupported LLM architecture '{arch}' in {where}: only llama and qwen2 decoder models "
        "work (e.g. smollm2, meta-llama/Llama-3.2-1B, deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B)"
    )


def config_class(arch: str) -> type:
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig
    from transformers import Qwen2Config

    return Qwen2Config


def layer_class(arch: str) -> type:
    if arch == "llama":
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        return LlamaDecoderLayer
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    return Qwen2DecoderLayer


def rope_theta_of(config: Any) -> float:
    """rope theta from transformers 5.x ``rope_parameters`` or older ``rope_theta``."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        if "rope_theta" in params:
            return float(params["rope_theta"])
        # per-layer-type form: {"full_attention": {...}, "sliding_attention": {...}}
        for key in ("full_attention", *sorted(params)):
            sub = params.get(key)
            if isinstance(sub, dict) and "rope_theta" in sub:
                return float(sub["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    if theta is not None:
        return float(theta)
    return 10000.0


def head_dim_of(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    return int(config.hidden_size) // int(config.num_attention_heads)


def meta_layer(arch: str, config: Any, layer: int) -> torch.nn.Module:
    """The decoder layer with all tensors on the meta device (no memory, no init cost)."""
    cls = layer_class(arch)
    with torch.device("meta"):
        return cls(config, layer_idx=layer)


def random_init_layer(
    arch: str, config: Any, layer: int, dtype: torch.dtype, seed: int
) -> torch.nn.Module:
    """Fresh layer, deterministic from `seed`.

    Linear weights ~ N(0, initializer_range), RMSNorm weights 1, biases 0.
    """
    module = meta_layer(arch, config, layer)
    module = module.to_empty(device="cpu")
    module = module.to(torch.float32)
    std = float(getattr(config, "initializer_range", 0.02))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    with torch.no_grad():
        for _, sub in sorted(module.named_modules(), key=lambda kv: kv[0]):
            if isinstance(sub, torch.nn.Linear):
                sub.weight.normal_(0.0, std, generator=gen)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif "norm" in type(sub).__name__.lower() and hasattr(sub, "weight"):
                sub.weight.fill_(1.0)
                bias = getattr(sub, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
    return module.to(dtype)
