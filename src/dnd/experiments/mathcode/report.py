"""Summary and report of the math and code experiments (dnd.experiments.mathcode.score).

  dnd mathcode-summary --domain D --params JSON --eval FILE... --scores CSV --metrics JSON
      results/<domain>/scores.csv: the main table's schema (dnd.summary.SCORE_COLUMNS:
      target,method,adapter,n,acc,ci_low,ci_high,gold_logprob; `acc` is the target's metric, and
      gold_logprob the reference solution's log-probability) plus a `metric` column naming it
      (dnd.experiments.mathcode.score.METRIC); results/<domain>/metrics.json: dnd.summary.headline_metrics (paired
      bootstrap CIs of DnD minus each baseline and control, on the metric and on gold_logprob)
      plus `{target}/secondary/{method}` (GSM8K strict-match) and `{target}/status/{method}`
      (HumanEval outcome counts).
  dnd mathcode-report --domain D --params JSON --scores CSV --metrics JSON --paper-numbers YAML
                      --benchmarks FILE... --out results/<domain>/report.md --figure PNG
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from dnd.experiments.crossdomain.report import comparisons, dnd_minus_table, floor_or_ceiling, method_rows
from dnd.io import write_json, write_text
from dnd.paths import add_declared_option
from dnd.reporting.format import ci, ci_text, dnd_relation, md_table, model_name, number, paper_claim, pct
from dnd.reporting.output import figure_link, read_paper_numbers, write_report

log = logging.getLogger(__name__)

TITLES = {"gsm8k": "GSM8K", "math": "MATH", "humaneval": "HumanEval"}
# the paper's row of each target in config/paper_numbers.yaml (other_domains.rows), Qwen2.5-0.5B
PAPER_TASK = {"gsm8k": "GSM8K", "humaneval": "HumanEval"}
PAPER_MODEL = "Qwen2.5-0.5B"


# ============================================================================ summary
def summarize(rows: list[dict[str, Any]], sources: list[str], resamples: int, seed: int):
    """(scores DataFrame with a `metric` column, metrics dict)."""
    from dnd.summary import headline_metrics, scores_frame

    scores = scores_frame(rows, resamples, seed)
    metric = {r["target"]: r["metric"] for r in rows}
    scores.insert(len(scores.columns), "metric", scores["target"].map(metric))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    folds = {t: list(sources) for t in targets}
    metrics = headline_metrics(rows, scores.drop(columns="metric"), resamples, seed, folds)
    for t in targets:
        metrics[f"{t}/metric"] = metric[t]
        for r in (r for r in rows if r["target"] == t):
            name = f"{r['method']}/{r['adapter']}"
            for key, vals in (r.get("extra") or {}).items():
                if key == "status":
                    metrics[f"{t}/status/{name}"] = dict(sorted(Counter(vals).items()))
                else:
                    metrics[f"{t}/secondary/{key}/{name}"] = sum(vals) / len(vals)
    return scores, metrics


def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, choices=("math", "code"))
    p.add_argument("--params", required=True, help='JSON: {"sources": [...], "bootstrap": int, "seed": int}')
    p.add_argument("--eval", required=True, nargs="+", type=Path)
    p.add_argument("--scores", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)


def _run_summary(args: argparse.Namespace) -> None:
    from dnd.config import parse_params
    from dnd.summary import load_eval_rows, require_complete

    params = parse_params(args.params)
    rows = load_eval_rows(args.eval)
    # every file's target with every method, every source LoRA and the same items (dnd.summary)
    require_complete(rows, [Path(f).stem for f in args.eval], sources={Path(f).stem: list(params["sources"])
                                                                       for f in args.eval})
    scores, metrics = summarize(rows, list(params["sources"]), int(params.get("bootstrap", 2000)),
                                int(params.get("seed", 0)))
    write_text(args.scores, scores.to_csv(index=False))
    write_json(args.metrics, metrics, sort_keys=True)
    log.info("wrote %s (%d rows) and %s", args.scores, len(scores), args.metrics)


# ============================================================================ report
def paper_row(paper: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The paper's {train_avg, dnd, metric} for a target (config/paper_numbers.yaml), or None."""
    task = PAPER_TASK.get(target)
    for row in ((paper or {}).get("other_domains") or {}).get("rows") or []:
        if task and row.get("task") == task and row.get("model") == PAPER_MODEL:
            return {"train_avg": float(row["train_avg"]), "dnd": float(row["dnd"]), "metric": row.get("metric", "")}
    return None


def _lp(scores, target: str, method: str) -> str:
    from dnd.summary import MEAN_ADAPTER

    st = scores[(scores.target == target) & (scores.method == method)]
    if method == "source_lora":
        return f"{st.gold_logprob.mean():.1f}" if len(st) else "n/a"
    mean = st[st.adapter.astype(str) == MEAN_ADAPTER]
    st = mean if len(mean) else st
    return f"{float(st.gold_logprob.iloc[0]):.1f}" if len(st) else "n/a"


