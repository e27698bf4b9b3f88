"""Summary, figure and report of the few-shot experiment (dnd.experiments.fewshot.tuning).

Commands:
  fewshot-summary  dnd fewshot-summary --params JSON --fewshot-eval results/fewshot/eval/{T}/*.json* ...
                       --dnd-eval results/eval/{T}.jsonl ... --timings results/fewshot/timings/{train,icl}/...
                       --generate-timings results/timings/generate/{T}/dnd_{i}.json ...
                       --csv results/fewshot.csv --metrics results/fewshot/metrics.json
  fewshot-report   dnd fewshot-report --params JSON --csv ... --metrics ...
                       --generate-timings results/timings/generate/{T}/dnd_{i}.json ...
                       [--generator-timings results/timings/train_generator/{T}_{design}.json ...]
                       [--benchmarks benchmarks/fewshot/{T}/*.tsv ...]
                       --out results/fewshot/report.md --figure results/fewshot/figures/fewshot.png

What results/fewshot.csv and results/fewshot/metrics.json hold, how the comparisons are pooled
and the verdict (dnd.stats.verdict, the README's verdict words): docs/modules.md, section
`src/dnd/experiments/fewshot/report.py`; the formats: docs/contracts.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dnd.benchmarks.datasets import title
from dnd.config import parse_params
from dnd.experiments.fewshot.tuning import DND, FT, ICL
from dnd.io import read_jsonl, write_csv, write_json
from dnd.paths import add_declared_option, declared
from dnd.reporting.format import ci, md_table, number
from dnd.reporting.output import figure_link, write_report
from dnd.stats import (
    NOT_REPRODUCED,
    NOT_TOLD_APART,
    REPRODUCED,
    VERDICTS,
    paired_boot_means,
    percentile_ci,
    pooled_ci,
    verdict,
    verdict_word,
)
from dnd.summary import require_complete

log = logging.getLogger(__name__)

CSV_COLUMNS = ["target", "method", "k", "n", "acc", "seconds"]
TITLES = {DND: "DnD (unlabeled prompts)", FT: "Few-shot tuning", ICL: "In-context learning"}
#: What the paper reports, in its own words where it has numbers (config/paper_numbers.yaml has
#: no few-shot numbers: the paper shows them in a figure only)
PAPER_ACCURACY = ("DnD, conditioned on unlabeled prompts, outperforms LoRA tuning on k labeled examples and "
                  "in-context learning with k demonstrations for k up to 256 (ARC-Challenge, Qwen2.5-0.5B, "
                  "sampled answers)")
PAPER_COST = ("DnD generates an adapter in 0.11-0.73 s (one A100), \"up to 12,000x\" less overhead than tuning "
              "on the full target set; few-shot tuning and ICL cost more than generation")


# ============================================================================ inputs
def _read_json(path: Path, what: str) -> Any:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return json.loads(Path(path).read_text())


def load_inputs(targets: list[str], fewshot_eval: Sequence[Path], dnd_eval: Sequence[Path], timings: Sequence[Path],
                generate_timings: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Per target: {"rows": few-shot and ICL rows, "dnd": the default run's dnd rows, "ft_s": {k: training
    loop seconds}, "icl_s": {k: scoring seconds}, "context": ICL context info, "dnd_s": [generation seconds]}.
    The declared files, each found by its name (dnd.paths.declared): `fewshot_eval` {T}/fewshot_ft.jsonl,
    {T}/icl.jsonl, {T}/icl_context.json; `dnd_eval` {T}.jsonl; `timings` train/{T}_k{k}.json,
    icl/{T}.json; `generate_timings` {T}/dnd_{i}.json of the dnd rows' adapters."""

    out = {}
    for t in targets:
        rows = [r for name in (FT, ICL)
                for r in read_jsonl(_existing(declared(fewshot_eval, Path(t) / f"{name}.jsonl", f"{name} rows of {t}",
                                                       "--fewshot-eval")))]
        dnd_file = _existing(declared(dnd_eval, f"{t}.jsonl", f"the default run's rows of {t}", "--dnd-eval"))
        dnd = [r for r in read_jsonl(dnd_file) if r["method"] == DND]
        if not dnd:
            raise ValueError(f"{dnd_file} has no dnd rows")
        ft_s = {}
        for r in rows:
            if r["method"] == FT:
                k = int(r["k"])
                ft_s[k] = float(_read_json(declared(timings, Path("train") / f"{t}_k{k}.json",
                                                    f"few-shot LoRA timings of {t} k={k}", "--timings"),
                                           "few-shot LoRA timings")["loop_s"])
        icl_s = {int(k): float(v) for k, v in
                 _read_json(declared(timings, Path("icl") / f"{t}.json", f"ICL timings of {t}", "--timings"),
                            "ICL timings")["scoring_s"].items()}
        context = _read_json(declared(fewshot_eval, Path(t) / "icl_context.json", f"ICL context info of {t}",
                                      "--fewshot-eval"), "ICL context info")
        gen = sorted(declared(generate_timings, Path(t) / f"dnd_{a}.json", f"generation timing of {t}'s dnd_{a}",
                              "--generate-timings") for a in {str(r["adapter"]) for r in dnd})
        dnd_s = [float(_read_json(p, "generation timings")["total_s"]) for p in gen]
        out[t] = {"rows": rows, "dnd": dnd, "ft_s": ft_s, "icl_s": icl_s, "context": context, "dnd_s": dnd_s}
    return out


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"evaluation file not found: {path}")
    return path


