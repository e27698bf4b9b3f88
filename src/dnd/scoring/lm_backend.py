"""`dnd-prefix`: an lm-evaluation-harness model backend that scores each item's context once.

lm-eval's plain `hf` backend turns a k-choice question into k log-likelihood requests and runs
each (context + choice) sequence through the model separately: the shared context, usually most
of the tokens, is computed k times, and the vocabulary projection and log-softmax run over every
position of every padded row although only the continuation tokens are read.

`PrefixSharingLM` (registered as `dnd-prefix` in lm-eval's model registry) is lm-eval's `HFLM`
with one method replaced, `_loglikelihood_tokens`: lm-eval still builds the requests, tokenizes
them (`HFLM._encode_pair`), applies the task's filters and computes the metrics. Requests with
the same context tokens are packed into one sequence

    context | choice_1[:-1] | choice_2[:-1] | ...

in which each choice segment sees the whole context and its own earlier tokens (a block
attention mask) and takes the positions it would have in its own sequence (position ids
continue from the context), so every token sees exactly what it sees in the plain backend.
Only the hidden states that predict continuation tokens go through the output layer and the
log-softmax. Packs are sorted by length and batched; a context too long for the model falls
back to the plain method. What a request returns is what `hf` returns: (sum of the
continuation's token log-probabilities, whether greedy decoding reproduces it).

Use it like `hf`: `lm_eval.simple_evaluate(model="dnd-prefix", model_args={...})` after
`import dnd.scoring.lm_backend`, or build `PrefixSharingLM(pretrained=model, tokenizer=tok, ...)` on a
loaded (peft-wrapped) model as dnd.evaluate does. The backend checks once, on a short
synthetic request, that packed scoring reproduces the plain forward pass of the model it was
given (models whose logits are not `output_layer(last hidden state)` are refused, not
mis-scored); tests/test_evaluate.py compares it with `hf` item by item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

log = logging.getLogger(__name__)

BACKEND = "dnd-prefix"


@dataclass
class Pack:
    """One context and its continuations in one sequence.

    tokens/positions: the packed input and the position id of each token; segments: the
    [start, end) of each continuation's segment (its tokens but the last); reads[i]: the
    indices whose hidden states predict continuation i's tokens (the context's last token,
    then the segment)."""

    tokens: list[int]
    positions: list[int]
    ctx_len: int
    segments: list[tuple[int, int]]
    reads: list[list[int]]
    conts: list[list[int]]
    requests: list[int]  # indices into the request list, one per continuation

    def __len__(self) -> int:
        return len(self.tokens)


def pack(ctx: list[int], conts: list[list[int]], requests: list[int]) -> Pack:
    """Pack one context with its continuations (see the module doc)."""
    if not ctx or any(not c for c in conts):
        raise ValueError("a packed request needs a non-empty context and continuations")
    c = len(ctx)
    tokens, positions = list(ctx), list(range(c))
    segments, reads = [], []
    for cont in conts:
        start = len(tokens)
        tokens.extend(cont[:-1])
        positions.extend(range(c, c + len(cont) - 1))
        segments.append((start, len(tokens)))
        reads.append([c - 1, *range(start, len(tokens))])
    return Pack(tokens, positions, c, segments, reads, [list(x) for x in conts], list(requests))


def block_mask(packs: list[Pack], length: int):
    """(B, 1, L, L) boolean mask, True = may attend: causal within the context, each segment
    sees the context and itself causally, never another segment; a padding position sees
    only itself (a row with nothing to attend to would be NaN). Built from each position's
    segment number (0: the context, k: continuation k, -1: padding) in one vectorized step."""
    import torch

    seg = torch.full((len(packs), length), -1, dtype=torch.long)
    for b, p in enumerate(packs):
        seg[b, : p.ctx_len] = 0
        for k, (s, e) in enumerate(p.segments, 1):
            seg[b, s:e] = k
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    q, kv = seg.unsqueeze(2), seg.unsqueeze(1)  # (B, L, 1) the attending position, (B, 1, L) the attended
    mask = causal & (q >= 0) & ((kv == 0) | (kv == q))
    mask |= torch.eye(length, dtype=torch.bool)
    return mask.unsqueeze(1)


def group_requests(requests, max_length: int) -> tuple[list[Pack], list[int]]:
    """(packs of requests sharing their context tokens, indices of requests to score the plain
    way because their pack would not fit in `max_length` positions)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (_, ctx, cont) in enumerate(requests):
        groups.setdefault(tuple(ctx), []).append(i)
    packs, plain = [], []
    for ctx, idx in groups.items():
        conts = [requests[i][2] for i in idx]
        positions = len(ctx) + max(len(c) for c in conts) - 1  # the highest position id + 1
        if not ctx or positions > max_length:
            plain.extend(idx)
            continue
        packs.append(pack(list(ctx), conts, idx))
    return packs, plain


