"""Results at a glance (dnd.reporting.glance, `dnd glance`): rows from small synthetic metrics
files of every experiment kind, "not run yet" rows, the README block's --check, and the committed
README block against the committed results files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dnd.cli import main
from dnd.reporting.glance import (
    COLUMNS,
    GLANCE_BEGIN,
    GLANCE_END,
    NOT_RUN,
    current_block,
    glance_rows,
    input_files,
    render,
)
from dnd.reporting.output import read_paper_numbers
from dnd.stats import VERDICTS

REPO = Path(__file__).resolve().parents[1]
PAPER = {"common_sense": {"average_gain": 21.0},
         "other_domains": {"rows": [
             {"task": "GSM8K", "model": "Qwen2.5-0.5B", "metric": "accuracy", "train_avg": 42.9, "dnd": 66.3},
             {"task": "science (cross-domain, common-sense generator)", "model": "Qwen2.5-0.5B",
              "metric": "accuracy", "train_avg": 35.6, "dnd": 45.3}]}}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def _pair(key: str, est: float, lo: float, hi: float, suffix: str = "") -> dict:
    """{key: est, key_ci_low: lo, key_ci_high: hi} with `suffix` before _ci (e.g. "/acc")."""
    return {f"{key}{suffix}": est, f"{key}{suffix}_ci_low": lo, f"{key}{suffix}_ci_high": hi}


def _scores(target: str, accs: dict[str, float]) -> str:
    lines = ["target,method,adapter,n,acc,ci_low,ci_high,gold_logprob"]
    lines += [f"{target},{m},{'mean' if m == 'dnd' else m},40,{a},{a},{a},-1.0" for m, a in accs.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with one small metrics file per experiment kind (seeds and function_space
    left out: not run)."""
    r = tmp_path / "results"
    # default run: fractions; the oracle beats the training average (headroom)
    _write(r / "metrics.json", {"arc_easy/n": 300, "boolq/n": 300,
                                **_pair("mean/dnd_minus_train_avg", 0.012, 0.004, 0.021),
                                "mean/base": 0.4, "mean/train_avg": 0.41, "mean/dnd_mean": 0.42, "mean/oracle": 0.45,
                                **_pair("mean/oracle_minus_train_avg", 0.04, 0.02, 0.06, "/acc")})
    _write(r / "report.md", "- **Generator** (method DnD: design `hyperconv`): ...\n")
    _write(r / "bench.csv", "stage,jobs,job_s_total\ntrain_lora,7,1200\ntotal,84,6120.9\n")
    # protocol: points, flat (one template); DnD below the training LoRAs, the oracle above them
    _write(r / "protocol" / "metrics.json", {
        "targets": ["arc_easy", "boolq"],
        **_pair("sampled/dnd_minus_train_avg", -3.0, -5.0, -1.0, "/acc"),
        **_pair("sampled/oracle_minus_train_avg", 3.0, 1.0, 5.0, "/acc"),
        **{f"sampled/{k}/acc": v for k, v in (("base", 20.0), ("train_avg", 30.0), ("dnd", 27.0), ("oracle", 33.0))}})
    _write(r / "protocol" / "scores.csv", "target,method,adapter,protocol,seed,n,acc,invalid_rate\n"
                                          "arc_easy,base,base,loglik,,100,0.23,0.0\nboolq,base,base,loglik,,100,0.5,0.0\n")
    _write(r / "protocol" / "report.md", "made as in the default run (design `basis`): ...\n")
    # cross-domain: fractions; a CI below the paper's +9.7
    _write(r / "crossdomain" / "metrics.json", {"science/n": 300, "science/train_avg": 0.6, "science/dnd_mean": 0.602,
                                                **_pair("science/dnd_minus_train_avg", 0.002, -0.03, 0.035, "/acc")})
    _write(r / "crossdomain" / "scores.csv", _scores("science", {"base": 0.5, "dnd": 0.602}))
    # fewshot: points; k=16 scored on every target, k=64 on one only
    _write(r / "fewshot" / "metrics.json", {
        "targets": ["arc_easy", "boolq"], "arc_easy/n": 300, "boolq/n": 300,
        **_pair("mean/dnd_minus_fewshot_ft_k16", 0.3, -0.4, 0.9, "/acc"), "mean/dnd_minus_fewshot_ft_k16/targets": 2,
        **_pair("mean/dnd_minus_fewshot_ft_k64", 5.0, 1.0, 9.0, "/acc"), "mean/dnd_minus_fewshot_ft_k64/targets": 1,
        **_pair("mean/dnd_minus_icl_k4", -2.0, -4.0, 1.0, "/acc"), "mean/dnd_minus_icl_k4/targets": 2})
    # ablations: points; the paper's setting ahead of one setting, level with another
    _write(r / "ablations" / "condition.json", {
        "family": "condition", "settings": ["prompt", "answer", "mixed"], "targets": ["arc_easy", "boolq"],
        "reference": "prompt", "defaults": ["prompt"],
        **_pair("prompt_minus_answer/mean/dnd/acc", 2.0, 1.0, 3.0),
        **_pair("prompt_minus_mixed/mean/dnd/acc", 0.1, -0.5, 0.6)})
    _write(r / "ablations" / "condition.csv", "family,setting,target,method,n,acc,gold_logprob\n"
                                              "condition,prompt,arc_easy,dnd,300,0.5,-1.0\n"
                                              "condition,prompt,boolq,dnd,300,0.6,-1.0\n")
    _write(r / "ablations" / "report.md", "(everything else as in the default run, design `basis`)\n")
    # math: every method at 0: not testable
    _write(r / "math" / "metrics.json", {"gsm8k/n": 40, "gsm8k/metric": "exact_match",
                                         "gsm8k/train_avg": 0.0, "gsm8k/dnd_mean": 0.0,
                                         **_pair("gsm8k/dnd_minus_train_avg", 0.0, 0.0, 0.0, "/acc")})
    _write(r / "math" / "scores.csv", _scores("gsm8k", {"base": 0.0, "dnd": 0.0, "soup": 0.0}))
    # zoo probe: fractions, no claim of the paper
    _write(r / "zoo_probe" / "metrics.json", {"datasets": ["openbookqa", "winogrande"], "mean/n": 300.0,
                                              **_pair("mean/lead_change", 0.04, 0.013, 0.07, "/acc")})
    return r


