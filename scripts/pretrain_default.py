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


INIA_T1 = "inia19-t1-brain.nii.gz"  # Debian mricron-data: macaque T1, 0.5 mm
INIA_LABELS = "inia19-NeuroMaps.nii.gz"  # its NeuroMaps parcellation (724 labels), same grid
LESION = 1  # class of the lesions of the demo cases; the atlas regions follow


def _export_slices(vol, lab, spec, stride: int = 1):
    """Model-ready (x uint8, y uint8) of every ``stride``-th z slice, as the Segmenter sees them."""
    from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

    limits = intensity_range(vol, spec.intensity)
    xs, ys = [], []
    for z in range(0, vol.n_slices, stride):
        x = to_model_input(slice_stack(vol, [z], spec.in_channels), limits, spec.image_size)[0]
        y = torch.from_numpy(lab[z].astype(np.uint8))[None, None].float()
        y = torch.nn.functional.interpolate(y, size=(spec.image_size,) * 2, mode="nearest-exact")
        xs.append(np.round((x.numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8))
        ys.append(y[0, 0].numpy().astype(np.uint8))
    return xs, ys


def atlas_regions(labels: np.ndarray, n_regions: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Merge a fine parcellation into ``n_regions`` spatially coherent regions.

    The parcels' centroids are clustered with k-means (scikit-learn), so each
    region is a compact block of neighbouring parcels (lobe-sized). Returns the
    region map (0 = outside, 1..n_regions) and what went into it.
    """
    from sklearn.cluster import KMeans

    ids = np.unique(labels)
    ids = ids[ids != 0]
    cents = np.array([np.argwhere(labels == i).mean(0) for i in ids])
    km = KMeans(n_clusters=n_regions, n_init=10, random_state=seed).fit(cents)
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    lut[ids] = km.labels_.astype(np.uint8) + 1
    return lut[labels], {"parcels": int(ids.size), "regions": n_regions, "method": "k-means of parcel centroids"}


def cmd_export(args: argparse.Namespace) -> int:
    """Lesion cases (class 1) + macaque atlas regions in three views (classes 2..)."""
    import os

    from llm4seg_core.data import demo_case, fetch_demo_data
    from llm4seg_core.io import Volume, read_image, read_mask
    from llm4seg_core.model import ModelSpec

    fetch_demo_data()
    spec = ModelSpec()
    xs, ys, case_of = [], [], []
    for case in TRAIN_CASES + HELDOUT_CASES:
        image, label = demo_case(case)
        vol = read_image(image)
        lab = (read_mask(label, vol) > 0).astype(np.uint8) * LESION
        x, y = _export_slices(vol, lab, spec)
        xs += x
        ys += y
        case_of += [case] * len(x)
        print(f"{case}: {vol.n_slices} slices, {int(lab.any(axis=(1, 2)).sum())} with lesion")
    templates = Path(os.environ.get("MRICRON_TEMPLATES", "/usr/share/mricron/templates"))
    info = {}
    if args.atlas_regions > 0:
        t1 = read_image(templates / INIA_T1)
        parcels = read_image(templates / INIA_LABELS).array.astype(np.int32)
        assert parcels.shape == t1.array.shape, "atlas and T1 grids differ"
        regions, info = atlas_regions(parcels, args.atlas_regions)
        regions = np.where(regions > 0, regions + LESION, 0).astype(np.uint8)
        arr = t1.array
        for view, axes in (("axial", (0, 1, 2)), ("coronal", (1, 0, 2)), ("sagittal", (2, 0, 1))):
            a = np.ascontiguousarray(np.transpose(arr, axes))
            r = np.ascontiguousarray(np.transpose(regions, axes))
            keep = r.reshape(r.shape[0], -1).any(1)
            lo, hi = np.nonzero(keep)[0][[0, -1]]
            v = Volume(a[lo:hi + 1], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                       modality="MR")
            x, y = _export_slices(v, r[lo:hi + 1], spec, stride=args.atlas_stride)
            xs += x
            ys += y
            case_of += [f"inia19-{view}"] * len(x)
            print(f"inia19 {view}: {len(x)} slices (every {args.atlas_stride}th with brain)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x=np.stack(xs), y=np.stack(ys), case=np.array(case_of),
                        n_classes=np.array(1 + LESION + args.atlas_regions))
    (out.with_suffix(".json")).write_text(json.dumps({"atlas": info, "classes": 1 + LESION + args.atlas_regions}))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB), {len(xs)} slices, "
          f"{1 + LESION + args.atlas_regions} classes")
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


def _binary_from_multiclass(model, spec_binary, device):
    """A binary model with ``model``'s weights; head: lesion logit minus background logit."""
    from llm4seg_core.model import build_model

    binary = build_model(spec_binary, device=device)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("net.head.")}
    missing, unexpected = binary.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("net.head.") for k in missing), (missing, unexpected)
    w, b = model.net.head.weight.detach(), model.net.head.bias.detach()
    with torch.no_grad():
        binary.net.head.weight.copy_(w[LESION:LESION + 1] - w[0:1])
        binary.net.head.bias.copy_(b[LESION:LESION + 1] - b[0:1])
    return binary


