#!/usr/bin/env python3
"""Prompted segmentation benchmark (issue 13): a prompt model and its no-LLM twin, on val splits.

For each dataset folder (``--data``, default every one under shared/data), on
its val split:

- **one slice, one object** (each label of each val picture; for 3-D sets the
  middle slice of each contoured structure of each val case): Dice after one
  click (the simulated first click, most interior point), after one box (the
  tight box), and NoC@85 / NoC@90: the simulated clicks (each at the centre of
  the largest error region, the model's previous mask as the guide) needed to
  reach Dice 0.85 / 0.90 (the issue's measure; IoU 0.739 / 0.818), capped at
  ``--max-clicks`` (20: a failure counts 20);
- **3-D sets**: each contoured structure of each val case propagated through
  the volume from k = 1, 2, 3 corrected slices (``slices.choose_slices``:
  evenly spaced; the ground truth on them), against the outline
  interpolation between those slices alone (``postprocess.interpolate_between``,
  the correction loop's fill-between); Dice on the other slices (slices without
  the structure included), and the seconds each takes;
- **structures never trained on** (``--unseen colin27``, the default when
  Debian's mricron-data is installed): the Colin27 T1 MRI with its AAL atlas
  (bench/fewshot_tasks.py; excluded from every training). The one-slice
  measures on the middle axial slice of every AAL structure (116), and
  propagation from k slices on ``--unseen-volumes`` (16 named structures,
  subcortical and cortical; all 116 with ``all``);
- **today's loop** (``--loop N``, default 3): for the first N of those
  structures with k = 2, the fine-tune-then-filter correction loop
  (``loop.correction_loop`` from the shipped default, nothing saved), Dice on
  the other slices and its seconds, beside propagation from the same slices;
- **guide fidelity** (3-D sets, the propagated cases): each structure's slices
  (every third, its first and last left out) segmented with the true mask of
  the slice below as the only prompt: Dice of the result against Dice of that
  guide itself. A model that reads the image beats its guide; one that copies
  the guide equals it (and then propagation cannot beat interpolation);
- **the demo CTs** (``--demo``, default on when set-up fetched them): the four
  pyradiomics lesions (lung1, lung2, brain1, brain2) on the slice where each is
  largest, as the one-slice measures;
- **per-click latency**: p50 / p95 of one click on a 512 x 512 slice.

    python bench/prompt_bench.py --model out/prompt/llm4seg/best.safetensors \
        --twin out/prompt/cmunext/best.safetensors --json out/prompt_bench.json
    # smoke run: tiny untrained models, 2 cases
    python bench/prompt_bench.py --model "prompt-cmunext,image_size=32,dims=8:8:16:16:32" \
        --twin "prompt-cmunext,image_size=32,dims=8:8:16:16:32" --data busi,msd_hippocampus \
        --cases 1 --max-clicks 3 --k 1 --latency-runs 3

``--volumes-only`` runs just the propagation rows (and ``--loop``), ``--slices-only`` just
the one-slice rows and the latency; ``--twin`` may be left
out (one model). ``--model`` / ``--twin`` take what ``--model`` takes on the command line (a
file, a store version, ``prompt``, or a spec: untrained, marked so). Prints
markdown tables; ``--json`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    from llm4seg_core.metrics import overlap_scores

    return overlap_scores(np.asarray(pred) > 0, np.asarray(ref) > 0)["dice"]


def _noc(ious: list[float], dice: float, cap: int) -> int:
    """Clicks to reach ``dice`` (from the IoU after each click: Dice = 2 IoU / (1 + IoU))."""
    return next((i + 1 for i, v in enumerate(ious) if 2 * v / (1 + v) >= dice), cap)


UNSEEN_VOLUMES = ("Hippocampus_L", "Hippocampus_R", "Caudate_L", "Caudate_R", "Putamen_L",
                  "Putamen_R", "Thalamus_L", "Thalamus_R", "Pallidum_L", "Amygdala_R",
                  "Precentral_L", "Frontal_Sup_R", "Occipital_Sup_L", "Temporal_Mid_R",
                  "Cerebelum_6_L", "Insula_R")
"""The Colin27/AAL structures propagated through the volume: the first three are the
few-shot benchmark's tasks (and the ``--loop`` ones), then the other deep nuclei, then
cortex and cerebellum of both sides."""


class Colin27:
    """Colin27 T1 + AAL as a one-case 3-D source: the structures ``names`` as values 1..n."""

    kind = "3d"
    contoured = None

    def __init__(self, names: tuple[str, ...] | None = None) -> None:
        from types import SimpleNamespace

        from fewshot_tasks import _colin, aal_labels

        first = _colin("Hippocampus_L", "colin")  # raises TaskUnavailable with how to get it
        from fewshot_tasks import _colin_cache

        atlas = np.asarray(_colin_cache["labels"])
        values = aal_labels()
        self.names = tuple(names or values)
        self.volume = first.volume
        self.labels = np.zeros(atlas.shape, np.uint8)
        for i, name in enumerate(self.names, 1):
            self.labels[atlas == values[name]] = i
        self.split = SimpleNamespace(val=["colin27"], train=[])
        self.name = "colin27-aal"

    def read_case(self, case: str):
        return self.volume, self.labels


class DemoScans:
    """The demo CTs' lesions (llm4seg_core.data), each a one-object case."""

    kind = "3d"
    contoured = None
    name = "demo-ct"

    def __init__(self) -> None:
        from types import SimpleNamespace

        from llm4seg_core.data import demo_case
        from llm4seg_core.io import read_image, read_mask

        self.cases = {}
        for case in ("lung1", "lung2", "brain1", "brain2"):
            image, label = demo_case(case)
            vol = read_image(image)
            self.cases[case] = (vol, (read_mask(label, reference=vol) > 0).astype(np.uint8))
        self.split = SimpleNamespace(val=list(self.cases), train=[])

    def read_case(self, case: str):
        return self.cases[case]


