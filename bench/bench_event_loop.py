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

Before the first click it runs the event loop until the widget's background
warm-up (the engine imports, started when the widget is created) has ended
and the loop is idle (what the start-up queued is done: --settle-idle-ms),
as a person who looks at the image first lets it; --no-settle clicks at once.
--trace-stalls MS samples every thread while the main thread is stuck and
prints where it was (also during the longest stall) and the full garbage
collections of each job: one holds the GIL, so it stalls the loop from any
thread.

The model store is a temporary folder ($LLM4SEG_HOME), so the fine-tuned
version (and the autosaved corrections) go away afterwards.

    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python bench/bench_event_loop.py
    ... bench_event_loop.py --model 'cmunext,image_size=64,dims=8:8:16:16:32'   # tiny, fast
    ... bench_event_loop.py --demo --steps 5
"""

from __future__ import annotations

import argparse
import atexit
import collections
import gc
import os
import shlex
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

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
    the Python stack of every thread every 20 ms. :meth:`report` prints the most frequent
    innermost frames of the main thread (where the event loop was stuck), what the other
    busy threads ran meanwhile, and the samples taken during the longest stall. A main
    thread shown in the event loop itself (``exec``) was in C++ (Qt, OpenGL) or waited for
    the GIL that another thread held."""

    def __init__(self, after_ms: float) -> None:
        self.after = after_ms / 1e3
        self.last = time.perf_counter()
        self.samples: collections.Counter[str] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()
        self.timeline: list[tuple[float, str, str]] = []  # (time, main thread, other threads)
        self.main_id = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stall-tracer")
        self._thread.start()

    def tick(self) -> None:
        self.last = time.perf_counter()

    @staticmethod
    def _where(frame: Any, depth: int) -> str:
        stack = traceback.extract_stack(frame)[-depth:]
        return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))

    @staticmethod
    def _idle(frame: Any) -> bool:
        """A thread blocked in threading's wait (an idle helper thread): not worth showing."""
        code = frame.f_code
        return Path(code.co_filename).name == "threading.py" and code.co_name == "wait"

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(0.02):
            now = time.perf_counter()
            if now - self.last < self.after:
                continue
            frames = sys._current_frames()
            frame = frames.get(self.main_id)
            if frame is None:
                continue
            key = self._where(frame, 6)
            names = {t.ident: t.name for t in threading.enumerate()}
            busy = [f"[{names.get(i, i)}] {self._where(f, 3)}" for i, f in frames.items()
                    if i not in (self.main_id, me) and not self._idle(f)]
            self.samples[key] += 1
            self.others.update(busy)
            self.timeline.append((now, key, "; ".join(busy)))

    def report(self, t0: float, worst: tuple[float, float], top: int = 6) -> None:
        """Print what was sampled; ``worst``: (start, end) of the longest stall."""
        self._stop.set()
        self._thread.join(1.0)
        total = sum(self.samples.values())
        print(f"stall samples (main thread stuck > {self.after * 1e3:.0f} ms, every 20 ms): "
              f"{total}")
        for key, n in self.samples.most_common(top):
            print(f"  {n:4d} x {key}")
        if self.others:
            print("  other threads meanwhile:")
            for key, n in self.others.most_common(top):
                print(f"  {n:4d} x {key}")
        inside = [row for row in self.timeline if worst[0] <= row[0] <= worst[1]]
        if inside:
            print(f"  during the longest stall (from +{(worst[0] - t0) * 1e3:.0f} ms):")
            for t, key, others in inside[:: max(1, len(inside) // 8)]:
                print(f"    +{(t - t0) * 1e3:6.0f} ms  main: {key}")
                if others:
                    print(f"               {others}")
        sys.stdout.flush()


class GCWatch:
    """Times the garbage collector's full (generation 2) collections: one holds the GIL for
    as long as it runs, so one on any thread stalls the event loop that long."""

    def __init__(self) -> None:
        self.full: list[tuple[float, float, str]] = []  # (start, ms, thread name)
        self._start: dict[int, float] = {}
        gc.callbacks.append(self._on_gc)
        atexit.register(self.close)  # before the interpreter tears the modules down

    def _on_gc(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        ident = threading.get_ident()
        if phase == "start":
            self._start[ident] = time.perf_counter()
        elif ident in self._start:
            t = self._start.pop(ident)
            self.full.append((t, (time.perf_counter() - t) * 1e3, threading.current_thread().name))

    def report(self, t0: float, t1: float) -> None:
        runs = [(t, ms, name) for t, ms, name in self.full if t0 <= t <= t1]
        text = ", ".join(f"{ms:.0f} ms at +{(t - t0) * 1e3:.0f} ms ({name})"
                         for t, ms, name in runs)
        print(f"full gc collections: {len(runs)}" + (f": {text}" if runs else ""), flush=True)

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


#: The widget's background thread that imports the engine (llm4seg_napari._tasks.warm_imports).
WARM_THREAD = "llm4seg-warm-imports"


def settle(idle_ms: float = 300.0, limit: float = 120.0) -> None:
    """Run the event loop until the widget's warm-up thread has ended, then until the loop
    is idle (``idle_ms`` without a turn over 20 ms: what the start-up queued, such as the
    first draw of the fine-tune plot, is done), as a person who looks at the image before
    clicking Segment lets it (--no-settle clicks at once; --settle-idle-ms 0 stops as soon
    as the thread has ended, as the bench did before)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t = time.perf_counter()
    for th in [th for th in threading.enumerate() if th.name == WARM_THREAD]:
        while th.is_alive() and time.perf_counter() - t < limit:
            app.processEvents()
            th.join(0.01)
    warm = time.perf_counter() - t
    quiet_since = time.perf_counter()
    while idle_ms > 0 and time.perf_counter() - quiet_since < idle_ms / 1e3 \
            and time.perf_counter() - t < limit:
        start = time.perf_counter()
        app.processEvents()
        if time.perf_counter() - start > 0.02:
            quiet_since = time.perf_counter()
        time.sleep(0.005)
    print(f"warm-up: waited {warm:.1f} s for the widget's background imports, then "
          f"{time.perf_counter() - t - warm:.1f} s for an idle event loop, before clicking",
          flush=True)


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
                    help="sample every thread's stack whenever the main thread has not ticked "
                         "for MS ms; also time the full garbage collections")
    ap.add_argument("--no-settle", action="store_true",
                    help="click Segment at once, while the widget's background imports may run")
    ap.add_argument("--settle-idle-ms", type=float, default=300, metavar="MS",
                    help="after the warm-up, run the event loop until MS ms pass without a "
                         "turn over 20 ms (0: click as soon as the warm-up thread ends)")
    args = ap.parse_args()

    print("$ " + shlex.join([sys.executable, *sys.argv]), flush=True)
    home = tempfile.mkdtemp(prefix="llm4seg_bench_home_")
    os.environ["LLM4SEG_HOME"] = home

    import napari
    from qtpy.QtCore import QEventLoop, Qt, QTimer

    from llm4seg_napari.widget import LLM4SegWidget

    viewer = napari.Viewer(show=True)
    gc_watch = GCWatch() if args.trace_stalls > 0 else None
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
        widget.select_model(args.model)
    widget.select_device(args.device)
    print(f"image {image.name!r} {image.data.shape} {image.data.dtype}; model "
          f"{widget.model_combo.currentText()!r}; device {widget.state.device_arg}; "
          f"Qt platform {os.environ.get('QT_QPA_PLATFORM', '?')}; napari {napari.__version__}",
          flush=True)
    if not args.no_settle:
        settle(args.settle_idle_ms)

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
            if widget.state.is_busy:
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
        started["seen"] = started["seen"] or widget.state.is_busy
        loop.exec()
        t1 = time.perf_counter()
        tick.stop()
        watch.stop()
        stamps.append(t1)
        ticks, worst, p99 = gap_stats(stamps)
        gaps = np.diff(np.asarray(stamps))
        at = int(np.argmax(gaps)) if gaps.size else 0
        worst_at = (stamps[at] - t0) * 1e3 if gaps.size else float("nan")
        row = {"job": name, "seconds": t1 - t0, "ticks": ticks, "max_gap_ms": worst,
               "p99_gap_ms": p99, "status": widget.status_label.text()}
        print(f"{name:<10} duration {row['seconds'] * 1e3:9.0f} ms  ticks {ticks:6d}  "
              f"longest stall {worst:8.1f} ms (from +{worst_at:.0f} ms)  p99 gap {p99:7.1f} ms",
              flush=True)
        print(f"           status: {row['status']}", flush=True)
        if tracer is not None:
            tracer.report(t0, (stamps[at], stamps[at + 1]) if gaps.size else (t0, t1))
        if gc_watch is not None:
            gc_watch.report(t0, t1)
        return row

    rows = [run_job("segment", widget.segment_button.click)]
    mask = widget.state.mask
    if mask is None:
        print("no mask after Segment: stopping", flush=True)
        return 1
    n = mask.data.shape[0]
    cy, cx = mask.data.shape[1] // 2, mask.data.shape[2] // 2
    mask.brush_size = 10
    for z in (n // 3, 2 * n // 3):  # "corrections" on 2 slices (tracked, and autosaved)
        mask.paint((z, cy, cx), 1)
    print(f"corrected slices: {widget.state.corrected_slices}", flush=True)
    widget.steps_spin.setValue(args.steps)
    rows.append(run_job("fine-tune", widget.finetune_button.click))
    viewer.close()
    return 0 if all("failed" not in r["status"].lower() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
