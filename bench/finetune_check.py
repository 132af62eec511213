"""Fine-tune crops vs whole slices on lung2 (k = 2): per-slice Dice on the tumour slices.

    .venv/bin/python bench/finetune_check.py BASE.safetensors STEPS CROP|none TRAINABLE

BASE: a checkpoint written by scripts/pretrain_default.py. The figures in
docs/benchmarks.md came from "80 128 adapters+decoder" and "40 none adapters+decoder".
"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from fewshot_tasks import load_task, choose_slices
from llm4seg_core.store import load_checkpoint
from llm4seg_core.datasets import CorrectionSet
from llm4seg_core.training import finetune, FinetuneConfig
from llm4seg_core.inference import Segmenter
from llm4seg_core.metrics import dice
task = load_task("lung2")
sl = choose_slices(task.mask, 2)
m, _ = load_checkpoint(sys.argv[1])
res = finetune(m, CorrectionSet(task.volume, task.mask, sl), FinetuneConfig(device="cpu", steps=int(sys.argv[2]), crop_size=(None if sys.argv[3] == "none" else int(sys.argv[3])), trainable=sys.argv[4]))
print("history tail", res.history[-2:] if res.history else None, res.best_metrics, res.info)
seg = Segmenter(m, device="cpu")
pred = seg.segment(task.volume, slices=list(range(15, 26)))
for z in range(15, 26):
    print(z, "annot" if z in sl else "", "ref", int(task.mask[z].sum()), "pred", int(pred[z].sum()), "dice", round(dice(pred[z], task.mask[z]), 3))