SCORE_ROWS = 64  # hidden states per output-layer chunk: its logits stay in cache, never all materialized


def token_logprobs(head, hidden, targets, vocab: int, dtype, rows: int = SCORE_ROWS):
    """(log P(target) per row in `dtype`, whether the target is the row's argmax) of the output
    layer `head` on `hidden` (N, D), in chunks of `rows`: log P = logit - logsumexp(logits),
    the logits (first `vocab` columns) cast to `dtype` first, as log_softmax in `dtype` would
    give them (to its rounding), without writing the (N, vocab) log-probabilities."""
    import torch

    lp = torch.empty(len(targets), dtype=dtype or torch.float32, device=hidden.device)
    greedy = torch.empty(len(targets), dtype=torch.bool, device=hidden.device)
    for s in range(0, len(targets), rows):
        x = head(hidden[s:s + rows])[:, :vocab].to(lp.dtype)
        t = targets[s:s + rows].unsqueeze(1)
        m = x.amax(-1, keepdim=True)
        picked = x.gather(1, t)
        # greedy: the target is argmax's pick, the first index of the maximum. argmax is ~10x slower
        # than amax on CPU, so: the target is the maximum and no other logit reaches it; argmax
        # only where another one ties it
        top = (picked == m).squeeze(1)
        others = x.scatter(1, t, float("-inf")).amax(-1)
        g = top & (others < m.squeeze(1))
        tie = top & ~g
        if tie.any():
            g[tie] = x[tie].argmax(-1) == t[tie].squeeze(1)
        greedy[s:s + rows] = g
        lp[s:s + rows] = (picked - m).squeeze(1) - x.sub_(m).exp_().sum(-1).log()
    return lp, greedy


