"""dnd.reporting: the one number formatter and the end every report command shares."""

import math
from pathlib import Path

from dnd.reporting.format import ci_text, number, pct, signed
from dnd.reporting.output import figure_link, read_paper_numbers


def test_number_formats_and_says_n_a():
    assert number(0.12345) == "0.1" and number(3, 2) == "3.00" and number(-0.05, 1, sign=True) == "-0.1"
    assert signed(2.0) == "+2.0" and number("1.25", 1) == "1.2"
    assert all(number(x) == "n/a" for x in (None, math.nan, math.inf, "x"))
    assert math.isnan(pct(None)) and pct(0.5) == 50.0
    assert ci_text({"acc": 1.0, "acc_ci_low": -0.5, "acc_ci_high": 2.5}) == "+1.0 [-0.5, +2.5] points"


def test_missing_paper_numbers_are_empty_not_a_crash(tmp_path):
    assert read_paper_numbers(None) == {} and read_paper_numbers(tmp_path / "absent.yaml") == {}
    (tmp_path / "p.yaml").write_text("common_sense: {average_gain: 21}\n")
    assert read_paper_numbers(tmp_path / "p.yaml") == {"common_sense": {"average_gain": 21}}


def test_figure_link_is_relative_to_the_report(tmp_path):
    assert figure_link(tmp_path / "r" / "figures" / "f.png", tmp_path / "r" / "report.md") == "figures/f.png"


def _bench(path, rows):
    """A Snakemake benchmark file: one row per run of the job (`--benchmark-repeats`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tcpu_time\n" + "".join(f"{s}\t0:00:00\t1\t{c}\n" for s, c in rows))


def _minutes_under(directory, keep=None):
    """The former folder-based reading (every *.tsv under `directory`, `keep` on the path relative to it)."""
    import pandas as pd

    files = [f for f in sorted(directory.rglob("*.tsv")) if keep is None or keep(f.relative_to(directory))]
    rows = [pd.read_csv(f, sep="\t").iloc[-1] for f in files]
    return (sum(float(r["s"]) for r in rows) / 60, sum(float(r["cpu_time"]) for r in rows) / 60,
            len(rows)) if rows else None


def test_declared_benchmark_files_give_the_folder_figures(tmp_path, monkeypatch):
    """The experiments' reports read the benchmark files their rule declares (issue 27): the same
    job times as the whole folder gave, the last run of each job; a missing one is one line."""
    import pytest

    from dnd.experiments.ablations.report import family_jobs
    from dnd.reporting.tables import benchmark_minutes

    monkeypatch.chdir(tmp_path)  # the workflow passes paths relative to the run directory
    jobs = {"protocol/tasks.tsv": [(6, 3)], "protocol/train_lora/a.tsv": [(600, 500), (120, 110)],
            "protocol/generate/t_dnd_0.tsv": [(30, 20)], "fewshot/t/train_k1.tsv": [(60, 50)],
            "fewshot/t/icl.tsv": [(90, 45)], "fewshot/u/score.tsv": [(12, 6)],
            "ablations/condition/summary.tsv": [(6, 3)], "ablations/condition/evaluate_answer_t.tsv": [(60, 30)],
            "ablations/encode/condition-answer_a_train.tsv": [(30, 15)],
            "ablations/sources/evaluate_2_t.tsv": [(240, 120)], "ablations/sources/extra/train_lora_x.tsv": [(120, 60)]}
    for rel, rows in jobs.items():
        _bench(Path("benchmarks") / rel, rows)
    declared = {e: sorted(Path("benchmarks", e).rglob("*.tsv"), reverse=True)  # as the rule lists them
                for e in ("protocol", "fewshot", "ablations")}
    got = benchmark_minutes(declared["protocol"])
    assert got == _minutes_under(Path("benchmarks/protocol")) == pytest.approx((156 / 60, 133 / 60, 3))
    for t, n in (("t", 2), ("u", 1)):  # fewshot: each target's jobs
        got = benchmark_minutes(declared["fewshot"], keep=lambda f, t=t: f.parent.name == t)
        assert got == _minutes_under(Path("benchmarks/fewshot", t)) and got[2] == n
    for m in ({"family": "condition", "settings": ["answer"], "targets": ["t"]},
              {"family": "sources", "settings": ["2"], "targets": ["t"], "extra_sources": ["x"]}):
        for extra_only in (False, True):
            keep = family_jobs(m, extra_only)
            assert benchmark_minutes(declared["ablations"], keep) == _minutes_under(Path("benchmarks/ablations"), keep)
    assert benchmark_minutes(declared["ablations"], family_jobs(m))[2] == 2
    assert benchmark_minutes([]) is None and benchmark_minutes(None) is None
    gone = [Path("benchmarks/protocol/evaluate/t.tsv"), Path("benchmarks/protocol/summary.tsv")]
    with pytest.raises(FileNotFoundError) as err:
        benchmark_minutes([*declared["protocol"], *gone])
    assert str(err.value) == ("--benchmarks: declared benchmark file benchmarks/protocol/evaluate/t.tsv not found "
                              "(and 1 more)")
