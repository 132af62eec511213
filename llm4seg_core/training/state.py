"""The resumable state of a training run, and its two files in the run folder.

``train_state.safetensors`` holds the model, best-model and optimizer tensors;
``train_state.json`` the rest (step, epoch, optimizer scalars, history,
config, spec). Both carry the same stamp, so a crash between the two writes
is seen as an incomplete state rather than resumed wrongly. Nothing is
unpickled; each file is written through :func:`~llm4seg_core.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.atomic import atomic_write, atomic_write_text
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.training.config import TrainConfig
from llm4seg_core.training.params import cpu_state

__all__ = [
    "STATE_FORMAT",
    "STATE_JSON",
    "STATE_TENSORS",
    "TrainState",
    "has_train_state",
    "load_train_state",
    "read_train_state_info",
    "save_train_state",
]

STATE_FORMAT = "llm4seg-train-state/1"
STATE_JSON = "train_state.json"
STATE_TENSORS = "train_state.safetensors"


@dataclass
class TrainState:
    """Where a run stands: all a resumed run needs besides the model and the optimizer.

    ``batch`` counts the batches of epoch ``epoch`` already trained (a run
    stopped mid-epoch resumes at the next one); ``loss_sum`` / ``loss_n`` are
    that epoch's running loss. ``best_iou`` is the score the best checkpoint
    was chosen by (validation IoU, or minus the loss without validation), and
    ``best_state`` its weights on the CPU (kept in the tensor file).
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_iou: float = -1.0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def progress(self) -> dict[str, Any]:
        """The JSON part (every field but the tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_state"}

    @classmethod
    def from_info(cls, info: dict[str, Any],
                  best_state: dict[str, torch.Tensor] | None = None) -> TrainState:
        names = [f.name for f in fields(cls) if f.name != "best_state"]
        return cls(**{k: info[k] for k in names}, best_state=dict(best_state or {}))

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        """Record an epoch's metrics and start the next epoch's counters."""
        self.history.append(metrics)
        self.epoch += 1
        self.batch = 0
        self.loss_sum, self.loss_n = 0.0, 0


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


def save_train_state(folder: Path, state: TrainState, *, model: LLM4SegNet,
                     optimizer: torch.optim.Optimizer, config: TrainConfig,
                     trainable: Iterable[str], meta: dict[str, Any]) -> None:
    """Write ``state`` with the model's and the optimizer's tensors into ``folder``."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in cpu_state(model).items()}
    tensors.update({f"best.{k}": v for k, v in state.best_state.items()})
    opt_t, opt_js = _optimizer_split(optimizer)
    tensors.update(opt_t)
    stamp = f"{state.step}:{time.time_ns()}"
    atomic_write(folder / STATE_TENSORS,
                 lambda p: save_file(tensors, p, metadata={"format": STATE_FORMAT, "stamp": stamp}))
    js = {
        "format": STATE_FORMAT,
        "stamp": stamp,
        **state.progress(),
        "optimizer": opt_js,
        "config": config.to_dict(),
        "spec": model.spec.to_dict(),
        "trainable": sorted(trainable),
        "meta": meta,
    }
    atomic_write_text(folder / STATE_JSON, json.dumps(js, indent=1, default=str))


def load_train_state(folder: Path, *, model: LLM4SegNet, optimizer: torch.optim.Optimizer,
                     trainable: Iterable[str]) -> TrainState:
    """Load the state in ``folder`` into ``model`` and ``optimizer`` and return it.

    Refuses a state of another spec, of other trainable parameters, or whose
    two files come from different saves.
    """
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
    if js["spec"] != model.spec.to_dict():
        raise LLM4SegError(f"the training state in {folder} belongs to another model spec")
    if sorted(trainable) != js["trainable"]:
        raise LLM4SegError(
            f"the training state in {folder} trained other parameters "
            f"(trainable {js['config'].get('trainable')!r}); resume with the same setting"
        )
    tensors = load_file(str(folder / STATE_TENSORS))
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    if set(model_sd) != set(model.stored_state_dict()):
        raise LLM4SegError(f"the training state in {folder} does not fit this model")
    model.load_state_dict(model_sd, strict=False)
    optimizer.load_state_dict(_optimizer_join(tensors, js["optimizer"]))
    return TrainState.from_info(js, best)