@register_model(BACKEND)
class PrefixSharingLM(HFLM):
    """HFLM whose log-likelihood requests share their context (see the module doc)."""

    _checked = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # HFLM keeps the tokenizer's vocab_size but normalizes over every row of the model's output
        # layer; so do these backends. They differ where the embedding is padded (Qwen2.5: 151,936
        # rows, 151,643 base tokens): log P must be hf's there too.
        self.vocab_size = PrefixSharingLM._layers(self)[1].weight.shape[0]  # before a subclass sets its state

    def _layers(self):
        """(the decoder stack returning hidden states, the output layer) of the causal LM."""
        model = self.model
        if hasattr(model, "get_base_model"):  # a PeftModel: LoRA layers live inside the base model
            model = model.get_base_model()
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if decoder is None or head is None or decoder is model:
            raise TypeError(f"{BACKEND}: {type(model).__name__} has no separate decoder and output layer")
        return decoder, head

    def _forward(self, packs: list[Pack]):
        """Per pack, per continuation: (log-probabilities of its tokens, greedy match)."""
        import torch

        length = max(len(p) for p in packs)
        pad_id = 0
        ids = torch.full((len(packs), length), pad_id, dtype=torch.long)
        pos = torch.zeros((len(packs), length), dtype=torch.long)
        for b, p in enumerate(packs):
            ids[b, : len(p)] = torch.tensor(p.tokens)
            pos[b, : len(p)] = torch.tensor(p.positions)
            pos[b, len(p):] = torch.arange(len(p), length)  # padding: any valid position
        decoder, head = self._layers()
        rows, cols, targets, owner = [], [], [], []
        for b, p in enumerate(packs):
            for k, (reads, cont) in enumerate(zip(p.reads, p.conts)):
                rows += [b] * len(cont)
                cols += reads
                targets += cont
                owner += [(b, k)] * len(cont)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            hidden = decoder(input_ids=ids.to(self.device), attention_mask=block_mask(packs, length).to(self.device),
                             position_ids=pos.to(self.device), use_cache=False).last_hidden_state
            read = hidden[torch.tensor(rows), torch.tensor(cols)]
            tok_lp, greedy = token_logprobs(head, read, torch.tensor(targets, device=read.device), self.vocab_size,
                                            self.softmax_dtype)
        picks: dict[tuple[int, int], list[int]] = {}
        for j, key in enumerate(owner):
            picks.setdefault(key, []).append(j)
        result = []
        for b, p in enumerate(packs):
            per = []
            for k in range(len(p.conts)):
                sel = torch.tensor(picks[(b, k)], device=tok_lp.device)
                # summed like hf (a tensor sum in the softmax dtype)
                per.append((float(tok_lp[sel].sum()), bool(greedy[sel].all())))
            result.append(per)
        return result

    def _self_check(self) -> None:
        """Packed scoring == the plain forward pass on a short synthetic request (once)."""
        import torch
        import torch.nn.functional as F

        ctx, conts = [5, 7, 11, 13, 17, 19], [[23, 29, 31], [37], [41, 43]]
        vocab = self.vocab_size
        ctx, conts = [t % vocab for t in ctx], [[t % vocab for t in c] for c in conts]
        got = self._forward([pack(ctx, conts, list(range(len(conts))))])[0]
        for cont, (lp, _) in zip(conts, got):
            inp = torch.tensor([ctx + cont[:-1]], device=self.device)
            with torch.no_grad():
                logits = self._model_call(inp)[0, len(ctx) - 1:, :vocab]
            ref = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype).gather(
                1, torch.tensor(cont, device=logits.device).unsqueeze(1)).sum()
            tol = 1e-3 if logits.dtype == torch.float32 else 0.25
            if not abs(float(ref) - lp) <= tol * max(1.0, abs(float(ref))):
                raise RuntimeError(f"{BACKEND}: packed scoring does not reproduce the model's plain forward pass "
                                   f"({lp} vs {float(ref)}); use the plain 'hf' backend for this model")
        self._checked = True

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        from tqdm.auto import tqdm

        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        if not self._checked:
            self._self_check()
        packs, plain = group_requests(requests, self.max_length)
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        if plain:
            log.warning("%s: %d requests too long to pack; scored the plain way", BACKEND, len(plain))
            for i, r in zip(plain, super()._loglikelihood_tokens([requests[i] for i in plain], True, override_bs)):
                res[i] = r
        packs.sort(key=lambda p: (-len(p), p.tokens))
        per_batch = int(override_bs or (self.batch_size if self.batch_size != "auto" else 32) or 32)
        bar = tqdm(total=len(requests) - len(plain), disable=disable_tqdm or self.rank != 0,
                   desc=f"Running loglikelihood requests ({BACKEND})")
        batch: list[Pack] = []
        n_req = 0
        for p in [*packs, None]:
            if p is not None and (not batch or n_req + len(p.requests) <= per_batch):
                batch.append(p)
                n_req += len(p.requests)
                continue
            for q, answers in zip(batch, self._forward(batch) if batch else []):
                for i, answer in zip(q.requests, answers):
                    res[i] = answer
                    req_str = requests[i][0]
                    if req_str is not None:
                        self.cache_hook.add_partial("loglikelihood", req_str, answer)
            bar.update(n_req)
            batch, n_req = ([p], len(p.requests)) if p is not None else ([], 0)
        bar.close()
        assert all(r is not None for r in res)
        return res
