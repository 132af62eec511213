#!/usr/bin/env python3
"""Screenshots of the napari dock widget doing the real loop on the demo CT (docs/screenshots/).

Run under Xvfb (the canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb \\
        .venv/bin/python scripts/widget_screenshots.py [--steps 40] [--out docs/screenshots]

Story, with the shipped default model (or --model): open the lung2 sample,
Segment the whole volume, "correct" two slices through the tumour by writing
the expert outline into them with ``data_setitem`` (the same undoable edit
the paint tools make, so the widget tracks them), Fine-tune, Segment again
with "keep what continues my corrections" and "... and fill between my
corrected slices". Writes

    widget_segmented.png   after the first Segment (default model)
    widget_finetune.png    after Fine-tune: the live loss / Dice plot
    widget_after.png       after Segment again

and prints Dice of each mask against the expert mask on the uncorrected slices.
The model store is a temporary folder, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: the widget's)")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    os.environ.setdefault("LLM4SEG_HOME", tempfile.mkdtemp(prefix="llm4seg_shots_"))

    import napari
    from qtpy.QtWidgets import QApplication

    from llm4seg_core.data import demo_case
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_napari._sample_data import make_lung2_sample
    from llm4seg_napari.widget import LLM4SegWidget

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    data, kwargs, _ = make_lung2_sample()[0]
    image = viewer.add_image(data, **kwargs)
    if args.model:
        widget.select_model(args.model)
    if args.steps:
        widget.steps_spin.setValue(args.steps)
    image_path, label_path = demo_case("lung2")
    truth = read_mask(label_path, read_image(image_path))
    tumour = np.nonzero(truth.reshape(truth.shape[0], -1).any(1))[0]
    zs = [int(tumour[len(tumour) // 3]), int(tumour[2 * len(tumour) // 3])]

    def wait(what: str) -> None:
        t0 = time.perf_counter()
        while widget.state.is_busy:
            QApplication.processEvents()
            time.sleep(0.02)
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.01)
        print(f"{what}: {time.perf_counter() - t0:.1f} s; {widget.state.status}", flush=True)

    def dice(mask: np.ndarray) -> float:
        keep = np.ones(truth.shape[0], bool)
        keep[zs] = False
        p, r = mask[keep] > 0, truth[keep] > 0
        d = p.sum() + r.sum()
        return float(2 * (p & r).sum() / d) if d else 1.0

    z_show = (zs[0] + zs[1]) // 2  # a tumour slice that was not corrected

    def shot(name: str) -> None:
        viewer.dims.set_point(0, float(image.data_to_world((z_show, 0, 0))[0]))
        for _ in range(10):
            QApplication.processEvents()
            time.sleep(0.02)
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print(f"wrote {path}", flush=True)

    widget.segment_button.click()
    wait("segment")
    mask = widget.state.mask
    print(f"Dice (default model, uncorrected slices): {dice(mask.data):.3f}")
    mask.opacity = 0.55
    viewer.camera.zoom *= 1.6
    shot("widget_segmented.png")

    for z in zs:  # the "correction": the expert outline on this slice, as one undoable edit
        idx = np.nonzero(np.ones(truth[z].shape, bool))
        mask.data_setitem((np.full(idx[0].size, z), *idx), truth[z][idx].astype(np.uint8))
    print(f"corrected slices: {widget.state.corrected_slices}")
    widget.finetune_button.click()
    wait("fine-tune")
    shot("widget_finetune.png")

    widget.keep_check.setChecked(True)  # "... and fill between" is ticked by default
    widget.segment_again_button.click()
    wait("segment again")
    print(f"Dice (fine-tuned, continued from the corrections and filled between them, "
          f"uncorrected slices): {dice(mask.data):.3f}")
    print(f"status: {widget.state.status}")
    shot("widget_after.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
