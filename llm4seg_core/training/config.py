"""The records training takes and returns: what to train, how, and what came out.

Torch-free: front ends build and check a :class:`TrainConfig` or
:class:`FinetuneConfig` (and list :data:`TRAINABLE` in a menu) without
importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4seg_core.errors import LLM4SegError

if TYPE_CHECKING:
    import torch

__all__ = ["SCHEDULES", "TRAINABLE", "FinetuneConfig", "TrainConfig", "TrainResult", "check_trainable"]

SCHEDULES = ("poly", "cosine", "constant")
"""Learning-rate schedules of dataset training (after the optional linear warm-up)."""

TRAINABLE = ("adapters", "adapters+decoder", "all-but-llm", "all")
"""The parts a run may train, smallest first (see :func:`~llm4seg_core.training.set_trainable`)."""


def check_trainable(trainable: str) -> str:
    if trainable not in TRAINABLE:
        raise LLM4SegError(f"trainable must be one of {', '.join(TRAINABLE)}, not {trainable!r}")
    return trainable


def _check_crop(crop_size: int | None) -> None:
    if crop_size is not None and (crop_size < 16 or crop_size % 16):
        raise LLM4SegError("the crop size must be a multiple of 16")


@dataclass
class TrainConfig:
    """Dataset training; defaults are the reference recipe (shared/REFERENCE.md)."""

    epochs: int = 300
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # schedule "poly": lr = lr0 * (1 - it / max_it) ** poly_power; 0 = constant
    schedule: str = "poly"  # "poly" (the reference) | "cosine" | "constant"
    warmup_steps: int = 0  # linear warm-up from lr0 / warmup_steps to lr0 before the schedule
    bce_weight: float = 0.5  # binary: bce_weight * BCE + (1 - soft Dice); multi-class: CE + (1 - Dice)
    augment: bool = True  # RandomRotate90 + flips
    crop_size: int | None = None  # train on random crops of the model grid (a multiple of 16)
    fg_crop_prob: float = 0.0  # share of crops centred on a labelled pixel (small lesions)
    trainable: str = "all-but-llm"
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None  # stop (and end the lr schedule) after this many steps
    eval_every: int = 1  # epochs between validations
    val_batch_size: int = 8
    num_workers: int = 0
    amp: bool = True  # bf16 autocast on CUDA only (never on CPU: no fast bf16 there)

    def __post_init__(self) -> None:
        check_trainable(self.trainable)
        if self.epochs < 1 or self.batch_size < 1:
            raise LLM4SegError("epochs and batch size must be at least 1")
        if self.lr <= 0:
            raise LLM4SegError("the learning rate must be positive")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise LLM4SegError(f"optimizer must be sgd, adam or adamw, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise LLM4SegError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.warmup_steps < 0:
            raise LLM4SegError("warm-up steps cannot be negative")
        _check_crop(self.crop_size)

    def learning_rate(self, step: int, total: int) -> float:
        """The learning rate of step ``step`` (0-based) of ``total``: warm-up, then the schedule."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(total - self.warmup_steps, 1)
        t = min(max(step - self.warmup_steps, 0) / span, 1.0)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.schedule == "poly" and self.poly_power:
            return self.lr * (1.0 - t) ** self.poly_power
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FinetuneConfig:
    """Few-shot fine-tuning on corrected slices; defaults aim at <= 60 s on a 2-core CPU.

    Chosen by experiment (``bench/finetune_sweep.py``; the figures are in
    docs/benchmarks.md, "Choosing the crop and step count"). With the encoder
    frozen its features are cached, and the LLM block runs on the whole
    slice's token grid, as at inference; only the decoder runs on the crop, so
    a 160 x 160 crop step costs about 40 % of a whole slice's. Training the
    encoder too (``all-but-llm``) scored no better.
    """

    steps: int = 180
    batch_size: int = 2
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0
    trainable: str = "adapters+decoder"
    crop_size: int | None = 160  # crops of the model grid (a multiple of 16); None = whole slices
    fg_crop_prob: float = 0.75  # share of crops centred on a labelled pixel
    augment: bool = True  # the 8 rotations/flips
    cache_encoder: bool = True  # run a frozen encoder once per slice x augmentation
    cache_max_mb: int = 1536  # above this the features are not cached (plain training)
    freeze_bn: bool = True  # BatchNorm keeps its pre-trained statistics (few-shot batches)
    bce_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        check_trainable(self.trainable)
        if self.steps < 1 or self.batch_size < 1:
            raise LLM4SegError("steps and batch size must be at least 1")
        _check_crop(self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """History (one dict per evaluation), the best metrics and the best weights.

    ``best_state`` holds the tensors a checkpoint stores (``stored_state_dict``)
    on the CPU. ``cancelled``: stopped by the cancel flag (the model holds the
    weights of the last step for :class:`~llm4seg_core.training.Trainer`;
    :func:`~llm4seg_core.training.finetune` restores the weights it started from).
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    epochs: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    checkpoint_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
