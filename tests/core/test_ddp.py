"""DistributedDataParallel under torchrun: 2 CPU processes (gloo), a tiny synthetic dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import ModelSpec
    from llm4seg_core.training import TrainConfig, Trainer, init_distributed

    out = sys.argv[1]
    info = init_distributed("cpu")
    assert info.world_size == 2, info
    import torch.distributed as dist
    assert dist.get_backend() == "gloo"

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(6, 1, 32, 32, generator=g)
            self.y = (self.x[:, 0] > 0.5).to(torch.uint8)
        def __len__(self):
            return 6
        def __getitem__(self, i):
            return self.x[i], self.y[i]

    spec = ModelSpec(image_size=32, dims=(8, 8, 16, 16, 32))  # real SmolLM2 layer, frozen
    model = build_model(spec, seed=0)
    llm_before = {k: v.clone() for k, v in model.state_dict().items()
                  if k in model.llm_parameter_names()}
    cfg = TrainConfig(epochs=2, batch_size=2, device="cpu", seed=0, trainable="all-but-llm")
    res = Trainer(model, cfg).fit(Data(), Data(), checkpoint_dir=os.path.join(out, "run"))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert all(torch.equal(sd[k], v) for k, v in llm_before.items()), "frozen LLM changed"
    save_file(sd, os.path.join(out, f"rank{info.rank}.safetensors"))
    print(f"rank {info.rank}: {res.steps} steps, history {len(res.history)}")
    dist.destroy_process_group()
    """
)


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [*torchrun(), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "ranks ended with different weights"
    # 6 items over 2 ranks at batch 2: 2 steps per epoch on each rank
    assert "rank 0: 4 steps" in proc.stdout and "rank 1: 4 steps" in proc.stdout
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.safetensors", "last.safetensors", "train_state.json",
                     "train_state.safetensors"], names  # rank 0 only, no stray temp files
    from llm4seg_core.store import load_checkpoint

    model, _ = load_checkpoint(run / "last.safetensors")
    stored = model.state_dict()
    assert all(torch.equal(stored[k], a[k]) for k in stored)


@pytest.mark.slow
def test_cli_train_under_torchrun(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks" / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        img = rng.integers(0, 255, (32, 32)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(data / "images" / f"c{i}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(((img > 128) * 255).astype(np.uint8)),
                        str(data / "masks" / "0" / f"c{i}.png"))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [*torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "llm4seg_core", "train",
           str(data), "-o", str(out), "--model", "cmunext,image_size=32,dims=8:8:16:16:32",
           "--epochs", "1", "--batch-size", "2", "--device", "cpu"]
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        pytest.skip("torchrun not found")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "best.safetensors").is_file() and (out / "split.json").is_file()
    assert proc.stderr.count("done:") == 1  # only rank 0 reports
