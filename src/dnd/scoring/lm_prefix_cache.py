"""`dnd-prefix-cache`: the `dnd-prefix` lm-eval backend (dnd.scoring.lm_backend) with a token prefix
shared by every request computed once.

In-context learning puts the same k demonstrations before every test item, so the contexts of
all log-likelihood requests of a run begin with the same few thousand tokens. `dnd-prefix`
computes each item's context once for all its choices, but the demonstrations again for every
item; `dnd.scoring.lm_generate.SharedPrefillLM` computes a shared prefix once per batch, then scores
each continuation token by token on a copy of the batch's keys/values (a copy per choice of
every item, which for a 5,000-token prefix is gigabytes per batch).

`PrefixCacheLM._loglikelihood_tokens` finds the longest token prefix that every request's
context shares (each context keeps at least one token of its own). When it is at least
`min_shared_prefix` tokens long, it runs the prefix through the model once (in chunks of
`prefix_chunk` tokens, so memory stays bounded) and keeps its keys/values. The requests are
then scored exactly as `dnd-prefix` scores them (the same packing, block mask, batching and
output), with their contexts cut after the prefix: each packed sequence attends to the kept
keys/values as if the prefix stood in front of it (position ids continue after it; every
position may see the whole prefix). The prefix is computed once per lm-eval run, i.e. once per
(model, task). Without such a prefix (zero-shot prompts share only "Question:") the backend is
`dnd-prefix` itself, so it gives the same numbers. In float32 its log-likelihoods equal the
plain forward pass over the whole sequence (tests/test_fewshot.py); a request longer than the
model's context is an error, never silently truncated (which would cut demonstrations).
"""

from __future__ import annotations

import logging

from lm_eval.api.registry import register_model

from dnd.scoring.lm_backend import PrefixSharingLM

log = logging.getLogger(__name__)

BACKEND = "dnd-prefix-cache"


def shared_prefix_length(contexts: list[list[int]]) -> int:
    """Length of the longest token prefix all `contexts` share, leaving each at least one token
    of its own (0 for no contexts)."""
    if not contexts:
        return 0
    first = contexts[0]
    n = min(len(c) for c in contexts) - 1
    for c in contexts[1:]:
        if n <= 0:
            return 0
        if c[:n] != first[:n]:
            n = next(i for i in range(n) if c[i] != first[i])
    return max(n, 0)


class PrefixedDecoder:
    """A decoder stack called like `dnd-prefix` calls it (packed tokens, a (B, 1, L, L) boolean
    mask, positions from 0), with the kept keys/values of a `length`-token prefix in front:
    every position may attend to the whole prefix and its positions continue after it."""

    def __init__(self, decoder, keys_values: list, length: int):
        self.decoder, self.keys_values, self.length = decoder, keys_values, length

    def __call__(self, *, input_ids, attention_mask, position_ids, use_cache=False):
        import torch
        from transformers import DynamicCache

        b = input_ids.shape[0]
        # a fresh cache per call (the forward pass appends to it); expand() copies nothing
        cache = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
                                             for k, v in self.keys_values])
        seen = torch.ones((*attention_mask.shape[:-1], self.length), dtype=torch.bool, device=attention_mask.device)
        return self.decoder(input_ids=input_ids, attention_mask=torch.cat([seen, attention_mask], dim=-1),
                            position_ids=position_ids + self.length, past_key_values=cache, use_cache=True)


@register_model(BACKEND)
class PrefixCacheLM(PrefixSharingLM):
    """PrefixSharingLM that computes the prefix shared by all requests once (see the module doc)."""

    #: a shared prefix shorter than this is not worth a separate pass: plain dnd-prefix scoring
    min_shared_prefix = 32
    #: tokens of the shared prefix per forward pass while it is computed
    prefix_chunk = 1024

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prefix: tuple[list, int] | None = None  # (keys/values per layer, length) while scoring
        self.prefix_passes = 0  # how many shared prefixes were computed (tests, logs)

    def _layers(self):
        decoder, head = super()._layers()
        if self._prefix is None:
            return decoder, head
        return PrefixedDecoder(decoder, *self._prefix), head

    def _compute_prefix(self, tokens: list[int]) -> list:
        """Keys/values of `tokens` at positions 0..len-1, per layer ((1, heads, len, dim) each)."""
        import torch

        decoder, _ = super()._layers()
        cache = None
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            for s in range(0, len(tokens), self.prefix_chunk):
                chunk = tokens[s:s + self.prefix_chunk]
                out = decoder(input_ids=torch.tensor([chunk], device=self.device),
                              position_ids=torch.arange(s, s + len(chunk), device=self.device).unsqueeze(0),
                              past_key_values=cache, use_cache=True)
                cache = out.past_key_values
        self.prefix_passes += 1
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal" or not requests:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        shared = shared_prefix_length([list(ctx) for _, ctx, _ in requests])
        if shared < self.min_shared_prefix:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        longest = max(len(ctx) + len(cont) - 1 for _, ctx, cont in requests)
        if longest > self.max_length:
            raise ValueError(f"{BACKEND}: a request needs {longest} positions, more than the model's context of "
                             f"{self.max_length}; shorten the shared prefix (fewer demonstrations)")
        if not self._checked:
            self._self_check()  # on the plain decoder, before the prefix is in place
        prefix = list(requests[0][1][:shared])
        log.info("%s: %d requests share a %d-token prefix: computed once", BACKEND, len(requests), shared)
        self._prefix = (self._compute_prefix(prefix), shared)
        try:
            cut = [(req, list(ctx)[shared:], cont) for req, ctx, cont in requests]
            return super()._loglikelihood_tokens(cut, disable_tqdm, override_bs)
        finally:
            self._prefix = None
