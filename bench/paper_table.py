#!/usr/bin/env python3
"""The paper's table on our datasets: plain CMUNeXt vs LLM4Seg, one budget for every run.

    .venv/bin/python bench/paper_table.py plan              # the runs, their state and budget
    .venv/bin/python bench/paper_table.py run [--only busi] [--max-runs 1]
    .venv/bin/python bench/paper_table.py score             # score finished runs (val split)
    .venv/bin/python bench/paper_table.py table             # the markdown table

Runs (issue 12): on busi, kvasir, ddti, isic128 and hc18, plain CMUNeXt
(``cmunext``) and LLM4Seg (``llm4seg``: SmolLM2 layer 14, 2-D rotary,
bidirectional) with seeds 0 and 1; the reference form (``reference``: 1-D
positions, causal) and the random-layer ablation (``random-layer``) with seed 0
on busi and kvasir. Every run has the same recipe (:data:`RECIPE`): 128 x 128,
batch 8, AdamW 2e-3, weight decay 1e-2, 100 warm-up steps, cosine decay,
2000 steps; about 30-37 min each on the 2-core CPU. Runs live in
``out/train/<dataset>_<variant>_128[_s<seed>]`` and resume where they stopped
(``run`` is safe to interrupt and start again); each finished run's scores are
committed in ``docs/paper_table/<run>.json``, since out/ does not outlive a session. ``run`` trains one run at a
time, in order.

The table scores each run's LAST checkpoint (the end of the fixed budget, no
choice made on the val split) through the Segmenter at each picture's own
size; mean and spread over the seeds. The zoo models are the best-on-val
checkpoints of the LLM4Seg seed-0 runs, scored separately on their cards.
``--device cuda`` and ``--recipe paper`` are for a GPU (bench/gpu_paper_table.sh): the
paper's recipe names its runs ``..._256``, keeps its scores apart
(``docs/paper_table_gpu/``, or ``--scores``), and reads the datasets from ``--data``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "out" / "train"
SCORES = ROOT / "docs" / "paper_table"
"""Each finished run's scores, committed: out/ does not outlive a session, the table must."""
PAPER_MODE = False
"""True under ``--recipe paper``: run names, scores folder and training command follow it."""
DATASETS = ("busi", "kvasir", "ddti", "isic128", "hc18")
ABLATION_SETS = ("busi", "kvasir")

RECIPE = {"image_size": 128, "steps": 2000, "args": [
    "--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "1e-2", "--schedule", "cosine",
    "--warmup", "100", "--eval-every", "2"]}
"""The CPU budget: the same for every run of the table."""

PAPER_RECIPE = {"image_size": 256, "epochs": 300, "args": [
    "--optimizer", "sgd", "--lr", "0.01", "--weight-decay", "1e-4", "--schedule", "poly",
    "--eval-every", "10"]}
"""The reference recipe (256 x 256, SGD 0.01 + poly, 300 epochs): for a GPU."""

PAPER = {"isic128": ("IoU", 83.39, "ISIC 2018 (2594 pictures); ours: an 1000-picture ISIC 2016/17 "
                     "subset at 128 x 128"),
         "kvasir": ("F1", 93.9, "Kvasir-SEG, same release; ours: the converter's 800/200 split"),
         "ddti": ("IoU", 79.93, "TN-SCUI 2020 (3644 pictures); ours: DDTI, 637 pictures, "
                  "stands in for it")}
"""The paper's figures (../shared/REFERENCE.md) and how our sets differ."""


@dataclass(frozen=True)
class Run:
    dataset: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        size = PAPER_RECIPE["image_size"] if PAPER_MODE else RECIPE["image_size"]
        return f"{self.dataset}_{self.variant}_{size}" + (f"_s{self.seed}" if self.seed else "")

    def folder(self, out: Path = OUT) -> Path:
        return out / self.name


def table_runs() -> list[Run]:
    """Every run of the table, in the order ``run`` trains them (LLM4Seg seed 0 first: the zoo)."""
    runs = [Run(d, "llm4seg", 0) for d in DATASETS]
    runs += [Run(d, "cmunext", 0) for d in DATASETS]
    runs += [Run(d, v, 0) for d in ABLATION_SETS for v in ("reference", "random-layer")]
    runs += [Run(d, v, 1) for d in ABLATION_SETS for v in ("llm4seg", "cmunext")]
    runs += [Run(d, v, 1) for d in DATASETS if d not in ABLATION_SETS for v in ("llm4seg", "cmunext")]
    return runs


def train_count(dataset: str) -> int:
    return sum(1 for line in (DATA / dataset / f"{dataset}_train.txt").read_text().splitlines()
               if line.strip())


def state_of(run: Run, out: Path) -> tuple[str, int]:
    """("done" | "partial" | "new", steps done) of a run: done once its scores are committed."""
    if (SCORES / f"{run.name}.json").is_file():
        return "done", int(json.loads((SCORES / f"{run.name}.json").read_text()).get("steps", 0))
    f = run.folder(out) / "train_state.json"
    if not f.is_file():
        return "new", 0
    st = json.loads(f.read_text())
    cfg = st.get("config", {})
    total = int(cfg.get("epochs", 1)) * math.ceil(train_count(run.dataset) / int(cfg.get("batch_size", 8)))
    if cfg.get("max_steps"):
        total = min(total, int(cfg["max_steps"]))
    step = int(st.get("step", 0))
    return ("done" if step >= total else "partial"), step


