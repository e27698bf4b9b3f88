"""`dnd-generate`: the `dnd-prefix` lm-eval backend (dnd.scoring.lm_backend) that also generates, with
each prompt computed once for all the decodings asked of it.

`SharedPrefillLM.generate_until` groups lm-eval's requests by context, runs each context through
the model once, copies its key/value cache to one decoding stream per request (greedy, or sampled
from a torch.Generator seeded per request and context) and decodes all streams together. The
log-likelihood requests of the same run are scored from the same kind of prefill, and their
contexts' keys/values are kept for the run's generate_until: one prefill per item for both.
The sampling filters, the measured speed-up, float32 vs bfloat16 and the stop rules:
docs/modules.md, section `src/dnd/scoring/lm_generate.py`.
"""

from __future__ import annotations

import hashlib
import logging

from lm_eval.api.registry import register_model

from dnd.scoring.lm_backend import PrefixSharingLM

log = logging.getLogger(__name__)

BACKEND = "dnd-generate"


def stream_seed(seed: int, context: str) -> int:
    """The seed of one sampled stream: (request seed, context text) -> 63-bit integer."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{context}".encode()).digest()[:8], "big") >> 1


def sample_token(logits, temperature: float, top_k: int | None, top_p: float | None, generator) -> int:
    """One draw from `logits` (1-D) after temperature, then top-k, then top-p (nucleus: the
    smallest set of most probable tokens whose probability reaches top_p, at least one), from the
    renormalized distribution, as transformers' `generate` and vLLM apply them."""
    import torch

    x = logits.float() / temperature
    k = x.numel() if not top_k or top_k >= x.numel() else int(top_k)
    vals, idx = torch.topk(x, k)  # sorted, most probable first
    probs = torch.softmax(vals, dim=-1)
    if top_p is not None and top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the more probable tokens
        keep = before < top_p
        keep[0] = True
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    j = int(torch.multinomial(probs.cpu(), 1, generator=generator))
    return int(idx[j])


def cut_at_stop(text: str, until: list[str]) -> str:
    """`text` up to its first stop string."""
    for s in until:
        if s and s in text:
            text = text.split(s, 1)[0]
    return text


