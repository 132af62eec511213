"""Fuzz the command line with damaged and odd inputs made from real files (issue 14).

Every case is a file or folder made from a real one (pydicom's CT/MR/US test
files, a CT series of real slices, the pyradiomics demo NRRD when fetched):
truncations, flipped header and pixel bytes, wrong extensions, faulty series,
odd PNG modes, huge or negative dimensions. Each runs through
``llm4seg segment INPUT -o OUT`` in this process (a tiny untrained model: the
reading and writing are under test, not the model) and lands in one of:

- ``exit 2``: a user error, one line ``llm4seg: error: ...`` (the message is
  listed, to judge that it is apt);
- ``exit 0 ok``: a mask written whose shape and geometry are those the input
  really has (checked against what the case's maker knows);
- ``ELSE``: anything else (a traceback, another exit code, a wrong result, a
  hang). The run fails when any case lands here.

    .venv/bin/python bench/fuzz_cli.py [--out DIR] [--markdown]

Takes about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = "cmunext,image_size=32,dims=4:8:8:16:16"


@dataclass
class Case:
    name: str
    path: Path
    expect: dict | None = None  # None: should be refused (exit 2); else shape/spacing of the mask
    out: str = "mask.nii.gz"


# ---------------------------------------------------------------------------- makers

def real(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def ct_series(folder: Path, n: int = 8, dz: float = 5.0, uid: str = "1.2.3.4.5.6.7.100") -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = pydicom.dcmread(real("CT_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-158.1, -179.0, -75.0 + k * dz]
        ds.save_as(folder / f"img_{n - k:03d}.dcm")
    return folder


def flip(data: bytes, at: int, n: int = 8) -> bytes:
    b = bytearray(data)
    for i in range(max(at, 0), min(at + n, len(b))):
        b[i] ^= 0xFF
    return bytes(b)


def png_bytes(arr: np.ndarray, colour_type: int, bit_depth: int = 8, palette: bytes | None = None,
              width: int | None = None, height: int | None = None) -> bytes:
    h, w = arr.shape[:2]
    rows = arr.astype(">u2" if bit_depth == 16 else np.uint8)
    raw = b"".join(b"\0" + rows[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width or w, height or h, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + (chunk(b"PLTE", palette) if palette else b"")
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_cases(work: Path) -> list[Case]:
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    cases: list[Case] = []
    ct = real("CT_small.dcm")
    ct_bytes = ct.read_bytes()
    ct_ds = pydicom.dcmread(ct)
    ct_sp = (float(ct_ds.PixelSpacing[1]), float(ct_ds.PixelSpacing[0]))
    one = {"shape": (1, 128, 128), "spacing": (*ct_sp, None)}

    def add(name, data_or_path, expect=None, suffix=".dcm", out="mask.nii.gz"):
        p = work / f"{len(cases):02d}_{name}{suffix}"
        if isinstance(data_or_path, bytes):
            p.write_bytes(data_or_path)
        cases.append(Case(name, p if isinstance(data_or_path, bytes) else data_or_path, expect, out))

    # --- one DICOM file
    add("dicom_ok", ct_bytes, one)
    for frac in (0.01, 0.05, 0.25, 0.5, 0.75, 0.99):
        add(f"dicom_trunc_{int(frac * 100)}pct", ct_bytes[: int(len(ct_bytes) * frac)])
    add("dicom_trunc_132", ct_bytes[:132])
    for name, suffix in (("png", ".png"), ("niigz", ".nii.gz"), ("jpg", ".jpg"), ("nrrd", ".nrrd"),
                         ("none", "")):
        add(f"dicom_named_{name}", ct_bytes, one, suffix)
    add("dicom_flip_preamble_marker", flip(ct_bytes, 128, 4))
    add("dicom_flip_pixels", flip(ct_bytes, len(ct_bytes) - 4000, 64), one)
    for tag, value, expect in (("Rows", 65535, None), ("Columns", 0, None), ("Rows", 1, None),
                               ("BitsAllocated", 12, None)):
        ds = pydicom.dcmread(ct)
        setattr(ds, tag, value)
        buf = io.BytesIO()
        ds.save_as(buf)
        add(f"dicom_{tag.lower()}_{value}", buf.getvalue(), expect)
    ds = pydicom.dcmread(ct)
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    add("dicom_no_pixeldata", buf.getvalue())
    add("dicom_rtplan", real("rtplan.dcm").read_bytes())
    mr = real("MR_small.dcm")
    mr_ds = pydicom.dcmread(mr)
    add("dicom_mr_ok", mr.read_bytes(), {"shape": (1, 64, 64),
                                          "spacing": (float(mr_ds.PixelSpacing[1]),
                                                      float(mr_ds.PixelSpacing[0]), None)})
    us = real("US1_UNCR.dcm")
    add("dicom_us_rgb_named_png", us.read_bytes(), {"shape": (480, 640), "spacing": None}, ".png",
        out="mask.nrrd")

    # --- series folders
    def series(name, mutate=None, expect=None):
        folder = work / f"{len(cases):02d}_{name}"
        ct_series(folder)
        if mutate:
            mutate(folder)
        cases.append(Case(name, folder, expect))

    good = {"shape": (8, 128, 128), "spacing": (*ct_sp, 5.0)}

    def dup_exact(f):
        shutil.copy(f / "img_004.dcm", f / "zz_copy.dcm")

    def dup_uid(f):
        d = pydicom.dcmread(f / "img_004.dcm")
        d.SOPInstanceUID = generate_uid()
        d.save_as(f / "zz_copy.dcm")

    def missing(f):
        (f / "img_004.dcm").unlink()

    def other_uid(f):
        d = pydicom.dcmread(f / "img_004.dcm")
        d.SeriesInstanceUID = "9.9.9"
        d.save_as(f / "img_004.dcm")

    def uneven(f):
        for p in f.iterdir():
            d = pydicom.dcmread(p)
            k = int(d.InstanceNumber) - 1
            d.ImagePositionPatient = [-158.1, -179.0, -75.0 + 5 * k + (1.5 if k % 2 else 0)]
            d.save_as(p)

    def phases(f):
        for p in list(f.iterdir()):
            d = pydicom.dcmread(p)
            d.SOPInstanceUID = generate_uid()
            d.save_as(f / f"phase2_{p.name}")

    def trunc_file(f):
        p = f / "img_004.dcm"
        p.write_bytes(p.read_bytes()[:5000])

    def header_cut(f):
        p = f / "img_004.dcm"
        p.write_bytes(p.read_bytes()[:700])

    def junk(f):
        (f / "notes.txt").write_text("not an image")
        (f / "DICOMDIR").write_bytes(b"\0" * 200)

    def second_series(f):
        ct_series(f / "other", n=3, dz=2.0, uid="1.2.3.4.5.6.7.200")

    def localizer(f):
        d = pydicom.dcmread(mr)
        d.SeriesInstanceUID = "1.2.3.4.5.6.7.100"
        d.save_as(f / "localizer.dcm")

    def reversed_numbers(f):
        for p in f.iterdir():
            d = pydicom.dcmread(p)
            d.InstanceNumber = 100 - int(d.InstanceNumber)
            d.save_as(p)

    def all_renamed_png(f):
        for p in list(f.iterdir()):
            p.rename(p.with_suffix(".png"))

    series("series_ok", None, good)
    series("series_dup_exact", dup_exact, good)
    series("series_dup_new_uid", dup_uid, good)
    series("series_missing_slice", missing)
    series("series_slice_other_uid", other_uid)
    series("series_uneven", uneven)
    series("series_two_phases", phases)
    series("series_file_truncated", trunc_file)
    series("series_header_cut", header_cut)
    series("series_junk_files", junk, good)
    series("series_two_series", second_series, good)
    series("series_localizer", localizer, good)
    series("series_reversed_instance_numbers", reversed_numbers, good)
    series("series_files_named_png", all_renamed_png, good)  # DICOM by content, not pictures
    empty = work / f"{len(cases):02d}_empty_folder"
    empty.mkdir()
    cases.append(Case("empty_folder", empty, None))

    # --- NIfTI and NRRD made from the real series
    from llm4seg_core.io import read_image

    ok_folder = next(c.path for c in cases if c.name == "series_ok")
    vol_img = read_image(ok_folder).to_sitk()
    vol_expect = {"shape": (8, 128, 128), "spacing": vol_img.GetSpacing()}
    nii = work / "src.nii"
    sitk.WriteImage(vol_img, str(nii))
    nii_bytes = nii.read_bytes()
    add("nifti_ok", nii_bytes, vol_expect, ".nii")
    add("niftigz_ok", gzip.compress(nii_bytes), vol_expect, ".nii.gz")
    for frac in (0.1, 0.5, 0.9):
        add(f"nifti_trunc_{int(frac * 100)}pct", nii_bytes[: int(len(nii_bytes) * frac)], None, ".nii")
        add(f"niftigz_trunc_{int(frac * 100)}pct", gzip.compress(nii_bytes)[: int(len(gzip.compress(nii_bytes)) * frac)], None, ".nii.gz")
    b = bytearray(nii_bytes)
    b[80:92] = struct.pack("<3f", 0, 0, 0)
    add("nifti_pixdim_zero", bytes(b), None, ".nii")
    for label, dims in (("negative_dim", (3, -128, 128, 8)), ("huge_dims", (3, 30000, 30000, 30000)),
                        ("dim0_9", (9, 128, 128, 8))):
        b = bytearray(nii_bytes)
        b[40:48] = struct.pack("<4h", *dims)
        add(f"nifti_{label}", bytes(b), None, ".nii")
    add("nifti_flip_magic", flip(nii_bytes, 344, 4), None, ".nii")
    add("nifti_flip_pixels", flip(nii_bytes, len(nii_bytes) - 3000, 64), vol_expect, ".nii")
    add("nifti_named_png", nii_bytes, vol_expect, ".png")
    add("niftigz_named_nii", gzip.compress(nii_bytes), vol_expect, ".nii")

    nrrd = work / "src.nrrd"
    sitk.WriteImage(vol_img, str(nrrd), useCompression=True)
    nrrd_bytes = nrrd.read_bytes()
    raw = work / "src_raw.nrrd"
    sitk.WriteImage(vol_img, str(raw), useCompression=False)
    raw_bytes = raw.read_bytes()
    add("nrrd_ok", nrrd_bytes, vol_expect, ".nrrd")
    add("nrrd_raw_ok", raw_bytes, vol_expect, ".nrrd")
    add("nrrd_trunc_half", nrrd_bytes[: len(nrrd_bytes) // 2], None, ".nrrd")
    add("nrrd_raw_trunc_half", raw_bytes[: len(raw_bytes) // 2], None, ".nrrd")
    sizes = b"sizes: 128 128 8"
    for label, repl in (("fewer_slices", b"sizes: 128 128 6"), ("more_slices", b"sizes: 128 128 12"),
                        ("huge", b"sizes: 100000 100000 100000"), ("negative", b"sizes: 128 -128 8"),
                        ("zero", b"sizes: 128 0 8")):
        add(f"nrrd_sizes_{label}", nrrd_bytes.replace(sizes, repl, 1), None, ".nrrd")
        add(f"nrrd_raw_sizes_{label}", raw_bytes.replace(sizes, repl, 1), None, ".nrrd")
    head_end = raw_bytes.index(b"\n\n")
    add("nrrd_flip_header", flip(raw_bytes, head_end // 2, 6), None, ".nrrd")
    text = raw_bytes[:head_end].decode()
    sd = next(line for line in text.splitlines() if line.startswith("space directions"))
    add("nrrd_zero_spacing", raw_bytes.replace(sd.encode(), b"space directions: (0,0,0) (0,0,0) (0,0,0)", 1),
        None, ".nrrd")
    add("nrrd_named_nii", nrrd_bytes, vol_expect, ".nii.gz")

    # --- pictures made from a real CT slice
    sl = pydicom.dcmread(ct).pixel_array.astype(np.float32)
    grey = np.clip((sl - sl.min()) / (np.ptp(sl) or 1) * 255, 0, 255).astype(np.uint8)
    pic = {"shape": grey.shape, "spacing": (1.0, 1.0)}
    add("png_grey", png_bytes(grey, 0), pic, ".png", "mask.png")
    add("png_grey_alpha", png_bytes(np.dstack([grey, np.full_like(grey, 255)]), 4), pic, ".png", "mask.png")
    add("png_rgb", png_bytes(np.dstack([grey] * 3), 2), pic, ".png", "mask.png")
    add("png_rgba", png_bytes(np.dstack([grey] * 3 + [np.full_like(grey, 200)]), 6), pic, ".png", "mask.png")
    add("png_grey16", png_bytes(grey.astype(np.uint16) * 257, 0, 16), pic, ".png", "mask.png")
    palette = bytes(v for i in range(256) for v in (i, i, i))
    add("png_palette", png_bytes(grey, 3, palette=palette), pic, ".png", "mask.png")
    full = png_bytes(grey, 0)
    add("png_trunc_half", full[: len(full) // 2], None, ".png", "mask.png")
    add("png_flip_idat", flip(full, len(full) // 2, 32), None, ".png", "mask.png")
    # libpng takes the width from the rows when IHDR says 0: the mask fits the real pixels
    add("png_zero_width", png_bytes(grey, 0, width=0), pic, ".png", "mask.png")
    add("png_huge_header", png_bytes(grey, 0, width=100000, height=100000), None, ".png", "mask.png")
    add("png_named_dcm", full, pic, ".dcm", "mask.png")
    add("png_volume_to_png_mask", nii_bytes, None, ".nii", "mask.png")  # a volume cannot be a PNG
    jpg = work / "src.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(jpg))
    jb = jpg.read_bytes()
    add("jpeg_ok", jb, pic, ".jpg", "mask.png")
    add("jpeg_trunc", jb[: len(jb) // 2], None, ".jpg", "mask.png")
    add("jpeg_named_png", jb, pic, ".png", "mask.png")
    add("empty_file", b"", None, ".nii.gz")
    add("garbage", bytes(range(256)) * 20, None, ".nii.gz")
    add("text_as_png", b"hello\n" * 50, None, ".png", "mask.png")
    add("dicom_seg_out_for_nifti", nii_bytes, None, ".nii", "mask.dcm")
    add("dicom_seg_out_ok", ct_bytes, one, ".dcm", "mask.dcm")

    # --- the demo NRRD (real CT with a real tumour mask), if fetched
    try:
        from llm4seg_core.data import demo_case

        image, _ = demo_case("breast1")
        if Path(image).is_file():
            img = sitk.ReadImage(str(image))
            data = Path(image).read_bytes()
            exp = {"shape": tuple(reversed(img.GetSize())), "spacing": img.GetSpacing()}
            add("demo_nrrd_ok", data, exp, ".nrrd")
            add("demo_nrrd_trunc", data[: len(data) * 2 // 3], None, ".nrrd")
            add("demo_nrrd_named_png", data, exp, ".png")
    except Exception:
        pass
    return cases


# ---------------------------------------------------------------------------- running

class Timeout(Exception):
    pass


def _alarm(*_):
    raise Timeout


def check_result(case: Case, out: Path) -> str | None:
    """Why the written mask is not what the input really is; None when it is."""
    import SimpleITK as sitk

    if not out.is_file():
        return "exit 0 but no mask written"
    if out.suffix == ".dcm":
        from llm4seg_core.io import read_image, read_mask

        arr = read_mask(out, reference=read_image(case.path))
        return None if arr.shape == case.expect["shape"] else f"SEG shape {arr.shape}"
    img = sitk.ReadImage(str(out))
    shape = tuple(reversed(img.GetSize()))
    want = tuple(case.expect["shape"])
    if shape != want:
        return f"mask shape {shape}, the input is {want}"
    spacing = case.expect.get("spacing")
    if spacing is not None:
        got = img.GetSpacing()
        for a, b in zip(got, spacing):
            if b is not None and abs(a - b) > 1e-3 * max(1.0, abs(b)):
                return f"mask spacing {got}, the input has {tuple(spacing)}"
    return None


def run_case(case: Case, outdir: Path, timeout: int = 120) -> tuple[str, str]:
    from llm4seg_core.cli import main

    out = outdir / f"{case.path.name}.{case.out}"
    err = io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["segment", str(case.path), "-o", str(out), "--model", TINY, "--device",
                         "cpu", "-q"])
    except Timeout:
        return "ELSE", f"no answer in {timeout} s"
    except SystemExit as exc:
        return "ELSE", f"SystemExit {exc.code}: {err.getvalue().strip()[-200:]}"
    except BaseException:
        return "ELSE", "traceback: " + traceback.format_exc().strip().splitlines()[-1]
    finally:
        signal.alarm(0)
    lines = [ln for ln in err.getvalue().strip().splitlines() if ln.startswith("llm4seg: error:")]
    if code == 2:
        if len(lines) != 1:
            return "ELSE", f"exit 2 without one error line: {err.getvalue()[-200:]!r}"
        if case.expect is not None:
            return "ELSE", f"refused a good input: {lines[0]}"
        return "exit 2", lines[0][len("llm4seg: error: "):]
    if code == 0:
        if case.expect is None:
            return "ELSE", "exit 0 for an input that should be refused"
        why = check_result(case, out)
        if why:
            return "ELSE", why
        note = [ln for ln in err.getvalue().splitlines() if ln.startswith(("WARNING", "note"))]
        return "exit 0 ok", (note[0][:160] if note else "mask in the input's geometry")
    return "ELSE", f"exit {code}: {err.getvalue().strip()[-200:]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep the inputs and outputs here (default: a temp folder)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()
    import os

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="llm4seg-fuzz-"))
    os.environ.setdefault("LLM4SEG_HOME", str(work / "home"))
    inputs, outputs = work / "inputs", work / "outputs"
    inputs.mkdir(parents=True, exist_ok=True)
    outputs.mkdir(parents=True, exist_ok=True)
    cases = make_cases(inputs)
    t0 = time.perf_counter()
    rows = []
    for c in cases:
        outcome, detail = run_case(c, outputs)
        rows.append((c.name, outcome, detail))
        if not args.markdown:
            print(f"{outcome:10s} {c.name:34s} {detail[:150]}", flush=True)
    totals = {k: sum(r[1] == k for r in rows) for k in ("exit 2", "exit 0 ok", "ELSE")}
    if args.markdown:
        print("| # | input | outcome | message / result |")
        print("|---|---|---|---|")
        for i, (name, outcome, detail) in enumerate(rows):
            print(f"| {i} | {name} | {outcome} | {detail.replace('|', '/')[:220]} |")
    print(f"\n{len(rows)} inputs in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k}: {v}" for k, v in totals.items()))
    return 1 if totals["ELSE"] else 0


if __name__ == "__main__":
    sys.exit(main())