def command(run: Run, recipe: dict, device: str, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "llm4seg_core", "train", str(DATA / run.dataset),
           "-o", str(run.folder(out)), "--model", f"{run.variant},image_size={recipe['image_size']}",
           "--seed", str(run.seed), "--device", device, *recipe["args"]]
    if "steps" in recipe:
        per_epoch = math.ceil(train_count(run.dataset) / 8)
        cmd += ["--epochs", str(math.ceil(recipe["steps"] / per_epoch)),
                "--max-steps", str(recipe["steps"])]
    else:
        cmd += ["--epochs", str(recipe["epochs"])]
    if (run.folder(out) / "train_state.json").is_file():
        cmd.append("--resume")
    return cmd


def cmd_plan(args: argparse.Namespace) -> int:
    runs = selected(args)
    todo = 0
    for r in runs:
        state, step = state_of(r, args.out)
        print(f"{r.name:32s} {state:8s} step {step}")
        todo += state != "done"
    print(f"{len(runs)} runs, {todo} to train; budget per run: {RECIPE['steps']} steps at "
          f"{RECIPE['image_size']} px, about 30-37 min on the 2-core CPU "
          f"(~{todo * 33 / 60:.1f} h left)")
    return 0


def selected(args: argparse.Namespace) -> list[Run]:
    runs = table_runs()
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r.dataset in keep or r.variant in keep or r.name in keep]
    return runs


def cmd_run(args: argparse.Namespace) -> int:
    recipe = PAPER_RECIPE if args.recipe == "paper" else RECIPE
    started = 0
    for r in selected(args):
        if state_of(r, args.out)[0] == "done":
            continue
        if args.max_runs is not None and started >= args.max_runs:
            break
        cmd = command(r, recipe, args.device, args.out)
        log = r.folder(args.out).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{time.strftime('%H:%M:%S')}] {r.name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        with log.open("a") as fh:
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
        print(f"[{time.strftime('%H:%M:%S')}] {r.name}: exit {code} after "
              f"{time.perf_counter() - t0:.0f} s (log {log})", flush=True)
        if code:
            return code
        started += 1
        if args.score:
            score_run(r, args.out, args.device)
    return 0


def score_run(run: Run, out: Path, device: str) -> dict | None:
    from llm4seg_core.valscore import score_split

    ckpt = run.folder(out) / "last.safetensors"
    dest = SCORES / f"{run.name}.json"
    if dest.is_file() and (not ckpt.is_file() or dest.stat().st_mtime >= ckpt.stat().st_mtime):
        return json.loads(dest.read_text())
    res = score_split(ckpt, DATA / run.dataset, device=device, tta=False)  # as the paper
    res.pop("rows")
    state = json.loads((run.folder(out) / "train_state.json").read_text())
    res.update(run=run.name, steps=int(state.get("step", 0)),
               scored=time.strftime("%Y-%m-%d"), checkpoint="last.safetensors")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=1) + "\n")
    print(f"{run.name}: Dice {res['dice']['mean']:.4f}, IoU {res['iou']['mean']:.4f}, "
          f"HD95 {res['hd95']['mean']:.1f} px ({res['cases']} cases, {res['seconds']:.0f} s)",
          flush=True)
    return res


def cmd_score(args: argparse.Namespace) -> int:
    for r in selected(args):
        if (r.folder(args.out) / "last.safetensors").is_file() and state_of(r, args.out)[0] == "done":
            score_run(r, args.out, args.device)
    return 0


def _fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "—"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m * scale:.{digits}f}"
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def cmd_table(args: argparse.Namespace) -> int:
    variants = ("cmunext", "llm4seg", "reference", "random-layer")
    print("| dataset | model | seeds | IoU % | Dice/F1 % | HD95 px | paper |")
    print("|---|---|---|---|---|---|---|")
    for d in DATASETS:
        for v in variants:
            runs = [r for r in table_runs() if r.dataset == d and r.variant == v]
            if not runs:
                continue
            scores = [json.loads(p.read_text()) for r in runs
                      if (p := SCORES / f"{r.name}.json").is_file()]
            seeds = f"{len(scores)} of {len(runs)}"
            iou = [s["iou"]["mean"] for s in scores]
            dice = [s["dice"]["mean"] for s in scores]
            hd = [s["hd95"]["mean"] for s in scores if s["hd95"]["mean"] is not None]
            paper = ""
            if v == "llm4seg" and d in PAPER:
                metric, value, _ = PAPER[d]
                paper = f"{metric} {value}"
            print(f"| {d} | {v} | {seeds} | {_fmt(iou)} | {_fmt(dice)} | {_fmt(hd, 1.0)} | {paper} |")
    return 0


def main() -> int:
    global DATA, SCORES, PAPER_MODE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("plan", "run", "score", "table"))
    p.add_argument("--only", help="datasets, variants or run names, comma-separated")
    p.add_argument("--max-runs", type=int, help="train at most this many runs, then stop")
    p.add_argument("--device", default="cpu")
    p.add_argument("--recipe", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--out", type=Path, default=OUT, help="where the run folders live")
    p.add_argument("--no-score", dest="score", action="store_false",
                   help="run: do not score each run when it ends")
    p.add_argument("--data", type=Path, help="the datasets folder (default ../shared/data)")
    p.add_argument("--scores", type=Path, help="where the scores are kept (default "
                   "docs/paper_table; docs/paper_table_gpu with --recipe paper)")
    args = p.parse_args()
    PAPER_MODE = args.recipe == "paper"
    DATA = args.data or DATA
    SCORES = args.scores or (SCORES.with_name("paper_table_gpu") if PAPER_MODE else SCORES)
    return {"plan": cmd_plan, "run": cmd_run, "score": cmd_score, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