# ============================================================================ summary
def _items(rows: list[dict], what: str, ids: list[str]) -> np.ndarray:
    """Per-item correctness averaged over `rows` (one row, or a method's adapters), checked to
    be scored on `ids`."""
    for r in rows:
        if [str(i) for i in r["ids"]] != ids:
            raise ValueError(f"{what} was scored on other test items than the default run's DnD rows "
                             "(a different evaluation.limit or test split?)")
    return np.mean([np.asarray(r["correct"], dtype=float) for r in rows], axis=0)


def summarize(inputs: dict[str, dict[str, Any]], resamples: int, seed: int) -> tuple[list[dict], dict[str, Any]]:
    """(results/fewshot.csv rows, metrics.json) from `load_inputs` (docs/modules.md)."""

    csv_rows: list[dict] = []
    m: dict[str, Any] = {"targets": list(inputs)}
    pooled: dict[tuple[str, int], list] = {}
    for t, x in inputs.items():
        ids = [str(i) for i in x["dnd"][0]["ids"]]
        n = len(ids)
        dnd = _items(x["dnd"], f"{t} dnd", ids)
        m[f"{t}/n"] = n
        m[f"{t}/dnd/acc"] = 100 * float(dnd.mean())
        m[f"{t}/dnd/adapters"] = len(x["dnd"])
        m[f"{t}/dnd/acc_sd"] = 100 * float(np.std([np.mean(r["correct"]) for r in x["dnd"]],
                                                   ddof=1)) if len(x["dnd"]) > 1 else 0.0
        csv_rows.append({"target": t, "method": DND, "k": 0, "n": n, "acc": float(dnd.mean()),
                         "seconds": round(float(np.median(x["dnd_s"])), 4)})
        zero = x["icl_s"].get(0)
        for method in (FT, ICL):
            for r in sorted((r for r in x["rows"] if r["method"] == method), key=lambda r: int(r["k"])):
                k = int(r["k"])
                items = _items([r], f"{t} {method} k={k}", ids)
                seconds = x["ft_s"][k] if method == FT else x["icl_s"][k] - zero
                csv_rows.append({"target": t, "method": method, "k": k, "n": n, "acc": float(items.mean()),
                                 "seconds": round(float(seconds), 3)})
                m[f"{t}/{method}/k{k}/acc"] = 100 * float(items.mean())
                if k == 0:  # the zero-shot base model: a reference, not a few-shot method
                    continue
                diff = 100 * (dnd - items)
                key = f"{t}/dnd_minus_{method}_k{k}"
                m[f"{key}/acc"] = float(diff.mean())
                boot = paired_boot_means(diff, resamples, seed, t)
                m[f"{key}/acc_ci_low"], m[f"{key}/acc_ci_high"] = percentile_ci(boot)
                pooled.setdefault((method, k), []).append((float(diff.mean()), boot))
        for k, need in x["context"]["positions"].items():
            m[f"{t}/icl/k{k}/positions"] = int(need)
            m[f"{t}/icl/k{k}/fits"] = int(k) not in x["context"]["skipped"]
        m[f"{t}/icl/max_length"] = int(x["context"]["max_length"])
    for (method, k), per in sorted(pooled.items()):
        key = f"mean/dnd_minus_{method}_k{k}"
        m[f"{key}/acc"] = float(np.mean([d for d, _ in per]))
        m[f"{key}/targets"] = len(per)
        boots = [b for _, b in per]
        lo, hi = pooled_ci(boots)
        m[f"{key}/acc_ci_low"], m[f"{key}/acc_ci_high"] = lo, hi
    return csv_rows, m


