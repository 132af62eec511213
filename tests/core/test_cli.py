"""The `llm4seg` command line, end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from llm4seg_core.cli import main
from llm4seg_core.io import read_image

from .conftest import make_ct

FAST = ["--model", "cmunext,image_size=64", "--device", "cpu", "-q"]


def write_ct(path):
    vol = make_ct(n=4, size=40)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))
    return path


def test_segment_writes_mask_in_image_geometry(tmp_path, capsys):
    src = write_ct(tmp_path / "ct.nrrd")
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(src), "-o", str(out), *FAST]) == 0
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())
    assert b.GetPixelID() == sitk.sitkUInt8
    assert "UNTRAINED" in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    src = write_ct(tmp_path / "ct.nrrd")
    cases = [
        ["segment", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), *FAST],
        ["segment", str(src), "-o", str(tmp_path / "m.png"), *FAST],  # 2D format for a volume
        ["segment", str(src), "-o", str(tmp_path / "m.nii.gz"), "--model", "nonsense-preset"],
        ["segment", str(src), "-o", str(tmp_path / "m.nii.gz"), "--model", "cmunext", "--device", "tpu"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("llm4seg: error: "), err
    assert not (tmp_path / "m.nii.gz").exists() and not (tmp_path / "m.png").exists()


def test_console_script_runs_and_reports_errors(tmp_path):
    exe = [sys.executable, "-m", "llm4seg_core"]
    bad = subprocess.run([*exe, "segment", str(tmp_path / "x.mha"), "-o", str(tmp_path / "y.mha")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "x.mha" in bad.stderr


def test_info_prints_sources_and_parameter_counts(capsys):
    assert main(["info", "--model", "cmunext,in_channels=3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "smollm2" in out.lower()
    assert "parameters: 3,149,185 total" in out
    assert "frozen:    0" in out


def test_segment_2d_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    src = tmp_path / "us.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(src))
    out = tmp_path / "mask.png"
    assert main(["segment", str(src), "-o", str(out), *FAST]) == 0
    mask = read_image(out)
    assert mask.array.shape == (30, 50)