def _name(key: str) -> str:
    """'source_lora/mu_math' -> 'mu_math', 'nearest/mu_math' -> 'nearest (mu_math)', 'soup/soup' -> 'soup',
    'dnd/0' -> 'dnd/0'."""
    method, adapter = key.split("/", 1)
    if method == "nearest":
        return f"nearest ({adapter})"
    return adapter if method == "source_lora" else (method if method == adapter else key)


def target_section(domain: str, target: str, scores, metrics: dict[str, Any], paper: dict[str, Any],
                   model: str = "this run's base model") -> list[str]:
    import pandas as pd

    rows = method_rows(scores, metrics, target)
    comp = comparisons(metrics, target)
    metric = metrics.get(f"{target}/metric", "")
    lp_key = {"base": "base", "train_avg": "source_lora", "soup": "soup", "nearest": "nearest", "dnd": "dnd",
              "control_random": "control_random", "control_shuffled": "control_shuffled"}
    table = pd.DataFrame([{"Method": r["Method"], f"{metric} (%, 95% CI)": ci(r["acc"], r["ci_low"], r["ci_high"],
                                                                             sign=False),
                           "Reference log-prob (nats)": (_lp(scores, target, lp_key[r["key"]])
                                                         if r["key"] in lp_key else "")} for r in rows])
    md_lines = [f"### {TITLES.get(target, target)} (n = {metrics.get(f'{target}/n')}, metric `{metric}`)", "",
                md_table(table), "",
                "† chosen with the target's test labels (not zero-shot). Training LoRAs (avg): the reference log-prob "
                "is the mean over the sources.", ""]
    if rows and all(r["acc"] == 0 for r in rows):
        md_lines += [f"Every method scores 0 on every item: `{metric}` is at its floor here and cannot compare them; "
                     "only the reference log-probability does.", ""]
    if comp:
        md_lines += dnd_minus_table(comp, "Metric (points)", "Reference log-prob (nats)", 2)
    sec = {k.split("/", 3)[3]: v for k, v in metrics.items() if k.startswith(f"{target}/secondary/")}
    if sec:
        md_lines += ["GSM8K `exact_match,strict-match` (the answer after `#### `, the format of the reference "
                     "solutions), per method/adapter: "
                     + ", ".join(f"{_name(k)} {number(100 * v)}" for k, v in sec.items()) + ".", ""]
    status = {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith(f"{target}/status/")}
    if status:
        total = Counter()
        for v in status.values():
            total.update(v)
        md_lines += ["Outcomes of every completion run (all methods): "
                     + ", ".join(f"{k} {v}" for k, v in sorted(total.items()))
                     + " (dnd.benchmarks.code_exec: a timeout or crash is a failure).", ""]
    pn = paper_row(paper, target)
    main = next((c for c in comp if c["baseline"] == "train_avg"), None)
    floor = floor_or_ceiling(rows)  # every method at 0 (or 100): nothing to compare
    if pn and main:
        md_lines += [paper_claim(f"{PAPER_MODEL}, its protocol, {pn['metric']}", pn, model,
                                 metrics.get(f"{target}/train_avg"), metrics.get(f"{target}/dnd_mean"), main,
                                 floor), ""]
    elif main:
        md_lines += [f"The paper reports no {TITLES.get(target, target)} number for {PAPER_MODEL}. Here: training "
                     f"LoRAs {number(pct(metrics.get(f'{target}/train_avg')))} → DnD "
                     f"{number(pct(metrics.get(f'{target}/dnd_mean')))} ({ci_text(main)}).", ""]
    if comp and floor:  # no relation word where the metric cannot tell methods apart (the glossary's rule)
        md_lines += [f"In words: DnD against each baseline is not testable here on `{metric}` ({floor}); the "
                     "reference log-probability above is the only comparison.", ""]
    elif comp:
        md_lines += ["In words: " + "; ".join(f"{dnd_relation(c)} ({ci_text(c)})" for c in comp) + ".", ""]
    return md_lines



def design_note(domain: str, cfg: dict[str, Any]) -> str:
    """The report's paragraph on how the domain's sources and targets were built (cfg: the config's
    `math` or `code` section)."""
    if domain == "math":
        return (
            "Design. The paper's six math pools cannot be held out one at a time here: Math-Plus is "
            "byte-identical to Math-IIO (one pool, used once), Mu-Math has 271 distinct items, and the "
            "others are not in the shared data. The sources are Math-IIO (arithmetic), Mu-Math and "
            f"{cfg['shards']} shards of MATH split by a hash of the prompt; "
            f"{100 * cfg['target_share']:.0f}% of MATH (by the same hash) is kept apart, and the MATH target's "
            "unlabeled prompts and scored items come only from it. "
            "GSM8K is never seen by any LoRA or the generator (its prompts condition generation, other GSM8K "
            "items are scored): the honest zero-shot target. MATH is an in-domain target (the generator has "
            "seen other MATH items, not these). One generator is trained on all sources and serves both targets."
        )
    return (
        "Design. The paper's seven code pools are not in the shared data; CodeAlpaca-20K (10,000 items) is "
        f"split by a hash of the prompt into {cfg['shards']} source pools so the generator learns "
        "from more than one checkpoint family; they are one dataset, so the sources are close to each other "
        f"by construction. HumanEval: {cfg['n_cond']} problems' prompts (by hash) condition "
        "generation and are never scored (the paper conditions on the same prompts it tests on); "
        f"{cfg['n_test'] or 'all the'} others are scored by pass@1 of a greedy answer. The stub is "
        "asked for in a chat turn and the function the model writes is run (as for chat models in EvalPlus), "
        "not the raw stub continued as in the paper: SmolLM2-135M-Instruct given the raw stub closes a code "
        "block at once (empty completions). pass@k from n samples would multiply the generation time by n and "
        "is not run. Programs run only through dnd.benchmarks.code_exec (sandboxed; a crash or hang is a failure)."
    )


