"""Training and few-shot fine-tuning of LLM4Seg models.

:class:`Trainer` runs the reference recipe on a dataset (SGD lr 0.01,
momentum 0.9, weight decay 1e-4, poly decay ``(1 - it/max_it)^0.9``,
``0.5 * BCE + (1 - soft Dice)``, RandomRotate90 + flips, batch 8, best
checkpoint by validation IoU). It takes callbacks (progress, metrics, a cancel
flag checked every step), so a UI runs it in a worker thread and the CLI in the
foreground. Runs are deterministic for a seed: the data order of an epoch comes
from ``(seed, epoch)`` and the augmentation of a step from ``(seed, step,
rank)``, so a run resumed from its saved state ends with the same weights as
one that was never interrupted. Under ``torchrun`` it trains with
DistributedDataParallel (gloo on CPU, nccl on GPU); only rank 0 writes.

:func:`finetune` adapts a model to the corrected slices of one volume in well
under a minute on a 2-core CPU: it trains the adapters and the decoder, runs
the frozen encoder once per slice and augmentation (the 8 flips/rotations) and
caches its features, and trains on 16-aligned crops of those features centred
on the labels most of the time (:class:`FinetuneConfig`).

Training state on disk (``checkpoint_dir``): ``best.safetensors`` and
``last.safetensors`` (ordinary checkpoints), ``train_state.safetensors``
(model, best-model and optimizer tensors) and ``train_state.json`` (step,
epoch, optimizer scalars, history, config). Nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm4seg_core.device import flush_denormals, resolve_device
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.metrics import overlap_scores
from llm4seg_core.model.network import LLM4SegNet

__all__ = [
    "TRAINABLE",
    "Callbacks",
    "DistInfo",
    "FinetuneConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "finetune",
    "init_distributed",
    "segmentation_loss",
    "set_trainable",
]

TRAINABLE = ("adapters", "adapters+decoder", "all-but-llm", "all")
STATE_FORMAT = "llm4seg-train-state/1"
STATE_JSON = "train_state.json"
STATE_TENSORS = "train_state.safetensors"


# --------------------------------------------------------------------------- configs


@dataclass
class TrainConfig:
    """Dataset training; defaults are the reference recipe (shared/REFERENCE.md)."""

    epochs: int = 300
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # lr = lr0 * (1 - it / max_it) ** poly_power; 0 = constant
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
        if self.crop_size is not None and (self.crop_size < 16 or self.crop_size % 16):
            raise LLM4SegError("the crop size must be a multiple of 16")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FinetuneConfig:
    """Few-shot fine-tuning on corrected slices; defaults aim at <= 60 s on a 2-core CPU.

    Chosen by experiment (docs/benchmarks.md, "Few-shot volume completion";
    ``bench/finetune_sweep.py``; lung2 tumour and brain1 lesion, k = 2, two
    seeds, from the shipped default base):

    * 160 x 160 crops, 180 steps: the encoder's features are cached and the LLM
      block runs on the whole slice's 16 x 16 token grid, as at inference; only
      the decoder runs on the crop, so a step costs about 40 % of a whole
      slice's and 180 steps take 40-48 s on a 2-core CPU. With the
      continuation filter (postprocess, 3 mm) the two seeds scored lung2 0.723
      and 0.721, brain1 0.650 and 0.408, against 0.543 / 0.358 and 0.559 for
      80 whole-slice steps. Raw Dice (no filter) is low either way (0.14-0.20
      in these four runs).
    * 220 steps, BCE weight 0.25 or 2, 128 crops, lr 2e-3: no better; 220
      steps take 57 s, too close to the 60 s budget.
    * adapters + decoder: training the encoder too (``all-but-llm``, uncached
      128 crops, 150 steps) scored no better (0.16 / 0.23 raw).
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
        if self.crop_size is not None and (self.crop_size < 16 or self.crop_size % 16):
            raise LLM4SegError("the crop size must be a multiple of 16")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Callbacks:
    """What a front end hears from training. All optional.

    ``on_progress(step, total)`` after every step; ``on_metrics(dict)`` after
    every epoch/evaluation; ``cancel`` (a ``threading.Event`` or a callable) is
    checked before every step; ``on_log(text)`` for messages.
    """

    on_progress: Callable[[int, int], None] | None = None
    on_metrics: Callable[[dict[str, Any]], None] | None = None
    cancel: threading.Event | Callable[[], bool] | None = None
    on_log: Callable[[str], None] | None = None

    def cancelled(self) -> bool:
        if self.cancel is None:
            return False
        if isinstance(self.cancel, threading.Event):
            return self.cancel.is_set()
        return bool(self.cancel())

    def progress(self, step: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(step, total)

    def metrics(self, m: dict[str, Any]) -> None:
        if self.on_metrics:
            self.on_metrics(m)

    def log(self, text: str) -> None:
        if self.on_log:
            self.on_log(text)


@dataclass
class TrainResult:
    """History (one dict per evaluation), the best metrics and the best weights.

    ``best_state`` holds the tensors a checkpoint stores (``stored_state_dict``)
    on the CPU. ``cancelled``: stopped by the cancel flag (the model holds the
    weights of the last step for :class:`Trainer`; :func:`finetune` restores
    the weights it started from).
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


# --------------------------------------------------------------------------- parameters


def check_trainable(trainable: str) -> str:
    if trainable not in TRAINABLE:
        raise LLM4SegError(f"trainable must be one of {', '.join(TRAINABLE)}, not {trainable!r}")
    return trainable


def _part_of(name: str, model: LLM4SegNet, llm_names: set[str]) -> str:
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
    parts = {
        "adapters": {"adapters"},
        "adapters+decoder": {"adapters", "decoder"},
        "all-but-llm": {"adapters", "decoder", "encoder"},
        "all": {"adapters", "decoder", "encoder", "llm"},
    }[trainable]
    if trainable == "all" and model.llm_block is not None and model.spec.freeze_llm:
        model.spec = model.spec.with_(freeze_llm=False)
        model.llm_block.llm.float()
    llm_names = model.llm_parameter_names()
    names = []
    for name, p in model.named_parameters():
        on = _part_of(name, model, llm_names) in parts
        p.requires_grad_(on)
        if on:
            names.append(name)
    return names


def _frozen_bn_eval(model: nn.Module, all_bn: bool = False) -> None:
    """Put BatchNorm layers whose parameters are frozen (or all, ``all_bn``) in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if all_bn or not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


def _train_mode(model: LLM4SegNet, freeze_all_bn: bool = False) -> None:
    model.train()  # keeps a frozen LLM layer in eval
    _frozen_bn_eval(model, freeze_all_bn)


# --------------------------------------------------------------------------- loss, augmentation


IGNORE_LABEL = 255
"""Target value that the loss skips (pixels with no label, not background)."""


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5,
                      smooth: float = 1.0) -> torch.Tensor:
    """Binary (1 channel): ``bce_weight * BCE-with-logits + (1 - soft Dice)``.

    Multi-class (K channels, target = class indices): ``CE + (1 - mean soft Dice
    of the foreground classes)``. Soft Dice is over the whole batch (smooth 1),
    so that label-free slices do not make it undefined.

    Target pixels equal to :data:`IGNORE_LABEL` (255) take no part in either
    term: partial labels (a structure deliberately left out of pretraining).
    """
    logits = logits.float()
    valid = target != IGNORE_LABEL
    if logits.shape[1] == 1:
        t = torch.where(valid, target, 0).float()
        x = logits[:, 0]
        w = valid.float()
        bce = (F.binary_cross_entropy_with_logits(x, t, reduction="none") * w).sum() / w.sum().clamp_min(1)
        p = torch.sigmoid(x) * w
        inter = (p * t).sum()
        dice = (2 * inter + smooth) / (p.sum() + t.sum() + smooth)
        return bce_weight * bce + (1 - dice)
    t = target.long()
    ce = F.cross_entropy(logits, t, ignore_index=IGNORE_LABEL)
    w = valid.unsqueeze(1).float()
    p = torch.softmax(logits, dim=1)[:, 1:] * w
    onehot = F.one_hot(torch.where(valid, t, 0), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + onehot.sum(dims) + smooth)
    return ce + (1 - dice.mean())


