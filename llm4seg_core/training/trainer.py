"""Dataset training: the reference recipe, resumable, cancellable, DDP under ``torchrun``.

Runs are deterministic for a seed: the data order of an epoch comes from
``(seed, epoch)`` and the augmentation of a step from ``(seed, step, rank)``,
so a run resumed from its saved state ends with the same weights as one that
was never interrupted. Only rank 0 writes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.device import autocast, flush_denormals, resolve_device
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.training.augment import augment_batch
from llm4seg_core.training.config import TrainConfig, TrainResult
from llm4seg_core.training.distributed import all_reduce_sum, dist_info, sync_buffers
from llm4seg_core.training.evaluation import evaluate
from llm4seg_core.training.losses import segmentation_loss
from llm4seg_core.training.params import cpu_state, set_trainable, train_mode
from llm4seg_core.training.state import TrainState, load_train_state, save_train_state

__all__ = ["Trainer"]


class Trainer:
    """Trains ``model`` on a dataset with ``config`` (by default the reference: SGD, poly lr decay, BCE + Dice).

    ``fit(train, val)`` takes torch datasets of ``(x, y)`` pairs (see
    :mod:`llm4seg_core.datasets`). With ``checkpoint_dir`` it writes
    ``best.safetensors`` when validation IoU improves, and ``last.safetensors``
    plus the training state after every epoch, on cancel and on Ctrl-C
    (KeyboardInterrupt is re-raised after the state is saved). ``resume=True``
    continues from the state in ``checkpoint_dir``. The callbacks hear
    progress after every step and metrics after every epoch; cancel is
    checked before every step. ``batch_hook(model, x, y, generator)``, when
    given, may rewrite a batch's inputs after its augmentation (a prompt model's
    simulated click sessions, :mod:`~llm4seg_core.training.click_sessions`).
    """

    def __init__(self, model: LLM4SegNet, config: TrainConfig | None = None,
                 callbacks: Callbacks | None = None, batch_hook: Any = None) -> None:
        self.config = config or TrainConfig()
        self.batch_hook = batch_hook
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

    # --------------------------------------------------------------- writing

    def _write(self, folder: Path, st: TrainState) -> None:
        """The training state and ``last.safetensors``."""
        from llm4seg_core.store import save_checkpoint

        save_train_state(folder, st, model=self.model, optimizer=self.optimizer,
                         config=self.config, trainable=self.trainable_names, meta=self.meta)
        save_checkpoint(self.model, folder / "last.safetensors",
                        {**self.meta, "step": st.step, "epoch": st.epoch,
                         "metrics": st.history[-1] if st.history else {}})

    def _write_best(self, folder: Path, st: TrainState, m: dict[str, Any]) -> None:
        from llm4seg_core.store import save_checkpoint

        save_checkpoint(self.model, folder / "best.safetensors",
                        {**self.meta, "step": st.step, "epoch": st.epoch + 1, "metrics": m})

    # --------------------------------------------------------------- fit

    def fit(self, train: Any, val: Any | None = None, *, checkpoint_dir: str | Path | None = None,
            resume: bool = False, meta: dict[str, Any] | None = None) -> TrainResult:
        from torch.utils.data import DistributedSampler

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
        sampler = DistributedSampler(train, num_replicas=dist_.world_size, rank=dist_.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        per_epoch = math.ceil(len(sampler) / cfg.batch_size)
        total = cfg.epochs * per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)

        st = TrainState()
        if resume:
            if folder is None:
                raise LLM4SegError("resuming needs the folder the training state was saved in")
            st = load_train_state(folder, model=model, optimizer=self.optimizer,
                                  trainable=self.trainable_names)
            cb.log(f"resuming at step {st.step} (epoch {st.epoch + 1})")

        ddp = model
        if dist_.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                      find_unused_parameters=False, broadcast_buffers=True)
        result = TrainResult(checkpoint_dir=folder if writer else None)
        t0 = time.perf_counter()

        def save() -> None:
            if writer:
                self._write(folder, st)

        cb.progress(st.step, total)
        try:
            while st.step < total and st.epoch < cfg.epochs:
                t_epoch = time.perf_counter()
                result.cancelled = self._train_epoch(ddp, train, sampler, st, total)
                sync_buffers(model)
                if result.cancelled:
                    break
                m = self._end_epoch(st, val, total, time.perf_counter() - t_epoch)
                if m["best"] and writer:
                    self._write_best(folder, st, m)
                st.end_epoch(m)
                save()
                cb.metrics(m)
            if result.cancelled:
                save()
        except KeyboardInterrupt:
            save()
            raise
        finally:
            model.eval()
        result.history = list(st.history)
        result.best_metrics = dict(st.best_metrics)
        result.best_state = st.best_state or cpu_state(model)
        result.steps = st.step
        result.epochs = st.epoch
        result.seconds = time.perf_counter() - t0
        result.info = {"num_classes": model.spec.num_classes, "steps_total": total,
                       "per_epoch": per_epoch}
        return result

    def _train_epoch(self, ddp: torch.nn.Module, train: Any, sampler: Any, st: TrainState,
                     total: int) -> bool:
        """The rest of epoch ``st.epoch`` (from batch ``st.batch``); True when cancelled."""
        from torch.utils.data import DataLoader

        cfg, cb = self.config, self.callbacks
        sampler.set_epoch(st.epoch)
        order = list(sampler)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        pin = self.device.type == "cuda"
        loader = DataLoader(train, batch_sampler=batches[st.batch:],
                            num_workers=cfg.num_workers, pin_memory=pin)
        train_mode(self.model)
        for batch in loader:
            x, y = batch[0], batch[1]
            present = batch[2] if len(batch) > 2 else None  # partial labels: what was contoured
            if st.step >= total:
                break
            if cb.cancelled():
                return True
            gen = torch.Generator().manual_seed(
                (cfg.seed * 1_000_003 + st.step) * 4099 + self.dist.rank)
            x, y = augment_batch(x, y, gen, augment=cfg.augment, crop=cfg.crop_size,
                                 fg_prob=cfg.fg_crop_prob)
            x = x.to(self.device, non_blocking=pin)
            y = y.to(self.device, non_blocking=pin)
            if self.batch_hook is not None:  # e.g. training.click_sessions.ClickSessions
                x = self.batch_hook(self.model, x, y, gen)
            lr = cfg.learning_rate(st.step, total)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            with autocast(self.device, cfg.amp):
                logits = ddp(x)
            loss = segmentation_loss(logits, y, cfg.bce_weight, present=present)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            st.loss_sum += float(loss.detach())
            st.loss_n += 1
            st.step += 1
            st.batch += 1
            cb.progress(st.step, total)
        return False

    def _end_epoch(self, st: TrainState, val: Any | None, total: int,
                   seconds: float) -> dict[str, Any]:
        """The epoch's metrics (validated when due); a better score becomes the best state."""
        cfg = self.config
        epoch = st.epoch
        ls, ln = all_reduce_sum([st.loss_sum, float(st.loss_n)], self.device)
        m: dict[str, Any] = {"epoch": epoch + 1, "step": st.step, "loss": ls / max(ln, 1.0),
                             "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": seconds}
        last = st.step >= total or epoch + 1 >= cfg.epochs
        if val is not None and len(val) and ((epoch + 1) % cfg.eval_every == 0 or last):
            m.update(evaluate(self.model, val, device=self.device, batch_size=cfg.val_batch_size,
                              bce_weight=cfg.bce_weight, amp=cfg.amp, shard=self.dist))
        score = m.get("val_iou", -m["loss"])
        m["best"] = score > st.best_iou
        if m["best"]:
            st.best_iou = score
            st.best_metrics = m
            st.best_state = cpu_state(self.model)
        return m
