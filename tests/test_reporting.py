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


def test_one_ci_format():
    """Every report table writes a CI as `estimate [low, high]`: signed for differences, plain for
    levels; the estimate alone without bounds; n/a without an estimate."""
    from dnd.reporting.format import ci

    assert ci(1.23, 0.4, 2.06) == "+1.2 [+0.4, +2.1]"
    assert ci(28.25, 24.1, 33.04, sign=False) == "28.2 [24.1, 33.0]"
    assert ci(-0.1, -0.13, -0.07, 3) == "-0.100 [-0.130, -0.070]"
    assert ci(1.0, math.nan, 2.0) == "+1.0" and ci(None, 0, 1) == "n/a"


def test_ci_digits_match_the_ci():
    """Decimals that give the narrowest half-width two significant digits."""
    from dnd.reporting.format import ci_digits

    assert ci_digits([4.4, 5.6]) == 1 and ci_digits([12.0]) == 0 and ci_digits([0.03, 0.4]) == 3
    assert ci_digits([0.09]) == 3 and ci_digits([0.1]) == 2 and ci_digits([]) == 1 and ci_digits([math.nan, 0.0]) == 1


def test_md_table_right_aligns_numbers_only():
    import pandas as pd

    from dnd.reporting.format import md_table

    df = pd.DataFrame({"Target": ["ARC-Easy", "Mean"], "Acc": ["57.5", "n/a"], "Δ (95% CI)": ["+1.2 [+0.4, +2.1]", ""],
                       "Cost": ["reference", "≤ 0 *"], "Verdict": ["reproduced", "level"], "Ratio": ["3/7", "4.00×"]})
    align = md_table(df).splitlines()[1].strip("|").split("|")
    assert [a.startswith(":") for a in align] == [True, False, False, False, True, False]
    assert all(a.endswith(":") for a in align[1:4] + align[5:])
    assert "-2.478e-20" in md_table(pd.DataFrame({"x": ["-2.478e-20"]}))  # cells as given, no reformatting


def test_one_palette_distinct_and_shared():
    """Every figure's colours come from dnd.reporting.figures: the Okabe-Ito colours, distinct for
    the methods a figure draws together and for the datasets (a marker each as a second cue)."""
    from dnd.reporting import figures as F

    assert len(set(F.METHOD_COLORS[m] for m in F.MAIN_METHODS)) == len(F.MAIN_METHODS)
    assert len({F.METHOD_COLORS[m] for m in ("dnd", "control_other", "control_random", "control_shuffled")}) == 4
    assert len({F.METHOD_COLORS[m] for m in ("dnd", "fewshot_ft", "icl")}) == 3
    names = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]
    pal, marks = F.dataset_palette(names), F.dataset_markers(names)
    assert len(set(pal.values())) == len(names) and len(set(marks.values())) == len(names)
    assert F.POOLED_COLOR not in pal.values()  # the pooled mean is never mistaken for a dataset
    assert set(F.OKABE_ITO.values()) >= {pal["HellaSwag"], pal["PIQA"]} and pal["HellaSwag"] != pal["PIQA"]


def test_experiment_figures_use_the_shared_palette():
    """No figure module defines colours of its own (tab:... names or hex codes): one palette."""
    import re

    root = Path(__file__).resolve().parent.parent / "src" / "dnd"
    for f in [*root.glob("experiments/*/report.py"), root / "report.py"]:
        text = f.read_text()
        assert not re.search(r"[\"']tab:[a-z]+[\"']|[\"']#[0-9A-Fa-f]{6}[\"']", text), f


def test_benchmark_stages_are_named_from_the_experiment_folder():
    """An experiment's benchmarks live in benchmarks/<experiment>/<stage>/ (or directly in its folder):
    experiment_root finds benchmarks/<experiment>/ whichever file comes first, and the stage of each
    file is its folder under it (its stem when it lies directly there)."""
    from dnd.reporting.tables import benchmark_stage, experiment_root

    files = ["runs/x/benchmarks/seeds/summary.tsv", "runs/x/benchmarks/seeds/evaluate/z1g0_a.tsv"]
    root = experiment_root(files)
    assert root == Path("runs/x/benchmarks/seeds")
    assert [benchmark_stage(f, root) for f in files] == ["summary", "evaluate"]
    assert experiment_root(["benchmarks/report.tsv"]) is None
    assert benchmark_stage("benchmarks/seeds/evaluate/z1g0_a.tsv") == "seeds"  # without a root: the experiment
