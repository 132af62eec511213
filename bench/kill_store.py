"""Kill ``llm4seg finetune -o NAME --complete MASK`` at chosen moments and check what is left.

Moments: early (imports, reading), mid-training, at each file of the save
(weights temp written, weights renamed, metadata temp written, metadata
renamed, CURRENT written) and mid-way through writing the completed mask.
After each ``kill -9`` the same command runs again at once and must succeed
(or say the version exists, when it was complete), ``models list`` must show
no DAMAGED version, and neither the store nor the mask's folder may hold a
temp file. (tests/core/test_store_kills.py kills a save at every one of its
file operations; this runs the whole command line.)

    .venv/bin/python bench/kill_store.py [--markdown]

About two minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = "cmunext,image_size=32,dims=4:8:8:16:16"

# runs the CLI; with KILL_AT=<kind>:<n> it kills itself at the n-th such file operation
# inside ModelStore.save ("save") or write_mask ("mask")
RUNNER = textwrap.dedent("""
    import os, signal, sys, tempfile
    where, _, n = os.environ.get("KILL_AT", "none:0").partition(":")
    n = int(n)
    if where in ("save", "mask"):
        count = [0]

        def tick():
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

        def wrap(fn):
            def inner(*a, **k):
                tick()
                out = fn(*a, **k)
                tick()
                return out
            return inner

        def arm(real):
            def armed(*a, **k):
                os.replace, tempfile.mkstemp = wrap(os.replace), wrap(tempfile.mkstemp)
                return real(*a, **k)
            return armed

        if where == "save":
            from llm4seg_core.store import versions
            versions.ModelStore.save = arm(versions.ModelStore.save)
        else:
            import llm4seg_core.cli.finetune as ft
            import llm4seg_core.io as io_
            io_.write_mask = arm(io_.write_mask)
    from llm4seg_core.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def make_inputs(work: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from llm4seg_core.io import read_image, write_mask

    folder = work / "ct"
    folder.mkdir(parents=True)
    for k in range(6):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.1, -179.0, -75.0 + 5 * k]
        ds.save_as(folder / f"img_{k:03d}.dcm")
    vol = read_image(folder)
    mask = np.zeros(vol.spatial_shape, np.uint8)
    mask[:, 40:80, 40:80] = 1
    write_mask(mask, vol, work / "mask.nii.gz")
    return folder, work / "mask.nii.gz"


def leftovers(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") or p.name.endswith((".tmp", ".lock")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llm4seg-kill-"))
    image, mask = make_inputs(work)
    env = dict(os.environ, LLM4SEG_HOME=str(work / "home"), PYTHONPATH=str(ROOT))
    store = work / "home" / "models"
    out_dir = work / "results"
    out_dir.mkdir()
    moments = [("early (0.5 s: imports)", "time:0.5", None),
               ("mid-training", "bar", None)]
    moments += [(f"save, file operation {n}", "save", n) for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)]
    moments += [(f"mask write, file operation {n}", "mask", n) for n in (2, 4)]
    rows = []
    for i, (label, kind, n) in enumerate(moments):
        name = f"ft{i}"
        done = out_dir / f"done{i}.nii.gz"
        cmd = [sys.executable, "-c", RUNNER, "finetune", str(image), str(mask), "--slices", "1,3",
               "--base", TINY, "--steps", "60" if kind == "bar" else "3", "--device", "cpu",
               "-o", name, "--complete", str(done)]
        e = dict(env, KILL_AT=f"{kind}:{n}" if n else "none:0")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kind.startswith("time"):
            time.sleep(float(kind.split(":")[1]))
            proc.send_signal(signal.SIGKILL)
        elif kind == "bar":
            buf = b""
            while b"fine-tuning:" not in buf or b"/60" not in buf:
                chunk = proc.stderr.read1(256) if hasattr(proc.stderr, "read1") else proc.stderr.read(1)
                if not chunk:
                    break
                buf += chunk
                if b" 5/60" in buf or b"10/60" in buf:
                    break
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)
        killed = proc.returncode == -signal.SIGKILL
        left_store, left_out = leftovers(store), leftovers(out_dir)
        t1 = time.perf_counter()
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        rerun_s = time.perf_counter() - t1
        exists = "already exists" in again.stderr
        listing = subprocess.run([sys.executable, "-m", "llm4seg_core", "models"], env=env,
                                 capture_output=True, text=True, timeout=300)
        ok = ((again.returncode == 0 or exists) and listing.returncode == 0
              and "DAMAGED" not in listing.stdout and not leftovers(store)
              and not leftovers(out_dir) and (done.is_file() or exists))
        rows.append((label, "killed" if killed else f"exit {proc.returncode}",
                     ", ".join(left_store + left_out) or "-",
                     "exit 0" if again.returncode == 0 else ("exists" if exists else
                                                             f"exit {again.returncode}"),
                     f"{rerun_s:.1f} s", "ok" if ok else "FAIL"))
        print(" | ".join(rows[-1]), flush=True) if not args.markdown else None
        _ = t0
    if args.markdown:
        print("| kill moment | first run | left right after the kill | rerun of the same -o NAME "
              "| rerun took | store + folder after |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    bad = [r for r in rows if r[-1] != "ok"]
    print(f"\n{len(rows)} kill moments: {len(rows) - len(bad)} ok, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
