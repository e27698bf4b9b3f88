"""Parameter tokenizer (method reference section 2.3): a PEFT LoRA state dict <-> a stack of
normalized parameter tokens, exactly invertible.

Token order: layers 0..L-1; within a layer q, k, v, o, up, gate, down (only the modules that
are present; modules outside this list follow them, alphabetically); A before B. For each
module, A is taken as stored (r x in) and B transposed (r x out); each is cut along its
columns into chunks of width w. One (r x w) chunk is one token.

Each chunk x is normalized by its own scalar mean and (unbiased) std, std = NaN -> 1, and a
border of two rows and two columns stores the scales:

    m' = 8 * mean,   s' = log(0.9 * std + 0.1) + 1.6

    token[:r, :w]      = (x - mean) / std         (0 where std == 0: the chunk is constant)
    token[r:r+2, j]    = m' for even j, s' for odd j   (bottom two rows: m', s', m', s', ...)
    token[:, w]        = m'                            (right two columns, written last,
    token[:, w+1]      = s'                             so they also fill the corner)

The inverse averages all copies of m' and of s', then mean = m'/8,
std = (exp(s' - 1.6) - 0.1) / 0.9 and x = token[:r, :w] * std + mean. Both directions work
on the whole adapter at once: the r x (sum of widths) matrix of all modules side by side is
viewed as (T, r, w), so there is no Python loop over tokens.

`decode_tokens` is `detokenize` for batches and inside autograd (function-space training
back-propagates through it); `tokenize_batch` is a differentiable `tokenize` for generators that
produce LoRA matrices (its variance floor keeps a constant chunk's gradient finite).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

#: Within-layer module order of the paper's tokenizer.
MODULE_ORDER: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")

#: Border encoding constants (method reference section 2.3).
MEAN_SCALE = 8.0
STD_SHIFT = 1.6

_KEY_RE = re.compile(r"^(?P<prefix>.*\.layers\.(?P<layer>\d+)\..*?(?P<module>[^.]+))\.lora_(?P<ab>[AB])\.weight$")


def _sort_key(key: str) -> tuple[int, int, str, int]:
    """(layer, module rank, module path, 0 for A / 1 for B) for a PEFT LoRA weight key."""
    m = _KEY_RE.match(key)
    if m is None:
        raise ValueError(
            f"not a per-layer LoRA weight key: {key!r} (expected '...layers.<i>.<...>.<module>.lora_A|B.weight')"
        )
    module = m["module"]
    rank = MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)
    return int(m["layer"]), rank, m["prefix"], 0 if m["ab"] == "A" else 1


@dataclass(frozen=True)
class LoraLayout:
    """Where every LoRA matrix goes in the token stack.

    Attributes:
        rank: LoRA rank r.
        chunk_width: token width w.
        keys: PEFT state-dict keys in token order.
        shapes: stored (PEFT) shape of each key: (r, in) for lora_A, (out, r) for lora_B.
    """

    rank: int
    chunk_width: int
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], chunk_width: int) -> "LoraLayout":
        """Layout of a PEFT LoRA state dict (keys as saved on disk).

        Raises ValueError when a key is not a per-layer lora_A/lora_B weight, a module lacks
        its A or B, the ranks disagree, or `chunk_width` does not divide every in/out dim.
        """
        if chunk_width < 1:
            raise ValueError(f"chunk width must be positive, got {chunk_width}")
        if not state_dict:
            raise ValueError("empty LoRA state dict")
        keys = sorted(state_dict, key=_sort_key)
        prefixes = [_sort_key(k)[2] for k in keys]
        for p in set(prefixes):
            if prefixes.count(p) != 2:
                raise ValueError(f"LoRA module {p!r} needs exactly one lora_A and one lora_B weight")
        shapes = tuple(tuple(int(s) for s in state_dict[k].shape) for k in keys)
        if any(len(s) != 2 for s in shapes):
            raise ValueError("LoRA matrices must be 2-D")
        ranks = {s[1] if _is_b(k) else s[0] for k, s in zip(keys, shapes)}
        if len(ranks) != 1:
            raise ValueError(f"LoRA matrices must share one rank; found ranks {sorted(ranks)}")
        layout = cls(rank=ranks.pop(), chunk_width=chunk_width, keys=tuple(keys), shapes=shapes)
        bad = sorted({c for c in layout.widths if c % chunk_width})
        if bad:
            raise ValueError(
                f"chunk width {chunk_width} does not divide the LoRA dimension(s) {bad}; "
                f"choose a w that divides every in/out dimension"
            )
        return layout

    @property
    def widths(self) -> tuple[int, ...]:
        """Column count of each matrix in token space: `in` for A, `out` for B."""
        return tuple(s[0] if _is_b(k) else s[1] for k, s in zip(self.keys, self.shapes))

    @property
    def n_tokens(self) -> int:
        """T: number of tokens."""
        return sum(self.widths) // self.chunk_width

    @property
    def token_shape(self) -> tuple[int, int]:
        """(r + 2, w + 2)."""
        return self.rank + 2, self.chunk_width + 2

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-/torch.save-safe form (stored in zoo tokens and generator checkpoints)."""
        return {
            "rank": self.rank,
            "chunk_width": self.chunk_width,
            "entries": [[k, list(s)] for k, s in zip(self.keys, self.shapes)],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LoraLayout":
        """Inverse of `to_dict`."""
        return cls(
            rank=int(d["rank"]),
            chunk_width=int(d["chunk_width"]),
            keys=tuple(k for k, _ in d["entries"]),
            shapes=tuple((int(s[0]), int(s[1])) for _, s in d["entries"]),
        )


def _is_b(key: str) -> bool:
    return key.endswith(".lora_B.weight")


def _border_copies(t: Tensor, r: int, w: int) -> tuple[Tensor, Tensor]:
    """All copies of m' and of s' in tokens t (..., T, r+2, w+2): two (..., T, n_copies) tensors."""
    m = torch.cat([t[..., r:, 0:w:2].flatten(-2), t[..., :, w]], dim=-1)
    s = torch.cat([t[..., r:, 1:w:2].flatten(-2), t[..., :, w + 1]], dim=-1)
    return m, s


def _chunks(matrices: list[Tensor], layout: LoraLayout) -> Tensor:
    """The layout's matrices (each (..., *shape), in layout order) as chunks (..., T, r, w)."""
    r, w = layout.rank, layout.chunk_width
    chunks = []
    for key, t in zip(layout.keys, matrices):
        lead = t.shape[:-2]
        if _is_b(key):  # (out, r) -> B^T cut into (out/w, r, w)
            chunks.append(t.reshape(*lead, -1, w, r).transpose(-1, -2))
        else:  # (r, in) -> (in/w, r, w)
            chunks.append(t.reshape(*lead, r, -1, w).transpose(-3, -2))
    return torch.cat(chunks, dim=-3)


def _write_border(tokens: Tensor, m_enc: Tensor, s_enc: Tensor) -> Tensor:
    """Fill the border of tokens (..., T, r+2, w+2) in place with the encoded scales m', s'
    (..., T, 1, 1) (the layout of the module doc); returns `tokens`."""
    r, w = tokens.shape[-2] - 2, tokens.shape[-1] - 2
    tokens[..., r:, 0:w:2] = m_enc
    tokens[..., r:, 1:w:2] = s_enc
    tokens[..., :, w] = m_enc.squeeze(-1)  # right columns last: they own the corner
    tokens[..., :, w + 1] = s_enc.squeeze(-1)
    return tokens


def _assemble(x: Tensor, mean: Tensor, std: Tensor, inv_std: Tensor) -> Tensor:
    """Tokens (..., T, r+2, w+2) of chunks x (..., T, r, w) with their (..., T, 1, 1) scales."""
    r, w = x.shape[-2:]
    m_enc = mean * MEAN_SCALE
    s_enc = torch.log(0.9 * std + 0.1) + STD_SHIFT
    tokens = torch.empty(*x.shape[:-2], r + 2, w + 2, dtype=torch.float32)
    tokens[..., :r, :w] = torch.addcmul(-mean * inv_std, x, inv_std)
    return _write_border(tokens, m_enc, s_enc)


def split_border(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Tokens (..., T, r+2, w+2) -> (body (..., T, r, w), m' (..., T), s' (..., T)): the body and the
    mean of each token's copies of m' and of s', which is all that `decode_tokens` reads of a token
    (it averages the copies), so `join_border(*split_border(t))` decodes to what `t` decodes to, and
    so does any convex mix of such tokens (the average of copies is linear). A compact store of
    tokens (dnd.release): r*w + 2 numbers per token instead of (r+2)*(w+2)."""
    r, w = tokens.shape[-2] - 2, tokens.shape[-1] - 2
    m_copies, s_copies = _border_copies(tokens, r, w)
    return tokens[..., :r, :w], m_copies.mean(dim=-1), s_copies.mean(dim=-1)


def join_border(body: Tensor, m_enc: Tensor, s_enc: Tensor) -> Tensor:
    """Inverse of `split_border`: float32 tokens (..., T, r+2, w+2) whose copies of m' and s' all
    hold the given values."""
    r, w = body.shape[-2:]
    tokens = torch.empty(*body.shape[:-2], r + 2, w + 2, dtype=torch.float32)
    tokens[..., :r, :w] = body
    return _write_border(tokens, m_enc.float()[..., None, None], s_enc.float()[..., None, None])


def tokenize(state_dict: Mapping[str, Tensor], layout: LoraLayout) -> Tensor:
    """LoRA state dict -> tokens of shape (T, r+2, w+2), float32."""
    missing = [k for k in layout.keys if k not in state_dict]
    if missing or len(state_dict) != len(layout.keys):
        raise ValueError(f"state dict does not match the layout (missing {missing[:3]}, {len(state_dict)} keys)")
    matrices = []
    for key, shape in zip(layout.keys, layout.shapes):
        t = state_dict[key].detach().to(torch.float32)
        if tuple(t.shape) != shape:
            raise ValueError(f"{key}: shape {tuple(t.shape)} != layout shape {shape}")
        matrices.append(t)
    x = _chunks(matrices, layout)  # (T, r, w)
    std, mean = torch.std_mean(x, dim=(1, 2), keepdim=True)  # (T, 1, 1) each
    std = torch.where(torch.isnan(std), torch.ones_like(std), std)
    inv_std = 1.0 / torch.where(std > 0, std, torch.ones_like(std))  # constant chunk -> body 0
    return _assemble(x, mean, std, inv_std)


#: Variance floor of `tokenize_batch` (a constant chunk keeps a finite gradient).
VAR_FLOOR = 1e-12


def tokenize_batch(matrices: Mapping[str, Tensor], layout: LoraLayout) -> Tensor:
    """Differentiable `tokenize` of a batch of LoRAs: {key: (B, *shape)} -> tokens (B, T, r+2, w+2).

    The same encoding, except that a chunk's variance is floored at VAR_FLOOR (std >= 1e-6), so a
    constant chunk (a zero-initialized B, say) has a finite gradient; `detokenize` inverts it up to
    float rounding. Used by generators that produce LoRA matrices (dnd.method.t2l).
    """
    r, w = layout.rank, layout.chunk_width
    for key, shape in zip(layout.keys, layout.shapes):
        if key not in matrices or tuple(matrices[key].shape[1:]) != shape:
            got = tuple(matrices[key].shape) if key in matrices else None
            raise ValueError(f"{key}: batched shape {got} != (B, *{shape})")
    x = _chunks([matrices[k].to(torch.float32) for k in layout.keys], layout)  # (B, T, r, w)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, correction=1 if r * w > 1 else 0)
    std = var.clamp_min(VAR_FLOOR).sqrt()
    return _assemble(x, mean, std, 1.0 / std)


def decode_tokens(tokens: Tensor, layout: LoraLayout) -> dict[str, Tensor]:
    """Differentiable `detokenize` of tokens (..., T, r+2, w+2) (any leading batch dims):
    {key: (..., *shape)} float32, in the graph of `tokens` (function-space training
    back-propagates through it). `detokenize` is this on detached tokens, unbatched."""
    r, w = layout.rank, layout.chunk_width
    expected = (layout.n_tokens, r + 2, w + 2)
    if tuple(tokens.shape[-3:]) != expected:
        raise ValueError(f"tokens have shape {tuple(tokens.shape)}, layout expects (..., *{expected})")
    t = tokens.to(torch.float32)
    lead = t.shape[:-3]
    m_copies, s_copies = _border_copies(t, r, w)
    mean = m_copies.mean(dim=-1) / MEAN_SCALE  # (..., T)
    std = (torch.exp(s_copies.mean(dim=-1) - STD_SHIFT) - 0.1) / 0.9
    x = torch.addcmul(mean[..., None, None], t[..., :r, :w], std[..., None, None])  # (..., T, r, w)
    out: dict[str, Tensor] = {}
    for key, shape, block in zip(layout.keys, layout.shapes, torch.split(x, [c // w for c in layout.widths], dim=-3)):
        if _is_b(key):  # (n, r, w) -> (n, w, r) -> (out, r)
            out[key] = block.transpose(-1, -2).reshape(*lead, *shape)
        else:  # (n, r, w) -> (r, n, w) -> (r, in)
            out[key] = block.transpose(-3, -2).reshape(*lead, *shape)
    return out


def detokenize(tokens: Tensor, layout: LoraLayout) -> dict[str, Tensor]:
    """Tokens (T, r+2, w+2) -> PEFT LoRA state dict (keys and shapes of the layout), float32.

    Border copies are averaged, so tokens produced by a generator (whose copies disagree)
    decode too.
    """
    r, w = layout.rank, layout.chunk_width
    expected = (layout.n_tokens, r + 2, w + 2)
    if tuple(tokens.shape) != expected:
        raise ValueError(f"tokens have shape {tuple(tokens.shape)}, layout expects {expected}")
    return {k: v.contiguous() for k, v in decode_tokens(tokens.detach(), layout).items()}