def _by_name(rows) -> dict:
    return {r.experiment: r for r in rows}


def test_rows_from_synthetic_metrics(results):
    rows = _by_name(glance_rows(results, PAPER))
    d = rows["default run"]
    assert (d.paper, d.ours, d.n, d.generator, d.verdict, d.runtime) == (
        "+21.0", "+1.2 [+0.4, +2.1]", "300 × 2", "`hyperconv`", "reproduced", "102 min (84 jobs)")
    p = rows["protocol"]
    assert (p.ours, p.n, p.generator, p.verdict) == ("-3.0 [-5.0, -1.0]", "100 × 2", "`basis`", "not reproduced")
    c = rows["crossdomain"]
    assert (c.paper, c.ours, c.n, c.verdict, c.generator) == ("+9.7", "+0.2 [-3.0, +3.5]", "300 × 1",
                                                              "not reproduced", "not recorded")
    ft, icl = rows["fewshot (few-shot tuning)"], rows["fewshot (in-context learning)"]
    assert "k = 16" in ft.comparison and (ft.ours, ft.verdict, ft.paper) == ("+0.3 [-0.4, +0.9]", "level", "-")
    assert (icl.ours, icl.verdict) == ("-2.0 [-4.0, +1.0]", "not told apart")
    a = rows["ablations: condition"]
    assert a.ours == "answer: +2.0 [+1.0, +3.0]; mixed: +0.1 [-0.5, +0.6]"
    assert (a.verdict, a.n) == ("reproduced (1 of 2), level (1 of 2)", "300 × 2")
    m = rows["math"]
    assert (m.paper, m.ours, m.n, m.verdict) == ("+23.4", "+0.0 [+0.0, +0.0]", "40 × 1", "not testable here")
    z = rows["zoo_probe"]
    assert (z.ours, z.n, z.verdict, z.paper) == ("+4.0 [+1.3, +7.0]", "300 × 2", "-", "-")