# ============================================================================ report
def _secs(x: float) -> str:
    x = float(x)
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.0f}"


#: The table's mark of an ICL cost at or below 0 (explained under the table: `NOISE_NOTE`)
NOISE_MARK = "≤ 0 *"
NOISE_NOTE = ("\\* In-context learning's cost is the k-shot scoring time minus the zero-shot scoring time of the "
              "same items. Measured at or below 0 ({which}): the k-shot prompts were scored no slower than the "
              "zero-shot ones, so their extra cost is below the timing noise of the shared machine (the measured "
              "difference stays in results/fewshot.csv).")


def cost_cell(method: str, k: int, seconds: float) -> str:
    """The table's cost of a row: the reference row of ICL (k = 0, the zero-shot scoring every
    ICL cost is measured from) as "reference", an ICL cost at or below 0 as NOISE_MARK (no
    negative time), else the seconds."""
    if method == ICL and int(k) == 0:
        return "reference"
    if method == ICL and float(seconds) <= 0:
        return NOISE_MARK
    return _secs(seconds)


def _ci(m: dict, key: str) -> str:
    return ci(m.get(f"{key}/acc"), m.get(f"{key}/acc_ci_low"), m.get(f"{key}/acc_ci_high"))


def _verdict(m: dict, key: str) -> str:
    """dnd.stats.verdict on the paper's claim, DnD minus the method > 0 (no size stated)."""
    return verdict(m.get(f"{key}/acc_ci_low", math.nan), m.get(f"{key}/acc_ci_high", math.nan))


def results_table(df, m: dict[str, Any]):
    """Per target: every method and k with accuracy, seconds, DnD minus it and the verdict."""
    import pandas as pd

    recs = []
    for t in m["targets"]:
        sub = df[df["target"] == t]
        for _, r in sub.iterrows():
            rec = {"Target": title(t), "Method": TITLES[r["method"]], "k": int(r["k"]),
                   "Acc (%)": number(100 * r["acc"]), "Seconds": cost_cell(r["method"], r["k"], r["seconds"]),
                   "DnD − it (points, 95% CI)": "",
                   "Paper: DnD above": "", "Verdict": ""}
            if r["method"] == ICL and int(r["k"]) == 0:
                rec["Method"] = "Base model (ICL with k = 0)"
            elif r["method"] != DND:
                key = f"{t}/dnd_minus_{r['method']}_k{int(r['k'])}"
                rec["DnD − it (points, 95% CI)"] = _ci(m, key)
                rec["Paper: DnD above"] = "yes"
                rec["Verdict"] = _verdict(m, key)
            recs.append(rec)
    return pd.DataFrame(recs)


def pooled_table(m: dict[str, Any]):
    import pandas as pd

    recs = []
    for key in sorted(k[: -len("/acc")] for k in m if k.startswith("mean/dnd_minus_") and k.endswith("/acc")):
        method, k = key[len("mean/dnd_minus_"):].rsplit("_k", 1)
        recs.append({"Method": TITLES[method], "k": int(k), "Targets": m[f"{key}/targets"],
                     "DnD − it (points, 95% CI)": _ci(m, key), "Verdict": _verdict(m, key)})
    df = pd.DataFrame(recs)
    return df.sort_values(["Method", "k"]) if not df.empty else df


