"""``llm4seg demo``: segment the demo chest CT; ``--fewshot K`` then runs the correction loop.

``--pictures`` also segments one ultrasound and one endoscopy picture with
the zoo models ``breast-us`` and ``polyp``, out of the box, and writes their
overlays. No package registry ships such a picture with a mask (pydicom's
only ultrasound, ``US1_UNCR.dcm``, is a power-Doppler of a lymph node: no
zoo model is for it), so the pictures come from the val splits of the
labelled datasets (``$LLM4SEG_DATASETS`` or ``shared/data`` beside the
checkout), which no shipped model was trained on.

The expert outline on K slices stands in for a person's corrections: the
model is fine-tuned on them (nothing is saved to the store), segments the
other slices, and the Dice against the expert label is printed raw, after
keeping what continues the corrections, and after also filling between them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from llm4seg_core.cli.common import (
    UNTRAINED_NOTICE, add_model_args, describe_segmenter, load_segmenter, open_store,
)
from llm4seg_core.cli.progress import ProgressBar

COMMAND = "demo"
HELP = "segment the demo chest CT (lung2) and write a mask + overlay PNG"


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from llm4seg_core.data import demo_case, fetch_demo_data
    from llm4seg_core.io import read_image, read_mask, write_mask
    from llm4seg_core.metrics import dice
    from llm4seg_core.overlay import overlay_rgb, write_png

    seg = load_segmenter(args)  # a prompt model is refused before the data is fetched
    fetch_demo_data(log=lambda m: print(m, file=sys.stderr))
    image_path, label_path = demo_case(args.case)
    volume = read_image(image_path)
    reference = read_mask(label_path, volume)
    describe_segmenter(seg, lambda m: print(m))
    print(f"demo case {args.case}: {image_path} shape {volume.array.shape} (z, y, x), "
          f"spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    t0 = time.perf_counter()
    with ProgressBar("segmenting", "slice", not args.quiet) as bar:
        labels = seg.segment(volume, callbacks=bar.callbacks())
    dt = time.perf_counter() - t0
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    mask_path = write_mask(labels, volume, outdir / f"{args.case}_mask.nrrd")
    per_slice = reference.reshape(reference.shape[0], -1).sum(axis=1)
    z = int(np.argmax(per_slice))
    png = write_png(overlay_rgb(volume, labels, z, reference=reference), outdir / f"{args.case}_overlay_z{z}.png")
    print(f"segmented {volume.n_slices} slices in {dt:.1f} s ({volume.n_slices / dt:.2f} slices/s)")
    print(f"mask:    {mask_path}")
    print(f"overlay: {png} (slice {z}, the largest tumour cross-section; red = model, green = expert outline)")
    print(f"Dice against the expert label: {dice(labels, reference):.3f}")
    if not seg.trained:
        print(UNTRAINED_NOTICE, file=sys.stderr)
    if args.fewshot > 0:
        _fewshot(args, seg, volume, reference, outdir, z)
    if args.pictures:
        _pictures(args, outdir)
    return 0


DEMO_PICTURES = (("busi", "breast-us", "breast ultrasound"), ("kvasir", "polyp", "colonoscopy"))
"""(dataset folder, zoo task, what it is) of the pictures ``--pictures`` segments."""


def _pictures(args: argparse.Namespace, outdir: Path) -> None:
    """One val picture of each of :data:`DEMO_PICTURES`, segmented with its zoo model."""
    from llm4seg_core.datasets import open_dataset
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.metrics import dice
    from llm4seg_core.overlay import overlay_rgb, write_png
    from llm4seg_core.paths import datasets_root

    root = datasets_root()
    if root is None:
        print("pictures: no labelled example pictures on this machine (set LLM4SEG_DATASETS to "
              "a folder holding busi/ and kvasir/); no package registry ships an ultrasound or "
              "endoscopy picture that a zoo model is for", file=sys.stderr)
        return
    store = open_store(args)
    for folder, task, what in DEMO_PICTURES:
        if not (root / folder).is_dir():
            print(f"pictures: {root / folder} is absent; {what} skipped", file=sys.stderr)
            continue
        data = open_dataset(root / folder)
        lut = data.label_map().lut()
        # the first val picture with something to find, each read once
        case, (picture, ref_values) = next(
            (c, pair) for c in data.split.val if (pair := data.read_case(c))[1].any())
        reference = lut[ref_values]
        seg = Segmenter.load(task, device=args.device, store=store)
        t0 = time.perf_counter()
        labels = seg.segment(picture)
        dt = time.perf_counter() - t0
        png = write_png(overlay_rgb(picture, labels, 0, reference=reference),
                        outdir / f"{folder}_{case.replace(' ', '_')}_{task}_overlay.png")
        print(f"{what}: {data.images[case].name} (val split of {folder}) with the zoo model "
              f"{task!r} in {dt:.2f} s; Dice against its mask {dice(labels, reference):.3f}")
        print(f"overlay: {png} (red = model, green = reference)")


def _fewshot(args: argparse.Namespace, seg: Any, volume: Any, reference: Any,
             outdir: Path, z_show: int) -> None:
    """The correction loop, headless, on the expert outline of ``args.fewshot`` slices."""
    import numpy as np

    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.io import write_mask
    from llm4seg_core.loop import DEFAULT_STEP_MM, correction_loop, keep_continuations
    from llm4seg_core.metrics import dice
    from llm4seg_core.overlay import overlay_rgb, write_png
    from llm4seg_core.postprocess import pixel_mm
    from llm4seg_core.slices import choose_slices
    from llm4seg_core.training import FinetuneConfig

    slices = choose_slices(reference, args.fewshot)
    corrected = np.zeros_like(reference)
    corrected[slices] = reference[slices]
    print(f"few-shot: the expert outline on slice(s) {slices} stands in for your corrections")
    cfg = FinetuneConfig(device=args.device)
    tune_bar = ProgressBar("fine-tuning", "step", not args.quiet)
    seg_bar = ProgressBar("segmenting", "slice", not args.quiet)
    with tune_bar, seg_bar:
        # a fresh copy of the model, as the UIs do: the Segmenter has prepared its own
        res = correction_loop(getattr(args, "model", None), CorrectionSet(volume, corrected, slices),
                              cfg, tune_bar.callbacks(), store=open_store(args), save=False,
                              fill_between=True, device=args.device, batch_size=seg.batch_size,
                              segment_callbacks=seg_bar.callbacks())
    walked, _ = keep_continuations(res.raw, slices, pixel_size=pixel_mm(volume), fill_between=False)
    filled = res.labels
    keep = np.ones(volume.n_slices, bool)
    keep[slices] = False
    raw_d, walked_d, filled_d = (dice(m[keep], reference[keep]) for m in (res.raw, walked, filled))
    mask_path = write_mask(filled, volume, outdir / f"{args.case}_fewshot{args.fewshot}_mask.nrrd")
    tumour = [z for z in res.segmented if reference[z].any()]
    if tumour:  # the largest uncorrected cross-section: model output, not the stand-in outline
        z_show = max(tumour, key=lambda z: int(np.count_nonzero(reference[z])))
    png = write_png(overlay_rgb(volume, filled, z_show, reference=reference),
                    outdir / f"{args.case}_fewshot{args.fewshot}_overlay_z{z_show}.png")
    print(f"fine-tuned {cfg.steps} steps in {res.outcome.result.seconds:.1f} s; on the "
          f"{len(res.segmented)} other slices Dice {raw_d:.3f}, {walked_d:.3f} keeping what "
          f"continues the corrections (at most {DEFAULT_STEP_MM:g} mm a slice), {filled_d:.3f} "
          "also filling between them")
    print(f"mask:    {mask_path}")
    print(f"overlay: {png}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", default="lung2", help="demo case (default lung2)")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--fewshot", type=int, default=0, metavar="K",
                   help="then fine-tune on the expert outline of K slices (standing in for a "
                        "person's corrections) and segment the rest (about a minute on a CPU)")
    p.add_argument("--pictures", action="store_true",
                   help="also segment one ultrasound and one endoscopy picture with the zoo "
                        "(breast-us, polyp) and write their overlays")
    add_model_args(p)
