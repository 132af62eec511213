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


def test_demo_with_fewshot_writes_masks_in_the_ct_geometry(tmp_path, capsys):
    import pytest

    from llm4seg_core.data import demo_case, demo_data_available

    if not demo_data_available():
        pytest.skip("demo data not fetched (llm4seg data fetch)")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--fewshot", "2", "--model",
            "cmunext,image_size=32,dims=4:8:8:16:16", "--device", "cpu", "-q"]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only spin against other processes
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "few-shot: the expert outline on slice(s) [18, 22]" in text
    assert "Dice" in text and "keeping what continues the corrections" in text
    assert "also filling between them" in text
    ct = read_image(demo_case("lung2")[0])
    mask = read_image(out / "lung2_fewshot2_mask.nrrd")
    assert mask.spatial_shape == ct.spatial_shape and mask.spacing == ct.spacing
    ref = read_image(demo_case("lung2")[1]).array
    np.testing.assert_array_equal(mask.array[[18, 22]] > 0, ref[[18, 22]] > 0)  # the corrections
    assert list(out.glob("lung2_fewshot2_overlay_z*.png"))


def test_finetune_progress_counts_steps_then_slices_without_stray_lines(tmp_path, capsys,
                                                                         monkeypatch):
    """Issue 14, item 6: the fine-tune bar counts optimisation steps ("step/s", never
    "slice/s"), and no empty "0slice" bar is drawn (a progress report of 0 of 0)."""
    from llm4seg_core.cli.progress import ProgressBar
    from llm4seg_core.io import write_mask

    monkeypatch.setenv("LLM4SEG_HOME", str(tmp_path / "home"))
    src = write_ct(tmp_path / "ct.nrrd")
    vol = read_image(src)
    mask = np.zeros(vol.spatial_shape, np.uint8)
    mask[:, 15:25, 15:25] = 1
    write_mask(mask, vol, tmp_path / "mask.nrrd")
    capsys.readouterr()
    assert main(["finetune", str(src), str(tmp_path / "mask.nrrd"), "--slices", "1,2", "--base",
                 "cmunext,image_size=32,dims=4:8:8:16:16", "--steps", "4", "--device", "cpu",
                 "-o", str(tmp_path / "ft.safetensors"), "--complete",
                 str(tmp_path / "done.nrrd")]) == 0
    err = capsys.readouterr().err
    frames = [f.strip() for line in err.splitlines() for f in line.split("\r")]
    tune = [f for f in frames if f.startswith("fine-tuning")]
    seg = [f for f in frames if f.startswith("segmenting")]
    assert tune and all(("step/s" in f or "s/step" in f) and "slice" not in f for f in tune), tune
    assert seg and all(("slice/s" in f or "s/slice" in f) and "step" not in f for f in seg), seg
    assert err.index("fine-tuning") < err.index("segmenting")
    assert not any(f.startswith("0slice") or f.startswith("0step") for f in frames), frames
    # all slices corrected: nothing is segmented, and no empty bar appears
    bar = ProgressBar("segmenting", "slice")
    bar.update(0, 0)
    bar.close()
    assert capsys.readouterr().err == ""