def accuracy_lines(m: dict[str, Any]) -> list[str]:
    """Plain words: per method, the verdict word (dnd.stats.VERDICTS) of each k, target by target,
    with its count (words no comparison earns are left out)."""

    lines = []
    for method in (FT, ICL):
        per: dict[str, list[str]] = {v: [] for v in VERDICTS}
        for t in m["targets"]:
            for key in sorted((k for k in m if k.startswith(f"{t}/dnd_minus_{method}_k") and k.endswith("/acc")),
                              key=lambda s: int(s.rsplit("_k", 1)[1].split("/")[0])):
                base = key[: -len("/acc")]
                k = base.rsplit("_k", 1)[1]
                per[verdict_word(_verdict(m, base))].append(f"{title(t)} k={k} ({_ci(m, base)})")
        n = sum(len(v) for v in per.values())
        parts = [f"**{v}** in {len(per[v])} of {n}: {'; '.join(per[v])}" for v in VERDICTS if per[v]]
        lines.append(f"- **{TITLES[method]}** (DnD minus it, points, paired 95% CI): " + "; ".join(parts) + ".")
    return lines


def cost_lines(df, m: dict[str, Any], dnd_range: dict[str, tuple[float, float]]) -> list[str]:
    """DnD's generation time against each method's cost, with the verdict (dnd.stats.VERDICTS) of
    the paper's direction, decided by the range of DnD's per-adapter times (no CI for single
    timings): reproduced above the slowest, not reproduced below the fastest, else not told apart."""

    lines = []
    for t in m["targets"]:
        sub = df[df["target"] == t]
        dnd_s = float(sub[sub["method"] == DND]["seconds"].iloc[0])
        lo, hi = dnd_range[t]
        parts = []
        for method in (FT, ICL):
            rows = sub[(sub["method"] == method) & (sub["k"] > 0)]
            if rows.empty:
                continue
            desc = []
            for _, r in rows.iterrows():
                s = float(r["seconds"])
                # ICL's cost is a difference of two timings: at or below 0 it is lost in the noise
                v = (f"**{NOT_TOLD_APART}**: below the timing noise" if s <= 0 else
                     f"**{REPRODUCED}**" if s > hi else f"**{NOT_REPRODUCED}**: cheaper than DnD" if s < lo else
                     f"**{NOT_TOLD_APART}**: within DnD's range")
                ratio = "n/a" if dnd_s <= 0 or s <= 0 else f"{s / dnd_s:.2g}x DnD" if s < 10 * dnd_s else \
                    f"{s / dnd_s:,.0f}x DnD"
                cost = "≤ 0 s" if s <= 0 else f"{_secs(s)} s"
                desc.append(f"k={int(r['k'])} {cost} ({ratio}; {v})")
            parts.append(f"{TITLES[method].lower()} " + ", ".join(desc))
        lines.append(f"- {title(t)}: DnD {_secs(dnd_s)} s per adapter (median; {_secs(lo)}-{_secs(hi)} s over its "
                     f"adapters); " + "; ".join(parts) + ".")
    return lines


