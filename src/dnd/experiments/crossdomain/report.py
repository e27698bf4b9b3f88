"""Report of the cross-domain experiment (target `crossdomain`, outside `all`).

  dnd crossdomain-report --params JSON --scores results/crossdomain/scores.csv
      --metrics results/crossdomain/metrics.json --paper-numbers config/paper_numbers.yaml
      --benchmarks FILE... --out results/crossdomain/report.md
      --figure results/crossdomain/figures/crossdomain.png

The experiment itself is made of the default run's stages (workflow/rules/crossdomain.smk): a
generator trained on every dataset of the run, conditioned on the unlabeled prompts of a new
domain (`crossdomain.target`, the paper's science set), its adapters and the main table's
zero-shot baselines (base, every training LoRA, soup, nearest) and controls scored by
`dnd evaluate` on the new domain's test items, merged by `dnd summarize` into scores.csv and
metrics.json (the default run's schemas; the new domain has no oracle). This module reads those
two files and writes the section "Cross-domain": the table of methods with their 95% CIs, DnD
minus every baseline and control (paired CIs over items), the paper's numbers beside ours and a
verdict in plain words (dnd.stats.verdict), and a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from dnd.paths import add_declared_option
from dnd.reporting.format import ci, ci_text, dnd_relation, md_table, paper_claim, pct
from dnd.reporting.output import figure_link, read_paper_numbers, write_report
from dnd.stats import untestable_reason

log = logging.getLogger(__name__)

SECTION = "## Cross-domain"
PAPER_TASK = "science (cross-domain, common-sense generator)"  # its row in paper_numbers.yaml
# (method key in metrics.json / scores.csv, label)
ROWS = [("base", "Base"), ("train_avg", "Training LoRAs (avg)"), ("best_train", "Best training LoRA †"),
        ("soup", "Soup"), ("nearest", "Nearest"), ("dnd", "DnD"), ("control_other", "Control: other prompts"),
        ("control_random", "Control: random text"), ("control_shuffled", "Control: shuffled words")]
COMPARED = [("train_avg", "training LoRAs (avg)"), ("soup", "soup"), ("nearest", "nearest"),
            ("control_other", "other prompts"), ("control_random", "random text"),
            ("control_shuffled", "shuffled words")]


def paper_numbers(paper: dict[str, Any]) -> dict[str, float] | None:
    """{train_avg, dnd} of the paper's cross-domain row, or None."""
    rows = ((paper or {}).get("other_domains") or {}).get("rows") or []
    for row in rows:
        if row.get("task") == PAPER_TASK:
            return {"train_avg": float(row["train_avg"]), "dnd": float(row["dnd"])}
    return None


def dnd_minus_table(comp: list[dict[str, Any]], metric_col: str, lp_col: str, lp_digits: int) -> list[str]:
    """Report lines: DnD minus each baseline and control (`comparisons`), the metric in points and
    the gold/reference log-probability in nats, each with its paired 95% CI."""
    import pandas as pd

    def cell(c: dict[str, Any], key: str, digits: int) -> str:
        return ci(c[key], c[f"{key}_ci_low"], c[f"{key}_ci_high"], digits)

    table = pd.DataFrame([{"DnD minus": c["label"], f"{metric_col}, 95% CI": cell(c, "acc", 1),
                           f"{lp_col}, 95% CI": cell(c, "gold_logprob", lp_digits)} for c in comp])
    return ["DnD minus each baseline and control (paired 95% CIs over items):", "",
            md_table(table), ""]


