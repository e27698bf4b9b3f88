"""`dnd verify-cache`: recompute a sample of score cache entries and fail on any difference.

A score cache is keyed by what determines a score (dnd.scoring.cache.ScoreCache), not by the
code's files, so a change of the scoring code that changes scores without a bump of
dnd.scoring.SCORER_VERSION would leave wrong cached scores behind. This check loads a sample of
entries' adapters again (from the `source` stored with each entry), recomputes its key from the
`recipe` stored with it (the base model, task, LoRA config and settings it was scored with) and
scores it again with the current code: every item's correctness and log-likelihoods must be the
same. An entry whose inputs changed since (its key no longer recomputes) is stale, not checked;
so is one without a recipe (protocol, math and code results).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from .scoring.cache import cache_entries, unseal

log = logging.getLogger(__name__)


def sample_entries(dirs: list[Path], n: int, seed: int) -> list[tuple[Path, dict[str, Any]]]:
    """Up to `n` entries (path, parsed JSON) of the caches in `dirs`, drawn with `seed`."""

    paths = [p for d in dirs for p in cache_entries(d)]
    random.Random(seed).shuffle(paths)
    return [(p, json.loads(p.read_text())) for p in paths[: max(n, 0)]]


def differences(cached: Any, fresh: Any) -> list[str]:
    """What differs between a cached Scored and a fresh one (empty: the same)."""
    out = []
    for name in ("ids", "correct", "gold", "choice_chars", "loglikelihoods", "acc"):
        a, b = getattr(cached, name), getattr(fresh, name)
        if json.loads(json.dumps(a)) != json.loads(json.dumps(b)):
            out.append(name)
    return out


def verify(dirs: list[Path], n: int, seed: int = 0, device: Any = "cpu") -> dict[str, int]:
    """Recompute a sample of `n` entries; counts of same / stale / unverifiable; RuntimeError naming
    every entry that differs."""
    from dnd import evaluate as ev

    counts = {"same": 0, "stale": 0, "unverifiable": 0}
    failures: list[str] = []
    scorers: dict[str, Any] = {}
    for path, obj in sample_entries(dirs, n, seed):
        recipe = obj.get("recipe") if isinstance(obj, dict) else None
        if not recipe or recipe.get("scorer") != "evaluate":
            counts["unverifiable"] += 1
            log.info("%s: no recipe (not a dnd evaluate entry): not verifiable", path)
            continue
        try:
            unseal(obj, path.stem)
        except ValueError as exc:
            failures.append(f"{path}: {exc}")
            continue
        settings = recipe["evaluation"]
        model_dir, tasks_dir = Path(recipe["model"]), Path(recipe["tasks_dir"])
        task_yaml = tasks_dir / f"{recipe['task']}.yaml"
        lora_dir = Path(recipe["lora_config_dir"])
        try:
            cache = ev.open_score_cache(path.parent, model_dir, task_yaml, ev.task_data_file(task_yaml),
                                        ev.read_adapter_config(lora_dir), settings, recipe, device)
            source = obj.get("source")
            sd = None if source is None else ev.AdapterLoader(source)()
        except (OSError, ValueError, KeyError) as exc:
            counts["stale"] += 1
            log.warning("%s: its inputs are gone (%s): stale, not checked", path, exc)
            continue
        if cache.key(sd) != obj["key"]:
            counts["stale"] += 1
            log.warning("%s: its inputs changed since (the key no longer recomputes): stale, not checked", path)
            continue
        cached = cache.get(obj["key"])
        if cached is None:
            failures.append(f"{path}: not a trusted entry")
            continue
        rkey = json.dumps(recipe, sort_keys=True)
        if rkey not in scorers:
            limit = None if settings["limit"] is None else int(settings["limit"])
            scorers[rkey] = ev.InPlaceScorer(model_dir, lora_dir, tasks_dir, recipe["task"], limit=limit,
                                             batch_size=int(settings["batch_size"]), dtype=settings["dtype"],
                                             metric=settings["metric"], backend=settings["backend"], device=device)
        fresh = scorers[rkey].score(sd, where=str(path))
        diff = differences(cached, fresh)
        if diff:
            failures.append(f"{path}: {', '.join(diff)} differ (scored again: acc {fresh.acc}, cached {cached.acc})")
        else:
            counts["same"] += 1
            log.info("%s: the same when scored again (acc %.4f)", path, fresh.acc)
    if failures:
        raise RuntimeError(f"{len(failures)} cache entries differ from a fresh score (bump "
                           f"dnd.scoring.SCORER_VERSION?): " + "; ".join(failures))
    return counts


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", required=True, type=Path, nargs="+", action="extend",
                   help="score cache directories (results/eval_cache/<target>); several: sampled together")
    p.add_argument("--sample", type=int, default=5, help="entries to recompute (default 5)")
    p.add_argument("--seed", type=int, default=0, help="which entries: the seed of the draw")


def _run(args: argparse.Namespace) -> None:
    counts = verify(args.cache_dir, args.sample, args.seed, args.device)
    log.info("verify-cache: %d the same, %d stale, %d not verifiable", counts["same"], counts["stale"],
             counts["unverifiable"])
    if counts["same"] == 0 and args.sample > 0:
        raise RuntimeError("no entry could be checked (stale or not verifiable): nothing verified")


COMMANDS = {"verify-cache": (_add, _run)}