def guide_fidelity(seg, src, cases, allowed_of) -> dict:
    """Dice with the slice below's true mask as the guide, against that guide's own Dice."""
    from llm4seg_core.prompts.segment import SliceRequest

    got, copy = [], []
    for case in cases:
        vol, lab = src.read_case(case)
        lab = np.asarray(lab)
        allowed = allowed_of(case)
        for v in (int(v) for v in np.unique(lab) if v):
            if allowed is not None and v not in allowed:
                continue
            zs = [z for z in range(lab.shape[0]) if (lab[z] == v).any()][1:-1:3]
            if not zs:
                continue
            masks = seg.segment_slices(vol, [SliceRequest(z, None, (lab[z - 1] == v).astype(
                np.uint8)) for z in zs])
            for z, m in zip(zs, masks, strict=True):
                got.append(_dice(m, lab[z] == v))
                copy.append(_dice(lab[z - 1] == v, lab[z] == v))
    return {"model": float(np.mean(got)) if got else float("nan"),
            "guide": float(np.mean(copy)) if copy else float("nan"), "slices": len(got)}


def slice_objects(src, cases, allowed_of):
    """(case, z, value) of the objects the one-slice measures use."""
    from llm4seg_core.slices import choose_slices

    out = []
    for case in cases:
        vol, lab = src.read_case(case)
        lab = np.asarray(lab)
        allowed = allowed_of(case)
        if vol.kind == "image2d":
            out += [(case, 0, int(v)) for v in np.unique(lab)
                    if v and (allowed is None or v in allowed)]
            continue
        for v in (int(v) for v in np.unique(lab) if v):
            if allowed is None or v in allowed:
                out.append((case, choose_slices(lab == v, 1)[0], v))
    return out


def bench_slices(seg, src, objects, max_clicks: int) -> dict:
    from llm4seg_core.prompts import SlicePrompts
    from llm4seg_core.prompts.simulate import box_of, click_until, first_click

    rows = {"click1": [], "box": [], "noc85": [], "noc90": []}
    t0 = time.perf_counter()
    for case, z, v in objects:
        vol, lab = src.read_case(case)
        gt = (np.asarray(lab)[z] if vol.kind == "volume" else np.asarray(lab)) == v

        def predict(prompts, guide, vol=vol, z=z):
            return seg.segment_slice(vol, z, prompts, guide)

        rows["click1"].append(_dice(predict(SlicePrompts((first_click(gt),)), None), gt))
        rows["box"].append(_dice(predict(SlicePrompts(box=box_of(gt)), None), gt))
        ious = click_until(gt, predict, target_iou=0.90 / 1.10, max_clicks=max_clicks)
        rows["noc85"].append(_noc(ious, 0.85, max_clicks))
        rows["noc90"].append(_noc(ious, 0.90, max_clicks))
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
    out.update(objects=len(objects), seconds=round(time.perf_counter() - t0, 1))
    return out