def fewshot_figure(df, m: dict[str, Any], out: Path) -> None:
    """Top: DnD minus few-shot tuning and minus ICL against k (log scale), each with its paired 95%
    CI over items (the comparisons the verdicts read) and the ±EQUIVALENT level band; above 0 DnD
    is ahead. Bottom: accuracy against cost (seconds, log scale); a cost at or below 0 (ICL whose
    k-shot scoring was measured no slower than the zero-shot one: timing noise) has no place on a
    log axis and is named in the panel instead. One legend under the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from dnd.reporting.figures import GREY, apply_style, legend_below, method_color, paired_band, save_png
    from dnd.stats import EQUIVALENT

    apply_style()
    targets = m["targets"]
    fig, axes = plt.subplots(2, len(targets), figsize=(4.6 * len(targets), 7.6), squeeze=False)
    shift = {FT: 0.92, ICL: 1.08}  # the two methods side by side at each k
    for j, t in enumerate(targets):
        sub = df[df["target"] == t]
        ax = axes[0, j]
        paired_band(ax, EQUIVALENT, vertical=False)
        for method in (FT, ICL):
            ks = sorted(int(k) for k in sub[(sub["method"] == method) & (sub["k"] > 0)]["k"])
            keys = [f"{t}/dnd_minus_{method}_k{k}" for k in ks]
            ks, keys = zip(*[(k, key) for k, key in zip(ks, keys) if f"{key}/acc" in m]) if keys else ((), ())
            if not ks:
                continue
            d = np.array([m[f"{key}/acc"] for key in keys])
            lo = np.array([m[f"{key}/acc_ci_low"] for key in keys])
            hi = np.array([m[f"{key}/acc_ci_high"] for key in keys])
            ax.errorbar(np.array(ks) * shift[method], d, yerr=[d - lo, hi - d], fmt="o-", capsize=3, lw=1.2,
                        color=method_color(method))
        ax.set_xscale("log")
        ks = sorted(int(k) for k in sub["k"] if k > 0)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("labeled examples k")
        ax.set_title(title(t))
        ax = axes[1, j]
        noise = []
        for method in (DND, FT, ICL):
            rows = sub[(sub["method"] == method) & ((sub["k"] > 0) | (sub["method"] == DND))]
            noise += [f"k={int(k)}" for k in rows[rows["seconds"] <= 0]["k"]]
            rows = rows[rows["seconds"] > 0]
            ax.scatter(rows["seconds"], 100 * rows["acc"], color=method_color(method if method != DND else "dnd"),
                       marker="D" if method == DND else "o", zorder=3, s=36)
            for s_, a, k in zip(rows["seconds"], 100 * rows["acc"], rows["k"]):
                if method != DND:
                    ax.annotate(f"k={int(k)}", (s_, a), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if noise:
            ax.text(0.98, 0.02, f"ICL {', '.join(noise)}: cost ≤ 0 s\n(timing noise), not drawn",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.3")
        ax.set_xscale("log")
        ax.set_xlabel("cost (seconds, log scale)")
    axes[0, 0].set_ylabel("DnD − method (points), paired 95% CI")
    axes[1, 0].set_ylabel("accuracy (%)")
    handles = [Line2D([], [], marker="o", color=method_color(FT), label=TITLES[FT]),
               Line2D([], [], marker="o", color=method_color(ICL), label=TITLES[ICL]),
               Line2D([], [], marker="D", ls="", color=method_color("dnd"), label=TITLES[DND] + " (bottom)"),
               Patch(color=GREY, alpha=0.35, label=f"±{EQUIVALENT:g} point: level (top)")]
    fig.suptitle("DnD against few-shot tuning and in-context learning: paired differences by k (top; above 0 DnD "
                 "is ahead) and accuracy by cost (bottom)", fontsize=10)
    fig.tight_layout()
    legend_below(fig, handles, [h.get_label() for h in handles])
    save_png(fig, out)


def fewshot_markdown(df, m: dict[str, Any], params: dict[str, Any], figure_rel: str,
                     dnd_range: dict[str, tuple[float, float]], budget: dict[str, tuple[float, float, int] | None],
                     generator_s: dict[str, float]) -> str:
    fc = params.get("fewshot", {})
    lc = params.get("lora", {})
    ev = params.get("evaluation", {})
    names = ", ".join(title(t) for t in m["targets"])
    n = m[f"{m['targets'][0]}/n"]
    md_lines = ["# Few-shot tuning and in-context learning against DnD", "",
                "## Protocol", "",
                f"Targets: {names}; each scored on the default run's {n} test items with the default run's scorer "
                f"(lm-eval log-likelihood multiple choice, {ev.get('dtype', 'float32')}), so every number below is "
                "comparable with results/report.md.", "",
                "- **Few-shot tuning** (`fewshot_ft`): a LoRA trained on the first k labeled train items (k = "
                f"{', '.join(map(str, fc.get('ks', [])))}) with the zoo's settings (rank {lc.get('r')}, alpha "
                f"{lc.get('alpha')}, lr {lc.get('lr')}, cosine schedule), {fc.get('epochs')} epoch(s): batch min("
                f"{lc.get('batch_size')}, k), steps = ceil({fc.get('epochs')} k / batch). The authors: the first k "
                "ARC-c train items, rank 8, 3 epochs, lr 1e-4, batch 1.",
                "- **In-context learning** (`icl`): the first k train items with their answers, each rendered as the "
                f"test items are, before every test item (k = {', '.join(map(str, fc.get('icl_ks', [])))}; k = 0 is "
                "the zero-shot base model). The demonstrations are computed once per k and shared by all items "
                "(`dnd-prefix-cache`). A k whose prompts do not fit the base model's context is not scored.",
                f"- **DnD** (`dnd`, design `{(params.get('generator') or {}).get('design') or 'n/a'}`): the default "
                f"run's {(params.get('generate') or {}).get('n_adapters', 'n')} "
                "adapters per target (mean over them), each generated from "
                f"{(params.get('generator') or {}).get('n_prompts', 'N')} unlabeled prompts; no label is used.", "",
                "Cost (`seconds`, wall clock on the run's 2 CPU cores, model loading excluded): few-shot tuning = the "
                "LoRA's training loop; in-context learning = the extra scoring time of the k-shot prompts over the "
                "zero-shot ones on all n test items (recurring with every batch of queries); DnD = generating one "
                "adapter (encoding the prompts, the generator's forward pass, writing; median over its adapters; "
                "training the zoo and the generator is a one-off cost not counted).", ""]
    skipped = []
    for t in m["targets"]:
        for k in sorted(int(x.split("/")[2][1:]) for x in m if x.startswith(f"{t}/icl/k") and x.endswith("/fits")):
            if not m[f"{t}/icl/k{k}/fits"]:
                skipped.append(f"{title(t)} k={k} ({m[f'{t}/icl/k{k}/positions']} positions > "
                               f"{m[f'{t}/icl/max_length']})")
    if skipped:
        md_lines += [f"Not scored, the prompts exceed the model's context: {'; '.join(skipped)}.", ""]
    noise = [f"{title(r.target)} k={int(r.k)}" for r in df.itertuples()
             if r.method == ICL and r.k > 0 and r.seconds <= 0]
    md_lines += ["## Results", "", md_table(results_table(df, m)), "",
                 *([NOISE_NOTE.format(which=", ".join(noise)), ""] if noise else []),
                 "Pooled over targets (every target weighs the same; items resampled within their target):", "",
                 md_table(pooled_table(m)), "",
                 "## The paper's direction against ours", "",
                 f"- **Paper (accuracy)**: {PAPER_ACCURACY}. Each comparison's verdict is in the README's verdict "
                 "words, read from the paired 95% CI of DnD minus the method: *reproduced* above 0, *level* inside "
                 "±1 point, *not reproduced* below 0, *not told apart* holding 0 and reaching beyond ±1 point.",
                 *accuracy_lines(m), "",
                 f"- **Paper (cost)**: {PAPER_COST}. Each comparison's verdict: *reproduced* when the method costs "
                 "more than DnD's slowest adapter, *not reproduced* when it costs less than DnD's fastest, otherwise "
                 "*not told apart* (single timings on a shared machine, no CI; an ICL cost at or below 0, the k-shot "
                 "scoring no slower than the zero-shot one, is within the timing noise).",
                 *cost_lines(df, m, dnd_range)]
    if generator_s:
        md_lines += ["- DnD's one-off costs (not in `seconds`): training the generator of the fold took "
                     + ", ".join(f"{title(t)} {_secs(s)} s" for t, s in generator_s.items())
                     + " (results/timings/train_generator/), on top of training the zoo."]
    md_lines += ["", "## Budget", ""]
    for t in m["targets"]:
        b = budget.get(t)
        md_lines.append(f"- {title(t)}: " + (f"{b[0]:.1f} min of wall time over {b[2]} jobs ({b[1]:.1f} min of CPU "
                                             "time; Snakemake benchmarks, benchmarks/fewshot/" + t + "/)" if b else
                                             "no benchmark files (run through Snakemake to measure)") + ".")
    md_lines += ["", f"![Few-shot against DnD]({figure_rel})", ""]
    return "\n".join(md_lines)


# ============================================================================ CLI
def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"targets": [...], "bootstrap": int, "seed": int}')
    add_declared_option(p, "--fewshot-eval",
                        "results/fewshot/eval/{T}/fewshot_ft.jsonl, icl.jsonl and icl_context.json of every target")
    add_declared_option(p, "--dnd-eval", "the default run's results/eval/{T}.jsonl")
    add_declared_option(p, "--timings", "results/fewshot/timings/train/{T}_k{k}.json and icl/{T}.json")
    add_declared_option(p, "--generate-timings", "results/timings/generate/{T}/dnd_{i}.json")
    p.add_argument("--csv", required=True, type=Path, help="results/fewshot.csv")
    p.add_argument("--metrics", required=True, type=Path, help="results/fewshot/metrics.json")


def _run_summary(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    inputs = load_inputs(list(params["targets"]), args.fewshot_eval, args.dnd_eval, args.timings,
                         args.generate_timings)
    # every target with few-shot LoRAs, ICL and DnD, the same k and adapters on each (but an ICL k
    # that does not fit the target's context), on the same items
    require_complete([r for x in inputs.values() for r in (*x["rows"], *x["dnd"])], list(params["targets"]),
                     required=(FT, ICL, DND),
                     cells_of={t: [(ICL, str(k)) for k in x["context"].get("positions", {})
                                   if int(k) not in x["context"].get("skipped", [])] for t, x in inputs.items()},
                     excused={t: [(ICL, str(k)) for k in x["context"].get("skipped", [])] for t, x in inputs.items()})
    rows, m = summarize(inputs, int(params.get("bootstrap", 2000)), int(params.get("seed", 0)))
    write_csv(args.csv, CSV_COLUMNS, rows)
    write_json(args.metrics, m)
    log.info("wrote %s (%d rows) and %s", args.csv, len(rows), args.metrics)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="JSON: the run's config")
    p.add_argument("--csv", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    add_declared_option(p, "--generate-timings", "results/timings/generate/{T}/dnd_{i}.json (DnD's range)")
    add_declared_option(p, "--generator-timings", "results/timings/train_generator/{T}_{design}.json", required=False)
    add_declared_option(p, "--benchmarks", "the targets' jobs' benchmark files (benchmarks/fewshot/{T}/*.tsv: job "
                        "times per target)", required=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def _run_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    m = json.loads(args.metrics.read_text())
    df = pd.read_csv(args.csv)
    dnd_range = {}
    for t in m["targets"]:
        secs = [float(json.loads(p.read_text())["total_s"]) for p in sorted(args.generate_timings)
                if p.parent.name == t and re.fullmatch(r"dnd_[0-9]+\.json", p.name)]
        dnd_range[t] = (min(secs), max(secs)) if secs else (math.nan, math.nan)
    design = (params.get("generator") or {}).get("design", "")
    generator_s = {}
    for t in m["targets"] if args.generator_timings else []:
        p = declared(args.generator_timings, f"{t}_{design}.json", f"generator timing of {t}", "--generator-timings")
        generator_s[t] = float(json.loads(p.read_text())["wall_s"])
    budget = {t: benchmark_minutes(args.benchmarks, keep=lambda f, t=t: f.parent.name == t) for t in m["targets"]}
    fewshot_figure(df, m, args.figure)
    write_report(args.out, fewshot_markdown(df, m, params, figure_link(args.figure, args.out), dnd_range, budget,
                                            generator_s),
                 args.figure)


COMMANDS = {"fewshot-summary": (_add_summary, _run_summary), "fewshot-report": (_add_report, _run_report)}