def _run_stage(label: str, model, data, args: argparse.Namespace, *, device, epochs: int,
               trainable: str, seed: int, budget: float) -> dict:
    """Train ``model`` on ``data`` until ``epochs`` or ``budget`` seconds; printed as ``label``."""
    from llm4seg_core.jobs import Callbacks
    from llm4seg_core.training import Trainer, TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=args.batch, seed=seed, device=str(device),
                      trainable=trainable, optimizer=args.optimizer, lr=args.lr,
                      crop_size=args.crop)
    t0 = time.perf_counter()
    deadline = t0 + budget
    res = Trainer(model, cfg, Callbacks(
        cancel=lambda: time.perf_counter() > deadline,
        on_metrics=lambda m: print(f"  {label} {json.dumps(m)}", flush=True),
    )).fit(data)
    seconds = time.perf_counter() - t0
    print(f"stage {label}: {res.steps} steps in {seconds:.0f} s", flush=True)
    return {"steps": res.steps, "seconds": round(seconds, 1),
            "last": res.history[-1] if res.history else None}


def cmd_train(args: argparse.Namespace) -> int:
    from llm4seg_core.store import save_checkpoint
    from llm4seg_core.device import describe_device, resolve_device
    from llm4seg_core.model import PRESETS, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    data = np.load(args.data)
    x, y, case = data["x"], data["y"], data["case"]
    n_classes = int(data["n_classes"]) if "n_classes" in data else 2
    heldout = np.isin(case, HELDOUT_CASES)
    train_idx = np.nonzero(~heldout)[0]
    lesion_case = np.isin(case, TRAIN_CASES)
    # lesions are on 9 training slices: repeat those so that an epoch is not all background
    lesion = (y == LESION).any(axis=(1, 2)) & lesion_case
    # both stages train on these slices; stage B (binary lesion head) sees the atlas slices
    # as lesion-free examples, their regions mapped to background
    idx = np.concatenate([train_idx] + [np.nonzero(lesion)[0]] * (args.pos_repeat - 1))
    yb = (y == LESION).astype(np.uint8)
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"stage A: {len(idx)} slices/epoch, {n_classes} classes; "
          f"held out: {', '.join(HELDOUT_CASES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.variants.split(","):
        spec = PRESETS[name]
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        history = {}
        if n_classes > 2:
            model = build_model(spec.with_(num_classes=n_classes), device=device, seed=args.seed)
            history["stage_a"] = _run_stage("A", model, SliceArrays(x[idx], y[idx]), args,
                                            device=device, epochs=args.epochs, trainable="all-but-llm",
                                            seed=args.seed, budget=args.time_budget)
            model = _binary_from_multiclass(model, spec, device)
        else:
            model = build_model(spec, device=device, seed=args.seed)
        history["stage_b"] = _run_stage("B", model, SliceArrays(x[idx], yb[idx]), args,
                                        device=device, epochs=args.stage_b_epochs,
                                        trainable=args.stage_b_trainable, seed=args.seed + 1,
                                        budget=args.stage_b_budget)
        dt = time.perf_counter() - t0
        dices = {c: heldout_dice(model, x[case == c], yb[case == c], device) for c in HELDOUT_CASES}
        info = {
            "variant": name, "seconds": round(dt, 1), "history": history,
            "heldout_dice_256": {c: round(d, 4) for c, d in dices.items()},
            "device": describe_device(device),
        }
        print(json.dumps(info), flush=True)
        meta = {
            "recipe": {"stage_a": f"{n_classes} classes (background, lesion, {n_classes - 2} macaque "
                                  "atlas regions), everything but the LLM layer",
                       "stage_b": f"binary lesion head (lesion minus background logits), "
                                  f"trainable {args.stage_b_trainable}",
                       "optimizer": args.optimizer, "lr": args.lr, "poly": 0.9,
                       "weight_decay": 1e-4, "loss": "CE/BCE + soft Dice", "augment": "rot90/flip",
                       "batch": args.batch, "crop": args.crop, "pos_repeat": args.pos_repeat,
                       "seed": args.seed, "time_budget_s": [args.time_budget, args.stage_b_budget]},
            "train_cases": list(TRAIN_CASES) + ["inia19 macaque T1 + NeuroMaps (3 views)"],
            "heldout_cases": list(HELDOUT_CASES),
            "data": "pyradiomics-bhklab 3.1.4 sdist demo cases; Debian mricron-data inia19", **info,
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
    e.add_argument("--atlas-regions", type=int, default=15,
                   help="macaque atlas regions as extra classes (0: lesion cases only)")
    e.add_argument("--atlas-stride", type=int, default=2, help="every n-th atlas slice")
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
    t.add_argument("--time-budget", type=float, default=1e9, help="seconds of stage A per variant")
    t.add_argument("--stage-b-budget", type=float, default=300, help="seconds of stage B per variant")
    t.add_argument("--stage-b-trainable", default="adapters+decoder")
    t.add_argument("--stage-b-epochs", type=int, default=1, help="sets stage B's poly schedule")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--threads", type=int, default=None)
    t.set_defaults(func=cmd_train)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