def interpolation_only(mask: np.ndarray, zs: list[int], pixel: tuple[float, float]) -> np.ndarray:
    """The corrected slices and the outline interpolated between consecutive ones."""
    from llm4seg_core.postprocess import interpolate_between

    out = np.zeros(mask.shape, bool)
    out[zs] = mask[zs]
    for a, b in pairwise(zs):
        if b - a > 1:
            out[a + 1:b] = interpolate_between(mask[a], mask[b], b - a - 1, pixel)
    return out


def bench_volumes(seg, src, cases, allowed_of, ks: list[int], with_baseline: bool) -> dict:
    from llm4seg_core.postprocess import pixel_mm
    from llm4seg_core.prompts import propagate
    from llm4seg_core.slices import choose_slices

    res = {k: {"prop": [], "prop_s": [], "interp": [], "interp_s": []} for k in ks}
    for case in cases:
        vol, lab = src.read_case(case)
        if vol.kind != "volume" or vol.n_slices < 2:
            continue
        allowed = allowed_of(case)
        for v in (int(v) for v in np.unique(lab) if v):
            if allowed is not None and v not in allowed:
                continue
            mask = np.asarray(lab) == v
            for k in ks:
                try:
                    zs = choose_slices(mask, k)
                except ValueError:
                    continue  # the structure spans fewer than k slices
                rest = np.ones(mask.shape[0], bool)
                rest[zs] = False
                t0 = time.perf_counter()
                prop = propagate(seg, vol, {z: mask[z] for z in zs})
                res[k]["prop_s"].append(time.perf_counter() - t0)
                res[k]["prop"].append(_dice(prop.mask[rest], mask[rest]))
                if with_baseline:
                    t0 = time.perf_counter()
                    interp = interpolation_only(mask, zs, pixel_mm(vol))
                    res[k]["interp_s"].append(time.perf_counter() - t0)
                    res[k]["interp"].append(_dice(interp[rest], mask[rest]))
    return {k: {m: float(np.mean(x)) if x else float("nan") for m, x in r.items()}
            | {"n": len(r["prop"])} for k, r in res.items()}


def bench_loop(segs: dict, src, n: int) -> dict:
    """Today's fine-tune-then-filter loop against propagation, k = 2, on the first n structures."""
    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.loop import correction_loop
    from llm4seg_core.prompts import propagate
    from llm4seg_core.slices import choose_slices
    from llm4seg_core.store import ModelStore, resolve_model

    vol, lab = src.read_case(src.split.val[0])
    rows = []
    for v in range(1, n + 1):
        mask = np.asarray(lab) == v
        zs = choose_slices(mask, 2)
        rest = np.ones(mask.shape[0], bool)
        rest[zs] = False
        row = {"structure": src.names[v - 1], "slices": zs}
        t0 = time.perf_counter()
        res = correction_loop(resolve_model("default", ModelStore(), device="cpu"),
                              CorrectionSet(vol, mask.astype(np.uint8), zs), save=False,
                              device="cpu")
        row["loop_s"] = time.perf_counter() - t0
        row["loop"] = _dice(res.labels[rest] > 0, mask[rest])
        for name, seg in segs.items():
            t0 = time.perf_counter()
            prop = propagate(seg, vol, {z: mask[z] for z in zs})
            row[f"{name} s"] = time.perf_counter() - t0
            row[name] = _dice(prop.mask[rest], mask[rest])
        print(f"loop {row['structure']}: {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return {"rows": rows, "mean": {k: float(np.mean([r[k] for r in rows]))
                                   for k in rows[0] if k not in ("structure", "slices")}}


