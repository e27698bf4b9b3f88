"""The score-or-cache loop every scorer runs: each adapter's result from the cache when it holds
it, else scored (the model is loaded the first time one is missing, never when all are cached)."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

# (method, adapter, where, loader): `where` names the adapter in messages; `loader()` gives its
# state dict (None: the base model). dnd.evaluate.scoring_jobs builds them.
Job = tuple[str, str, str, Any]


def score_or_cache(label: str, jobs: Iterable[Job], new_scorer: Callable[[], Any], cache: Any,
                   score: Callable[[Any, Any, str], Any] | None = None,
                   describe: Callable[[Any], str] | None = None) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """Run `jobs` through `cache` (None: score everything): a hit is used as it is, a miss is
    scored by `score(scorer, sd, where)` (default `scorer.score(sd, where)`) with the scorer
    `new_scorer()` builds once, and stored with the adapter's source. Returns ({(method, adapter):
    result}, {"fresh": [(method, adapter) scored now], "cached": n, "load_s": model loading time}).
    `describe(result)` adds to each adapter's log line."""
    from tqdm.auto import tqdm

    results: dict[tuple[str, str], Any] = {}
    stats: dict[str, Any] = {"fresh": [], "cached": 0, "load_s": 0.0}
    scorer = None
    bar = tqdm(list(jobs), desc=label, unit="adapter")
    for method, adapter, where, loader in bar:
        sd = None if loader is None else loader()
        key = cache.key(sd) if cache is not None else ""
        got = cache.get(key) if cache is not None else None
        if got is None:
            if scorer is None:
                t = time.perf_counter()
                scorer = new_scorer()
                stats["load_s"] += time.perf_counter() - t
            got = scorer.score(sd, where) if score is None else score(scorer, sd, where)
            if cache is not None:
                cache.put(key, got, source=loader.source() if hasattr(loader, "source") else None)
            stats["fresh"].append((method, adapter))
            log.info("%s %-22s %s", label, f"{method}/{adapter}", describe(got) if describe else "scored")
        else:
            stats["cached"] += 1
            log.info("%s %-22s %s (cached)", label, f"{method}/{adapter}", describe(got) if describe else "")
        results[(method, adapter)] = got
    return results, stats
