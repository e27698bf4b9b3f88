"""dnd.scoring.cache: a cached score is checked against what it was computed from before it is
used (content hash; `correct` and `acc` recomputed from the log-likelihoods under the metric),
and dnd.experiments.protocol.score.ResultCache's entries (protocol, math, code) by their content hash. No model:
the scored adapters are written by hand (tests/test_evaluate.py runs the cache with lm-eval)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dnd.experiments.protocol.score import ResultCache
from dnd.scoring import cache as sc

# three items, three choices; item 1's gold wins by log-likelihood but not per character (acc_norm)
LL = [[-1.0, -3.0, -2.5], [-4.0, -6.0, -5.0], [-2.0, -1.5, -3.0]]
GOLD = [0, 0, 2]
CHARS = [[4, 4, 4], [2, 12, 10], [5, 5, 5]]
CORRECT = {"acc": [1, 1, 0], "acc_norm": [1, 0, 0]}


def _scored(metric: str = "acc") -> sc.Scored:
    c = CORRECT[metric]
    return sc.Scored(ids=["a", "b", "c"], correct=list(c), acc=sum(c) / len(c), seconds=1.5,
                     loglikelihoods=[list(x) for x in LL], gold=list(GOLD), choice_chars=[list(x) for x in CHARS])


def _cache(tmp_path: Path, metric: str = "acc", name: str = "cache") -> sc.ScoreCache:
    src = tmp_path / "scorer.py"
    src.write_text("# the scoring code\n")
    return sc.ScoreCache(tmp_path / name, [src], {"settings": {"limit": None}}, metric=metric)


def _edit(path: Path, change, reseal: bool = False) -> None:
    """Edit a cache entry in place; `reseal`: recompute its content hash too (an edit that knows the hash)."""
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(sc.seal(obj) if reseal else obj))


def _same(a: sc.Scored, b: sc.Scored) -> bool:
    return (a.ids, a.correct, a.acc, a.loglikelihoods, a.gold, a.choice_chars) == \
        (b.ids, b.correct, b.acc, b.loglikelihoods, b.gold, b.choice_chars)


@pytest.mark.parametrize("metric", sc.METRICS)
def test_recompute_correct_is_the_metric(metric):
    assert sc.recompute_correct(_scored(metric), metric) == CORRECT[metric]
    tie = sc.Scored(ids=["t"], correct=[1], acc=1.0, seconds=0, loglikelihoods=[[-1.0, -1.0]], gold=[0],
                    choice_chars=[[2, 2]])
    assert sc.recompute_correct(tie, metric) == [1]  # np.argmax, as lm-eval: the first of tied choices


@pytest.mark.parametrize("metric", sc.METRICS)
def test_an_untouched_entry_round_trips(tmp_path, metric, caplog):
    cache = _cache(tmp_path, metric)
    cache.put("k", _scored(metric))
    got = cache.get("k")
    assert got is not None and _same(got, _scored(metric)) and "not trusted" not in caplog.text
    entry = json.loads((tmp_path / "cache" / "k.json").read_text())
    assert entry["metric"] == metric and entry[sc.HASH_FIELD] == sc.entry_hash(entry)


@pytest.mark.parametrize("edit, reseal, why", [
    (lambda e: e.update(correct=[1, 1, 1], acc=1.0), False, "content hash mismatch"),
    (lambda e: e.update(correct=[1, 1, 1], acc=1.0), True, "`correct` disagrees with its log-likelihoods"),
    (lambda e: e["loglikelihoods"][0].__setitem__(0, -1.25), False, "content hash mismatch"),
    (lambda e: e["loglikelihoods"][0].__setitem__(0, -9.0), True, "`correct` disagrees"),  # flips item 0
    (lambda e: e.update(acc=0.9), True, "acc 0.9 is not the mean"),
    (lambda e: e["gold"].__setitem__(1, 5), True, "gold 5"),
    (lambda e: e.pop(sc.HASH_FIELD), False, "no content hash"),
    (lambda e: e.update(key="other"), True, "not its own"),
    (lambda e: e.update(metric="acc_norm"), True, "scored under 'acc_norm'"),
], ids=["all-correct", "all-correct-resealed", "loglikelihood", "loglikelihood-resealed", "acc", "gold",
        "no-hash", "key", "metric"])
def test_an_edited_entry_is_not_trusted_and_is_rescored(tmp_path, caplog, edit, reseal, why):
    cache = _cache(tmp_path)
    cache.put("k", _scored())
    path = tmp_path / "cache" / "k.json"
    _edit(path, edit, reseal)
    with caplog.at_level(logging.WARNING, logger="dnd.scoring.cache"):
        assert cache.get("k") is None
    assert str(path) in caplog.text and why in caplog.text and "scored again" in caplog.text
    cache.put("k", _scored())  # what the rescoring writes back is trusted again
    assert _same(cache.get("k"), _scored())


def test_an_older_format_entry_is_a_miss_not_a_crash(tmp_path, caplog):
    cache = _cache(tmp_path)
    (tmp_path / "cache").mkdir()
    s = _scored()
    (tmp_path / "cache" / "k.json").write_text(json.dumps(
        {"key": "k", "ids": s.ids, "correct": s.correct, "acc": s.acc, "loglikelihoods": s.loglikelihoods,
         "gold": s.gold, "choice_chars": s.choice_chars, "seconds": 1.0}))  # dnd-score-cache-2: no hash
    assert cache.get("k") is None and "no content hash" in caplog.text
    (tmp_path / "cache" / "j.json").write_text("[1, 2")  # truncated
    assert cache.get("j") is None


def test_the_metric_is_part_of_the_key_and_the_check(tmp_path):
    acc, norm = _cache(tmp_path, "acc"), _cache(tmp_path, "acc_norm")
    assert acc.key(None) != norm.key(None)
    with pytest.raises(ValueError, match="unknown metric"):
        _cache(tmp_path, "f1")


def test_a_result_its_loglikelihoods_do_not_give_is_not_stored(tmp_path, caplog):
    cache = _cache(tmp_path, "acc")
    cache.put("k", _scored("acc_norm"))  # correct under acc_norm, cache under acc
    assert not (tmp_path / "cache" / "k.json").exists() and "not stored" in caplog.text
    with pytest.raises(sc.NonFiniteScoreError):
        bad = _scored()
        bad.loglikelihoods[2][1] = float("nan")
        cache.put("k", bad)


def _results() -> list[dict]:
    """What dnd.experiments.mathcode.score / dnd.experiments.protocol.score cache per adapter:
    generation-scored, no log-likelihoods."""
    return [{"ids": ["a", "b"], "correct": [0, 1], "gold_logprob": [-3.5, -1.25], "outputs": ["x", "42"],
             "extra": {"status": ["fail", "pass"]}, "seconds": 2.0}]


def test_result_cache_round_trip_and_edits(tmp_path, caplog):
    src = tmp_path / "scorer.py"
    src.write_text("# code\n")
    cache = ResultCache(tmp_path / "rc", [src], {"mathcode": "code"})
    cache.put("k", _results())
    assert cache.get("k") == _results()
    path = tmp_path / "rc" / "k.json"
    for edit in (lambda e: e["results"][0].update(correct=[1, 1]),
                 lambda e: e["results"][0]["outputs"].__setitem__(0, "41"),
                 lambda e: e.pop(sc.HASH_FIELD)):
        cache.put("k", _results())
        _edit(path, edit)
        caplog.clear()
        assert cache.get("k") is None and str(path) in caplog.text and "not trusted" in caplog.text
