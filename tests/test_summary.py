"""dnd.summary: bootstrap CIs, the main table, fold selection and `dnd summarize`, on synthetic
evaluation rows (no model). The report's main table and metrics.json must agree on the folds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnd import summary
from dnd.benchmarks.datasets import title
from dnd.cli import main as cli_main
from dnd.config import folds as config_folds, validate_config

DATASETS = ["arc_easy", "boolq", "piqa"]
N_ITEMS = 40


def _eval_rows(seed: int = 0) -> dict[str, list[dict]]:
    """Per target, the rows `dnd evaluate` writes: every method, two DnD adapters, one control each."""
    rng = np.random.default_rng(seed)
    out = {}
    for ti, t in enumerate(DATASETS):
        ids = [f"{t}-{i}" for i in range(N_ITEMS)]
        rows = []

        def add(method: str, adapter: str, p: float) -> None:
            c = rng.binomial(1, p, N_ITEMS).tolist()
            # gold log-probability: higher where the item is answered correctly, plus noise
            lp = (-2.0 + 1.5 * np.asarray(c) + rng.normal(0, 0.3, N_ITEMS)).round(6).tolist()
            rows.append({"target": t, "method": method, "adapter": adapter, "n": N_ITEMS, "acc": float(np.mean(c)),
                         "correct": c, "ids": ids, "metric": "acc", "gold_logprob": lp})

        add("base", "base", 0.35)
        for si, s in enumerate(DATASETS):
            add("source_lora", s, 0.75 if s == t else 0.30 + 0.15 * si)  # sources differ clearly
        add("soup", "soup", 0.45)
        near = DATASETS[(ti + 1) % len(DATASETS)]
        rows.append(dict(next(r for r in rows if r["adapter"] == near), method="nearest"))
        for kind, p, k in (("dnd", 0.6, 2), ("dnd_basis", 0.55, 2), ("control_other", 0.4, 1),
                           ("control_random", 0.35, 1), ("control_shuffled", 0.4, 1)):
            for i in range(k):
                add(kind, str(i), p)
        out[t] = rows
    return out


def _write_eval(tmp_path: Path, rows: dict[str, list[dict]]) -> list[str]:
    files = []
    for t, rs in rows.items():
        f = tmp_path / "eval" / f"{t}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps(r) + "\n" for r in rs))
        files.append(str(f))
    return files


def _summarize(tmp_path: Path, files: list[str], params: dict) -> tuple[pd.DataFrame, dict]:
    scores, metrics = tmp_path / "scores.csv", tmp_path / "metrics.json"
    assert cli_main(["summarize", "--params", json.dumps(params), "--eval", *files,
                     "--scores", str(scores), "--metrics", str(metrics)]) == 0
    return pd.read_csv(scores, keep_default_na=False), json.loads(metrics.read_text())


def test_bootstrap_ci_contains_acc_and_is_deterministic():
    rng = np.random.default_rng(3)
    rows = [{"target": "t", "method": "base", "adapter": "base", "n": 60,
             "correct": rng.integers(0, 2, 60).tolist(), "ids": [str(i) for i in range(60)]}]
    rows[0]["acc"] = float(np.mean(rows[0]["correct"]))
    rows[0]["gold_logprob"] = (-1.0 - rng.random(60)).tolist()
    a = summary.scores_frame(rows, 1000, seed=7)
    b = summary.scores_frame(rows, 1000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    lo, acc, hi = a.loc[0, ["ci_low", "acc", "ci_high"]]
    assert lo < acc < hi and hi - lo < 0.4
    assert a.loc[0, "gold_logprob"] == pytest.approx(np.mean(rows[0]["gold_logprob"]))
    # a row's CI does not depend on which other targets are present
    other = dict(rows[0], target="u")
    c = summary.scores_frame([other] + rows, 1000, seed=7)
    assert c[c["target"] == "t"]["ci_low"].item() == lo
    assert summary.scores_frame(rows, 0, seed=7)["ci_low"].isna().all()  # bootstrap 0: no CI


def test_main_table_arithmetic():
    r = lambda t, m, a, acc, lo=math.nan, hi=math.nan: (t, m, a, 100, acc, lo, hi, math.nan)  # noqa: E731
    scores = pd.DataFrame([
        r("a", "base", "base", 0.30), r("a", "source_lora", "a", 0.80), r("a", "source_lora", "b", 0.40),
        r("a", "source_lora", "c", 0.50), r("a", "soup", "soup", 0.45), r("a", "nearest", "c", 0.50),
        r("a", "dnd", "0", 0.60), r("a", "dnd", "1", 0.70), r("a", "dnd", "mean", 0.65, 0.55, 0.75),
        r("b", "base", "base", 0.50), r("b", "source_lora", "a", 0.50), r("b", "source_lora", "b", 0.60),
        r("b", "source_lora", "c", 0.70), r("b", "dnd", "0", 0.40), r("b", "dnd", "mean", 0.40, 0.3, 0.5),
    ], columns=summary.SCORE_COLUMNS)
    t = summary.main_table(scores).set_index("target")
    assert list(t.reset_index().columns) == summary.MAIN_COLUMNS and list(t.index) == ["a", "b", "mean"]
    a, b, mean = t.loc["a"], t.loc["b"], t.loc["mean"]
    assert a["train_avg"] == pytest.approx(0.45) and a["best_train"] == pytest.approx(0.50)
    assert a["oracle"] == pytest.approx(0.80) and a["soup"] == pytest.approx(0.45)
    assert a["dnd_mean"] == pytest.approx(0.65) and a["dnd_sd"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert (a["dnd_ci_low"], a["dnd_ci_high"]) == (0.55, 0.75)
    assert a["gap_closed"] == pytest.approx((0.65 - 0.45) / (0.80 - 0.45))
    assert b["train_avg"] == pytest.approx(0.60) and math.isnan(b["soup"]) and math.isnan(b["dnd_sd"])
    assert math.isnan(b["gap_closed"])  # oracle 0.6 is not above train_avg 0.6: undefined
    assert mean["base"] == pytest.approx(0.40) and mean["dnd_mean"] == pytest.approx(0.525)
    assert mean["gap_closed"] == pytest.approx((0.525 - 0.525) / (0.70 - 0.525))
    assert math.isnan(mean["dnd_ci_low"])
    # with explicit folds, only the fold's datasets count as training LoRAs
    tf = summary.main_table(scores, folds={"a": ["c"], "b": ["a", "c"]}).set_index("target")
    assert tf.loc["a", "train_avg"] == pytest.approx(0.50) and tf.loc["b", "train_avg"] == pytest.approx(0.60)


def test_training_loras_default_and_errors():
    scores = pd.DataFrame([(t, "source_lora", s, 0.5) for t in ("a", "b") for s in ("a", "b", "c")],
                          columns=["target", "method", "adapter", "acc"])
    # without folds: leave-one-out over the scored datasets, as dnd.config.folds would give
    assert summary.training_loras(scores) == {"a": ["b", "c"], "b": ["a", "c"]}
    assert summary.training_loras(scores, {"a": ["c"], "b": ["c", "a"]}) == {"a": ["c"], "b": ["c", "a"]}
    with pytest.raises(ValueError, match="no entry for target 'b'"):
        summary.training_loras(scores, {"a": ["c"]})
    with pytest.raises(ValueError, match=r"fold a: no source_lora rows for \['d'\]"):
        summary.training_loras(scores, {"a": ["c", "d"], "b": ["a"]})


def test_summarize_is_deterministic_and_complete(tmp_path):
    rows = _eval_rows()
    files = _write_eval(tmp_path, rows)
    params = {"evaluation": {"bootstrap": 200}, "seed": 1}
    df, m = _summarize(tmp_path, files, params)
    first = ((tmp_path / "scores.csv").read_bytes(), (tmp_path / "metrics.json").read_bytes())
    _summarize(tmp_path, files, params)
    assert ((tmp_path / "scores.csv").read_bytes(), (tmp_path / "metrics.json").read_bytes()) == first
    assert list(df.columns) == summary.SCORE_COLUMNS
    assert len(df) == sum(map(len, rows.values())) + 5 * len(DATASETS)  # + an adapter 'mean' row per kind
    assert m["mean/n_targets"] == len(DATASETS)
    for t in DATASETS:  # no folds given: every other dataset is a training LoRA
        src = {r["adapter"]: r["acc"] for r in rows[t] if r["method"] == "source_lora"}
        assert m[f"{t}/train_avg"] == pytest.approx(np.mean([a for d, a in src.items() if d != t]))
        assert m[f"{t}/n_train_loras"] == len(DATASETS) - 1


def test_paired_comparisons_per_target_and_pooled(tmp_path):
    """DnD minus each zero-shot baseline on accuracy and gold log-probability: the per-target
    figure (and the oracle's headroom over the training average) is the mean of the paired per-item
    differences, the pooled one the mean over targets,
    each inside its own bootstrap CI; the random control is clearly worse in the synthetic rows, so its
    pooled CI excludes 0."""
    rows = _eval_rows()
    _, m = _summarize(tmp_path, _write_eval(tmp_path, rows), {"evaluation": {"bootstrap": 800}, "seed": 0})
    pairs = ([("dnd", b) for b in summary.COMPARED] + [("dnd_basis", b) for b in summary.VARIANT_COMPARED]
             + [("oracle", "train_avg")])
    assert summary.comparison_pairs(["dnd", "dnd_basis", "control_other"]) == pairs
    for metric, key in (("acc", "correct"), ("gold_logprob", "gold_logprob")):
        for subject, b in pairs:
            per_target = []
            for t in DATASETS:
                by = {(r["method"], r["adapter"]): np.asarray(r[key], dtype=float) for r in rows[t]}
                dnd = (by[("source_lora", t)] if subject == "oracle"  # the target's own LoRA
                       else np.mean([v for (mm, _), v in by.items() if mm == subject], axis=0))
                if b == "train_avg":
                    ref = np.mean([v for (mm, a), v in by.items() if mm == "source_lora" and a != t], axis=0)
                else:
                    ref = np.mean([v for (mm, _), v in by.items() if mm == b], axis=0)
                diff = float((dnd - ref).mean())
                name = f"{t}/{subject}_minus_{b}/{metric}"
                assert m[name] == pytest.approx(diff)
                assert m[name + "_ci_low"] <= diff <= m[name + "_ci_high"]
                per_target.append(diff)
            pooled = f"mean/{subject}_minus_{b}/{metric}"
            assert m[pooled] == pytest.approx(np.mean(per_target))
            assert m[pooled + "_ci_low"] < m[pooled] < m[pooled + "_ci_high"]
    # the synthetic DnD (p=0.6) beats the random control (p=0.35) on both metrics, decisively
    assert m["mean/dnd_minus_control_random/acc_ci_low"] > 0
    assert m["mean/dnd_minus_control_random/gold_logprob_ci_low"] > 0
    # and the oracle (p=0.75) has headroom over the training average
    assert m["mean/oracle_minus_train_avg/acc_ci_low"] > 0


def test_summarize_rejects_a_fold_without_scores(tmp_path, caplog):
    files = _write_eval(tmp_path, _eval_rows())
    params = {"evaluation": {"bootstrap": 0}, "folds": {t: ["nope"] for t in DATASETS}}
    argv = ["summarize", "--params", json.dumps(params), "--eval", *files,
            "--scores", str(tmp_path / "s.csv"), "--metrics", str(tmp_path / "m.json")]
    assert cli_main(argv) == 1 and not (tmp_path / "s.csv").exists()
    assert "target arc_easy: no source_lora/nope row" in caplog.text


def test_metrics_and_report_agree_on_the_config_folds(tmp_path):
    """generator.sources makes only some datasets training LoRAs: summarize (given the config's
    folds, as the workflow passes them) and the report (reading the same config) must average
    the same LoRAs, and that is not what leave-one-out over every dataset would give."""
    cfg = validate_config({"name": "folds", "data": {"datasets": DATASETS}, "base_model": {"source": "tiny"},
                           "generator": {"sources": ["arc_easy", "boolq"]}})
    folds = config_folds(cfg)
    assert folds == {"arc_easy": ["boolq"], "boolq": ["arc_easy"], "piqa": ["arc_easy", "boolq"]}
    rows = _eval_rows(seed=5)
    _, m = _summarize(tmp_path, _write_eval(tmp_path, rows), {"evaluation": {"bootstrap": 100}, "seed": 0,
                                                              "folds": folds})
    out = tmp_path / "report" / "report.md"
    none = str(tmp_path / "none")
    assert cli_main(["report", "--params", json.dumps(cfg), "--scores", str(tmp_path / "scores.csv"),
                     "--metrics", str(tmp_path / "metrics.json"), "--out", str(out),
                     "--figures-dir", str(out.parent / "figures"), "--efficiency", none, "--data-summary", none,
                     "--timings-dir", none, "--paper-numbers", none]) == 0
    text = out.read_text()
    lines = text[text.index("## Main results"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[start:start + 2 + 4]]
    tab = pd.DataFrame(block[2:], columns=block[0]).set_index("Target")
    col = "Training LoRAs (avg)"
    for t in DATASETS:
        src = {r["adapter"]: r["acc"] for r in rows[t] if r["method"] == "source_lora"}
        fold_avg = np.mean([src[d] for d in folds[t]])
        assert m[f"{t}/train_avg"] == pytest.approx(fold_avg) and m[f"{t}/n_train_loras"] == len(folds[t])
        if t != "piqa":  # piqa's fold is every other dataset anyway
            assert m[f"{t}/train_avg"] != pytest.approx(np.mean([a for d, a in src.items() if d != t]))
        assert tab.loc[title(t), col].strip("*") == f"{100 * m[f'{t}/train_avg']:.1f}"
    assert tab.loc["Mean", col].strip("*") == f"{100 * m['mean/train_avg']:.1f}"


def test_report_does_not_import_the_scorer():
    """Building tables needs neither dnd.evaluate nor lm-eval nor torch."""
    code = ("import sys, dnd.report; bad = [m for m in ('dnd.evaluate', 'lm_eval', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- incomplete inputs
def _refused(tmp_path: Path, files: list[str], caplog, params: dict | None = None) -> str:
    """The one-line error of `dnd summarize` on `files` (which must fail, writing nothing)."""
    params = params or {"evaluation": {"bootstrap": 10}, "seed": 0,
                        "folds": config_folds({"data": {"datasets": DATASETS}})}
    scores, metrics = tmp_path / "refused.csv", tmp_path / "refused.json"
    caplog.clear()
    assert cli_main(["summarize", "--params", json.dumps(params), "--eval", *files,
                     "--scores", str(scores), "--metrics", str(metrics)]) == 1
    assert not scores.exists() and not metrics.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    return errors[0]


def test_summarize_refuses_an_empty_eval_file(tmp_path, caplog):
    files = _write_eval(tmp_path, _eval_rows())
    Path(files[1]).write_text("")  # boolq's evaluation left nothing behind
    msg = _refused(tmp_path, files, caplog)
    assert "target boolq" in msg and "empty" in msg
    # without folds too: the two others alone are not summarized as "the mean over 2 targets"
    assert "target boolq" in _refused(tmp_path, files, caplog, {"evaluation": {"bootstrap": 10}})


def test_summarize_refuses_a_missing_target(tmp_path, caplog):
    files = _write_eval(tmp_path, _eval_rows())
    msg = _refused(tmp_path, files[:2], caplog)  # the folds name piqa, no file is given for it
    assert "target piqa: no evaluation rows" in msg


def test_summarize_refuses_missing_dnd_rows(tmp_path, caplog):
    rows = _eval_rows()
    rows["piqa"] = [r for r in rows["piqa"] if r["method"] != "dnd"]
    msg = _refused(tmp_path, _write_eval(tmp_path, rows), caplog)
    assert "target piqa: no dnd rows" in msg and "arc_easy" not in msg and "boolq" not in msg


def test_summarize_refuses_a_missing_adapter_or_optional_kind(tmp_path, caplog):
    rows = _eval_rows()
    rows["boolq"] = [r for r in rows["boolq"] if (r["method"], r["adapter"]) != ("dnd", "1")]
    rows["piqa"] = [r for r in rows["piqa"] if r["method"] != "control_random"]
    rows["arc_easy"] = [r for r in rows["arc_easy"] if (r["method"], r["adapter"]) != ("source_lora", "arc_easy")]
    msg = _refused(tmp_path, _write_eval(tmp_path, rows), caplog)
    assert "target boolq: no dnd/1" in msg
    assert "target piqa: no control_random/0" in msg
    assert "target arc_easy: no source_lora/arc_easy" in msg  # its oracle


def test_summarize_refuses_short_item_counts(tmp_path, caplog):
    rows = _eval_rows()
    r = next(r for r in rows["arc_easy"] if (r["method"], r["adapter"]) == ("dnd", "0"))
    for key in ("ids", "correct", "gold_logprob"):
        r[key] = r[key][:-3]
    r["n"] = N_ITEMS - 3
    msg = _refused(tmp_path, _write_eval(tmp_path, rows), caplog)
    assert f"target arc_easy: dnd/0 has {N_ITEMS - 3} items" in msg and f"expected {N_ITEMS}" in msg
    # the same count but other items
    rows = _eval_rows()
    r = next(r for r in rows["piqa"] if r["method"] == "soup")
    r["ids"] = [*r["ids"][1:], "piqa-x"]
    assert "target piqa: soup/soup scored other items" in _refused(tmp_path, _write_eval(tmp_path, rows), caplog)


def test_require_complete_counts_and_expected_items():
    rows = [r for rs in _eval_rows().values() for r in rs]
    summary.require_complete(rows, DATASETS, adapters={"dnd": 2}, items={t: N_ITEMS for t in DATASETS})
    with pytest.raises(summary.IncompleteInputError, match=r"target boolq: 2 dnd adapters \['0', '1'\], expected 3"):
        summary.require_complete(rows, DATASETS, adapters={"dnd": 3})
    with pytest.raises(summary.IncompleteInputError, match=f"target piqa: base/base has {N_ITEMS} items.*expected 50"):
        summary.require_complete(rows, DATASETS, items={"piqa": 50})
    with pytest.raises(summary.IncompleteInputError, match="rows of target piqa, which is not among"):
        summary.require_complete(rows, DATASETS[:2])


def test_require_complete_expected_and_excused_cells():
    rows = [r for rs in _eval_rows().values() for r in rs
            if (r["target"], r["method"]) != ("boolq", "control_other")]
    with pytest.raises(summary.IncompleteInputError, match="target boolq: no control_other/0$"):
        summary.require_complete(rows, DATASETS)
    summary.require_complete(rows, DATASETS, excused={"boolq": [("control_other", "0")]})  # recorded as left out
    with pytest.raises(summary.IncompleteInputError, match="target piqa: no dnd/7"):
        summary.require_complete(rows, DATASETS, excused={"boolq": [("control_other", "0")]},
                                 cells_of={"piqa": [("dnd", "7")]})


def test_a_missing_method_is_named_once():
    rows = [r for rs in _eval_rows().values() for r in rs if (r["target"], r["method"]) != ("piqa", "dnd")]
    with pytest.raises(summary.IncompleteInputError) as e:
        summary.require_complete(rows, DATASETS)
    assert str(e.value) == "incomplete evaluation rows: target piqa: no dnd rows"
