"""Pretrain the default LLM4Seg model (and the ablation bases) on real, offline data.

Data: the pyradiomics demo cases (``llm4seg data fetch``; expert lesion masks).
Training cases: lung1 (chest CT tumour), brain2 (MRI lesion), breast1 (MRI
lesion). Held out for evaluation and the few-shot benchmark: lung2 (the demo
CT) and brain1. Nothing is selected on the held-out cases: the LAST state of
a fixed schedule is kept, and the held-out Dice is only reported.

Two stages, so the training stage can run on a bare GPU machine that has only
torch/transformers/gguf:

  # 1. here (needs SimpleITK and the demo data): model-ready 256x256 slices
  python scripts/pretrain_default.py export --out out/pretrain/slices.npz
  # 2. anywhere (CPU works, slowly; a GPU takes about a minute a variant)
  python scripts/pretrain_default.py train --data out/pretrain/slices.npz \
      --variants llm4seg,cmunext,random-layer,reference --out out/pretrain

Slices go through exactly the Segmenter's preprocessing (slice_stack ->
intensity_range -> to_model_input); the model input in [-1, 1] is stored
quantised to uint8 (step 2/255, about 8 HU in the CT range) to keep the file
small enough to travel to a GPU machine.

Recipe: the reference's (SGD lr 0.01, momentum 0.9, wd 1e-4, poly decay 0.9,
0.5*BCE + soft Dice, rot90/flips, batch 8, 256x256), trainable = everything
but the frozen LLM layer, on all slices of the training cases, the 9 slices
that show a lesion repeated (--pos-repeat, default 6) so that an epoch is not
nearly all background.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

TRAIN_CASES = ("lung1", "brain2", "breast1")
HELDOUT_CASES = ("lung2", "brain1")


def cmd_export(args: argparse.Namespace) -> int:
    from llm4seg_core.data import demo_case, fetch_demo_data
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.model import ModelSpec
    from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

    fetch_demo_data()
    spec = ModelSpec()
    xs, ys, case_of = [], [], []
    for case in TRAIN_CASES + HELDOUT_CASES:
        image, label = demo_case(case)
        vol = read_image(image)
        lab = read_mask(label, vol)
        limits = intensity_range(vol, spec.intensity)
        for z in range(vol.n_slices):
            x = to_model_input(slice_stack(vol, [z], spec.in_channels), limits, spec.image_size)[0]
            y = torch.from_numpy((lab[z] > 0).astype(np.uint8))[None, None].float()
            y = torch.nn.functional.interpolate(y, size=(spec.image_size,) * 2, mode="nearest-exact")
            xs.append(np.round((x.numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8))
            ys.append(y[0, 0].numpy().astype(np.uint8))
            case_of.append(case)
        print(f"{case}: {vol.n_slices} slices, {int((lab > 0).any(axis=(1, 2)).sum())} with lesion")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x=np.stack(xs), y=np.stack(ys), case=np.array(case_of))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


class SliceArrays(torch.utils.data.Dataset):
    """(x, y) pairs from the exported arrays; x de-quantised to [-1, 1]."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.x[i].astype(np.float32) / 127.5 - 1.0)
        return x, torch.from_numpy(self.y[i])


def heldout_dice(model, x: np.ndarray, y: np.ndarray, device: torch.device) -> float:
    """3-D Dice over all slices of one held-out case, on the 256x256 model grid."""
    model.eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(x), 16):
            xb = torch.from_numpy(x[i:i + 16].astype(np.float32) / 127.5 - 1.0).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(xb)
            preds.append((logits[:, 0].float() > 0).cpu().numpy())
    p = np.concatenate(preds)
    r = y > 0
    denom = p.sum() + r.sum()
    return float(2 * (p & r).sum() / denom) if denom else 1.0


def cmd_train(args: argparse.Namespace) -> int:
    from llm4seg_core.checkpoints import save_checkpoint
    from llm4seg_core.device import describe_device, resolve_device
    from llm4seg_core.model import PRESETS, build_model
    from llm4seg_core.training import Callbacks, Trainer, TrainConfig

    data = np.load(args.data)
    x, y, case = data["x"], data["y"], data["case"]
    train_idx = np.nonzero(np.isin(case, TRAIN_CASES))[0]
    # lesions are on 9 of the 92 training slices: repeat those so an epoch is not all background
    lesion = y[train_idx].any(axis=(1, 2))
    train_idx = np.concatenate([train_idx] + [train_idx[lesion]] * (args.pos_repeat - 1))
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}")
    print(f"training slices: {len(train_idx)} ({int(y[train_idx].any(axis=(1, 2)).sum())} with lesion)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.variants.split(","):
        spec = PRESETS[name]
        torch.manual_seed(args.seed)
        model = build_model(spec, device=device, seed=args.seed)
        cfg = TrainConfig(epochs=args.epochs, batch_size=8, seed=args.seed, device=str(device),
                          trainable="all-but-llm", optimizer=args.optimizer, lr=args.lr,
                          crop_size=args.crop, fg_crop_prob=args.fg_crop_prob)
        t0 = time.perf_counter()
        deadline = t0 + args.time_budget
        cb = Callbacks(cancel=lambda: time.perf_counter() > deadline)
        result = Trainer(model, cfg, cb).fit(SliceArrays(x[train_idx], y[train_idx]))
        dt = time.perf_counter() - t0
        steps = result.steps
        dices = {c: heldout_dice(model, x[case == c], y[case == c], device) for c in HELDOUT_CASES}
        train_loss = result.history[-1].get("loss") if result.history else None
        info = {
            "variant": name, "seconds": round(dt, 1), "stopped_by_time_budget": bool(result.cancelled),
            "epochs": cfg.epochs, "last_step": steps, "final_train_loss": train_loss,
            "heldout_dice_256": {c: round(d, 4) for c, d in dices.items()},
            "device": describe_device(device),
        }
        print(json.dumps(info), flush=True)
        meta = {
            "recipe": {"optimizer": args.optimizer, "lr": args.lr, "poly": 0.9, "weight_decay": 1e-4,
                       "loss": "0.5*BCE+soft Dice", "augment": "rot90/flip", "batch": 8,
                       "crop": args.crop, "fg_crop_prob": args.fg_crop_prob,
                       "pos_repeat": args.pos_repeat, "epochs": args.epochs, "seed": args.seed},
            "train_cases": list(TRAIN_CASES), "heldout_cases": list(HELDOUT_CASES),
            "data": "pyradiomics-bhklab 3.1.4 sdist demo cases", **info,
            "metrics": {f"heldout_dice_{c}": round(d, 4) for c, d in dices.items()},
        }
        model.to("cpu")
        save_checkpoint(model, out / f"{name}.safetensors", meta, float_dtype=torch.float16)
        summary[name] = info
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", default="out/pretrain/slices.npz")
    e.set_defaults(func=cmd_export)
    t = sub.add_parser("train")
    t.add_argument("--data", default="out/pretrain/slices.npz")
    t.add_argument("--out", default="out/pretrain")
    t.add_argument("--variants", default="llm4seg")
    t.add_argument("--epochs", type=int, default=150)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--crop", type=int, default=None, help="train on crops of this size")
    t.add_argument("--fg-crop-prob", type=float, default=0.0, help="share of crops centred on a lesion")
    t.add_argument("--pos-repeat", type=int, default=6, help="times each lesion slice is seen per epoch")
    t.add_argument("--time-budget", type=float, default=1e9, help="seconds per variant")
    t.set_defaults(func=cmd_train)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
