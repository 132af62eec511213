"""Few-shot fine-tuning on the corrected slices of one volume, with its encoder-feature cache.

When the encoder is frozen (trainable ``adapters`` or ``adapters+decoder``)
its features for every slice and each of the 8 rotations/flips are computed
once; each step then runs only the LLM block and the decoder, on 16-aligned
crops of them, centred on the labels most of the time (:class:`FinetuneConfig`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from llm4seg_core.device import autocast, flush_denormals, resolve_device
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.training.augment import crop_offset, dihedral
from llm4seg_core.training.config import FinetuneConfig, TrainResult
from llm4seg_core.training.evaluation import evaluate
from llm4seg_core.training.losses import batch_dice, segmentation_loss
from llm4seg_core.training.params import cpu_state, set_trainable, train_mode

__all__ = ["FinetuneRun", "finetune"]

Pick = tuple[int, int, int, int]  # (slice index, dihedral variant, crop top, crop left)


class FeatureCache:
    """Frozen-encoder features of every slice under each rotation/flip in ``variants``.

    ``maps[v][level]`` is the ``(n, C, h, w)`` feature map of ``variants[v]``.
    """

    def __init__(self, net: torch.nn.Module, xs: torch.Tensor, variants: list[int],
                 device: torch.device, amp: bool) -> None:
        self.variants = variants
        self.maps: list[list[torch.Tensor]] = []
        net.stem.eval()
        net.encoder.eval()
        with torch.no_grad(), autocast(device, amp):
            for d in variants:
                self.maps.append([f.float() for f in net.encode(dihedral(xs, d).to(device))])

    @staticmethod
    def nbytes(dims: tuple[int, ...], size: int, n: int, variants: int) -> int:
        """What the cache of ``n`` slices would hold (float32), before building it."""
        return sum(c * (size >> k) ** 2 * 4 for k, c in enumerate(dims)) * n * variants

    def decode_crops(self, net: torch.nn.Module, picks: list[Pick], c: int,
                     levels: int) -> torch.Tensor:
        """Decoder logits on ``c`` x ``c`` crops of the cached features.

        The bottleneck module (the LLM block) sees the whole slice's token grid, as
        at inference; only its output and the skips are cropped, so the decoder
        runs on the window. Offsets are multiples of 16.
        """
        def feature(lvl: int, i: int, d: int) -> torch.Tensor:
            return self.maps[self.variants.index(d)][lvl][i]

        def crops(maps: list[torch.Tensor], lvl: int) -> torch.Tensor:
            f = 1 << lvl
            return torch.stack([m[:, oy // f:(oy + c) // f, ox // f:(ox + c) // f]
                                for m, (_, _, oy, ox) in zip(maps, picks, strict=True)])

        deep = levels - 1
        full = net.bottleneck(torch.stack([feature(deep, i, d) for i, d, _, _ in picks]))
        skips = [crops([feature(lvl, i, d) for i, d, _, _ in picks], lvl) for lvl in range(deep)]
        return net.upsample(crops(list(full), deep), skips)


def _label_map_for(model: LLM4SegNet, corrections: Any) -> Any:
    """The model's classes for the corrections' label values (a binary model learns "any label")."""
    from llm4seg_core.datasets import LabelMap

    k = model.spec.num_classes
    values = {int(v) for z in corrections.slices for v in np.unique(corrections.slice_labels(z))}
    if k > 1 and max(values) >= k:
        raise LLM4SegError(
            f"the corrections hold label {max(values)}, but the model has only labels "
            f"1..{k - 1}; fine-tune a model with more classes"
        )
    return LabelMap((1,)) if k == 1 else LabelMap(tuple(range(1, k)))


class FinetuneRun:
    """What a fine-tune on corrections does around its steps (:func:`finetune`, and
    :func:`~llm4seg_core.training.prompt_finetune.finetune_prompt`): the model in the standard
    memory layout with its starting weights kept, the trainable parameters chosen and given
    to Adam, each step's loss applied and logged (progress every step, metrics about 20
    times a run), and at the end the model as it was on cancel or error, in eval mode with
    its own ``requires_grad`` flags."""

    def __init__(self, model: LLM4SegNet, cfg: FinetuneConfig, cb: Callbacks,
                 device: torch.device) -> None:
        # A model a Segmenter has prepared is channels-last. Fine-tuning the shipped default
        # that way on lung2 (k = 2) took 135 s and learned nothing (train Dice 0.0); in the
        # standard layout, 53 s and train Dice 0.47. Not reproduced with small random models,
        # root cause not found: train in the standard layout (a later Segmenter converts back).
        model.to(memory_format=torch.contiguous_format)
        self.model, self.cfg, self.cb = model, cfg, cb
        self.start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.start_spec = model.spec
        self.grad_flags = {nm: p.requires_grad for nm, p in model.named_parameters()}
        names = set_trainable(model, cfg.trainable)
        if device.type == "cuda" and model.llm_block is not None and model.spec.freeze_llm:
            model.llm_block.llm.to(torch.bfloat16)
        model.to(device)
        self.opt = torch.optim.Adam([p for nm, p in model.named_parameters() if nm in names],
                                    lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.done = 0
        self._sums = [0.0, 0.0, 0]  # loss, Dice, steps since the last report
        self._every = max(1, min(25, cfg.steps // 20))  # ~20 points, at most 25 steps apart
        self.t0 = time.perf_counter()
        cb.progress(0, cfg.steps)

    def step(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on ``logits`` against ``y``, logged."""
        loss = segmentation_loss(logits, y, self.cfg.bce_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.done += 1
        self._sums[0] += float(loss.detach())
        self._sums[1] += batch_dice(logits.detach(), y)
        self._sums[2] += 1
        self.cb.progress(self.done, self.cfg.steps)
        if self.done % self._every == 0 or self.done == self.cfg.steps:
            loss_sum, dice_sum, n = self._sums
            m = {"step": self.done, "loss": loss_sum / n, "dice": dice_sum / n,
                 "elapsed_s": time.perf_counter() - self.t0}
            self.history.append(m)
            self.cb.metrics(m)
            self._sums = [0.0, 0.0, 0]

    def restore(self) -> None:
        """The weights and spec the model started with."""
        self.model.spec = self.start_spec
        self.model.load_state_dict(self.start_state)

    def release(self) -> None:
        """Eval mode and the model's own ``requires_grad`` flags back."""
        self.model.eval()
        for nm, p in self.model.named_parameters():
            p.requires_grad_(self.grad_flags.get(nm, p.requires_grad))


def finetune(model: LLM4SegNet, corrections: Any, config: FinetuneConfig | None = None,
             callbacks: Callbacks | None = None) -> TrainResult:
    """Fine-tune ``model`` in place on the corrected slices of one volume.

    ``corrections`` is a :class:`~llm4seg_core.datasets.CorrectionSet`; only its
    slices' labels are used. The label values map to the model's classes (a
    binary model learns "any label"). Progress is reported per step, metrics
    about 20 times a run. On cancel the model gets back the weights it started
    with.
    """
    flush_denormals()
    cfg = config or FinetuneConfig()
    cb = callbacks or Callbacks()
    spec = model.spec
    device = resolve_device(cfg.device)
    run = FinetuneRun(model, cfg, cb, device)
    ds = corrections.dataset(spec, _label_map_for(model, corrections))
    items = [ds[i] for i in range(len(ds))]
    xs = torch.stack([a for a, _ in items])
    ys = torch.stack([b for _, b in items])
    n, s = len(items), spec.image_size
    crop = cfg.crop_size if cfg.crop_size is not None and cfg.crop_size < s else None
    net = model.net
    encoder_frozen = not any(p.requires_grad for m in (net.stem, net.encoder) for p in m.parameters())
    variants = list(range(8)) if cfg.augment else [0]
    feat_bytes = FeatureCache.nbytes(spec.dims, s, n, len(variants))
    use_cache = cfg.cache_encoder and encoder_frozen and feat_bytes <= cfg.cache_max_mb * 2**20
    align = 16 if use_cache else 1
    cache = FeatureCache(net, xs, variants, device, cfg.amp) if use_cache else None

    gen = torch.Generator().manual_seed(cfg.seed)
    cancelled = False
    try:
        train_mode(model, freeze_all_bn=cfg.freeze_bn)
        if use_cache:
            net.stem.eval()
            net.encoder.eval()
        for _step in range(cfg.steps):
            if cb.cancelled():
                cancelled = True
                break
            picks: list[Pick] = []
            for _ in range(cfg.batch_size):
                i = int(torch.randint(n, (), generator=gen))
                d = variants[int(torch.randint(len(variants), (), generator=gen))]
                yi = dihedral(ys[i], d)
                oy, ox = (crop_offset(yi, crop, gen, cfg.fg_crop_prob, align) if crop else (0, 0))
                picks.append((i, d, oy, ox))
            c = crop or s
            y = torch.stack([dihedral(ys[i], d)[oy:oy + c, ox:ox + c] for i, d, oy, ox in picks])
            y = y.to(device)
            with autocast(device, cfg.amp):
                if cache is not None:
                    logits = cache.decode_crops(net, picks, c, len(spec.dims))
                else:
                    x = torch.stack([dihedral(xs[i], d)[:, oy:oy + c, ox:ox + c]
                                     for i, d, oy, ox in picks]).to(device)
                    logits = model(x)
            run.step(logits, y)
    except BaseException:
        run.restore()
        raise
    finally:
        run.release()
    history = run.history
    result = TrainResult(history=history, steps=len(history) and history[-1]["step"],
                         cancelled=cancelled)
    if cancelled:
        run.restore()
    else:
        result.steps = cfg.steps
        scores = evaluate(model, ds, device=device, batch_size=4, bce_weight=cfg.bce_weight,
                          amp=cfg.amp)
        result.best_metrics = {k.replace("val_", "train_"): v for k, v in scores.items()}
    result.best_state = cpu_state(model)
    result.seconds = time.perf_counter() - run.t0
    result.info = {"cached_encoder": use_cache, "feature_mb": feat_bytes / 2**20,
                   "slices": list(corrections.slices), "trainable": cfg.trainable,
                   "config": cfg.to_dict()}
    return result
