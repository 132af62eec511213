"""Per-slice forward time of the default model at batch 1, 2, 4, 8, with and without channels-last.

The measurement behind the Segmenter's per-device default batch (inference.DEFAULT_BATCH):
    .venv/bin/python bench/bench_cpu_batch.py
"""
import time, torch
from llm4seg_core.model import build_model, ModelSpec
m = build_model(ModelSpec())
def bench(bs, cl, reps=3):
    x = torch.randn(bs,1,256,256)
    mm = m
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        mm(x)
        ts=[]
        for _ in range(reps):
            t=time.perf_counter(); mm(x); ts.append(time.perf_counter()-t)
    return min(ts)/bs
for cl in (False, True):
    if cl: m = m.to(memory_format=torch.channels_last)
    for bs in (1,2,4,8):
        print(f"channels_last={cl} batch {bs}: {bench(bs,cl):.3f} s/slice", flush=True)
