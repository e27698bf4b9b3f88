"""Per-item scores of one adapter (`Scored`), and the content-addressed cache that keeps them.

A score comes from lm-eval's logged samples (`samples_to_scored`). An adapter whose
log-likelihoods are NaN/inf is a `NonFiniteScoreError` naming it, never a score (lm-eval would
pick choice 0), and never cached. `ScoreCache` keeps scored adapters by the content of
everything that determines their results, so a rerun (e.g. after a generator change) scores
only what changed; `dnd.evaluate.open_score_cache` says what that is for one target.

A cached entry is checked before it is used, never trusted as written: it carries a content hash
(`entry_hash`: sha256 of everything else in the entry, so an edit of any field is caught) and its
per-item `correct` and `acc` are recomputed from its log-likelihoods, gold indices and choice
lengths under the cache's metric (`recompute_correct`: lm-eval's acc / acc_norm). An entry that
fails either check (or has no hash: an older format) is discarded with a warning naming it, and
the adapter is scored again. The hash guards against edits and corruption, not against someone
who recomputes it. `entry_hash` also seals dnd.experiments.protocol.score.ResultCache's entries (protocol, math and
code results, which keep no log-likelihoods to recompute from).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dnd.io import write_json

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


METRICS = ("acc", "acc_norm")  # lm-eval's per-item multiple-choice metrics (evaluation.metric)
HASH_FIELD = "sha256"  # the entry's content hash (`entry_hash`)


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of a cache entry's content: every field but HASH_FIELD, as canonical JSON (sorted
    keys; floats as Python writes them, which reads back exactly), of the entry as it reads back
    from JSON (tuples as lists, keys as strings): the same before writing and after reading."""
    body = json.loads(json.dumps({k: v for k, v in entry.items() if k != HASH_FIELD}))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its content hash (HASH_FIELD) added."""
    return {**entry, HASH_FIELD: entry_hash(entry)}


def unseal(obj: Any, key: str) -> dict[str, Any]:
    """A cache entry read from JSON, checked: a dict for `key` whose content hash matches
    (ValueError saying why not: no hash, e.g. an older format; an edited or corrupt entry; another key)."""
    if not isinstance(obj, dict):
        raise ValueError("not a cache entry")
    if obj.get("key") != key:
        raise ValueError(f"holds key {obj.get('key')!r}, not its own")
    if HASH_FIELD not in obj:
        raise ValueError("has no content hash (an older format?)")
    if obj[HASH_FIELD] != entry_hash(obj):
        raise ValueError("content hash mismatch (edited or corrupt)")
    return obj


def recompute_correct(s: "Scored", metric: str) -> list[int]:
    """Per-item correctness as lm-eval computes it from the log-likelihoods: 1 where the gold
    choice has the highest log-likelihood (acc) or the highest per character of the choice
    (acc_norm), first choice on ties (np.argmax). ValueError if the item fields disagree in
    length or a gold index is out of range."""
    import numpy as np

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {METRICS})")
    n = len(s.ids)
    if not (len(s.correct) == len(s.loglikelihoods) == len(s.gold) == len(s.choice_chars) == n):
        raise ValueError(f"{n} ids but {len(s.correct)} correct, {len(s.loglikelihoods)} log-likelihoods, "
                         f"{len(s.gold)} gold, {len(s.choice_chars)} choice lengths")
    out = []
    for i, (ll, g, ch) in enumerate(zip(s.loglikelihoods, s.gold, s.choice_chars)):
        if len(ll) != len(ch) or not 0 <= int(g) < len(ll):
            raise ValueError(f"item {i}: {len(ll)} log-likelihoods, {len(ch)} choice lengths, gold {g}")
        lls = np.asarray(ll, dtype=np.float64)
        pred = np.argmax(lls / np.asarray(ch, dtype=np.float64)) if metric == "acc_norm" else np.argmax(lls)
        out.append(int(pred == int(g)))
    return out


def verify_scored(s: "Scored", metric: str) -> None:
    """ValueError unless `s` is what its log-likelihoods give: finite, `correct` equal to
    `recompute_correct` and `acc` their mean."""
    require_finite(s, "entry")
    want = recompute_correct(s, metric)
    if list(s.correct) != want:
        bad = [i for i, (a, b) in enumerate(zip(s.correct, want)) if a != b]
        raise ValueError(f"`correct` disagrees with its log-likelihoods under {metric} on {len(bad)} of {len(want)} "
                         f"items (first: item {bad[0]})")
    if not want or s.acc != sum(want) / len(want):
        raise ValueError(f"acc {s.acc} is not the mean of its {len(want)} correct values")


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
    # acc_norm's lengths: the task's choices (doc_to_choice is the doc's `choices`, dnd.formats.prompts)
    chars = [[len(str(c)) for c in s["doc"]["choices"]] for s in samples]
    for s, ll_i, g in zip(samples, ll, gold):
        if not 0 <= g < len(ll_i) or len(s["doc"]["choices"]) != len(ll_i):
            raise RuntimeError(f"item {s['doc'].get('id')}: gold index {g} or choices do not match its {len(ll_i)} "
                               "log-likelihoods")
    return Scored(ids=ids, correct=correct, acc=acc, seconds=seconds, loglikelihoods=ll, gold=gold,
                  choice_chars=chars)


class ScoreCache:
    """Scored adapters addressed by content.

    Key = sha256 over a context (the names and bytes of the input `files`: the base model's files
    and the scored items, never the scoring code; then `context` as sorted JSON: what the caller
    says determines a score besides the adapter, `metric` and dnd.scoring.SCORER_VERSION) and the
    adapter's tensors (names, dtypes, shapes, bytes; "base" for the base model). An optional
    `recipe` (how to score again: JSON, not part of the key) and each entry's adapter `source`
    are stored with the entries so that `dnd verify-cache` can recompute them. One JSON file per key in
    `directory`, written atomically and sealed with its content hash (`seal`). `get` checks an
    entry before returning it (`unseal`, `verify_scored` under `metric`): a corrupt, foreign,
    edited, unhashed or non-finite entry, or one whose `correct` its log-likelihoods do not give,
    is a miss with a warning naming it (the adapter is scored again and the entry rewritten). A
    result that does not verify is never stored."""

    # 2: gold index and choice lengths per item; 3: content hash, metric; 4: keyed by the scorer
    # version instead of the scoring modules' names and bytes, recipe and source stored
    FORMAT = "dnd-score-cache-4"

    def __init__(self, directory: Path, files: list[Path], context: dict[str, Any], metric: str = "acc",
                 recipe: dict[str, Any] | None = None):
        from . import SCORER_VERSION

        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (one of {METRICS})")
        self.directory = Path(directory)
        self.metric = metric
        self.recipe = recipe
        h = hashlib.sha256()
        for f in files:
            h.update(Path(f).name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        h.update(json.dumps({"format": self.FORMAT, "scorer_version": SCORER_VERSION, "metric": metric, **context},
                            sort_keys=True,
                            default=str).encode())
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
        """The verified entry of `key`, or None (absent; or untrusted: warned about by name)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            obj = unseal(json.loads(path.read_text()), key)
            if obj.get("metric") != self.metric:
                raise ValueError(f"scored under {obj.get('metric')!r}, not {self.metric!r}")
            s = Scored(ids=obj["ids"], correct=obj["correct"], acc=obj["acc"], seconds=0.0,
                       loglikelihoods=obj["loglikelihoods"], gold=obj["gold"], choice_chars=obj["choice_chars"])
            verify_scored(s, self.metric)
            return s
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # NonFiniteScoreError included
            log.warning("score cache entry %s not trusted (%s): discarded, the adapter is scored again", path, exc)
            return None

    def put(self, key: str, s: Scored, source: Any = None) -> None:
        """Store `s` under `key`, sealed, with the cache's recipe and the adapter's `source` (what
        `dnd verify-cache` loads again); a non-finite result is refused (NonFiniteScoreError), and
        one whose `correct` its log-likelihoods do not give is not stored (a warning)."""

        require_finite(s, f"score cache entry {key}")
        try:
            verify_scored(s, self.metric)
        except ValueError as exc:
            log.warning("score cache entry %s not stored: %s", self._path(key), exc)
            return
        write_json(self._path(key), seal({"key": key, "metric": self.metric, "ids": s.ids, "correct": s.correct,
                                          "acc": s.acc, "loglikelihoods": s.loglikelihoods, "gold": s.gold,
                                          "choice_chars": s.choice_chars, "seconds": round(s.seconds, 3),
                                          "recipe": self.recipe, "source": source}))