@register_model(BACKEND)
class SharedPrefillLM(PrefixSharingLM):
    """PrefixSharingLM whose generate_until computes each context once (docs/modules.md)."""

    #: a token prefix shared by a batch's contexts is computed once from this length on
    min_shared_prefix = 8

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kept: dict = {}  # contexts kept by the log-likelihood pass for generate_until

    def _streams_of(self, requests):
        """{context: [request index, ...]} in first-seen order."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.args[0], []).append(i)
        return groups

    def _settings(self, gen_kwargs: dict) -> dict:
        from lm_eval.models.utils import normalize_gen_kwargs

        kw = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = [u for u in kw.get("until") or [] if u]
        return {"sample": bool(kw.get("do_sample")), "temperature": float(kw.get("temperature") or 1.0),
                "top_k": kw.get("top_k"), "top_p": kw.get("top_p"), "seed": int(kw.get("seed") or 0),
                "max_new": int(kw["max_gen_toks"]), "stop_chars": kw.get("stop_chars"),
                "until": [*until, eos]}

    def _prefill_tokens(self, encs: list[list[int]]):
        """(cache, last-position logits (B, V), attention mask, next position ids) of a batch of
        tokenized contexts. The token prefix the contexts share (a system message, say) is
        computed once and its keys/values copied to every row; the rest of each context follows
        it, left-padded (padding between the shared prefix and a row's own tokens is masked,
        positions continue from the prefix). Only the last position goes through the output
        layer (logits_to_keep=1)."""
        import torch

        shared = min(len(e) for e in encs) - 1  # every row keeps at least one token of its own
        for e in encs[1:]:
            shared = next((k for k in range(shared) if e[k] != encs[0][k]), shared)
        cache, prefix_mask = None, torch.zeros((len(encs), 0), dtype=torch.long)
        if shared >= self.min_shared_prefix:
            out = self.model(input_ids=torch.tensor([encs[0][:shared]], device=self.device),
                             position_ids=torch.arange(shared, device=self.device).unsqueeze(0), use_cache=True,
                             logits_to_keep=1)
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(encs))
            prefix_mask = torch.ones((len(encs), shared), dtype=torch.long)
            encs = [e[shared:] for e in encs]
        else:
            shared = 0
        width = max(len(e) for e in encs)
        ids = torch.zeros((len(encs), width), dtype=torch.long)
        own = torch.zeros((len(encs), width), dtype=torch.long)
        for b, e in enumerate(encs):
            ids[b, width - len(e):] = torch.tensor(e)
            own[b, width - len(e):] = 1
        pos = shared + (own.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([prefix_mask, own], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1, : self.vocab_size], mask, pos[:, -1] + 1

    def _decode_batch(self, contexts: list[str], encoded: list[list[int]],
                      streams: list[tuple[int, dict]]) -> list[str]:
        """Decode every stream (context row, settings) of a batch of contexts (and their tokens;
        each is cut from the left to leave room for the new tokens); its text."""
        import torch

        max_new = max(s["max_new"] for _, s in streams)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            encs = [e[-(self.max_length - max_new):] for e in encoded]
            if self._kept and all(tuple(e) in self._kept for e in encs):
                cache, logits, mask, next_pos = self._restore([self._kept[tuple(e)] for e in encs])
            else:
                cache, logits, mask, next_pos = self._prefill_tokens(encs)
            rows = torch.tensor([row for row, _ in streams], device=logits.device)
            cache.batch_select_indices(rows)
            logits, mask, pos = logits[rows], mask[rows.cpu()].to(self.device), next_pos[rows.cpu()].to(self.device)
            gens = [torch.Generator().manual_seed(stream_seed(s["seed"], contexts[row])) if s["sample"] else None
                    for row, s in streams]
            tokens: list[list[int]] = [[] for _ in streams]
            done = [False] * len(streams)
            for step in range(max_new):
                nxt = []
                for k, (_, s) in enumerate(streams):
                    if done[k]:
                        nxt.append(self.eot_token_id)
                        continue
                    if s["sample"]:
                        t = sample_token(logits[k], s["temperature"], s["top_k"], s["top_p"], gens[k])
                    else:
                        t = int(torch.argmax(logits[k]))
                    nxt.append(t)
                    tokens[k].append(t)
                    text = self.tok_decode(tokens[k], skip_special_tokens=False)
                    if (t == self.eot_token_id or len(tokens[k]) >= s["max_new"]
                            or any(u in text for u in s["until"])
                            or (s["stop_chars"] and len(text) >= int(s["stop_chars"]))):
                        done[k] = True
                if all(done) or step == max_new - 1:
                    break
                mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)], 1)
                out = self.model(input_ids=torch.tensor(nxt, device=self.device).unsqueeze(1), attention_mask=mask,
                                 position_ids=pos.unsqueeze(1), past_key_values=cache, use_cache=True,
                                 logits_to_keep=1)
                cache, logits, pos = out.past_key_values, out.logits[:, -1, : self.vocab_size], pos + 1
        return [cut_at_stop(self.tok_decode(toks, skip_special_tokens=False), s["until"])
                for toks, (_, s) in zip(tokens, streams)]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        groups = self._streams_of(requests)
        encoded = {c: self.tok_encode(c) for c in groups}
        contexts = sorted(groups, key=lambda c: (-len(encoded[c]), c))
        settings = [self._settings(r.args[1]) for r in requests]
        res: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc=f"Running generate_until requests ({BACKEND})")
        per_batch = int(self.batch_size if self.batch_size != "auto" else 32)  # contexts per batch
        for start in range(0, len(contexts), per_batch):
            batch = contexts[start:start + per_batch]
            streams = [(row, i) for row, c in enumerate(batch) for i in groups[c]]
            texts = self._decode_batch(batch, [encoded[c] for c in batch], [(row, settings[i]) for row, i in streams])
            for (_, i), text in zip(streams, texts):
                res[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
            bar.update(len(streams))
        bar.close()
        self._kept = {}
        assert all(r is not None for r in res)
        return res

    # ------------------------------------------------------------------ log-likelihood
    def _keep(self, encs, cache, logits, mask) -> None:
        """Keep each context's keys/values (its own positions only), last logits and length."""
        for b, e in enumerate(encs):
            own = mask[b].bool().to(logits.device)
            layers = [(layer.keys[b][:, own].clone(), layer.values[b][:, own].clone()) for layer in cache.layers]
            self._kept[tuple(e)] = (layers, logits[b].clone(), len(e))

    def _restore(self, kept):
        """(cache, last logits, attention mask, next positions) of a batch from kept contexts,
        left-padded to the longest."""
        import torch
        from transformers import DynamicCache

        width = max(n for _, _, n in kept)
        layers = []
        for li in range(len(kept[0][0])):
            k0 = kept[0][0][li][0]
            ks = k0.new_zeros((len(kept), k0.shape[0], width, k0.shape[-1]))
            vs = ks.clone()
            for b, (lay, _, n) in enumerate(kept):
                ks[b, :, width - n:] = lay[li][0]
                vs[b, :, width - n:] = lay[li][1]
            layers.append((ks, vs))
        mask = torch.zeros((len(kept), width), dtype=torch.long)
        for b, (_, _, n) in enumerate(kept):
            mask[b, width - n:] = 1
        next_pos = torch.tensor([n for _, _, n in kept], device=self.device)
        return DynamicCache(ddp_cache_data=layers), torch.stack([lg for _, lg, _ in kept]), mask, next_pos

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """Each context prefilled once, its continuations scored as teacher-forced streams; the
        contexts' states are kept for generate_until (docs/modules.md)."""
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        self._kept = {}
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            groups.setdefault(tuple(ctx), []).append(i)
        longest = max(len(ctx) + len(cont) for _, ctx, cont in requests) if requests else 0
        if self.backend != "causal" or longest > self.max_length or any(not c for c in groups) or any(
                not cont for _, _, cont in requests):
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        contexts = sorted(groups, key=lambda c: (-len(c), c))
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        per_batch = int(override_bs or (self.batch_size if self.batch_size != "auto" else 32) or 32)
        for start in range(0, len(contexts), per_batch):
            batch = [list(c) for c in contexts[start:start + per_batch]]
            streams = [(b, i) for b, c in enumerate(batch) for i in groups[tuple(c)]]
            conts = [requests[i][2] for _, i in streams]
            with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                                 enabled=self.mixed_precision_dtype is not None):
                cache, logits, mask, next_pos = self._prefill_tokens(batch)
                self._keep(batch, cache, logits, mask)
                rows = torch.tensor([b for b, _ in streams], device=logits.device)
                step_logits = [logits[rows]]
                longest_cont = max(len(c) for c in conts)
                if longest_cont > 1:
                    copy = DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, rows),
                                                         layer.values.index_select(0, rows))
                                                        for layer in cache.layers])
                    m, pos = mask[rows.cpu()].to(self.device), next_pos[rows.cpu()].to(self.device)
                    for j in range(1, longest_cont):
                        fed = torch.tensor([c[j - 1] if j - 1 < len(c) else c[-1] for c in conts], device=self.device)
                        m = torch.cat([m, torch.ones((m.shape[0], 1), dtype=m.dtype, device=m.device)], 1)
                        out = self.model(input_ids=fed.unsqueeze(1), attention_mask=m, position_ids=pos.unsqueeze(1),
                                         past_key_values=copy, use_cache=True, logits_to_keep=1)
                        copy, pos = out.past_key_values, pos + 1
                        step_logits.append(out.logits[:, -1, : self.vocab_size])
            logps = [F.log_softmax(x.float(), dim=-1, dtype=self.softmax_dtype) for x in step_logits]
            for k, ((_, i), cont) in enumerate(zip(streams, conts)):
                lp = torch.stack([logps[j][k, t] for j, t in enumerate(cont)])
                greedy = all(int(logps[j][k].argmax()) == t for j, t in enumerate(cont))
                res[i] = (float(lp.sum()), bool(greedy))
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], res[i])
        assert all(r is not None for r in res)
        return res
