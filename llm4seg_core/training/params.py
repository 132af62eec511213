"""Which parameters train: the named parts of a model, frozen BatchNorm, CPU copies of weights."""

from __future__ import annotations

import torch
from torch import nn

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.training.config import check_trainable

__all__ = ["cpu_state", "freeze_bn_eval", "set_trainable", "train_mode"]

_PARTS = {
    "adapters": {"adapters"},
    "adapters+decoder": {"adapters", "decoder"},
    "all-but-llm": {"adapters", "decoder", "encoder"},
    "all": {"adapters", "decoder", "encoder", "llm"},
}


def _part_of(name: str, llm_names: set[str]) -> str:
    if name in llm_names:
        return "llm"
    if name.startswith(("net.bottleneck.proj_in.", "net.bottleneck.proj_out.")):
        return "adapters"
    if name.startswith(("net.decoder.", "net.head.")):
        return "decoder"
    return "encoder"


def set_trainable(model: LLM4SegNet, trainable: str) -> list[str]:
    """Give gradients to the parts ``trainable`` names and freeze the rest; return the names.

    ``adapters``: the two linear adapters around the LLM layer; ``adapters+decoder``:
    plus the decoder and the output head; ``all-but-llm``: everything except the
    LLM layer (the reference); ``all``: the LLM layer too (the model's spec then
    says ``freeze_llm=false`` so that checkpoints store the layer).
    """
    check_trainable(trainable)
    if trainable == "adapters" and model.llm_block is None:
        raise LLM4SegError(
            "this model has no LLM block, so it has no adapters to train; "
            "use trainable adapters+decoder or all-but-llm"
        )
    parts = _PARTS[trainable]
    if trainable == "all" and model.llm_block is not None and model.spec.freeze_llm:
        model.spec = model.spec.with_(freeze_llm=False)
        model.llm_block.llm.float()
    llm_names = model.llm_parameter_names()
    names = []
    for name, p in model.named_parameters():
        on = _part_of(name, llm_names) in parts
        p.requires_grad_(on)
        if on:
            names.append(name)
    return names


def freeze_bn_eval(model: nn.Module, all_bn: bool = False) -> None:
    """Put BatchNorm layers whose parameters are frozen (or all, ``all_bn``) in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if all_bn or not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


def train_mode(model: LLM4SegNet, freeze_all_bn: bool = False) -> None:
    """Training mode, but a frozen LLM layer and frozen BatchNorm layers stay in eval."""
    model.train()  # keeps a frozen LLM layer in eval
    freeze_bn_eval(model, freeze_all_bn)


def cpu_state(model: LLM4SegNet) -> dict[str, torch.Tensor]:
    """A CPU copy of the tensors a checkpoint of ``model`` stores (``stored_state_dict``)."""
    return {k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in model.stored_state_dict().items()}
