"""Screenshots of the real app window for docs/screenshots/ (not a test).

    xvfb-run -a env QT_QPA_PLATFORM=xcb .venv/bin/python tests/app/screenshots.py [OUT_DIR]

Uses a private model store and settings file (under a temporary folder) and
the demo chest CT. Story: open the demo CT, segment with the shipped default
model, take two slices of the expert label as the person's corrections (as
if drawn with the brush), fine-tune with the default steps (app_finetune.png,
mid-way), segment the other slices again with "keep only what continues my
corrections" and "... and fill between" ticked, and show the uncorrected
slice half way between the two corrections (app_main.png); then Help >
About (app_about.png). Prints the Dice on the uncorrected slices.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="llm4seg_app_shots_"))
os.environ["LLM4SEG_HOME"] = str(WORK / "home")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from qtpy.QtCore import QSettings  # noqa: E402
from qtpy.QtWidgets import QApplication, QMessageBox  # noqa: E402

STEPS = int(os.environ.get("SHOT_STEPS", "0"))  # 0: the widget's default (FinetuneConfig.steps)


def pump(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def wait(app: QApplication, window, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while (window.is_busy or window.is_opening) and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    pump(app, 0.5)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    from llm4seg_app import window as window_module

    # a screenshot run answers no dialog: messages go to stdout
    for name in ("warning", "critical", "information"):
        setattr(QMessageBox, name,  # the one class every app module imports
                staticmethod(lambda *a, _n=name, **k: print(_n.upper(), a[2])
                             or QMessageBox.StandardButton.Ok))
    window = window_module.MainWindow(QSettings(str(WORK / "app.ini"),
                                                QSettings.Format.IniFormat))
    window.resize(1440, 900)
    window.show()
    pump(app, 1.0)

    window.open_demo()
    wait(app, window)
    expert = window.viewer.layers["lung2 expert label"]
    labels = np.asarray(expert.data)
    area = labels.reshape(labels.shape[0], -1).sum(1)
    tumour = [int(z) for z in np.nonzero(area)[0]]
    from llm4seg_core.slices import choose_slices

    train_z = choose_slices(labels, 2)
    show_z = (train_z[0] + train_z[1]) // 2  # not corrected: the mask there is the model's
    print("tumour slices", tumour, "shown", show_z, "corrections", train_z)
    print("model:", window.state.model_text)

    window.segment("volume")
    wait(app, window)
    mask = window.mask_layer
    # the person's corrections: the expert outline on a few slices, marked as corrected
    image = window.image_layer
    for z in train_z:
        mask.data[z] = labels[z]
        window.viewer.dims.set_point(0, float(image.data_to_world([z, 0, 0])[0]))
        window.widget.mark_current_slice()
    mask.refresh()
    if STEPS:
        window.widget.steps_spin.setValue(STEPS)
    steps = window.widget.steps_spin.value()
    window.finetune()
    # mid-way: the status bar shows the fine-tune's progress, Cancel is on
    end = time.monotonic() + 300
    while (window.is_busy and window.state.job_progress[0] < steps // 2
           and time.monotonic() < end):
        app.processEvents()
        time.sleep(0.02)
    window.viewer.dims.set_point(0, float(image.data_to_world([show_z, 0, 0])[0]))
    pump(app, 0.5)
    window.grab().save(str(out / "app_finetune.png"))
    wait(app, window)
    window.widget.keep_check.setChecked(True)  # "... and fill between" is on by default
    window.segment("volume")  # the uncorrected slices, with the fine-tuned version
    wait(app, window)
    window.viewer.dims.set_point(0, float(image.data_to_world([show_z, 0, 0])[0]))
    window.viewer.layers.selection.active = mask
    pump(app, 1.0)
    window.grab().save(str(out / "app_main.png"))
    print("mask voxels on the shown slice:", int(mask.data[show_z].sum()),
          "expert:", int(labels[show_z].sum()))
    others = np.ones(labels.shape[0], bool)
    others[train_z] = False
    pred, ref = mask.data[others] > 0, labels[others] > 0
    print(f"Dice on the uncorrected slices: {2 * (pred & ref).sum() / (pred.sum() + ref.sum()):.3f}")
    print("status:", window.state.status)

    dialog = window.show_about()
    pump(app, 1.0)
    dialog.grab().save(str(out / "app_about.png"))
    dialog.close()
    window.widget.cancel_job()
    window.has_unsaved_changes = lambda: False  # type: ignore[method-assign]
    window.close()
    print("screenshots in", out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