def test_function_space_row_lists_each_subject_against_nearest(results):
    def pair(s, v, lo, hi, word):
        return {**_pair(f"mean/{s}_minus_nearest", v, lo, hi, "/acc"), f"mean/{s}_minus_nearest/verdict": word}

    _write(results / "function_space" / "metrics.json", {
        "targets": ["arc_easy", "boolq"], "arc_easy/n": 300, "boolq/n": 300,
        "generators": {"g_sft": {"design": "t2l", "objective": "sft", "zoo": "default"}},
        **pair("dnd", -0.004, -0.01, 0.002, "level"), **pair("g_sft", 0.03, 0.01, 0.05, "reproduced"),
        **pair("multitask_lora", 0.01, -0.02, 0.04, "not told apart")})
    r = _by_name(glance_rows(results, PAPER))["function_space"]
    assert r.ours == "dnd: -0.4 [-1.0, +0.2]; g_sft: +3.0 [+1.0, +5.0]; multitask_lora: +1.0 [-2.0, +4.0]"
    assert (r.n, r.generator) == ("300 × 2", "`hyperconv`, `t2l`")
    assert r.verdict == "reproduced (1 of 3), level (1 of 3), not told apart (1 of 3)"


def test_every_verdict_cell_is_a_verdict_word(results):
    for r in glance_rows(results, PAPER):
        for part in r.verdict.split(", "):
            word = part.split(" (")[0]
            assert word in VERDICTS or word == "-", (r.experiment, r.verdict)


def test_missing_experiments_are_not_run_yet(results):
    rows = _by_name(glance_rows(results, PAPER))
    for name, target in (("code", "code"), ("seeds", "seeds"), ("function_space", "function_space")):
        assert rows[name].ours == f"{NOT_RUN}: `snakemake --cores all {target}`"
        assert rows[name].report is None and rows[name].verdict == "-"
    assert "results/seeds/metrics.json" not in input_files(results)


def test_links_are_relative_to_the_output(results):
    table = render(results, PAPER, results.parent)
    assert "[default run](results/report.md)" in table and "[protocol](results/protocol/report.md)" in table
    assert "[default run](report.md)" in render(results, PAPER, results)
    header = table.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    assert str(results.parent) not in table  # no machine path


def _readme(path: Path, block: str = "stale\n") -> Path:
    path.write_text(f"# Title\n\nintro\n\n{GLANCE_BEGIN}\n{block}{GLANCE_END}\n\n## Next\n")
    return path


def test_check_fails_on_a_stale_block_and_passes_on_a_fresh_one(results, tmp_path, caplog):
    readme = _readme(tmp_path / "README.md", "| Experiment | old |\n")
    args = ["glance", "--results", str(results), "--paper-numbers", str(REPO / "config" / "paper_numbers.yaml"),
            "--readme", str(readme)]
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exc:
        main([*args, "--check"])
    assert exc.value.code == 1
    msg = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(msg) == 1 and "stale" in msg[0] and "Experiment | Comparison" in msg[0] and "\n" not in msg[0]
    assert main([*args, "--out", str(tmp_path / "glance.md")]) == 0  # rewrite the block, write the file
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{GLANCE_END}\n\n## Next\n")
    assert main([*args, "--check"]) == 0
    assert (tmp_path / "glance.md").read_text() == render(results, read_paper_numbers(
        REPO / "config" / "paper_numbers.yaml"), tmp_path)
    # a stale row deep in the table is named
    readme.write_text(text.replace("[zoo_probe]", "[zoo_probe_old]"))
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        main([*args, "--check"])
    assert "first row that differs: [zoo_probe](" in caplog.records[-1].getMessage()