@torch.no_grad()
def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Hard Dice of one batch (thresholded/argmax prediction), foreground classes pooled.

    1.0 when neither prediction nor target has foreground. What the live
    fine-tune plot shows: the fit to the corrected slices, not a held-out score.
    """
    valid = target != IGNORE_LABEL
    if logits.shape[1] == 1:
        pred = (logits[:, 0].float() > 0) & valid
        ref = (target > 0.5) & valid
    else:
        pred = (logits.float().argmax(1) > 0) & valid
        ref = (target.long() > 0) & valid
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & ref).sum()) / denom


def _dihedral(t: torch.Tensor, d: int) -> torch.Tensor:
    """One of the 8 rotations/flips of the last two axes (d in 0..7)."""
    if d & 4:
        t = t.flip(-1)
    return torch.rot90(t, d & 3, dims=(-2, -1)) if d & 3 else t


def _crop_offset(label: torch.Tensor, crop: int, gen: torch.Generator, fg_prob: float,
                 align: int) -> tuple[int, int]:
    h, w = label.shape[-2:]
    u = torch.rand((), generator=gen).item()
    if fg_prob > 0 and u < fg_prob:
        fg = torch.nonzero(label)
        if len(fg):
            cy, cx = fg[int(torch.randint(len(fg), (), generator=gen))].tolist()
            oy, ox = cy - crop // 2, cx - crop // 2
            oy = min(max(0, round(oy / align) * align), h - crop)
            ox = min(max(0, round(ox / align) * align), w - crop)
            return oy, ox
    ny, nx = (h - crop) // align + 1, (w - crop) // align + 1
    return (int(torch.randint(ny, (), generator=gen)) * align,
            int(torch.randint(nx, (), generator=gen)) * align)


def _decode_crops(net: torch.nn.Module, cache: list[list[torch.Tensor]], variants: list[int],
                  picks: list[tuple[int, int, int, int]], c: int, levels: int) -> torch.Tensor:
    """Decoder logits on crops of cached encoder features.

    The bottleneck module (the LLM block) sees the whole slice's token grid, as at
    inference; only its output and the skips are cropped, so the decoder runs on a
    ``c`` x ``c`` window. Offsets are multiples of 16.
    """
    def crops(maps: list[torch.Tensor], lvl: int) -> torch.Tensor:
        f = 1 << lvl
        return torch.stack([m[:, oy // f:(oy + c) // f, ox // f:(ox + c) // f]
                            for m, (_, _, oy, ox) in zip(maps, picks, strict=True)])

    deep = levels - 1
    full = net.bottleneck(torch.stack([cache[variants.index(d)][deep][i] for i, d, _, _ in picks]))
    skips = [crops([cache[variants.index(d)][lvl][i] for i, d, _, _ in picks], lvl)
             for lvl in range(deep)]
    return net.upsample(crops(list(full), deep), skips)


def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, augment: bool,
                  crop: int | None, fg_prob: float = 0.0, align: int = 1
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomRotate90 + flip (each of the 8 with equal chance) and an optional random crop."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        if augment:
            d = int(torch.randint(8, (), generator=gen))
            xi, yi = _dihedral(xi, d), _dihedral(yi, d)
        if crop is not None and crop < yi.shape[-1]:
            oy, ox = _crop_offset(yi, crop, gen, fg_prob, align)
            xi, yi = xi[:, oy:oy + crop, ox:ox + crop], yi[oy:oy + crop, ox:ox + crop]
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs).contiguous(), torch.stack(ys).contiguous()


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); else do nothing.

    Backend: nccl when the run uses CUDA, gloo on CPU.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist_info()


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _sync_buffers(model: nn.Module) -> None:
    """Average floating buffers (BatchNorm running statistics) over the ranks.

    DDP broadcasts rank 0's buffers before each forward, but the last forward
    of an epoch leaves each rank with statistics of its own batch; averaging
    makes every rank (and rank 0's checkpoint) hold the same model.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world)


# --------------------------------------------------------------------------- evaluation


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _labels_of(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def _per_image_scores(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> tuple[float, float]:
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    d = i = 0.0
    for k in labels:
        s = overlap_scores(pred == k, ref == k)
        d += s["dice"]
        i += s["iou"]
    return d / len(labels), i / len(labels)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, *, device: torch.device | str = "cpu",
             batch_size: int = 8, bce_weight: float = 0.5, amp: bool = True,
             shard: DistInfo | None = None) -> dict[str, float]:
    """Mean loss, Dice and IoU per image (mean over foreground classes) at the model grid.

    With ``shard`` each rank scores its share and the sums are all-reduced.
    """
    device = torch.device(device)
    net = model.module if hasattr(model, "module") else model
    num_classes = net.spec.num_classes
    was_training = net.training
    net.eval()
    shard = shard or DistInfo()
    idx = list(range(shard.rank, len(dataset), shard.world_size))
    sums = [0.0, 0.0, 0.0, 0.0]  # loss * n, dice, iou, n
    try:
        for start in range(0, len(idx), batch_size):
            items = [dataset[i] for i in idx[start:start + batch_size]]
            x = torch.stack([a for a, _ in items]).to(device)
            y = torch.stack([b for _, b in items]).to(device)
            with _autocast(device, amp):
                logits = net(x)
            sums[0] += float(segmentation_loss(logits, y, bce_weight)) * len(items)
            pred = _labels_of(logits.float()).cpu().numpy()
            ref = y.cpu().numpy()
            for p, r in zip(pred, ref, strict=True):
                d, i = _per_image_scores(p, r, num_classes)
                sums[1] += d
                sums[2] += i
            sums[3] += len(items)
    finally:
        if was_training:
            net.train()
    sums = _all_reduce_sum(sums, device if device.type == "cuda" else torch.device("cpu"))
    n = max(sums[3], 1.0)
    return {"val_loss": sums[0] / n, "val_dice": sums[1] / n, "val_iou": sums[2] / n}


# --------------------------------------------------------------------------- state files


def _cpu_state(model: LLM4SegNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.stored_state_dict().items()}


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in js.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": js["param_groups"]}


def has_train_state(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / STATE_JSON).is_file() and (folder / STATE_TENSORS).is_file()


def read_train_state_info(folder: str | Path) -> dict[str, Any]:
    """The JSON part of a saved training state (step, epoch, config, spec, history...)."""
    path = Path(folder) / STATE_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LLM4SegError(f"cannot read the training state {path}: {exc}") from None
    if data.get("format") != STATE_FORMAT:
        raise LLM4SegError(f"{path} is not an llm4seg training state")
    return data


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Trains ``model`` on a dataset with ``config``; see the module docstring.

    ``fit(train, val)`` takes torch datasets of ``(x, y)`` pairs (see
    :mod:`llm4seg_core.datasets`). With ``checkpoint_dir`` it writes
    ``best.safetensors`` when validation IoU improves, and ``last.safetensors``
    plus the training state after every epoch, on cancel and on Ctrl-C
    (KeyboardInterrupt is re-raised after the state is saved). ``resume=True``
    continues from the state in ``checkpoint_dir``.
    """

    def __init__(self, model: LLM4SegNet, config: TrainConfig | None = None,
                 callbacks: Callbacks | None = None) -> None:
        self.config = config or TrainConfig()
        self.callbacks = callbacks or Callbacks()
        self.model = model
        self.dist = dist_info()
        cfg = self.config
        if self.dist.distributed and cfg.device in ("auto", "cuda") and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{self.dist.local_rank}")
        else:
            self.device = resolve_device(cfg.device)
        self.trainable_names = set_trainable(model, cfg.trainable)
        if not self.trainable_names:
            raise LLM4SegError("nothing to train: no parameter is trainable")
        block = model.llm_block
        if self.device.type == "cuda" and block is not None and model.spec.freeze_llm:
            block.llm.to(torch.bfloat16)
        self.model.to(self.device)
        self.params = [p for n, p in model.named_parameters() if n in self.trainable_names]
        self.optimizer = self._make_optimizer()
        self.meta: dict[str, Any] = {}

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    # --------------------------------------------------------------- state

    def _save_state(self, folder: Path, st: dict[str, Any], best_state: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v for k, v in _cpu_state(self.model).items()}
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
        opt_t, opt_js = _optimizer_split(self.optimizer)
        tensors.update(opt_t)
        stamp = f"{st['step']}:{time.time_ns()}"
        _atomic(folder / STATE_TENSORS,
                lambda p: save_file(tensors, p, metadata={"format": STATE_FORMAT, "stamp": stamp}))
        js = {
            "format": STATE_FORMAT,
            "stamp": stamp,
            **st,
            "optimizer": opt_js,
            "config": self.config.to_dict(),
            "spec": self.model.spec.to_dict(),
            "trainable": sorted(self.trainable_names),
            "meta": self.meta,
        }
        text = json.dumps(js, indent=1, default=str)
        _atomic(folder / STATE_JSON, lambda p: Path(p).write_text(text, encoding="utf-8"))

    def _load_state(self, folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not has_train_state(folder):
            raise LLM4SegError(f"no training state to resume in {folder} (train_state.json missing)")
        js = read_train_state_info(folder)
        with safe_open(str(folder / STATE_TENSORS), framework="pt") as f:
            stamp = (f.metadata() or {}).get("stamp")
        if stamp != js.get("stamp"):
            raise LLM4SegError(
                f"the training state in {folder} is incomplete (its two files are from different "
                "saves); resume from last.safetensors with a new run"
            )
        if js["spec"] != self.model.spec.to_dict():
            raise LLM4SegError(f"the training state in {folder} belongs to another model spec")
        if sorted(self.trainable_names) != js["trainable"]:
            raise LLM4SegError(
                f"the training state in {folder} trained other parameters "
                f"(trainable {js['config'].get('trainable')!r}); resume with the same setting"
            )
        tensors = load_file(str(folder / STATE_TENSORS))
        model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        expected = set(self.model.stored_state_dict())
        if set(model_sd) != expected:
            raise LLM4SegError(f"the training state in {folder} does not fit this model")
        self.model.load_state_dict(model_sd, strict=False)
        self.optimizer.load_state_dict(_optimizer_join(tensors, js["optimizer"]))
        return js, best

    # --------------------------------------------------------------- fit

    def fit(self, train: Any, val: Any | None = None, *, checkpoint_dir: str | Path | None = None,
            resume: bool = False, meta: dict[str, Any] | None = None) -> TrainResult:
        from torch.utils.data import DataLoader, DistributedSampler

        flush_denormals()

        cfg, cb, dist_ = self.config, self.callbacks, self.dist
        if len(train) == 0:
            raise LLM4SegError("the training set is empty")
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        writer = folder is not None and dist_.is_main
        if writer:
            folder.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        model = self.model
        num_classes = model.spec.num_classes
        sampler = DistributedSampler(train, num_replicas=dist_.world_size, rank=dist_.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        per_epoch = math.ceil(len(sampler) / cfg.batch_size)
        total = cfg.epochs * per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)

        st: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "loss_sum": 0.0, "loss_n": 0,
                              "history": [], "best_metrics": {}, "best_iou": -1.0}
        best_state: dict[str, torch.Tensor] = {}
        if resume:
            if folder is None:
                raise LLM4SegError("resuming needs the folder the training state was saved in")
            js, best_state = self._load_state(folder)
            for k in st:
                st[k] = js[k]
            cb.log(f"resuming at step {st['step']} (epoch {st['epoch'] + 1})")

        ddp = model
        if dist_.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                      find_unused_parameters=False, broadcast_buffers=True)
        result = TrainResult(checkpoint_dir=folder if writer else None)
        t0 = time.perf_counter()

        def save() -> None:
            if writer:
                self._save_state(folder, st, best_state)
                from llm4seg_core.store import save_checkpoint

                save_checkpoint(model, folder / "last.safetensors",
                                {**self.meta, "step": st["step"], "epoch": st["epoch"],
                                 "metrics": st["history"][-1] if st["history"] else {}})

        pin = self.device.type == "cuda"
        cb.progress(st["step"], total)
        try:
            while st["step"] < total and st["epoch"] < cfg.epochs:
                epoch = st["epoch"]
                sampler.set_epoch(epoch)
                order = list(sampler)
                batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                loader = DataLoader(train, batch_sampler=batches[st["batch"]:],
                                    num_workers=cfg.num_workers, pin_memory=pin)
                _train_mode(model)
                t_epoch = time.perf_counter()
                for x, y in loader:
                    if st["step"] >= total:
                        break
                    if cb.cancelled():
                        result.cancelled = True
                        break
                    gen = torch.Generator().manual_seed(
                        (cfg.seed * 1_000_003 + st["step"]) * 4099 + dist_.rank)
                    x, y = augment_batch(x, y, gen, augment=cfg.augment, crop=cfg.crop_size,
                                         fg_prob=cfg.fg_crop_prob)
                    x = x.to(self.device, non_blocking=pin)
                    y = y.to(self.device, non_blocking=pin)
                    if cfg.poly_power:
                        lr = cfg.lr * (1 - st["step"] / total) ** cfg.poly_power
                        for g in self.optimizer.param_groups:
                            g["lr"] = lr
                    with _autocast(self.device, cfg.amp):
                        logits = ddp(x)
                    loss = segmentation_loss(logits, y, cfg.bce_weight)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    st["loss_sum"] += float(loss.detach())
                    st["loss_n"] += 1
                    st["step"] += 1
                    st["batch"] += 1
                    cb.progress(st["step"], total)
                _sync_buffers(model)
                if result.cancelled:
                    break
                # end of the epoch (or of the run)
                ls, ln = _all_reduce_sum([st["loss_sum"], float(st["loss_n"])],
                                         self.device if self.device.type == "cuda" else torch.device("cpu"))
                m: dict[str, Any] = {"epoch": epoch + 1, "step": st["step"],
                                     "loss": ls / max(ln, 1.0),
                                     "lr": self.optimizer.param_groups[0]["lr"],
                                     "epoch_s": time.perf_counter() - t_epoch}
                last = st["step"] >= total or epoch + 1 >= cfg.epochs
                if val is not None and len(val) and ((epoch + 1) % cfg.eval_every == 0 or last):
                    m.update(evaluate(model, val, device=self.device, batch_size=cfg.val_batch_size,
                                      bce_weight=cfg.bce_weight, amp=cfg.amp, shard=dist_))
                score = m.get("val_iou", -m["loss"])
                m["best"] = score > st["best_iou"]
                if m["best"]:
                    st["best_iou"] = score
                    st["best_metrics"] = m
                    best_state = _cpu_state(model)
                    if writer:
                        from llm4seg_core.store import save_checkpoint

                        save_checkpoint(model, folder / "best.safetensors",
                                        {**self.meta, "step": st["step"], "epoch": epoch + 1,
                                         "metrics": m})
                st["history"].append(m)
                st["epoch"] = epoch + 1
                st["batch"] = 0
                st["loss_sum"], st["loss_n"] = 0.0, 0
                save()
                cb.metrics(m)
            if result.cancelled:
                save()
        except KeyboardInterrupt:
            save()
            raise
        finally:
            model.eval()
        result.history = list(st["history"])
        result.best_metrics = dict(st["best_metrics"])
        result.best_state = best_state or _cpu_state(model)
        result.steps = st["step"]
        result.epochs = st["epoch"]
        result.seconds = time.perf_counter() - t0
        result.info = {"num_classes": num_classes, "steps_total": total, "per_epoch": per_epoch}
        return result


# --------------------------------------------------------------------------- fine-tuning


def finetune(model: LLM4SegNet, corrections: Any, config: FinetuneConfig | None = None,
             callbacks: Callbacks | None = None) -> TrainResult:
    """Fine-tune ``model`` in place on the corrected slices of one volume.

    ``corrections`` is a :class:`~llm4seg_core.datasets.CorrectionSet`; only its
    slices' labels are used. The label values map to the model's classes (a
    binary model learns "any label"). When the encoder is frozen (trainable
    ``adapters`` or ``adapters+decoder``) its features for every slice and
    each of the 8 rotations/flips are computed once and cached; each step then
    runs only the LLM block and the decoder on 16-aligned crops of them.
    On cancel the model gets back the weights it started with.
    """
    from llm4seg_core.datasets import LabelMap

    flush_denormals()

    cfg = config or FinetuneConfig()
    cb = callbacks or Callbacks()
    t0 = time.perf_counter()
    spec = model.spec
    device = resolve_device(cfg.device)
    # A model a Segmenter has prepared is channels-last. Fine-tuning the shipped default
    # that way on lung2 (k = 2) took 135 s and learned nothing (train Dice 0.0); in the
    # standard layout, 53 s and train Dice 0.47. Not reproduced with small random models,
    # root cause not found: train in the standard layout (a later Segmenter converts back).
    model.to(memory_format=torch.contiguous_format)
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_spec = model.spec
    label_map = (LabelMap((1,)) if spec.num_classes == 1
                 else LabelMap(tuple(range(1, spec.num_classes))))
    values = {int(v) for z in corrections.slices for v in np.unique(corrections.slice_labels(z))}
    if spec.num_classes > 1 and max(values) >= spec.num_classes:
        raise LLM4SegError(
            f"the corrections hold label {max(values)}, but the model has only labels "
            f"1..{spec.num_classes - 1}; fine-tune a model with more classes"
        )
    ds = corrections.dataset(spec, label_map)
    items = [ds[i] for i in range(len(ds))]
    xs = torch.stack([a for a, _ in items])
    ys = torch.stack([b for _, b in items])
    n, s = len(items), spec.image_size
    crop = cfg.crop_size if cfg.crop_size is not None and cfg.crop_size < s else None

    grad_flags = {nm: p.requires_grad for nm, p in model.named_parameters()}
    names = set_trainable(model, cfg.trainable)
    if cfg.device != "cpu" and device.type == "cuda" and model.llm_block is not None and model.spec.freeze_llm:
        model.llm_block.llm.to(torch.bfloat16)
    model.to(device)
    params = [p for nm, p in model.named_parameters() if nm in names]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    net = model.net
    encoder_frozen = not any(p.requires_grad for m in (net.stem, net.encoder) for p in m.parameters())
    variants = list(range(8)) if cfg.augment else [0]
    feat_bytes = sum(c * (s >> k) ** 2 * 4 for k, c in enumerate(spec.dims)) * n * len(variants)
    use_cache = cfg.cache_encoder and encoder_frozen and feat_bytes <= cfg.cache_max_mb * 2**20
    align = 16 if use_cache else 1

    cache: list[list[list[torch.Tensor]]] = []
    if use_cache:
        net.stem.eval()
        net.encoder.eval()
        with torch.no_grad(), _autocast(device, cfg.amp):
            for d in variants:
                feats = net.encode(_dihedral(xs, d).to(device))
                cache.append([f.float() for f in feats])  # cache[d][level] -> (n, C, h, w)

    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    cancelled = False
    loss_sum, dice_sum, loss_n = 0.0, 0.0, 0
    # about 20 points for a live plot, at most 25 steps apart
    report_every = max(1, min(25, cfg.steps // 20))
    cb.progress(0, cfg.steps)
    try:
        _train_mode(model, freeze_all_bn=cfg.freeze_bn)
        if use_cache:
            net.stem.eval()
            net.encoder.eval()
        for step in range(cfg.steps):
            if cb.cancelled():
                cancelled = True
                break
            picks = []
            for _ in range(cfg.batch_size):
                i = int(torch.randint(n, (), generator=gen))
                d = variants[int(torch.randint(len(variants), (), generator=gen))]
                yi = _dihedral(ys[i], d)
                oy, ox = (_crop_offset(yi, crop, gen, cfg.fg_crop_prob, align) if crop else (0, 0))
                picks.append((i, d, oy, ox))
            c = crop or s
            y = torch.stack([_dihedral(ys[i], d)[oy:oy + c, ox:ox + c] for i, d, oy, ox in picks])
            y = y.to(device)
            with _autocast(device, cfg.amp):
                if use_cache:
                    logits = _decode_crops(net, cache, variants, picks, c, len(spec.dims))
                else:
                    x = torch.stack([_dihedral(xs[i], d)[:, oy:oy + c, ox:ox + c]
                                     for i, d, oy, ox in picks]).to(device)
                    logits = model(x)
            loss = segmentation_loss(logits, y, cfg.bce_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            dice_sum += batch_dice(logits.detach(), y)
            loss_n += 1
            cb.progress(step + 1, cfg.steps)
            if (step + 1) % report_every == 0 or step + 1 == cfg.steps:
                m = {"step": step + 1, "loss": loss_sum / loss_n, "dice": dice_sum / loss_n,
                     "elapsed_s": time.perf_counter() - t0}
                history.append(m)
                cb.metrics(m)
                loss_sum, dice_sum, loss_n = 0.0, 0.0, 0
    except BaseException:
        model.spec = start_spec
        model.load_state_dict(start_state)
        raise
    finally:
        model.eval()
        for nm, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(nm, p.requires_grad))
    result = TrainResult(history=history, steps=len(history) and history[-1]["step"],
                         cancelled=cancelled)
    if cancelled:
        model.spec = start_spec
        model.load_state_dict(start_state)
        result.best_state = _cpu_state(model)
    else:
        result.steps = cfg.steps
        result.best_metrics = evaluate(model, ds, device=device, batch_size=4,
                                       bce_weight=cfg.bce_weight, amp=cfg.amp)
        result.best_metrics = {k.replace("val_", "train_"): v
                               for k, v in result.best_metrics.items()}
        result.best_state = _cpu_state(model)
    result.seconds = time.perf_counter() - t0
    result.info = {"cached_encoder": use_cache, "feature_mb": feat_bytes / 2**20,
                   "slices": list(corrections.slices), "trainable": cfg.trainable,
                   "config": cfg.to_dict()}
    return result
