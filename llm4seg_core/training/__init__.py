"""Training and few-shot fine-tuning of LLM4Seg models.

:class:`Trainer` runs the reference recipe on a dataset (SGD lr 0.01,
momentum 0.9, weight decay 1e-4, poly decay ``(1 - it/max_it)^0.9``,
``0.5 * BCE + (1 - soft Dice)``, RandomRotate90 + flips, batch 8, best
checkpoint by validation IoU). It takes :class:`~llm4seg_core.jobs.Callbacks`
(progress, metrics, a cancel flag checked every step), so a UI runs it in a
worker thread and the CLI in the foreground. Runs are deterministic for a
seed and resumable; under ``torchrun`` it trains with DistributedDataParallel
(gloo on CPU, nccl on GPU) and only rank 0 writes.

:func:`finetune` adapts a model to the corrected slices of one volume in well
under a minute on a 2-core CPU: it trains the adapters and the decoder on
crops of cached encoder features (:class:`FinetuneConfig`). :func:`finetune_prompt`
does the same for a prompt model (``ModelSpec.is_prompt_model``): the corrected
objects with simulated clicks, boxes and guides, the whole network each step.

Modules, one job each:

- ``config``: TRAINABLE, TrainConfig, FinetuneConfig, TrainResult (torch-free)
- ``params``: which parameters train; frozen BatchNorm
- ``losses``: segmentation_loss, batch_dice, IGNORE_LABEL
- ``augment``: the 8 rotations/flips and random crops
- ``distributed``: DistInfo, init_distributed, reductions over ranks
- ``evaluation``: evaluate (validation Dice / IoU / loss; pooled per-class Dice)
- ``state``: the resumable TrainState and its two files in the run folder
- ``trainer``: Trainer
- ``finetuning``: finetune and its encoder-feature cache
- ``prompt_finetune``: finetune_prompt, a prompt model on the corrected objects
- ``click_sessions``: ClickSessions, simulated click sessions on the model's own masks
  while a prompt model trains (a Trainer batch hook)

The names below are imported lazily (on first use), so importing this package,
or ``llm4seg_core.training.config``, does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm4seg_core.lazy import lazy_exports

if TYPE_CHECKING:
    from llm4seg_core.training.augment import augment_batch
    from llm4seg_core.training.config import (
        TRAINABLE,
        FinetuneConfig,
        TrainConfig,
        TrainResult,
        check_trainable,
    )
    from llm4seg_core.training.distributed import DistInfo, dist_info, init_distributed
    from llm4seg_core.training.evaluation import evaluate
    from llm4seg_core.training.finetuning import finetune
    from llm4seg_core.training.losses import IGNORE_LABEL, batch_dice, segmentation_loss
    from llm4seg_core.training.params import set_trainable
    from llm4seg_core.training.prompt_finetune import finetune_prompt
    from llm4seg_core.training.state import TrainState, has_train_state, read_train_state_info
    from llm4seg_core.training.trainer import Trainer

_EXPORTS = {
    "TRAINABLE": ".config",
    "FinetuneConfig": ".config",
    "TrainConfig": ".config",
    "TrainResult": ".config",
    "check_trainable": ".config",
    "set_trainable": ".params",
    "IGNORE_LABEL": ".losses",
    "batch_dice": ".losses",
    "segmentation_loss": ".losses",
    "augment_batch": ".augment",
    "DistInfo": ".distributed",
    "dist_info": ".distributed",
    "init_distributed": ".distributed",
    "evaluate": ".evaluation",
    "TrainState": ".state",
    "has_train_state": ".state",
    "read_train_state_info": ".state",
    "Trainer": ".trainer",
    "finetune": ".finetuning",
    "finetune_prompt": ".prompt_finetune",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
