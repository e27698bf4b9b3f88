"""Per-item scores of one adapter (`Scored`), and the content-addressed cache that keeps them.

A score comes from lm-eval's logged samples (`samples_to_scored`). An adapter whose
log-likelihoods are NaN/inf is a `NonFiniteScoreError` naming it, never a score (lm-eval would
pick choice 0), and never cached. `ScoreCache` keeps scored adapters by the content of
everything that determines their results, so a rerun (e.g. after a generator change) scores
only what changed; `dnd.evaluate.open_score_cache` says what that is for one target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Per-item results of one adapter on one target, in doc order: correctness under the
    metric, every choice's summed log-likelihood, the gold choice and each choice's length in
    characters (what lm-eval's acc_norm divides by)."""

    ids: list[str]
    correct: list[int]
    acc: float
    seconds: float
    loglikelihoods: list[list[float]] = field(default_factory=list, repr=False)
    gold: list[int] = field(default_factory=list, repr=False)
    choice_chars: list[list[int]] = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return len(self.ids)

    def gold_logprob(self) -> list[float]:
        """log P(gold answer | context), summed over its tokens, per item."""
        return [ll[g] for ll, g in zip(self.loglikelihoods, self.gold, strict=True)]

    def gold_logprob_norm(self) -> list[float]:
        """The gold answer's log-probability per character (acc_norm's normalization), per item."""
        return [ll[g] / max(ch[g], 1) for ll, g, ch in zip(self.loglikelihoods, self.gold, self.choice_chars,
                                                            strict=True)]

    def margin(self) -> list[float]:
        """Gold log-probability minus the best wrong answer's, per item (> 0: gold is chosen by acc)."""
        return [ll[g] - max(x for j, x in enumerate(ll) if j != g) for ll, g in zip(self.loglikelihoods, self.gold,
                                                                                 strict=True)]

    @property
    def n_non_finite(self) -> int:
        """Items with a NaN/inf log-likelihood (a broken adapter: lm-eval would then pick choice 0)."""
        return sum(1 for ll in self.loglikelihoods if not all(math.isfinite(x) for x in ll))


class NonFiniteScoreError(ValueError):
    """An adapter whose log-likelihoods are NaN/inf: an error, never a score."""


def require_finite(s: Scored, where: str) -> Scored:
    """`s`, unless one of its log-likelihoods is NaN/inf: NonFiniteScoreError naming `where`."""
    if s.n_non_finite:
        raise NonFiniteScoreError(
            f"{where}: non-finite (NaN/inf) log-likelihoods on {s.n_non_finite} of {s.n} items; the adapter's "
            "weights are broken (NaN/inf?), so it has no score"
        )
    return s


def samples_to_scored(res: dict, task: str, metric: str, seconds: float = 0.0) -> Scored:
    """Per-item correctness from lm-eval's logged samples, ordered by doc_id; checked against
    the aggregate lm-eval reports."""
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    ids = [str(s["doc"]["id"]) for s in samples]
    correct = [int(round(float(s[metric]))) for s in samples]
    acc = sum(correct) / len(correct)
    agg = res["results"][task][f"{metric},none"]
    if abs(acc - agg) > 1e-9:
        raise RuntimeError(f"per-item {metric} mean {acc} != lm-eval's {agg}")
    ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    gold = [int(s["target"]) for s in samples]
    # acc_norm's lengths: the task's choices (doc_to_choice is the doc's `choices`, dnd.prompts)
    chars = [[len(str(c)) for c in s["doc"]["choices"]] for s in samples]
    for s, ll_i, g in zip(samples, ll, gold):
        if not 0 <= g < len(ll_i) or len(s["doc"]["choices"]) != len(ll_i):
            raise RuntimeError(f"item {s['doc'].get('id')}: gold index {g} or choices do not match its {len(ll_i)} "
                               "log-likelihoods")
    return Scored(ids=ids, correct=correct, acc=acc, seconds=seconds, loglikelihoods=ll, gold=gold,
                  choice_chars=chars)


class ScoreCache:
    """Scored adapters addressed by content.

    Key = sha256 over a context (the names and bytes of `files`, then `context` as sorted JSON:
    what the caller says determines a score besides the adapter) and the adapter's tensors
    (names, dtypes, shapes, bytes; "base" for the base model). One JSON file per key in
    `directory`, written atomically; a corrupt or foreign file, or one holding a non-finite
    log-likelihood, is a miss, and a non-finite result is never stored."""

    FORMAT = "dnd-score-cache-2"  # 2: gold index and choice lengths per item

    def __init__(self, directory: Path, files: list[Path], context: dict[str, Any]):
        self.directory = Path(directory)
        h = hashlib.sha256()
        for f in files:
            h.update(Path(f).name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        h.update(json.dumps({"format": self.FORMAT, **context}, sort_keys=True, default=str).encode())
        self.context = h.hexdigest()

    def key(self, sd: dict | None) -> str:
        import torch

        h = hashlib.sha256(self.context.encode())
        if sd is None:
            h.update(b"base")
        for name in sorted(sd or {}):
            t = sd[name].contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Scored | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            obj = json.loads(path.read_text())
            if obj.get("key") != key:
                return None
            s = Scored(ids=obj["ids"], correct=obj["correct"], acc=obj["acc"], seconds=0.0,
                       loglikelihoods=obj["loglikelihoods"], gold=obj["gold"], choice_chars=obj["choice_chars"])
            return require_finite(s, str(path))
        except (ValueError, KeyError, TypeError):  # NonFiniteScoreError included
            log.warning("ignoring unreadable or non-finite score cache entry %s", path)
            return None

    def put(self, key: str, s: Scored) -> None:
        """Store `s` under `key`; a non-finite result is refused (NonFiniteScoreError)."""
        from .io import write_json

        require_finite(s, f"score cache entry {key}")
        write_json(self._path(key), {"key": key, "ids": s.ids, "correct": s.correct, "acc": s.acc,
                                     "loglikelihoods": s.loglikelihoods, "gold": s.gold,
                                     "choice_chars": s.choice_chars, "seconds": round(s.seconds, 3)})
