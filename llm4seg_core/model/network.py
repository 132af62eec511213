"""The LLM4Seg network: CMUNeXt + the LLM block, built from a :class:`ModelSpec`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from llm4seg_core.device import flush_denormals
from llm4seg_core.model.cmunext import CMUNeXt
from llm4seg_core.model.llm_block import LLMBlock
from llm4seg_core.model.spec import ModelSpec


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int
    frozen: int
    llm_layer: int

    def lines(self) -> list[str]:
        return [
            f"parameters: {self.total:,} total",
            f"  trainable: {self.trainable:,}",
            f"  frozen:    {self.frozen:,}",
            f"  (LLM layer: {self.llm_layer:,})",
        ]


class LLM4SegNet(nn.Module):
    """CMUNeXt whose bottleneck runs through one LLM decoder layer (or not, per spec).

    ``llm_source_sha256`` identifies the LLM layer's weights; it is stored in
    checkpoints so one is never applied to a different layer.
    """

    def __init__(
        self, spec: ModelSpec, block: LLMBlock | None, llm_source_sha256: str | None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.llm_source_sha256 = llm_source_sha256
        self.net = CMUNeXt(
            in_channels=spec.total_in_channels,
            num_classes=spec.num_classes,
            dims=spec.dims,
            depths=spec.depths,
            kernels=spec.kernels,
            bottleneck=block,
        )

    @property
    def llm_block(self) -> LLMBlock | None:
        b = self.net.bottleneck
        return b if isinstance(b, LLMBlock) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> LLM4SegNet:
        super().train(mode)
        block = self.llm_block
        if block is not None and self.spec.freeze_llm:
            block.llm.eval()  # a frozen layer stays in eval mode (no dropout) while training
        return self

    def set_background_prior(self, p_background: float) -> None:
        """Start a multi-class head at softmax probability ``p_background`` for background.

        The head's biases become ``log p`` for background and ``log((1 - p) / (K - 1))``
        for each structure (the prior initialisation of Lin et al., "Focal loss",
        ICCV 2017). Used for partially labelled data: from the uniform start, the
        marginal loss lets the network park its probability mass on an often
        uncontoured structure everywhere (OpenKBP at 64 x 64, 400 steps: 280,286
        pixels of six val cases called oesophagus against 180 true, four organs never
        predicted), while from this start the same run finds five of the seven organs.
        Binary models are left as they are.
        """
        k = self.spec.num_classes
        if k < 2 or not 0.0 < p_background < 1.0:
            return
        with torch.no_grad():
            bias = self.net.head.bias
            bias.fill_(math.log((1.0 - p_background) / (k - 1)))
            bias[0] = math.log(p_background)

    def llm_parameter_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if ".bottleneck.llm." in f".{n}"}

    def stored_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: everything but a frozen pre-trained LLM layer.

        That layer is re-read from its source when the checkpoint is loaded.
        """
        skip_llm = self.spec.llm_mode == "pretrained" and self.spec.freeze_llm
        llm_names = self.llm_parameter_names() if skip_llm else set()
        return {k: v for k, v in self.state_dict().items() if k not in llm_names}

    def param_counts(self) -> ParamCounts:
        total = trainable = llm = 0
        llm_names = self.llm_parameter_names()
        for name, p in self.named_parameters():
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
            llm += p.numel() if name in llm_names else 0
        return ParamCounts(total=total, trainable=trainable, frozen=total - trainable, llm_layer=llm)


def build_model(
    spec: ModelSpec | None = None,
    *,
    device: torch.device | str = "cpu",
    llm_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> LLM4SegNet:
    """Build the network for ``spec``, reading only the one LLM layer it needs.

    ``llm_dtype`` defaults to float32 on CPU and MPS (this CPU kind has no fast
    bf16) and bfloat16 on CUDA for a frozen layer. Weights of the CNN and the
    adapters are initialised from ``seed``.
    """
    spec = spec or ModelSpec()
    flush_denormals()  # before the first torch work of this thread (see its docstring)
    device = torch.device(device)
    if llm_dtype is None:
        llm_dtype = torch.bfloat16 if device.type == "cuda" and spec.freeze_llm else torch.float32
    block = None
    sha = None
    if spec.has_llm:
        from llm4seg_core.model.llm import load_llm_layer

        layer = load_llm_layer(
            spec.llm_source,
            spec.llm_layer,
            dtype=llm_dtype,
            random_init=spec.llm_mode == "random",
            seed=seed,
        )
        sha = layer.weights_sha256
        torch.manual_seed(seed)
        block = LLMBlock(
            spec.dims[-1],
            layer.module,
            hidden_size=layer.hidden_size,
            head_dim=layer.head_dim,
            rope_theta=layer.rope_theta,
            positional=spec.positional,
            attention=spec.attention,
        )
        block.llm.requires_grad_(not spec.freeze_llm)
    torch.manual_seed(seed)
    model = LLM4SegNet(spec, block, sha)
    if block is not None:
        # the adapters stay float32 (autocast handles them on CUDA)
        block.proj_in.float()
        block.proj_out.float()
    model.eval()
    return model.to(device)
