"""Every experiment report states its verdicts in the one vocabulary (dnd.stats.VERDICTS) and in no
other words: the reports are rendered from the synthetic inputs of their own test files.

A verdict in a report is (a) a cell of a table column headed "Verdict", (b) bold text "**Verdict:
X**" or (c) bold text that starts with a lower-case letter (labels in bold start with a capital)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from dnd import stats
from dnd.experiments.ablations import report as ab
from dnd.experiments.crossdomain import report as cd
from dnd.experiments.mathcode import report as mcr
from dnd.experiments.protocol import report as pr
from dnd.reporting.output import read_paper_numbers
from test_ablations import _rows as ablation_rows
from test_crossdomain import PAPER, _files as crossdomain_files
from test_fewshot import run_report as fewshot_report, run_summary as fewshot_summary, summary_world  # noqa: F401
from test_protocol import _row as protocol_row

BANNED = ("too noisy", "partly reproduced", "not distinguishable", "not reproduced by this run", "failed")


def stated_verdicts(text: str) -> list[str]:
    """The verdicts a report states (module doc)."""
    out = []
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-: "):
            out += [c for h, c in zip(header, cells) if h == "Verdict" and c]
    for bold in re.findall(r"\*\*([^*]+)\*\*", text):
        if bold.startswith("Verdict: "):
            out.append(bold[len("Verdict: "):])
        elif bold[:1].islower():
            out.append(bold)
    return out


def check(text: str) -> list[str]:
    """Assert the report's verdicts are in the vocabulary and no banned phrase appears; the words."""
    low = text.lower()
    assert not [b for b in BANNED if b in low], [b for b in BANNED if b in low]
    verdicts = stated_verdicts(text)
    assert verdicts, "no verdict found"
    bad = [v for v in verdicts if stats.verdict_word(v) not in stats.VERDICTS]
    assert not bad, bad
    return [stats.verdict_word(v) for v in verdicts]


def test_fewshot_report(summary_world):  # noqa: F811 (the fixture, imported)
    fewshot_summary(summary_world)
    words = check(fewshot_report(summary_world))
    assert {"reproduced", "not reproduced", "not told apart"} <= set(words)


def test_ablations_report():
    n = 40
    good, bad, half = [1] * n, [0] * n, [i % 2 for i in range(n)]
    cond = {("prompt", "t"): ablation_rows("t", [good], {"s1": half}),
            ("answer", "t"): ablation_rows("t", [bad], {"s1": half})}
    pool = {("all", "t"): ablation_rows("t", [good], {"s1": half}),
            ("32", "t"): ablation_rows("t", [half], {"s1": half}),
            ("512", "t"): ablation_rows("t", [good], {"s1": half})}
    # the sources curve, count 1 in two orders (as the mean over orders) against 2
    sources = {(s, "t"): ablation_rows("t", [c], {"s1": half}) for s, c in (("1", bad), ("1o1", half), ("2", good))}
    families = [ab.summarize(cells, fam, {k: ["s1"] for k in cells}, 1, 100, 0)[1]
                for fam, cells in (("condition", cond), ("pool", pool), ("sources", sources))]
    words = check(ab.ablations_markdown(families, "f.png", {}, 1))
    # the settings of `pool` disagree: each word with its count
    assert words == ["reproduced", "reproduced", "level", "reproduced"]
    assert "DnD (2 sources) is ahead of DnD (1 source, mean over 2 orders)" in ab.family_verdict(families[2])
    assert "**reproduced** against 1 of 2 settings, **level** against 1" in ab.family_verdict(families[1])


def test_protocol_report():
    """Two templates; under `default` the loglik oracle has no headroom. Each verdict is stated in
    the verdict table (template x protocol) and again in its template's section."""
    n = 8
    rows = []
    for template in ("default", "chatml"):
        for p, oracle in (("loglik", [1, 0] * 4 if template == "default" else [1] * n), ("greedy", [1] * n)):
            rows += [protocol_row("t1", "base", "base", p, None, [0, 1] * 4, [1] * n, template),
                     protocol_row("t1", "dnd", "0", p, None, [1] * 6 + [0] * 2, [1] * n, template),
                     protocol_row("t1", "source_lora", "t1", p, None, oracle, [1] * n, template)]
            rows += [protocol_row("t1", "source_lora", s, p, None, [1, 0] * 4, [1] * n, template)
                     for s in ("s1", "s2")]
    m = pr.summarize(rows, ["default", "chatml"], {"t1": ["s1", "s2"]}, resamples=200, seed=0)
    words = check(pr.protocol_markdown(m, {"protocol": {"n_test": n}}, read_paper_numbers(PAPER), "f.png"))
    table = ["not testable here", "not told apart", "not told apart", "not told apart"]
    assert words == table + table  # the table, then the sections (bold)


@pytest.mark.parametrize("acc", [None, 0.0])
def test_mathcode_report(tmp_path, acc):
    """The cross-domain test's scores as a GSM8K target (the paper has a GSM8K number); at 0 for
    every method the claim is not testable."""
    scores, metrics = crossdomain_files(tmp_path)
    df = pd.read_csv(scores).assign(target="gsm8k", metric="exact_match,flexible-extract")
    m = {k.replace("science/", "gsm8k/"): v for k, v in json.loads(metrics.read_text()).items()}
    if acc is not None:
        df["acc"] = df["ci_low"] = df["ci_high"] = acc
        m.update({"gsm8k/train_avg": acc, "gsm8k/best_train": acc, "gsm8k/dnd_mean": acc})
    params = {"sources": ["a", "b"], "settings": {"shards": 3, "target_share": 0.25}, "base_model": {"source": "tiny"}}
    words = check(mcr.mathcode_markdown("math", params, df, m, read_paper_numbers(PAPER), "f.png", None))
    assert words == ["not testable here" if acc == 0 else "reproduced"]


def test_crossdomain_report(tmp_path):
    scores, metrics = crossdomain_files(tmp_path)
    params = {"target": "science", "sources": ["arc_easy", "boolq"], "design": "basis", "n_cond": 200}
    words = check(cd.crossdomain_markdown(pd.read_csv(scores), json.loads(metrics.read_text()), params,
                                          read_paper_numbers(PAPER), "f.png", None))
    assert words == ["reproduced"]


def test_the_extraction_sees_other_words():
    """The check is not vacuous: a private word in a Verdict column or in bold fails it."""
    assert stated_verdicts("| A | Verdict |\n|---|---|\n| x | too noisy to tell |\n\n**partly reproduced**") == [
        "too noisy to tell", "partly reproduced"]
    with pytest.raises(AssertionError):
        check("| A | Verdict |\n|---|---|\n| x | inconclusive |")


def test_function_space_report(tmp_path):
    from test_function_space_report import run_report as fs_report

    text = fs_report(tmp_path)[-1]
    assert {"reproduced", "not told apart"} <= set(check(text))