def content_context(model_dir: Path, tasks: dict[str, tuple[dict[str, Any], Path]], lora_shape: dict[str, Any],
                    settings: dict[str, Any], device: Any = "cpu", **extra: Any) -> tuple[list[Path], dict[str, Any]]:
    """(files, context) of a cache key, the one builder every scorer uses: the base model's files
    and each task's test file (their names and bytes), each task's config without its test file's
    path (`tasks`: name -> (config, test file); the same key wherever the repository lives), the
    LoRA shape, the scoring settings, the torch thread count, the device where it is not the CPU
    (dnd.device.recorded: the CPU keys stay those every committed score was stored under), the
    versions of torch/transformers/peft/lm-eval, and `extra` (what else a scorer's results depend on)."""

    import torch

    from dnd.device import recorded

    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    configs = {}
    for name, (cfg, test_file) in tasks.items():
        cfg = copy.deepcopy(cfg)
        del cfg["dataset_kwargs"]["data_files"]["test"]  # its content is hashed (files)
        configs[name] = cfg
        files.append(Path(test_file))
    context = {"tasks": configs, "lora": lora_shape, "settings": settings, "threads": torch.get_num_threads(),
               "versions": {m: version(m) for m in ("torch", "transformers", "peft", "lm_eval")}, **recorded(device),
               **extra}
    return files, context


def cache_entries(directory: Path) -> list[Path]:
    """The entry files of a cache directory, sorted."""
    return sorted(Path(directory).glob("*.json"))
