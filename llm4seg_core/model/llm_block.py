"""The LLM4Seg block: bottleneck features through one pre-trained LLM layer.

(B, C, H, W) features are flattened to H*W tokens, projected C -> d by a
trainable linear adapter, passed through one (normally frozen) LLM decoder
layer, projected back d -> C and reshaped. There is no residual around the
block, as in the reference.

Positions: by default real 2D rotary embeddings (half of the rotary frequency
pairs encode the row, half the column, with the LLM's own rotary base).
``reference1d`` reproduces the reference code: one angle per token (its raster
index, in radians) broadcast over every rotary channel, with sine and cosine
passed in swapped order. Attention is bidirectional by default; ``causal``
reproduces the reference, whose missing mask made the layer causal over the
raster order of the tokens.
"""

from __future__ import annotations

import torch
from torch import nn


def rope2d_angles(height: int, width: int, head_dim: int, theta: float) -> torch.Tensor:
    """Rotary angles (H*W, head_dim) for a 2D grid, in transformers' rotate-half layout.

    The head has head_dim/2 rotation pairs; the first half of the pairs rotate
    with the token's row, the second half with its column. Each half uses the
    frequencies theta^(-k/n) (k = 0..n-1), the LLM's own spectrum squeezed
    into n pairs.
    """
    pairs = head_dim // 2
    n_row = pairs // 2
    n_col = pairs - n_row

    def freqs(n: int) -> torch.Tensor:
        return theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1))

    rows = torch.arange(height, dtype=torch.float64).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float64).repeat(height)
    half = torch.cat([rows[:, None] * freqs(n_row), cols[:, None] * freqs(n_col)], dim=1)
    return torch.cat([half, half], dim=1).float()


def reference1d_angles(height: int, width: int, head_dim: int) -> torch.Tensor:
    """The reference's form: angle = raster index, the same for every channel."""
    t = torch.arange(height * width, dtype=torch.float32)
    return t[:, None].expand(-1, head_dim).contiguous()


class LLMBlock(nn.Module):
    """Linear(C -> d) -> LLM decoder layer -> Linear(d -> C) over bottleneck tokens."""

    def __init__(
        self,
        channels: int,
        llm: nn.Module,
        *,
        hidden_size: int,
        head_dim: int,
        rope_theta: float,
        positional: str = "rope2d",
        attention: str = "bidirectional",
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(channels, hidden_size)
        self.llm = llm
        self.proj_out = nn.Linear(hidden_size, channels)
        self.head_dim = head_dim
        self.rope_theta = float(rope_theta)
        self.positional = positional
        self.causal = attention == "causal"
        self._angles: dict[tuple[int, int], torch.Tensor] = {}

    def _position_embeddings(
        self, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (height, width)
        if key not in self._angles:
            if self.positional == "rope2d":
                self._angles[key] = rope2d_angles(height, width, self.head_dim, self.rope_theta)
            else:
                self._angles[key] = reference1d_angles(height, width, self.head_dim)
        angles = self._angles[key].to(device)
        cos, sin = angles.cos()[None].to(dtype), angles.sin()[None].to(dtype)
        if self.positional == "reference1d":
            return sin, cos  # the reference passes [sin, cos] where (cos, sin) is read
        return cos, sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(x.flatten(2).transpose(1, 2))  # (B, H*W, d)
        llm_dtype = next(self.llm.parameters()).dtype
        if torch.is_autocast_enabled(x.device.type):
            compute_dtype = torch.get_autocast_dtype(x.device.type)
        else:
            compute_dtype = llm_dtype
            tokens = tokens.to(llm_dtype)
        cos, sin = self._position_embeddings(h, w, x.device, compute_dtype)
        out = self.llm(
            tokens,
            attention_mask=None,
            position_embeddings=(cos, sin),
            is_causal=self.causal,
        )
        if isinstance(out, tuple):  # transformers < 5 returned a tuple
            out = out[0]
        if not torch.is_autocast_enabled(x.device.type):
            out = out.to(self.proj_out.weight.dtype)
        out = self.proj_out(out)
        return out.transpose(1, 2).reshape(b, c, h, w)