def method_rows(scores, metrics: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """Accuracy (%) and its 95% CI for every method of ROWS that was scored (mean over the
    training LoRAs, and over the adapters of a generated kind: the `mean` rows of scores.csv)."""
    from dnd.summary import MEAN_ADAPTER

    st = scores[scores.target == target]
    out = []
    for key, label in ROWS:
        if key == "train_avg":
            acc, lo, hi = (pct(metrics.get(f"{target}/train_avg")), math.nan, math.nan)
        elif key == "best_train":
            acc, lo, hi = pct(metrics.get(f"{target}/best_train")), math.nan, math.nan
        else:
            rows = st[(st.method == key) & (st.adapter.astype(str) == MEAN_ADAPTER)]
            if rows.empty:
                rows = st[st.method == key]
            if rows.empty:
                continue
            r = rows.iloc[0]
            acc, lo, hi = pct(r.acc), pct(r.ci_low), pct(r.ci_high)
        if math.isfinite(acc):
            out.append({"key": key, "Method": label, "acc": acc, "ci_low": lo, "ci_high": hi})
    return out


def floor_or_ceiling(rows: list[dict[str, Any]]) -> str | None:
    """Why the paper's claim cannot be tested when every method of `method_rows` (accuracies in %)
    scores 0 or 100 (dnd.stats.untestable_reason), else None."""
    return untestable_reason([r["acc"] / 100 for r in rows])


def comparisons(metrics: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """DnD minus each compared method: accuracy points and gold log-prob, paired 95% CIs."""
    out = []
    for b, label in COMPARED:
        key = f"{target}/dnd_minus_{b}"
        if metrics.get(f"{key}/acc") is None:
            continue
        out.append({"baseline": b, "label": label, "acc": pct(metrics[f"{key}/acc"]),
                    "acc_ci_low": pct(metrics.get(f"{key}/acc_ci_low")),
                    "acc_ci_high": pct(metrics.get(f"{key}/acc_ci_high")),
                    "gold_logprob": float(metrics.get(f"{key}/gold_logprob") or math.nan),
                    "gold_logprob_ci_low": float(metrics.get(f"{key}/gold_logprob_ci_low") or math.nan),
                    "gold_logprob_ci_high": float(metrics.get(f"{key}/gold_logprob_ci_high") or math.nan)})
    return out


def crossdomain_markdown(scores, metrics: dict[str, Any], params: dict[str, Any], paper: dict[str, Any],
                         figure_rel: str, timing: tuple[float, float, int] | None) -> str:
    import pandas as pd

    from dnd.benchmarks.datasets import title

    target = params["target"]
    name = title(target) if _known(target) else target
    rows = method_rows(scores, metrics, target)
    comp = comparisons(metrics, target)
    n = metrics.get(f"{target}/n")
    sources = params.get("sources", [])
    md_lines = [SECTION, "",
                f"A generator (design `{params.get('design', 'n/a')}`) trained on all {len(sources)} datasets of the "
                f"default run ({', '.join(title(s) for s in sources)}), conditioned on unlabeled prompts of a new "
                f"domain, {name} ({params.get('n_cond', 'n/a')} prompts drawn apart from the scored items), and scored "
                f"on {n} of its test items against the main table's zero-shot baselines and controls, with the same "
                f"scorer (log-likelihood over the answers). {metrics.get(f'{target}/n_dnd_adapters', 'n/a')} DnD "
                "adapters, each from its own draw of prompts; the new domain has no LoRA, so no oracle. Accuracy in % "
                "with 95% bootstrap CIs over items.", ""]
    table = pd.DataFrame([{"Method": r["Method"], "Accuracy (95% CI)": ci(r["acc"], r["ci_low"], r["ci_high"],
                                                                         sign=False)} for r in rows])
    md_lines += [md_table(table), "",
                 "† chosen with the new domain's test labels (not zero-shot).", ""]
    if comp:
        md_lines += dnd_minus_table(comp, "Accuracy (points)", "Gold log-prob (nats)", 3)
    pn = paper_numbers(paper)
    main = next((c for c in comp if c["baseline"] == "train_avg"), None)
    if pn and main:
        md_lines += [paper_claim("Qwen2.5-0.5B, its protocol", pn, "", metrics.get(f"{target}/train_avg"),
                                 metrics.get(f"{target}/dnd_mean"), main, floor_or_ceiling(rows)), ""]
        noprompt = [c for c in comp if c["baseline"] in ("soup", "nearest")]
        if noprompt:
            md_lines += ["Where the gain comes from: against the simpler zero-shot baselines, the soup (the sources' "
                         "mean, no prompts) and nearest (the training LoRA whose prompts are closest to the new "
                         "domain's), " + "; ".join(f"{dnd_relation(c)} ({ci_text(c)})" for c in noprompt) + ".", ""]
        ctrl = [c for c in comp if c["baseline"].startswith("control_")]
        if ctrl:
            md_lines += ["Against its controls (the same generator given other prompts), " + "; ".join(
                       f"{dnd_relation(c)} ({ci_text(c)})" for c in ctrl) + ": " + (
                       "the new domain's prompts matter" if all(c["acc_ci_low"] > 0 for c in ctrl) else
                       "the new domain's prompts make no measurable difference against at least one control") + "."]
        md_lines += [""]
    md_lines += ["Budget: " + (f"the experiment's {timing[2]} jobs took {timing[0]:.0f} min of wall time in total and "
                               f"{timing[1]:.0f} min of CPU time (Snakemake benchmarks; the zoo, tokens and encoded "
                               "prompts of the default run are reused)." if timing
                               else "no benchmark files were found for its jobs."),
                 "", f"![Cross-domain]({figure_rel})", ""]
    return "\n".join(md_lines)


def _known(name: str) -> bool:
    from dnd.benchmarks.datasets import REGISTRY

    return name in REGISTRY


def comparison_panels(axes, rows: list[dict[str, Any]], comp: list[dict[str, Any]], paper_gain: float | None,
                      metric: str = "accuracy") -> None:
    """Two panels: (left) every method's level with its 95% CI; (right) DnD minus each compared
    method, paired 95% CIs over items, with the ±EQUIVALENT level band and the paper's claimed
    gain over the training LoRAs (a gain, comparable across set-ups; never its absolute numbers)."""
    from dnd.reporting.figures import forest, method_color
    from dnd.stats import EQUIVALENT

    forest(axes[0], [{"label": r["Method"], "est": r["acc"], "lo": r["ci_low"], "hi": r["ci_high"],
                      "color": method_color(r["key"])} for r in rows], None, f"{metric} (%), 95% CI")
    forest(axes[1], [{"label": f"DnD − {c['label']}", "est": c["acc"], "lo": c["acc_ci_low"], "hi": c["acc_ci_high"],
                      "color": method_color(c["baseline"]),
                      "paper": paper_gain if c["baseline"] == "train_avg" else None} for c in comp],
           EQUIVALENT, f"DnD − method, {metric} (points), paired 95% CI")
    if rows and all(r["acc"] == 0 for r in rows):
        axes[0].text(0.97, 0.5, "every method scores 0\non every item", transform=axes[0].transAxes, ha="right",
                     va="center", fontsize=8)


def crossdomain_figure(rows: list[dict[str, Any]], comp: list[dict[str, Any]], paper: dict[str, float] | None,
                       target: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnd.reporting.figures import apply_style, forest_legend, save_png
    from dnd.stats import EQUIVALENT

    apply_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * max(len(rows), len(comp)) + 1.6))
    gain = paper["dnd"] - paper["train_avg"] if paper else None
    comparison_panels(axes, rows, comp, gain)
    fig.suptitle(f"Cross-domain: a common-sense generator on {target}")
    fig.tight_layout()
    forest_legend(fig, EQUIVALENT, gain is not None)
    save_png(fig, out)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="JSON: {target, sources, design, n_cond}")
    p.add_argument("--scores", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--paper-numbers", type=Path, default=None)
    add_declared_option(p, "--benchmarks", "the experiment's jobs' benchmark files (benchmarks/crossdomain/...: "
                        "job times)", required=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def _run_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from dnd.config import parse_params
    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    for key in ("target", "sources"):
        if key not in params:
            raise ValueError(f"--params needs {key!r}")
    for path in (args.scores, args.metrics):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `snakemake --cores all crossdomain` first")
    scores = pd.read_csv(args.scores)
    metrics = json.loads(args.metrics.read_text())
    if f"{params['target']}/n" not in metrics:
        raise ValueError(f"{args.metrics} has no scores for {params['target']!r}")
    paper = read_paper_numbers(args.paper_numbers)
    rows = method_rows(scores, metrics, params["target"])
    crossdomain_figure(rows, comparisons(metrics, params["target"]), paper_numbers(paper), params["target"],
                       args.figure)
    write_report(args.out, crossdomain_markdown(scores, metrics, params, paper, figure_link(args.figure, args.out),
                                                benchmark_minutes(args.benchmarks)), args.figure)


COMMANDS = {"crossdomain-report": (_add_report, _run_report)}
