"""The seeds experiment's summary and report (dnd.experiments.seeds.report) on synthetic evaluation
files in the default run's schema: 3 zoo seeds x 2 generator seeds, the same items in every run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dnd import stats
from dnd.cli import main
from test_crossdomain import PAPER
from test_summary import DATASETS, _eval_rows, _summarize, _write_eval
from test_verdict_words import BANNED, stated_verdicts

RUNS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
FOLDS = {t: [d for d in DATASETS if d != t] for t in DATASETS}


def _plan(tmp_path: Path, runs=RUNS) -> list[dict]:
    plan = []
    for i, (z, g) in enumerate(runs):
        files = _write_eval(tmp_path / f"z{z}g{g}", _eval_rows(seed=i))
        plan += [{"zoo": z, "generator": g, "target": Path(f).stem, "eval": f} for f in files]
    return plan


def _run(tmp_path: Path, plan: list[dict], bootstrap: int = 400) -> dict:
    params = {"plan": plan, "folds": FOLDS, "n_adapters": 2, "n_controls": 1, "bootstrap": bootstrap, "seed": 0}
    assert main(["seeds-summary", "--params", json.dumps(params), "--scores", str(tmp_path / "scores.csv"),
                 "--metrics", str(tmp_path / "metrics.json")]) == 0
    return json.loads((tmp_path / "metrics.json").read_text())


def test_seed_run_zero_reproduces_the_default_summary_and_seeds_widen_the_ci(tmp_path):
    plan = _plan(tmp_path)
    m = _run(tmp_path, plan)
    assert m["runs"] == ["z0g0", "z0g1", "z1g0", "z1g1", "z2g0", "z2g1"] and m["n_zoo_seeds"] == 3
    # run z0g0 alone is the default run: its items-only CI is the summary's paired CI, to the bit
    _, default = _summarize(tmp_path / "default", [p["eval"] for p in plan if (p["zoo"], p["generator"]) == (0, 0)],
                            {"evaluation": {"bootstrap": 400}, "seed": 0, "folds": FOLDS})
    for t in DATASETS:
        for key in ("dnd_minus_train_avg", "dnd_minus_soup", "dnd_basis_minus_nearest", "oracle_minus_train_avg"):
            assert m[f"{t}/{key}/acc_item_ci_low"] == default[f"{t}/{key}/acc_ci_low"], (t, key)
            assert m[f"{t}/{key}/acc_item_ci_high"] == default[f"{t}/{key}/acc_ci_high"], (t, key)
            # the point figure is the mean over runs of each run's mean paired difference
            assert m[f"{t}/{key}/acc"] == pytest.approx(np.mean(m[f"{t}/{key}/acc_by_run"]))
    # six runs of independent noise: the pooled estimate sits inside its two-level CI, and the
    # spreads are reported beside each other
    key = "mean/dnd_minus_train_avg/acc"
    assert m[key + "_ci_low"] < m[key] < m[key + "_ci_high"]
    assert all(m[f"{key}_{s}"] > 0 for s in ("seed_sd", "zoo_sd", "generator_sd", "item_se"))
    assert m[key] == pytest.approx(np.mean([m[f"{t}/dnd_minus_train_avg/acc"] for t in DATASETS]))


def test_runs_must_share_items_and_cover_every_target(tmp_path):
    plan = _plan(tmp_path, RUNS[:2])
    rows = [json.loads(line) for line in Path(plan[-1]["eval"]).read_text().splitlines()]
    for r in rows:
        r["ids"] = [f"other-{i}" for i in range(len(r["ids"]))]
    Path(plan[-1]["eval"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"plan": plan, "folds": FOLDS, "n_adapters": 2, "n_controls": 1, "bootstrap": 10}
    argv = ["seeds-summary", "--params", json.dumps(params), "--scores", str(tmp_path / "s.csv"),
            "--metrics", str(tmp_path / "m.json")]
    assert main(argv) == 1 and not (tmp_path / "m.json").exists()  # run z0g1 scored other items
    params["plan"] = plan[:-1]  # and now lacks that target
    argv[2] = json.dumps(params)
    assert main(argv) == 1 and not (tmp_path / "m.json").exists()


def test_report_states_the_spreads_and_speaks_the_vocabulary(tmp_path):
    m = _run(tmp_path, _plan(tmp_path))
    out, fig = tmp_path / "report.md", tmp_path / "figures" / "seeds.png"
    params = {"n_adapters": 2, "n_controls": 1, "bootstrap": 400, "design": "hyperconv"}
    assert main(["seeds-report", "--params", json.dumps(params),
                 "--metrics", str(tmp_path / "metrics.json"), "--paper-numbers", str(PAPER), "--out", str(out),
                 "--figure", str(fig)]) == 0
    text = out.read_text()
    assert fig.read_bytes().startswith(b"\x89PNG") and "](figures/seeds.png)" in text
    assert "95% CI, seeds and items" in text and "Seed SD" in text and "Item SE" in text
    assert "6 runs (z0g0, z0g1, z1g0, z1g1, z2g0, z2g1" in text
    assert "design `hyperconv`" in text  # what the glance's Generator column reads (report_design)
    first = next(line for line in text.splitlines() if line.startswith("| DnD") or line.startswith("| Source"))
    assert first.startswith("| DnD − Training LoRAs (avg)")  # DnD first, the training average first
    assert not any(b in text for b in BANNED)
    verdicts = stated_verdicts(text)
    assert len(verdicts) == 1 and stats.verdict_word(verdicts[0]) in stats.VERDICTS, verdicts
    ci = {k: tuple(100 * m[f"mean/{k}_minus_train_avg/acc_ci_{e}"] for e in ("low", "high")) for k in ("dnd", "oracle")}
    assert verdicts[0].rstrip(".") == stats.verdict(*ci["dnd"], 21.0, stats.untestable_reason(oracle_ci=ci["oracle"]))


def test_report_states_the_measured_budget_from_the_benchmarks(tmp_path):
    """--benchmarks: the experiment's job time per stage and in all, in hours beside minutes; without
    it the report says the times are not stated rather than printing zero."""
    _run(tmp_path, _plan(tmp_path))
    bench = tmp_path / "benchmarks" / "seeds"
    files = []
    for rel, s in (("train_lora/z1_a.tsv", 1800.0), ("train_generator/z1g0_a_hyperconv.tsv", 5400.0),
                   ("evaluate/z1g0_a.tsv", 3600.0)):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t1\t{s / 2}\n")
        files.append(str(bench / rel))
    common = ["--metrics", str(tmp_path / "metrics.json"), "--paper-numbers", str(PAPER),
              "--figure", str(tmp_path / "seeds.png")]
    assert main(["seeds-report", *common, "--out", str(tmp_path / "with.md"), "--benchmarks", *files]) == 0
    text = (tmp_path / "with.md").read_text()
    assert "own 3 jobs took 3.0 h of job time (180 min) and 90 min of CPU time" in text
    assert "| train_generator " in text and "**all stages**" in text
    assert main(["seeds-report", *common, "--out", str(tmp_path / "without.md")]) == 0
    assert "job times not stated" in (tmp_path / "without.md").read_text()
    missing = main(["seeds-report", *common, "--out", str(tmp_path / "x.md"), "--benchmarks", str(bench / "nope.tsv")])
    assert missing != 0 and not (tmp_path / "x.md").exists()
