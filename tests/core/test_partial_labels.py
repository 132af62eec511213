"""Partial labels: a structure not contoured in a case is left out of the loss, not taken for background."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core.datasets import VolumePairs
from llm4seg_core.datasets.labels import read_contoured
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import build_model
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.training import TrainConfig, Trainer, segmentation_loss
from llm4seg_core.training.evaluation import evaluate

OPENKBP = Path(__file__).resolve().parents[3] / "shared" / "data" / "openkbp_hn_ct"


def _two_organs_target() -> torch.Tensor:
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, 2:6, 2:6] = 1
    return t


def _logits(on_background: int) -> torch.Tensor:
    """Confident logits: class 1 on its square, ``on_background`` everywhere else."""
    t = _two_organs_target()
    cls = torch.where(t == 1, 1, on_background)
    return torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float() * 12.0


def test_all_present_is_the_plain_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    target = torch.randint(0, 3, (2, 16, 16), generator=g)
    present = torch.ones(2, 3, dtype=torch.bool)
    assert torch.allclose(segmentation_loss(logits, target, present=present),
                          segmentation_loss(logits, target))


def test_an_uncontoured_class_is_not_background():
    t = _two_organs_target()
    # class 2 was not contoured in this image: predicting it on "background" pixels is not wrong
    missing2 = torch.tensor([[True, True, False]])
    says_2, says_bg = _logits(2), _logits(0)
    plain = segmentation_loss(says_2, t)
    assert plain > 5 * segmentation_loss(says_bg, t)  # the plain loss punishes it ...
    marginal = segmentation_loss(says_2, t, present=missing2)
    assert marginal < 0.05  # ... the partial-label loss does not
    # but a contoured class is still checked: saying 1 where 1 is absent costs as before
    says_1_everywhere = torch.nn.functional.one_hot(torch.ones_like(t), 3).permute(0, 3, 1, 2).float() * 12
    assert segmentation_loss(says_1_everywhere, t, present=missing2) > 1.0


def test_uncontoured_class_is_pushed_down_less_on_background():
    t = _two_organs_target()
    logits = torch.zeros(1, 3, 16, 16, requires_grad=True)
    segmentation_loss(logits, t, present=torch.tensor([[True, True, False]])).backward()
    plain = torch.zeros(1, 3, 16, 16, requires_grad=True)
    segmentation_loss(plain, t).backward()
    bg = t[0] == 0
    # plain CE pushes class 2 down on background pixels; the marginal loss pushes it less,
    # as "background or class 2" is the right answer there
    assert float(plain.grad[0, 2][bg].mean()) > 0
    assert float(logits.grad[0, 2][bg].mean()) < float(plain.grad[0, 2][bg].mean())
    assert float(logits.grad[0, 0][bg].mean()) < 0  # background and class 2 pulled up together


def test_present_shape_is_checked():
    with pytest.raises(ValueError, match="present"):
        segmentation_loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long),
                          present=torch.ones(2, 2, dtype=torch.bool))


def _write_partial_dataset(root: Path) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    cases = {}
    for i, organs in enumerate([("A", "B"), ("A",), ("B",)]):
        img = rng.normal(0, 20, (4, 32, 32)).astype(np.int16)
        lab = np.zeros((4, 32, 32), np.uint8)
        if "A" in organs:
            lab[1:3, 4:12, 4:12] = 1
            img[1:3, 4:12, 4:12] += 300
        if "B" in organs:
            lab[1:3, 18:28, 18:28] = 2
            img[1:3, 18:28, 18:28] -= 300
        for arr, sub in ((img, "imagesTr"), (lab, "labelsTr")):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(root / sub / f"c{i}.nii.gz"))
        cases[f"c{i}"] = {"labels_present": list(organs)}
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "A", "2": "B"}))


def test_dataset_items_say_what_was_contoured(tmp_path):
    _write_partial_dataset(tmp_path)
    assert read_contoured(tmp_path) == {"c0": {1, 2}, "c1": {1}, "c2": {2}}
    data = VolumePairs(tmp_path, val_fraction=0.34, seed=0)
    lm = data.label_map()
    spec = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32), num_classes=3)
    ds = data.dataset("train", spec, lm)
    for i in range(len(ds)):
        x, y, present = ds[i]
        case = ds.refs[i][0]
        want = [True, 1 in data.contoured[case], 2 in data.contoured[case]]
        assert present.tolist() == want
    # one training epoch and a validation run on such items
    model = build_model(spec, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=2, device="cpu", optimizer="adam", lr=1e-3)
    result = Trainer(model, cfg).fit(ds, data.dataset("val", spec, lm))
    assert np.isfinite(result.history[-1]["loss"])
    m = evaluate(model, data.dataset("val", spec, lm))
    assert 0.0 <= m["val_dice"] <= 1.0


def test_unknown_label_name_in_cases_json(tmp_path):
    _write_partial_dataset(tmp_path)
    cases = json.loads((tmp_path / "cases.json").read_text())
    cases["c1"]["labels_present"] = ["Spleen"]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    with pytest.raises(LLM4SegError, match="Spleen"):
        read_contoured(tmp_path)


@pytest.mark.skipif(not OPENKBP.is_dir(), reason="../shared/data/openkbp_hn_ct is absent")
def test_openkbp_cases_carry_their_contoured_organs():
    data = VolumePairs(OPENKBP)
    names = json.loads((OPENKBP / "labels.json").read_text())
    facts = json.loads((OPENKBP / "cases.json").read_text())
    case = "openkbp_pt_1"
    want = {int(v) for v, n in names.items() if n in facts[case]["labels_present"]}
    assert data.contoured[case] == want
    assert len(want) < 7  # this case lacks some organs: the reason the masking exists


def test_background_prior_sets_the_head_biases():
    spec = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32), num_classes=8)
    model = build_model(spec, seed=0)
    model.set_background_prior(0.75)
    p = torch.softmax(model.net.head.bias.detach(), 0)
    assert p[0].item() == pytest.approx(0.75)
    assert torch.allclose(p[1:], torch.full((7,), 0.25 / 7))
    binary = build_model(ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32)), seed=0)
    before = binary.net.head.bias.detach().clone()
    binary.set_background_prior(0.75)
    assert torch.equal(binary.net.head.bias.detach(), before)


@pytest.mark.parametrize("partial", [True, False])
def test_train_starts_partial_labels_at_the_background_prior(tmp_path, monkeypatch, partial):
    from llm4seg_core.cli import main
    from llm4seg_core.cli.train import BACKGROUND_PRIOR
    from llm4seg_core.model.network import LLM4SegNet

    data = tmp_path / "data"
    _write_partial_dataset(data)
    if not partial:
        (data / "cases.json").unlink()
    calls = []
    real = LLM4SegNet.set_background_prior
    monkeypatch.setattr(LLM4SegNet, "set_background_prior",
                        lambda self, p: (calls.append(p), real(self, p)))
    rc = main(["train", str(data), "-o", str(tmp_path / "run"), "--model",
               "llm_mode=none,image_size=32,dims=8:8:16:16:32", "--epochs", "1",
               "--max-steps", "1", "--device", "cpu", "-q"])
    assert rc == 0
    assert calls == ([BACKGROUND_PRIOR] if partial else [])


class _Fixed(torch.nn.Module):
    """A 'model' that answers given logits, whatever the input."""

    def __init__(self, logits, num_classes):
        super().__init__()
        self.logits = logits
        self.spec = type("S", (), {"num_classes": num_classes})()

    def forward(self, x):
        return self.logits[: len(x)]


def test_validation_pools_each_class_so_a_missed_organ_shows():
    from llm4seg_core.training.evaluation import evaluate

    # 4 slices, 3 classes; class 2 sits on slice 0 only and is never predicted, class 1
    # is predicted exactly. The per-image mean counts slices 1-3 (class 2 absent in both)
    # as perfect; the pooled class Dice of class 2 is 0.
    ref = torch.zeros(4, 8, 8, dtype=torch.uint8)
    ref[:, :4, :4] = 1
    ref[0, 5:, 5:] = 2
    pred = ref.clone()
    pred[0, 5:, 5:] = 0
    logits = torch.nn.functional.one_hot(pred.long(), 3).permute(0, 3, 1, 2).float() * 10
    items = [(torch.zeros(1, 8, 8), ref[i], torch.tensor([True, True, True])) for i in range(4)]
    m = evaluate(_Fixed(logits, 3), items, amp=False)
    assert m["val_class_dice_1"] == pytest.approx(1.0)
    assert m["val_class_dice_2"] == pytest.approx(0.0)
    assert m["val_class_dice"] == pytest.approx(0.5)
    assert m["val_dice"] == pytest.approx((0.5 + 3 * 1.0) / 4)  # the per-image mean hides it
    # a slice where class 2 was not contoured does not count against it
    items[0] = (items[0][0], ref[0], torch.tensor([True, True, False]))
    m = evaluate(_Fixed(logits, 3), items, amp=False)
    assert m["val_class_dice_2"] == pytest.approx(1.0)  # nothing predicted, nothing contoured