def test_a_readme_without_markers_is_a_one_line_error(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    assert main(["glance", "--results", str(results), "--readme", str(readme)]) == 1
    assert readme.read_text() == "# no block\n"


def test_committed_readme_block_matches_the_committed_results():
    """The README/report consistency test: the committed README's block and results/glance.md are
    the rendering of the committed results files (rerun `python -m dnd.cli glance --results results
    --out results/glance.md --readme README.md` after a results change)."""
    readme = REPO / "README.md"
    assert GLANCE_BEGIN in readme.read_text(), "README.md has lost its glance block"
    paper = read_paper_numbers(REPO / "config" / "paper_numbers.yaml")
    assert current_block(readme.read_text()) == render(REPO / "results", paper, REPO)
    assert (REPO / "results" / "glance.md").read_text() == render(REPO / "results", paper, REPO / "results")


def test_readme_verdict_sentence_says_what_the_default_row_says():
    """The one sentence above the table (the README's "**Verdict.**" paragraph) carries the default
    run's difference with its CI, the paper's number and the verdict word of the glance row."""
    text = (REPO / "README.md").read_text()
    para = " ".join(text.split("**Verdict.**", 1)[1].split("\n\n", 1)[0].split())
    rows = glance_rows(REPO / "results", read_paper_numbers(REPO / "config" / "paper_numbers.yaml"))
    row = rows[0]
    assert row.experiment == "default run"
    for cell in (row.ours, row.paper, f"**{row.verdict}**"):
        assert cell in para, f"README's verdict sentence lacks {cell!r}: {para}"
    # once the training-seed experiment has run, its two-level CI is part of the headline
    seeds = next(r for r in rows if r.experiment == "seeds")
    if seeds.report is not None:
        for cell in (seeds.ours, f"**{seeds.verdict}**"):
            assert cell in para, f"README's verdict sentence lacks the seeds row's {cell!r}: {para}"


TOY_SNAKEFILE = """
rule all:
    input: "results/glance.md", "results/figures/bars.png"

rule glance:
    input: "table.md"
    output: report("results/glance.md", caption="glance.rst", category="Main results")
    shell: "cp {input} {output}"

rule figure:
    output: report("results/figures/bars.png", category="Figures", labels={"figure": "bars"})
    shell: "cp one_pixel.png {output}"
"""
ONE_PIXEL_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_headless_browser_shows_the_glance_table_in_a_snakemake_report(results, tmp_path):
    """tests/headless_browser.py on a tiny Snakemake HTML report (the smoke run's is checked the same
    way in tests/test_workflow.py::test_smoke_html_report_renders): its "Main results" view links
    the glance table, byte for byte, and its "Figures" view names the figure."""
    import base64
    import subprocess
    import sys

    from headless_browser import chromium, data_links, render as browse

    if chromium() is None:
        pytest.skip("no chromium (scripts/setup_env.sh installs it where root and apt-get are there)")
    wf = tmp_path / "wf"
    wf.mkdir()
    table = render(results, PAPER, wf / "results")
    (wf / "table.md").write_text(table)
    (wf / "glance.rst").write_text("Results at a glance.\n")
    (wf / "one_pixel.png").write_bytes(base64.b64decode(ONE_PIXEL_PNG))
    (wf / "Snakefile").write_text(TOY_SNAKEFILE)
    for args in (["-c1", "-q"], ["--report", "report.html"]):
        subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=wf, check=True, capture_output=True,
                       timeout=300)
    main_view = browse(wf / "report.html", ["Main results"])
    assert "results/glance.md" in main_view["Main results"]
    assert data_links(main_view["dom"])["glance.md"].decode() == table
    assert "| Experiment" in table
    figures = browse(wf / "report.html", ["Figures"])
    assert "bars" in figures["Figures"].split()


def test_item_counts_differing_between_targets_are_listed(results):
    m = json.loads((results / "metrics.json").read_text())
    m["boolq/n"] = 200
    (results / "metrics.json").write_text(json.dumps(m))
    assert _by_name(glance_rows(results, PAPER))["default run"].n == "200/300 × 2"


def test_a_run_without_bootstrap_or_report_still_renders(tmp_path):
    """resamples 0 (no CI: the estimate alone, "not told apart: no CI") and no report.md (the
    generator is "not recorded"); every other experiment "not run yet"."""
    r = tmp_path / "results"
    _write(r / "metrics.json", {"arc_easy/n": 8, "mean/dnd_minus_train_avg": 0.05,
                                "mean/dnd_minus_train_avg_ci_low": None, "mean/dnd_minus_train_avg_ci_high": None})
    rows = glance_rows(r, PAPER)
    d = rows[0]
    assert (d.ours, d.n, d.generator, d.verdict, d.runtime) == ("+5.0", "8 × 1", "not recorded", "not told apart", "-")
    assert all(x.ours.startswith(NOT_RUN) for x in rows[1:])
