#!/usr/bin/env python3
"""Screenshots of prompted segmentation in the napari dock widget, on the demo chest CT.

Run under Xvfb (the canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb \\
        .venv/bin/python scripts/prompt_screenshots.py OUT_FOLDER [--model PROMPT_MODEL]

The prompt model: --model (a checkpoint, a version or a spec), else the
model store's task ``prompt`` (its current version, else the shipped
``resources/models/prompt.safetensors``; the user's data root, where the
corrections autosave; with --model, a temporary one). Story: open the lung2 sample,
click once inside the tumour on the slice where it is largest, draw a box
around it on another tumour slice, Propagate through the volume from those
two slices. Writes

    prompt_click.png       after the click (the slice clicked on)
    prompt_box.png         after the box (its slice)
    prompt_propagated.png  after Propagate (a tumour slice between the two prompted ones)

and prints the Dice against the expert label of each prompted slice and, after
Propagate, of the slices not prompted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the folder the three PNGs go to")
    ap.add_argument("--model", default=None,
                    help="the prompt model (default: the store's task 'prompt', else the shipped "
                    "one)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.model:  # the model store is not needed: corrections autosave to a temporary home
        import tempfile

        os.environ["LLM4SEG_HOME"] = tempfile.mkdtemp(prefix="llm4seg_prompt_shots_")

    import napari
    from qtpy.QtWidgets import QApplication

    from llm4seg_core.data import demo_case
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.prompts.simulate import box_of, first_click
    from llm4seg_napari._sample_data import make_lung2_sample
    from llm4seg_napari.widget import LLM4SegWidget

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    tool = widget.prompts
    tool.model = args.model
    if not widget.select_device(args.device):
        print(f"device {args.device!r} is not usable here; using auto", file=sys.stderr)
    try:
        seg = tool.segmenter(args.model, widget.state.device_arg)  # fail now, with its message
    except LLM4SegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"prompt model: {seg.name} ({'trained' if seg.trained else 'UNTRAINED'}) on "
          f"{seg.device}", flush=True)
    data, kwargs, _ = make_lung2_sample()[0]
    image = viewer.add_image(data, **kwargs)
    image_path, label_path = demo_case("lung2")
    truth = read_mask(label_path, read_image(image_path)) > 0
    area = truth.reshape(truth.shape[0], -1).sum(1)
    tumour = np.nonzero(area)[0]
    z_click = int(np.argmax(area))  # where the tumour is largest
    z_box = int(tumour[len(tumour) // 4])  # a quarter up from its lower end
    if abs(z_box - z_click) < 2:
        z_box = int(tumour[0])
    z_show = (z_click + z_box) // 2  # a slice between them, not prompted
    if z_show in (z_click, z_box):
        z_show = min(z_click + 1, int(tumour[-1]))

    def settle(n: int = 15) -> None:
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(what: str) -> None:
        t0 = time.perf_counter()
        tool.wait_idle(300)
        while widget.state.is_busy:
            QApplication.processEvents()
            time.sleep(0.02)
        settle()
        print(f"{what}: {time.perf_counter() - t0:.1f} s; {widget.state.status}", flush=True)

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        d = int(a.sum()) + int(b.sum())
        return float(2 * (a & b).sum() / d) if d else 1.0

    ys, xs = np.nonzero(truth.any(0))
    centre = (float(ys.mean()), float(xs.mean()))

    def shot(name: str, z: int, show_status: bool = False) -> None:
        if show_status:  # the panel scrolled to the job's progress and status line
            widget.scroll_area.ensureWidgetVisible(widget.status_label)
        viewer.dims.set_point(0, float(image.data_to_world((z, 0, 0))[0]))
        world = image.data_to_world((z, *centre))
        camera.center = tuple(float(v) for v in world[1:])
        settle()
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print(f"wrote {path}", flush=True)

    settle(30)  # the empty mask is made ahead
    viewer.reset_view()
    camera.zoom *= 2.2

    # a click inside the tumour (its most interior point), on the slice where it is largest
    viewer.dims.set_point(0, float(image.data_to_world((z_click, 0, 0))[0]))
    widget.prompt_button.click()
    p = first_click(truth[z_click])
    tool.points.add(np.array([z_click, p.y, p.x], float))
    wait(f"click on slice {z_click}")
    mask = widget.state.mask
    print(f"Dice on slice {z_click} (one click): "
          f"{dice(mask.data[z_click] == 1, truth[z_click]):.3f}")
    shot("prompt_click.png", z_click)

    # a box around it on another slice
    b = box_of(truth[z_box])
    m = 3
    widget.prompt_box.setChecked(True)
    tool.boxes.add(np.array([[z_box, b.y0 - m, b.x0 - m], [z_box, b.y0 - m, b.x1 + m],
                             [z_box, b.y1 + m, b.x1 + m], [z_box, b.y1 + m, b.x0 - m]], float),
                   shape_type="rectangle")
    wait(f"box on slice {z_box}")
    print(f"Dice on slice {z_box} (a box): {dice(mask.data[z_box] == 1, truth[z_box]):.3f}")
    shot("prompt_box.png", z_box)

    # propagate through the volume from the two prompted slices
    widget.propagate_button.click()
    wait("propagate")
    rest = np.ones(truth.shape[0], bool)
    rest[[z_click, z_box]] = False
    print(f"Dice on the slices not prompted (after Propagate): "
          f"{dice(mask.data[rest] == 1, truth[rest]):.3f}")
    shot("prompt_propagated.png", z_show, show_status=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