def latency(seg, runs: int) -> dict:
    from llm4seg_core.io import Volume
    from llm4seg_core.prompts import Point, SlicePrompts

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    arr = (np.where((yy - 256) ** 2 + (xx - 240) ** 2 < 90 ** 2, 60, -800)
           + rng.integers(-30, 30, (512, 512))).astype(np.int16)[None]
    vol = Volume(arr, (0.7, 0.7, 2.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), modality="CT")
    prompts = SlicePrompts((Point(256, 240),))
    guide = np.zeros((512, 512), np.uint8)
    for _ in range(2):  # warm-up (first-call allocations, the intensity range)
        seg.segment_slice(vol, 0, prompts, guide)
    times = []
    for i in range(runs):
        prompts = prompts.with_point(Point(200 + i % 100, 240, i % 2 == 0))
        t0 = time.perf_counter()
        guide = seg.segment_slice(vol, 0, prompts, guide)
        times.append(time.perf_counter() - t0)
    return {"p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p95_ms": 1e3 * float(np.percentile(times, 95)), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the prompt model (LLM4Seg)")
    ap.add_argument("--twin", help="its no-LLM twin (prompt-cmunext); left out: one model")
    ap.add_argument("--names", default="LLM4Seg,CMUNeXt", help="the two rows' names")
    ap.add_argument("--data", help="comma-separated dataset names or folders (default: all)")
    ap.add_argument("--cases", type=int, help="at most this many val cases per dataset")
    ap.add_argument("--volume-cases", type=int,
                    help="of those, at most this many 3-D cases propagated (default: all)")
    ap.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                    help="the demo CTs' lesions too (default on)")
    ap.add_argument("--latency-only", action="store_true", help="only the per-click latency")
    ap.add_argument("--volumes-only", action="store_true",
                    help="only propagation through volumes (and --loop): no one-slice measures, "
                    "guide fidelity, demo CTs or latency")
    ap.add_argument("--slices-only", action="store_true",
                    help="only the one-slice measures (clicks, boxes, NoC) and latency: no "
                    "propagation, guide fidelity or loop")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--k", default="1,2,3", help="corrected slices for propagation")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--tta", action="store_true", help="every model averages the 8 "
                    "rotations/flips of image and prompts (llm4seg_core/tta.py; 8x the forwards)")
    ap.add_argument("--unseen", default="colin27", help="'colin27' (needs Debian mricron-data) "
                    "or 'none'")
    ap.add_argument("--unseen-volumes", default="16",
                    help="'16': the named structures; 'all': every AAL structure; '0': none")
    ap.add_argument("--loop", type=int, default=3, help="structures for today's loop (0: none)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--engine", default="auto", choices=("auto", "torch", "openvino"))
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT / "bench"))
    from train_prompt_model import dataset_paths

    from llm4seg_core.datasets import open_dataset
    from llm4seg_core.prompts import PromptSegmenter

    names = [n.strip() for n in args.names.split(",")]
    models = {}
    for name, arg in zip(names, [a for a in (args.model, args.twin) if a], strict=False):
        seg = PromptSegmenter.load(arg, device=args.device, engine=args.engine)
        seg.tta = args.tta
        models[name + ("" if seg.trained else " (untrained)")] = seg
    ks = [int(k) for k in args.k.split(",") if k.strip()]
    report: dict = {"models": {n: s.name for n, s in models.items()}, "slices": {}, "volumes": {},
                    "latency": {}, "engine": args.engine, "argv": sys.argv[1:]}
    for path in [] if args.latency_only else dataset_paths(args.data):
        src = open_dataset(path)
        cases = list(src.split.val)[: args.cases]
        contoured = getattr(src, "contoured", None)

        def allowed_of(case, contoured=contoured):
            return None if contoured is None else contoured[case]

        if args.volumes_only and getattr(src, "kind", "") != "3d":
            continue
        objects = [] if args.volumes_only else slice_objects(src, cases, allowed_of)
        for i, (name, seg) in enumerate(models.items()):
            if not args.volumes_only:
                report["slices"].setdefault(path.name, {})[name] = bench_slices(
                    seg, src, objects, args.max_clicks)
            if getattr(src, "kind", "") == "3d" and not args.slices_only:
                report["volumes"].setdefault(path.name, {})[name] = bench_volumes(
                    seg, src, cases[: args.volume_cases], allowed_of, ks, with_baseline=i == 0)
                if not args.volumes_only:
                    report.setdefault("guide", {}).setdefault(path.name, {})[name] = (
                        guide_fidelity(seg, src, cases[: args.volume_cases], allowed_of))
            print(f"{path.name} / {name}: done", file=sys.stderr, flush=True)
    if args.demo and not (args.latency_only or args.volumes_only):
        from llm4seg_core.errors import LLM4SegError

        try:
            demo = DemoScans()
        except LLM4SegError as exc:
            print(f"no demo CTs: {exc}", file=sys.stderr)
        else:
            objects = slice_objects(demo, demo.split.val, lambda case: None)
            for name, seg in models.items():
                report["slices"].setdefault(demo.name, {})[name] = bench_slices(
                    seg, demo, objects, args.max_clicks)
    if args.unseen == "colin27" and not args.latency_only:
        unseen(report, models, ks, args)
    for name, seg in models.items():
        if not args.volumes_only:
            report["latency"][name] = latency(seg, args.latency_runs)
    print(markdown(report, ks))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


