"""The network: shapes, parameter counts, the LLM block's positions and attention."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model import ModelSpec, build_model, parse_spec
from llm4seg_core.model.llm_block import LLMBlock, reference1d_angles, rope2d_angles
from llm4seg_core.model.network import LLM4SegNet


def tiny_layer(hidden: int = 64, heads: int = 4) -> LlamaDecoderLayer:
    cfg = LlamaConfig(
        hidden_size=hidden, intermediate_size=128, num_attention_heads=heads,
        num_key_value_heads=2, num_hidden_layers=1, rope_theta=10000.0,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(cfg, layer_idx=0)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return layer.eval()


def tiny_block(**kw) -> LLMBlock:
    torch.manual_seed(1)
    return LLMBlock(32, tiny_layer(), hidden_size=64, head_dim=16, rope_theta=1e4, **kw).eval()


def test_plain_cmunext_matches_reference_size():
    # the reference CMUNeXt (3 input channels, 1 class) has about 3.1 M parameters
    m = build_model(ModelSpec(llm_mode="none", in_channels=3))
    counts = m.param_counts()
    assert 3.0e6 < counts.total < 3.2e6
    assert counts.frozen == 0 and counts.llm_layer == 0
    with torch.inference_mode():
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_multiclass_output_channels():
    m = build_model(ModelSpec(llm_mode="none", num_classes=4))
    with torch.inference_mode():
        assert m(torch.randn(1, 1, 32, 32)).shape == (1, 4, 32, 32)


def test_rope2d_rows_and_columns_use_separate_pairs():
    a = rope2d_angles(4, 5, head_dim=16, theta=1e4)
    assert a.shape == (20, 16)
    # rotate-half layout: channel k and k + 8 share one angle
    torch.testing.assert_close(a[:, :8], a[:, 8:])
    # token (r, c) = index r*5 + c; first 4 pairs follow the row, last 4 the column
    assert torch.all(a[1, :4] == 0) and torch.all(a[5, 4:8] == 0)
    assert a[5, 0] == 1.0 and a[1, 4] == 1.0
    # same row => same row angles; same column => same column angles
    torch.testing.assert_close(a[0, :4], a[4, :4])
    torch.testing.assert_close(a[0, 4:8], a[15, 4:8])


def test_reference1d_is_one_angle_per_token():
    a = reference1d_angles(3, 3, head_dim=8)
    assert torch.all(a == torch.arange(9.0)[:, None])


def _perturb_last_token_effect(block: LLMBlock) -> torch.Tensor:
    x = torch.randn(1, 32, 4, 4)
    y = x.clone()
    y[..., -1, -1] += 5.0  # the last token in raster order
    with torch.inference_mode():
        dx = (block(x) - block(y)).abs().flatten(2)[0].amax(dim=0)
    return dx[:-1]  # effect on every earlier token


def test_causal_attention_hides_later_tokens():
    earlier = _perturb_last_token_effect(tiny_block(attention="causal"))
    assert earlier.max() < 1e-5


def test_bidirectional_attention_sees_later_tokens():
    earlier = _perturb_last_token_effect(tiny_block(attention="bidirectional"))
    assert earlier.max() > 1e-3


def test_positional_forms_differ():
    x = torch.randn(1, 32, 4, 4)
    with torch.inference_mode():
        a = tiny_block(positional="rope2d")(x)
        b = tiny_block(positional="reference1d")(x)
    assert not torch.allclose(a, b)


def test_block_in_network_freezes_llm_and_keeps_it_out_of_checkpoints():
    spec = ModelSpec(dims=(8, 8, 16, 16, 32), image_size=64)
    net = LLM4SegNet(spec, tiny_block(), llm_source_sha256="x")
    net.net.bottleneck.llm.requires_grad_(False)
    counts = net.param_counts()
    n_llm = sum(p.numel() for p in tiny_layer().parameters())
    assert counts.llm_layer == n_llm == counts.frozen
    stored = net.stored_state_dict()
    assert not any(".llm." in k for k in stored)
    assert "net.bottleneck.proj_in.weight" in stored
    net.train()
    assert not net.llm_block.llm.training and net.net.stem.training
    with torch.inference_mode():
        assert net(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_default_model_with_bundled_layer():
    m = build_model(ModelSpec())
    c = m.param_counts()
    # SmolLM2 layer: 4*576*576*... = 3.54 M params (q, k, v, o, gate, up, down, 2 norms)
    assert c.llm_layer == 576 * (576 + 192 + 192 + 576) + 3 * 576 * 1536 + 2 * 576
    assert c.frozen == c.llm_layer
    assert c.trainable == c.total - c.llm_layer
    with torch.inference_mode():
        assert m(torch.randn(1, 1, 256, 256)).shape == (1, 1, 256, 256)


def test_spec_parsing_and_validation():
    s = parse_spec("cmunext,num_classes=3,in_channels=3")
    assert s.llm_mode == "none" and s.num_classes == 3 and s.in_channels == 3
    assert parse_spec(s.to_json()) == s
    assert parse_spec("freeze_llm=false").freeze_llm is False
    with pytest.raises(LLM4SegError, match="unknown model preset"):
        parse_spec("gpt5")
    with pytest.raises(LLM4SegError, match="unknown model spec field"):
        parse_spec("llm4seg,colour=red")
    with pytest.raises(LLM4SegError, match="in_channels"):
        ModelSpec(in_channels=2)
    with pytest.raises(LLM4SegError, match="newer"):
        ModelSpec.from_dict({**ModelSpec().to_dict(), "future": 1})
