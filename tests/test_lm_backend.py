"""dnd.scoring.lm_backend: the packed lm-eval backend against lm-eval's own HFLM on a tiny random Llama
(no download): packing, the block mask, request-level equality, the long-context fallback."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dnd.scoring import lm_backend as lb


def test_pack_layout():
    p = lb.pack([1, 2, 3], [[4, 5, 6], [7], [8, 9]], [10, 11, 12])
    assert p.tokens == [1, 2, 3, 4, 5, 8] and p.positions == [0, 1, 2, 3, 4, 3]
    assert p.segments == [(3, 5), (5, 5), (5, 6)]
    assert p.reads == [[2, 3, 4], [2], [2, 5]] and p.requests == [10, 11, 12]
    with pytest.raises(ValueError, match="non-empty"):
        lb.pack([], [[1]], [0])


def test_block_mask_isolates_choices():
    p = lb.pack([1, 2], [[3, 4, 5], [6, 7]], [0, 1])  # tokens 1 2 | 3 4 | 6, padded to 6
    m = lb.block_mask([p], 6)[0, 0]
    assert m.shape == (6, 6)
    assert m[1, :2].tolist() == [True, True] and not m[0, 1]  # causal context
    assert m[3, :4].tolist() == [True, True, True, True]  # segment 1 sees context and itself
    assert m[4, :5].tolist() == [True, True, False, False, True]  # segment 2 never sees segment 1
    assert m[5].tolist() == [False] * 5 + [True]  # padding sees itself only


def test_token_logprobs_equal_log_softmax_and_argmax():
    """The chunked output layer + logsumexp gives log_softmax's target log-probabilities (float32
    rounding) and argmax's greedy test exactly, ties included (integer logits: many rows where
    several logits share the maximum, the target at the first tied index or a later one)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    vocab, dim, n = 300, 16, 500
    head = torch.nn.Linear(dim, vocab + 4, bias=False)  # padded output layer: only `vocab` columns count
    with torch.no_grad():
        head.weight.mul_(4).round_()
        h = torch.randint(-2, 3, (n, dim)).float()
        logits = head(h)[:, :vocab]
        is_max = logits == logits.amax(-1, keepdim=True)
        tgt = torch.randint(0, vocab, (n,))
        tgt[::2] = logits[::2].argmax(-1)  # the first maximum
        tgt[1::4] = vocab - 1 - is_max[1::4].flip(-1).float().argmax(-1)  # the last maximum
        lp, greedy = lb.token_logprobs(head, h, tgt, vocab, torch.float32, rows=7)
    ref = F.log_softmax(logits, -1)
    assert int((is_max.sum(-1) > 1).sum()) > 50  # ties do occur
    assert torch.equal(greedy, ref.argmax(-1) == tgt) and 0 < int(greedy.sum()) < n
    torch.testing.assert_close(lp, ref.gather(1, tgt[:, None])[:, 0], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def two_backends():
    from lm_eval.models.huggingface import HFLM
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    vocab = {f"w{i}": i for i in range(511)} | {"[UNK]": 511}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="w1", pad_token="w0")
    kw = dict(pretrained=model, tokenizer=tok, batch_size=4, softmax_dtype="float32", max_length=64)
    return HFLM(**kw), lb.PrefixSharingLM(**kw)


def _requests(seed: int, n_items: int, max_ctx: int) -> list:
    rng = random.Random(seed)
    reqs = []
    for q in range(n_items):
        ctx = [rng.randrange(2, 500) for _ in range(rng.randrange(1, max_ctx))]
        for c in range(rng.choice([2, 3, 4])):
            reqs.append(((f"c{q}", f"x{c}"), ctx, [rng.randrange(2, 500) for _ in range(rng.randrange(1, 8))]))
    rng.shuffle(reqs)  # requests of one item need not be adjacent
    return reqs


def test_packed_equals_plain_hf(two_backends):
    hf, ours = two_backends
    reqs = _requests(0, 24, 40)
    a, b = hf._loglikelihood_tokens(reqs, disable_tqdm=True), ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    np.testing.assert_allclose([x[0] for x in b], [x[0] for x in a], rtol=0, atol=1e-4)
    assert [x[1] for x in b] == [x[1] for x in a]


def test_too_long_for_a_pack_falls_back_to_plain(two_backends, caplog):
    """A context whose longest choice runs past the model's positions is scored the plain
    way (hf truncates it from the left), the others packed; results in request order."""
    hf, ours = two_backends
    reqs = _requests(1, 6, 20)
    long_ctx = list(range(2, 2 + 62))
    reqs += [(("long", "a"), long_ctx, [3, 4, 5, 6]), (("long", "b"), long_ctx, [7])]
    packs, plain = lb.group_requests(reqs, ours.max_length)
    assert sorted(plain) == [len(reqs) - 2, len(reqs) - 1]
    a, b = hf._loglikelihood_tokens(reqs, disable_tqdm=True), ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    np.testing.assert_allclose([x[0] for x in b], [x[0] for x in a], rtol=0, atol=1e-4)
    assert "too long to pack" in caplog.text


def test_registered_in_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model(lb.BACKEND) is lb.PrefixSharingLM
