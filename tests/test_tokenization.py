"""Parameter tokenizer: exact round trip, token count and order, border encoding, errors."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from conftest import TINY_LLAMA
from dnd.method.tokenization import MODULE_ORDER, LoraLayout, detokenize, tokenize

# SmolLM2-135M: hidden 576, kv dim 192, ffn 1536, 30 layers
SMOL_DIMS = {  # module path -> (in, out)
    "self_attn.q_proj": (576, 576),
    "self_attn.k_proj": (576, 192),
    "self_attn.v_proj": (576, 192),
    "self_attn.o_proj": (576, 576),
    "mlp.gate_proj": (576, 1536),
    "mlp.up_proj": (576, 1536),
    "mlp.down_proj": (1536, 576),
}


def smollm2_lora(r: int = 8, n_layers: int = 30, zero_b_layers: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A SmolLM2-shaped PEFT LoRA state dict: random A and B, B = 0 (PEFT's init) in the first
    `zero_b_layers` layers. Keys are inserted in a scrambled order on purpose."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer in reversed(range(n_layers)):
        for path, (d_in, d_out) in reversed(list(SMOL_DIMS.items())):
            p = f"base_model.model.model.layers.{layer}.{path}"
            sd[f"{p}.lora_B.weight"] = (
                torch.zeros(d_out, r) if layer < zero_b_layers else torch.randn(d_out, r, generator=g) * 0.01
            )
            sd[f"{p}.lora_A.weight"] = torch.randn(r, d_in, generator=g) / math.sqrt(d_in)
    return sd


def tiny_llama_lora() -> dict[str, torch.Tensor]:
    """LoRA state dict (r = 8) of a real PEFT model on a tiny random Llama, B made non-zero;
    a fresh copy on every call."""
    return {k: v.clone() for k, v in _tiny_llama_lora().items()}


@functools.cache
def _tiny_llama_lora() -> dict[str, torch.Tensor]:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**TINY_LLAMA)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=list(MODULE_ORDER), lora_dropout=0.0)
    model = get_peft_model(LlamaForCausalLM(cfg), lora)
    sd = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    for k in sd:
        if "lora_B" in k:
            sd[k] = torch.randn_like(sd[k]) * 0.05
    return sd


def max_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest abs difference; also checks keys, shapes and that `a` (decoded) is contiguous."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and a[k].is_contiguous(), k
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("w, n_tokens", [(64, 4770), (192, 1590)])
def test_smollm2_round_trip(w: int, n_tokens: int) -> None:
    sd = smollm2_lora()
    layout = LoraLayout.from_state_dict(sd, w)
    assert layout.n_tokens == n_tokens
    assert layout.token_shape == (10, w + 2)
    tokens = tokenize(sd, layout)
    assert tokens.shape == (n_tokens, 10, w + 2) and tokens.dtype == torch.float32
    assert torch.isfinite(tokens).all()
    assert max_err(detokenize(tokens, layout), sd) < 1e-5


def test_tiny_llama_round_trip_and_order() -> None:
    sd = tiny_llama_lora()
    layout = LoraLayout.from_state_dict(sd, 32)
    # per layer: q 2+2, k 2+1, v 2+1, o 2+2, up 2+4, gate 2+4, down 4+2 = 32 tokens; 2 layers
    assert layout.n_tokens == 64
    order = [(k.split(".layers.")[1].split(".")[0], k.split(".")[-3], k.split(".")[-2]) for k in layout.keys]
    expected = [
        (str(layer), m, ab) for layer in range(2) for m in MODULE_ORDER for ab in ("lora_A", "lora_B")
    ]
    assert order == expected
    tokens = tokenize(sd, layout)
    assert tokens.shape == (64, 10, 34)
    assert max_err(detokenize(tokens, layout), sd) < 1e-5


def test_token_content_and_border() -> None:
    """Token t is chunk t of the concatenated [A | B^T] matrices, normalized, with the border."""
    sd = tiny_llama_lora()
    layout = LoraLayout.from_state_dict(sd, 32)
    tokens = tokenize(sd, layout)
    r, w = 8, 32
    pre = "base_model.model.model.layers.0."
    # token 3 = second chunk of q_proj B^T (q A has 2 chunks); token 5 = second chunk of k_proj A
    chunks = {
        3: sd[pre + "self_attn.q_proj.lora_B.weight"].T[:, w : 2 * w],
        5: sd[pre + "self_attn.k_proj.lora_A.weight"][:, w:],
    }
    for t, x in chunks.items():
        mean, std = x.mean(), x.std()
        m_enc, s_enc = 8 * mean, math.log(0.9 * std.item() + 0.1) + 1.6
        tok = tokens[t]
        torch.testing.assert_close(tok[:r, :w], (x - mean) / std, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tok[r:, 0:w:2], torch.full((2, w // 2), m_enc.item()))
        torch.testing.assert_close(tok[r:, 1:w:2], torch.full((2, w // 2), s_enc))
        torch.testing.assert_close(tok[:, w], torch.full((r + 2,), m_enc.item()))
        torch.testing.assert_close(tok[:, w + 1], torch.full((r + 2,), s_enc))


def test_constant_and_near_constant_chunks() -> None:
    """std = 0 (constant chunk) and tiny std stay finite and round-trip exactly."""
    sd = tiny_llama_lora()
    pre = "base_model.model.model.layers.1."
    sd[pre + "mlp.up_proj.lora_A.weight"][:, :32] = 0.125  # constant chunk
    sd[pre + "mlp.up_proj.lora_A.weight"][:, 32:] = 0.3 + 1e-7 * torch.randn(8, 32)  # near constant
    sd[pre + "mlp.up_proj.lora_B.weight"].zero_()  # zero init
    layout = LoraLayout.from_state_dict(sd, 32)
    tokens = tokenize(sd, layout)
    assert torch.isfinite(tokens).all()
    assert max_err(detokenize(tokens, layout), sd) < 1e-5


def test_generated_tokens_average_border_copies() -> None:
    """A perturbed border decodes with the average of its copies."""
    sd = tiny_llama_lora()
    layout = LoraLayout.from_state_dict(sd, 32)
    tokens = tokenize(sd, layout)
    noisy = tokens.clone()
    noisy[:, :, 32] += 0.01  # every m' copy in the right column
    noisy[:, 8:, 0:32:2] -= 0.01 * 10 / 32  # bottom-row copies: the mean of all copies is unchanged
    assert max_err(detokenize(noisy, layout), sd) < 1e-5


def test_bad_width_and_keys() -> None:
    sd = tiny_llama_lora()
    with pytest.raises(ValueError, match="does not divide"):
        LoraLayout.from_state_dict(sd, 48)
    with pytest.raises(ValueError, match="lora_A and one lora_B"):
        LoraLayout.from_state_dict({k: v for k, v in sd.items() if "q_proj.lora_B" not in k}, 32)
    with pytest.raises(ValueError, match="not a per-layer LoRA weight key"):
        LoraLayout.from_state_dict({**sd, "base_model.model.lm_head.weight": torch.zeros(2, 2)}, 32)
    layout = LoraLayout.from_state_dict(sd, 32)
    with pytest.raises(ValueError, match="layout expects"):
        detokenize(torch.zeros(3, 10, 34), layout)


def test_layout_dict_round_trip() -> None:
    layout = LoraLayout.from_state_dict(tiny_llama_lora(), 16)
    d = layout.to_dict()
    assert LoraLayout.from_dict(d) == layout
    assert d["rank"] == 8 and d["chunk_width"] == 16