def mathcode_markdown(domain: str, params: dict[str, Any], scores, metrics: dict[str, Any], paper: dict[str, Any],
                      figure_rel: str, timing: tuple[float, float, int] | None) -> str:
    targets = list(dict.fromkeys(scores.target))
    sources = params.get("sources", [])
    head = {"math": "## Math", "code": "## Code"}[domain]
    md_lines = [head, "", design_note(domain, params["settings"]), "",
                f"DnD: design `{params.get('design') or 'n/a'}` (config `{domain}.design`, else "
                "`generator.design`).", "",
                f"Sources ({len(sources)} LoRAs): {', '.join(f'`{s}`' for s in sources)}. Every method is scored on "
                "the same items with the same greedy decoding; the training-LoRA average is the mean over the sources, "
                "the soup their element-wise mean, nearest the source whose prompts are closest to the target's "
                "unlabeled prompts. No target has a LoRA of its own, so there is no oracle. Reference log-prob: log "
                "P(reference solution | prompt), summed over its tokens, mean over items (higher is better): it moves "
                "where the metric is near zero.", ""]
    for t in targets:
        md_lines += target_section(domain, t, scores, metrics, paper, model_name(params.get("base_model") or {}))
    md_lines += ["Budget: " + (f"the experiment's {timing[2]} jobs took {timing[0]:.0f} min of wall time in total and "
                               f"{timing[1]:.0f} min of CPU time (Snakemake benchmarks)." if timing
                               else "no benchmark files were found for its jobs."),
                 "", f"![{domain}]({figure_rel})", ""]
    return "\n".join(md_lines)


def mathcode_figure(domain: str, scores, metrics: dict[str, Any], paper: dict[str, Any], out: Path) -> None:
    """Per target a row of two panels (dnd.experiments.crossdomain.report.comparison_panels): each
    method's metric with its 95% CI, and DnD minus each method with its paired 95% CI, the ±1-point
    level band and the paper's claimed gain (its absolute numbers are another model's and
    protocol's: never drawn on our axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnd.experiments.crossdomain.report import comparison_panels
    from dnd.reporting.figures import apply_style, forest_legend, save_png
    from dnd.stats import EQUIVALENT

    apply_style()
    targets = list(dict.fromkeys(scores.target))
    n_rows = max((len(method_rows(scores, metrics, t)) for t in targets), default=1)
    fig, axes = plt.subplots(len(targets), 2, figsize=(11, (0.42 * n_rows + 1.3) * len(targets)), squeeze=False)
    any_paper = False
    for ax, t in zip(axes, targets):
        pn = paper_row(paper, t)
        any_paper |= pn is not None
        metric = metrics.get(f"{t}/metric", "")
        comparison_panels(ax, method_rows(scores, metrics, t), comparisons(metrics, t),
                          pn["dnd"] - pn["train_avg"] if pn else None, metric)
        ax[0].set_title(f"{TITLES.get(t, t)} (n = {metrics.get(f'{t}/n')})", loc="left")
    fig.tight_layout()
    forest_legend(fig, EQUIVALENT, any_paper)
    save_png(fig, out)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, choices=("math", "code"))
    p.add_argument("--params", required=True,
                   help='JSON: {"sources": [...], "settings": the config\'s math/code section, "base_model": {...}}')
    p.add_argument("--scores", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--paper-numbers", type=Path, default=None)
    add_declared_option(p, "--benchmarks", "the domain's jobs' benchmark files (benchmarks/<domain>/...: job times)",
                        required=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def _run_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from dnd.config import parse_params
    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    scores = pd.read_csv(args.scores)
    metrics = json.loads(args.metrics.read_text())
    paper = read_paper_numbers(args.paper_numbers)
    mathcode_figure(args.domain, scores, metrics, paper, args.figure)
    write_report(args.out, mathcode_markdown(args.domain, params, scores, metrics, paper,
                                             figure_link(args.figure, args.out),
                                             benchmark_minutes(args.benchmarks)), args.figure)


COMMANDS = {"mathcode-summary": (_add_summary, _run_summary), "mathcode-report": (_add_report, _run_report)}
