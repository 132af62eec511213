#!/usr/bin/env python3
"""Event-loop stalls of the napari dock widget during Segment and Fine-tune.

Opens a napari viewer (run it under Xvfb on a headless machine), docks the
LLM4Seg widget, loads a synthetic CT volume (int16 HU phantom, --slices x
--size x --size; or the demo lung2 with --demo), then runs, through the
widget's own buttons:

1. Segment (whole volume);
2. Fine-tune (--steps steps) after painting corrections on 2 slices;

while a 10 ms precise QTimer on the Qt main thread records when it fires. For
each job it prints the duration, the number of ticks, the longest gap between
two ticks (the longest stall of the event loop: the time the GUI could not
repaint or react) and the 99th percentile gap, in ms. A free loop shows gaps
of about 10 ms; the clock starts just before the button is clicked, so work
the click itself does on the main thread counts too.

The model store is a temporary folder ($LLM4SEG_HOME), so the fine-tuned
version (and the autosaved corrections) go away afterwards.

    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python bench/bench_event_loop.py
    ... bench_event_loop.py --model 'cmunext,image_size=64,dims=8:8:16:16:32'   # tiny, fast
    ... bench_event_loop.py --demo --steps 5
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "plugins"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def synthetic_ct(n: int, size: int) -> np.ndarray:
    """Air around a soft-tissue body with a denser disc: a CT-like int16 HU volume."""
    rng = np.random.default_rng(0)
    vol = np.full((n, size, size), -1000.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    disc = (yy - size / 2) ** 2 + (xx - size / 2 + size / 10) ** 2 < (size * 0.15) ** 2
    vol[:, body] = 40.0
    vol[:, disc] = 300.0
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    return vol.astype(np.int16)


def gap_stats(stamps: list[float]) -> tuple[int, float, float]:
    """(ticks, longest gap ms, 99th percentile gap ms) of tick times (first = the start)."""
    gaps = np.diff(np.asarray(stamps)) * 1e3
    if gaps.size == 0:
        return 0, float("nan"), float("nan")
    return len(stamps) - 2, float(gaps.max()), float(np.percentile(gaps, 99))


class StallTracer:
    """A watchdog thread: while the main thread has not ticked for ``after_ms``, it samples
    the main thread's Python stack every 20 ms; :meth:`report` prints the most frequent
    innermost frames (where the event loop was stuck)."""

    def __init__(self, after_ms: float) -> None:
        import collections
        import threading

        self.after = after_ms / 1e3
        self.last = time.perf_counter()
        self.samples: collections.Counter = collections.Counter()
        self.main_id = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def tick(self) -> None:
        self.last = time.perf_counter()

    def _run(self) -> None:
        import traceback

        while not self._stop.wait(0.02):
            if time.perf_counter() - self.last < self.after:
                continue
            frame = sys._current_frames().get(self.main_id)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "site-packages" not in f.filename or "napari" in f.filename]
            key = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                              for f in reversed((ours or stack)[-6:]))
            self.samples[key] += 1

    def report(self, top: int = 6) -> None:
        self._stop.set()
        total = sum(self.samples.values())
        print(f"stall samples (main thread stuck > {self.after * 1e3:.0f} ms, every 20 ms): {total}")
        for key, n in self.samples.most_common(top):
            print(f"  {n:4d} x {key}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--demo", action="store_true", help="the demo lung2 CT instead of a phantom")
    ap.add_argument("--model", default=None, help="model argument (default: the default model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=3, help="fine-tune steps")
    ap.add_argument("--interval-ms", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per job at most")
    ap.add_argument("--trace-stalls", type=float, default=0, metavar="MS",
                    help="sample the main thread's stack whenever it has not ticked for MS ms")
    args = ap.parse_args()

    print("$ " + shlex.join([sys.executable, *sys.argv]), flush=True)
    home = tempfile.mkdtemp(prefix="llm4seg_bench_home_")
    os.environ["LLM4SEG_HOME"] = home

    import napari
    from qtpy.QtCore import QEventLoop, Qt, QTimer

    from llm4seg_napari._widget import LLM4SegWidget

    viewer = napari.Viewer(show=True)
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    if args.demo:
        from llm4seg_napari._sample_data import make_lung2_sample

        data, kwargs, _ = make_lung2_sample()[0]
        image = viewer.add_image(data, **kwargs)
    else:
        image = viewer.add_image(synthetic_ct(args.slices, args.size), name="ct",
                                 contrast_limits=(-1000, 1000))
    if args.model:
        widget.set_model(args.model)
    for i in range(widget.device_combo.count()):
        if widget._device_list[i].arg == args.device:
            widget.device_combo.setCurrentIndex(i)
    print(f"image {image.name!r} {image.data.shape} {image.data.dtype}; model "
          f"{widget.model_combo.currentText()!r}; device {widget.device_arg}; "
          f"Qt platform {os.environ.get('QT_QPA_PLATFORM', '?')}; napari {napari.__version__}",
          flush=True)

    def run_job(name: str, click) -> dict:
        stamps: list[float] = []
        tick = QTimer()
        tick.setTimerType(Qt.TimerType.PreciseTimer)
        tick.setInterval(args.interval_ms)
        tracer = StallTracer(args.trace_stalls) if args.trace_stalls > 0 else None

        def on_tick() -> None:
            stamps.append(time.perf_counter())
            if tracer is not None:
                tracer.tick()

        tick.timeout.connect(on_tick)
        loop = QEventLoop()
        started = {"seen": False}

        def poll() -> None:
            if widget.is_busy:
                started["seen"] = True
            elif started["seen"] or time.perf_counter() - t0 > 1.0:
                loop.quit()
            if time.perf_counter() - t0 > args.timeout:
                widget.cancel_job()

        watch = QTimer()
        watch.setInterval(20)
        watch.timeout.connect(poll)
        tick.start()
        watch.start()
        t0 = time.perf_counter()
        stamps.append(t0)
        click()
        started["seen"] = started["seen"] or widget.is_busy
        loop.exec()
        t1 = time.perf_counter()
        tick.stop()
        watch.stop()
        stamps.append(t1)
        ticks, worst, p99 = gap_stats(stamps)
        gaps = np.diff(np.asarray(stamps))
        worst_at = (stamps[int(np.argmax(gaps))] - t0) * 1e3 if gaps.size else float("nan")
        row = {"job": name, "seconds": t1 - t0, "ticks": ticks, "max_gap_ms": worst,
               "p99_gap_ms": p99, "status": widget.status_label.text()}
        print(f"{name:<10} duration {row['seconds'] * 1e3:9.0f} ms  ticks {ticks:6d}  "
              f"longest stall {worst:8.1f} ms (from +{worst_at:.0f} ms)  p99 gap {p99:7.1f} ms",
              flush=True)
        print(f"           status: {row['status']}", flush=True)
        if tracer is not None:
            tracer.report()
        return row

    rows = [run_job("segment", widget.segment_button.click)]
    mask = widget.mask_layer
    if mask is None:
        print("no mask after Segment: stopping", flush=True)
        return 1
    n = mask.data.shape[0]
    cy, cx = mask.data.shape[1] // 2, mask.data.shape[2] // 2
    mask.brush_size = 10
    for z in (n // 3, 2 * n // 3):  # "corrections" on 2 slices (tracked, and autosaved)
        mask.paint((z, cy, cx), 1)
    print(f"corrected slices: {widget.corrected_slices}", flush=True)
    widget.steps_spin.setValue(args.steps)
    rows.append(run_job("fine-tune", widget.finetune_button.click))
    viewer.close()
    return 0 if all("failed" not in r["status"].lower() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
