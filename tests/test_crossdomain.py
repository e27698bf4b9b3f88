"""The cross-domain experiment's report (dnd.experiments.crossdomain.report), on synthetic scores in the
default run's schemas."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dnd.cli import main

PAPER = Path(__file__).resolve().parents[1] / "config" / "paper_numbers.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [("base", "base", 0.30), ("source_lora", "a", 0.32), ("source_lora", "b", 0.36), ("soup", "soup", 0.33),
            ("nearest", "b", 0.36), ("dnd", "0", 0.40), ("dnd", "1", 0.42), ("dnd", "mean", 0.41),
            ("control_other", "0", 0.35), ("control_other", "mean", 0.35)]
    scores = pd.DataFrame([{"target": "science", "method": m, "adapter": a, "n": 300, "acc": acc,
                            "ci_low": acc - 0.05, "ci_high": acc + 0.05, "gold_logprob": -2.0} for m, a, acc in rows])
    metrics = {"science/n": 300, "science/n_dnd_adapters": 2, "science/train_avg": 0.34, "science/best_train": 0.36,
               "science/dnd_mean": 0.41}
    for b, d, lo, hi in (("train_avg", 0.07, 0.03, 0.09), ("soup", 0.08, 0.04, 0.12), ("nearest", 0.05, 0.0, 0.1),
                         ("control_other", 0.06, 0.02, 0.10)):
        metrics.update({f"science/dnd_minus_{b}/acc": d, f"science/dnd_minus_{b}/acc_ci_low": lo,
                        f"science/dnd_minus_{b}/acc_ci_high": hi, f"science/dnd_minus_{b}/gold_logprob": 0.1,
                        f"science/dnd_minus_{b}/gold_logprob_ci_low": 0.05,
                        f"science/dnd_minus_{b}/gold_logprob_ci_high": 0.15})
    s, m = tmp_path / "scores.csv", tmp_path / "metrics.json"
    scores.to_csv(s, index=False)
    m.write_text(json.dumps(metrics))
    return s, m


def test_report_states_table_comparisons_paper_and_verdict(tmp_path):
    scores, metrics = _files(tmp_path)
    out, fig = tmp_path / "cd" / "report.md", tmp_path / "cd" / "figures" / "crossdomain.png"
    params = {"target": "science", "sources": ["arc_easy", "boolq"], "design": "basis", "n_cond": 200}
    assert main(["crossdomain-report", "--params", json.dumps(params), "--scores", str(scores), "--metrics",
                 str(metrics), "--paper-numbers", str(PAPER), "--out", str(out), "--figure", str(fig)]) == 0
    text = out.read_text()
    assert text.startswith("## Cross-domain")
    assert "| DnD " in text and "41.0" in text and "[36.0, 46.0]" in text  # the mean row of the DnD adapters
    assert re.search(r"\| Training LoRAs \(avg\) +\| +34.0 \|", text)  # a number: right-aligned
    assert "+7.0 [+3.0, +9.0]" in text  # DnD minus the training LoRAs, points
    assert "35.6 → DnD 45.3 (+9.7 points)" in text
    assert "**Verdict: reproduced in direction, smaller than the paper's +9.7.**" in text
    assert "the new domain's prompts matter" in text
    assert "DnD is ahead of soup (+8.0 [+4.0, +12.0] points)" in text
    assert "DnD and nearest are not told apart (+5.0 [+0.0, +10.0] points)" in text
    assert "(figures/crossdomain.png)" in text and fig.read_bytes()[:8] == PNG_MAGIC
    assert "no benchmark files were found" in text


@pytest.mark.parametrize("acc, where", [(0.0, "floor"), (1.0, "ceiling")])
def test_every_method_at_a_floor_or_ceiling_is_not_testable(tmp_path, acc, where):
    """Every method (and the training-LoRA average) at 0% or 100%: the accuracy cannot show the
    paper's claim, whatever the CI of DnD minus the training LoRAs says."""
    scores, metrics = _files(tmp_path)
    df = pd.read_csv(scores)
    df["acc"] = df["ci_low"] = df["ci_high"] = acc
    df.to_csv(scores, index=False)
    m = json.loads(metrics.read_text())
    m.update({"science/train_avg": acc, "science/best_train": acc, "science/dnd_mean": acc})
    metrics.write_text(json.dumps(m))
    out, fig = tmp_path / "report.md", tmp_path / "figures" / "crossdomain.png"
    params = {"target": "science", "sources": ["arc_easy", "boolq"], "design": "basis", "n_cond": 200}
    assert main(["crossdomain-report", "--params", json.dumps(params), "--scores", str(scores), "--metrics",
                 str(metrics), "--paper-numbers", str(PAPER), "--out", str(out), "--figure", str(fig)]) == 0
    assert f"**Verdict: not testable here: every method at the {where}.**" in out.read_text()


def test_report_errors_are_clear(tmp_path, caplog):
    scores, metrics = _files(tmp_path)
    base = ["crossdomain-report", "--scores", str(scores), "--metrics", str(metrics), "--out",
            str(tmp_path / "r.md"), "--figure", str(tmp_path / "f.png")]
    assert main([*base, "--params", json.dumps({"target": "physics", "sources": []})]) != 0
    assert "has no scores for 'physics'" in caplog.text
    assert main([*base, "--params", json.dumps({"sources": []})]) != 0
    assert "needs 'target'" in caplog.text
    # the job times: the benchmark files the rule declares (--benchmarks); one of them missing is one line
    bench = tmp_path / "benchmarks" / "crossdomain"
    (bench / "generate").mkdir(parents=True)
    for rel, s in (("data.tsv", 60), ("evaluate.tsv", 540), ("generate/science_dnd_0.tsv", 120)):
        (bench / rel).write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t1\t{s / 2}\n")
    params = ["--params", json.dumps({"target": "science", "sources": ["arc_easy", "boolq"]})]
    files = [str(bench / rel) for rel in ("data.tsv", "evaluate.tsv", "generate/science_dnd_0.tsv")]
    assert main([*base, *params, "--benchmarks", *files]) == 0
    assert "the experiment's 3 jobs took 12 min of wall time in total and 6 min of CPU time" in \
        (tmp_path / "r.md").read_text()
    caplog.clear()
    assert main([*base, *params, "--benchmarks", *files, str(bench / "summarize.tsv")]) != 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert f"--benchmarks: declared benchmark file {bench / 'summarize.tsv'} not found" in errors[0]


def test_relation_words_follow_the_ci():
    """Ahead/behind when the CI excludes 0; level only when it lies inside ±1 point (it rules out a
    difference of that size); a wider CI that holds 0 does not tell the two apart."""
    from dnd.summary import EQUIVALENT, relation

    assert EQUIVALENT == 1.0
    assert relation(0.2, 3.0, "DnD", "soup") == "DnD is ahead of soup"
    assert relation(-3.0, -0.2, "DnD", "soup") == "soup is ahead of DnD"
    assert relation(-0.6, 0.7, "DnD", "soup") == "DnD is level with soup"
    assert relation(0.0, 0.0, "DnD", "soup") == "DnD is level with soup"
    assert relation(-10.0, 5.0, "DnD", "soup") == "DnD and soup are not told apart"
    assert relation(-1.0, 0.5, "DnD", "soup") == "DnD and soup are not told apart"  # -1 itself is not ruled out
