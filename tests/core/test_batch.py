"""Folders of pictures: `llm4seg segment FOLDER -o OUT`, `llm4seg eval PRED_FOLDER REF_FOLDER`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llm4seg_core.batch import is_picture_folder, score_folders
from llm4seg_core.cli import main
from llm4seg_core.io import read_mask
from llm4seg_core.metrics import dice

from ..helpers import write_ct_series

FAST = ["--model", "cmunext,image_size=64", "--device", "cpu", "-q"]
KVASIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kvasir"


def _pictures(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        img = (rng.random((48, 40)) * 255).astype(np.uint8)
        img[10:30, 8:28] = 220  # something bright to find
        name = f"frame {i}.png"  # a space, as real exports have
        Image.fromarray(img).save(folder / name)
        names.append(name)
    return names


def test_segment_folder_writes_one_mask_per_picture_and_reports_a_bad_one(tmp_path, capsys):
    src, out = tmp_path / "pics", tmp_path / "masks"
    names = _pictures(src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("not a picture")
    code = main(["segment", str(src), "-o", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 2  # one picture failed; the others are written
    assert "broken.png" in err
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(names)  # same stems; text files and the broken picture left out
    for n in names:
        assert read_mask(out / n).shape == (48, 40)


def test_segment_folder_all_good_exits_0(tmp_path, capsys):
    src, out = tmp_path / "pics", tmp_path / "masks"
    _pictures(src, 2)
    assert main(["segment", str(src), "-o", str(out), *FAST]) == 0
    assert len(list(out.iterdir())) == 2


def test_a_dicom_folder_is_a_series_not_a_batch(tmp_path):
    write_ct_series(tmp_path / "ct", "1.2.3.4", 3, "CT", 2.5)
    _pictures(tmp_path / "ct", 1)  # a stray preview picture does not make it a batch
    assert not is_picture_folder(tmp_path / "ct")
    _pictures(tmp_path / "p", 1)
    assert is_picture_folder(tmp_path / "p")
    assert not is_picture_folder(tmp_path / "empty_or_missing")


def test_eval_folders_pairs_by_stem_and_averages(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    a = np.zeros((20, 20), np.uint8)
    a[2:10, 2:10] = 255
    b = np.zeros((20, 20), np.uint8)
    b[4:12, 4:12] = 255
    Image.fromarray(a).save(pred / "case1.png")
    Image.fromarray(b).save(ref / "case1.png")
    Image.fromarray(a).save(pred / "case2.png")
    Image.fromarray(a).save(ref / "case2.png")
    Image.fromarray(np.zeros_like(a)).save(pred / "case3.png")  # nothing to find, nothing found
    Image.fromarray(np.zeros_like(a)).save(ref / "case3.png")
    Image.fromarray(b).save(ref / "case4.png")  # no prediction
    d1 = dice(read_mask(pred / "case1.png"), read_mask(ref / "case1.png"), 1)
    assert 0 < d1 < 1
    res = score_folders(pred, ref)
    assert [c.name for c in res.cases] == ["case1", "case2", "case3"]
    assert res.missing == ["case4"]
    assert res.mean(1, "dice") == pytest.approx((d1 + 1.0 + 1.0) / 3)
    assert main(["eval", str(pred), str(ref), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["mean"]["1"]["dice"] == pytest.approx((d1 + 1.0 + 1.0) / 3)
    assert js["missing_predictions"] == ["case4"]
    assert main(["eval", str(pred), str(ref)]) == 0
    text = capsys.readouterr().out
    assert "mean" in text and "3 case(s) scored" in text and "case4" in text


@pytest.mark.skipif(not KVASIR.is_dir(), reason="../shared/data/kvasir is not on this machine")
def test_segment_folder_of_real_endoscopy_pictures(tmp_path):
    src = tmp_path / "kvasir"
    src.mkdir()
    cases = sorted((KVASIR / "images").iterdir())[:3]
    for p in cases:
        shutil.copy(p, src / p.name)
    out = tmp_path / "masks"
    assert main(["segment", str(src), "-o", str(out), "--model", "cmunext,image_size=64,in_channels=3",
                 "--device", "cpu", "-q"]) == 0
    for p in cases:
        mask = read_mask(out / (p.stem + ".png"))
        assert mask.shape == Image.open(p).size[::-1]