def unseen(report: dict, models: dict, ks: list[int], args) -> None:
    """The Colin27/AAL rows (structures never trained on) and today's loop."""
    from fewshot_tasks import TaskUnavailable

    try:
        every = Colin27()
    except TaskUnavailable as exc:
        print(f"no unseen structures: {exc}", file=sys.stderr)
        return
    if not args.volumes_only:
        objects = slice_objects(every, every.split.val, lambda case: None)
        for name, seg in models.items():
            report["slices"].setdefault(every.name, {})[name] = bench_slices(
                seg, every, objects, args.max_clicks)
            print(f"{every.name} / {name}: slices done", file=sys.stderr, flush=True)
    if args.unseen_volumes != "0" and not args.slices_only:
        src = every if args.unseen_volumes == "all" else Colin27(UNSEEN_VOLUMES)
        for i, (name, seg) in enumerate(models.items()):
            report["volumes"].setdefault(src.name, {})[name] = bench_volumes(
                seg, src, src.split.val, lambda case: None, ks, with_baseline=i == 0)
            print(f"{src.name} / {name}: volumes done", file=sys.stderr, flush=True)
    if args.loop and not args.slices_only:
        report["loop"] = bench_loop(models, Colin27(UNSEEN_VOLUMES), args.loop)


def markdown(report: dict, ks: list[int]) -> str:
    lines = ["| dataset | model | objects | Dice 1 click | Dice 1 box | NoC@85 | NoC@90 |",
             "|---|---|---|---|---|---|---|"] if report["slices"] else []
    for ds, per in report["slices"].items():
        for name, r in per.items():
            lines.append(f"| {ds} | {name} | {r['objects']} | {r['click1']:.3f} | {r['box']:.3f} | "
                         f"{r['noc85']:.2f} | {r['noc90']:.2f} |")
    if report["volumes"]:
        lines += ["", "| dataset | method | k | structures | Dice (other slices) | s each |",
                  "|---|---|---|---|---|---|"]
        for ds, per in report["volumes"].items():
            first = next(iter(per.values()))
            for k in ks:
                lines.append(f"| {ds} | interpolation only | {k} | {first[k]['n']} | "
                             f"{first[k]['interp']:.3f} | {first[k]['interp_s']:.2f} |")
                for name, r in per.items():
                    lines.append(f"| {ds} | {name} propagation | {k} | {r[k]['n']} | "
                                 f"{r[k]['prop']:.3f} | {r[k]['prop_s']:.2f} |")
    if report.get("guide"):
        lines += ["", "| dataset | model | slices | Dice, guided by the slice below's true mask "
                  "| Dice of that guide itself |", "|---|---|---|---|---|"]
        for ds, per in report["guide"].items():
            for name, r in per.items():
                lines.append(f"| {ds} | {name} | {r['slices']} | {r['model']:.3f} | "
                             f"{r['guide']:.3f} |")
    if report.get("loop"):
        names = [k for k in report["loop"]["mean"] if k not in ("loop", "loop_s")
                 and not k.endswith(" s")]
        lines += ["", "| structure (k = 2) | fine-tune loop | s | "
                  + " | ".join(f"{n} propagation | s" for n in names) + " |",
                  "|---|---|---|" + "---|---|" * len(names)]
        for r in report["loop"]["rows"] + [dict(report["loop"]["mean"], structure="mean")]:
            lines.append(f"| {r['structure']} | {r['loop']:.3f} | {r['loop_s']:.0f} | "
                         + " | ".join(f"{r[n]:.3f} | {r[n + ' s']:.1f}" for n in names) + " |")
    if report["latency"]:
        lines += ["", "| model | per-click latency, 512 x 512: p50 | p95 |", "|---|---|---|"]
    for name, r in report["latency"].items():
        lines.append(f"| {name} | {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
