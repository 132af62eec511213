"""CMUNeXt encoder-decoder (the LLM4Seg backbone), written from its description.

Layout (reference defaults, see shared/REFERENCE.md): a conv3x3-BN-ReLU stem,
five encoder stages of large-kernel depthwise blocks with 2x2 max-pooling
between them (a 256x256 input reaches a 16x16 bottleneck), and a decoder of
bilinear up-sampling, skip concatenation and "fusion" blocks. The bottleneck
is a hook: :class:`CMUNeXt` takes any module that maps (B, C, H, W) to the same
shape and runs it on the deepest features.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=True),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _DepthwiseResidual(nn.Module):
    """x + BN(GELU(depthwise kxk conv(x)))."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(F.gelu(self.conv(x)))


class CMUNeXtUnit(nn.Module):
    """One repeat of a stage: depthwise residual, then an inverted bottleneck (x4)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.spatial = _DepthwiseResidual(channels, kernel)
        self.expand = nn.Conv2d(channels, channels * 4, 1)
        self.bn1 = nn.BatchNorm2d(channels * 4)
        self.reduce = nn.Conv2d(channels * 4, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spatial(x)
        x = self.bn1(F.gelu(self.expand(x)))
        return self.bn2(F.gelu(self.reduce(x)))


class EncoderStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int, kernel: int) -> None:
        super().__init__()
        self.units = nn.Sequential(*(CMUNeXtUnit(c_in, kernel) for _ in range(depth)))
        self.out = conv_bn_relu(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.units(x))


class FusionBlock(nn.Module):
    """Grouped conv3x3 (groups=2), then 1x1 to 4x width and 1x1 down, each GELU+BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=2),
            nn.GELU(),
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out * 4, 1),
            nn.GELU(),
            nn.BatchNorm2d(c_out * 4),
            nn.Conv2d(c_out * 4, c_out, 1),
            nn.GELU(),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpStage(nn.Module):
    """Bilinear x2, conv3x3-BN-ReLU to the skip's width, concat, fusion block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = conv_bn_relu(c_in, c_out)
        self.fuse = FusionBlock(c_out * 2, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up(x)
        return self.fuse(torch.cat([skip, x], dim=1))


class CMUNeXt(nn.Module):
    """CMUNeXt with a pluggable bottleneck module (identity by default)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        dims: tuple[int, ...] = (16, 32, 128, 160, 256),
        depths: tuple[int, ...] = (1, 1, 1, 3, 1),
        kernels: tuple[int, ...] = (3, 3, 7, 7, 7),
        bottleneck: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, dims[0])
        widths_in = (dims[0], *dims[:-1])
        self.encoder = nn.ModuleList(
            EncoderStage(c_in, c_out, d, k)
            for c_in, c_out, d, k in zip(widths_in, dims, depths, kernels, strict=True)
        )
        self.bottleneck = bottleneck if bottleneck is not None else nn.Identity()
        self.decoder = nn.ModuleList(UpStage(dims[i + 1], dims[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(dims[0], num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder half: the five feature maps, shallowest first (the last is the bottleneck's input)."""
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        return skips

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """The rest: bottleneck module, decoder, head (``skips`` as :meth:`encode` returns them)."""
        return self.upsample(self.bottleneck(skips[-1]), skips[:-1])

    def upsample(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decoder stages and head from the bottleneck module's output ``x`` and the four
        shallower encoder maps (shallowest first)."""
        skips = list(skips)
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
