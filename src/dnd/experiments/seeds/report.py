"""How far training seeds move the main comparison (`seeds-summary`, `seeds-report`).

Each run is one (zoo seed, generator seed) pair: its source LoRAs trained with the zoo seed, its
generators with the generator seed, on the same data, prompt draws and test items as the default
run (which is run (0, 0)). Per target and pooled over targets, each subject (DnD and the
source-basis mixer) minus each baseline gets a 95% CI from a two-level bootstrap (seeds, then
items: dnd.stats.seed_draws, hierarchical_boot_means), beside the items-only CI of the default run
and the seed and item spreads (dnd.stats.seed_item_spread).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnd.benchmarks.datasets import title
from dnd.config import parse_params
from dnd.io import atomic_path, write_json
from dnd.paths import add_declared_option
from dnd.reporting.figures import DARK_GREY, OKABE_ITO, POOLED_COLOR, paired_band, save_png
from dnd.reporting.format import ci, md_table, number, signed
from dnd.reporting.output import figure_link, read_paper_numbers, write_report
from dnd.reporting.tables import METHOD_LABELS, benchmark_minutes, compute_table, experiment_root
from dnd.stats import (
    EQUIVALENT,
    boot_means,
    bootstrap_indices,
    hierarchical_boot_means,
    percentile_ci,
    relation,
    seed_draws,
    seed_item_spread,
    untestable_reason,
    verdict,
)
from dnd.summary import CONTROL_KINDS, HEADROOM, MEAN_TARGET, item_vectors, load_eval_rows

SUBJECTS = ("dnd", "dnd_basis")
BASELINES = ("train_avg", "soup", "nearest", *CONTROL_KINDS)
SPREADS = ("seed_sd", "zoo_sd", "generator_sd", "item_se")
# every (subject, baseline) pair, in the order of every table and figure: DnD's first, the
# training average first, the HEADROOM pair last
PAIRS = [(a, b) for a in SUBJECTS for b in (*BASELINES, "dnd_basis") if a != b] + [HEADROOM]
PAIR_ORDER = [f"{a}_minus_{b}" for a, b in PAIRS]


def run_name(zoo: int, generator: int) -> str:
    return f"z{zoo}g{generator}"


def pairs(kinds: set[str]) -> list[tuple[str, str]]:
    """The PAIRS whose two sides are both in the rows."""
    return [p for p in PAIRS if set(p) <= kinds]


def _kept(rows: list[dict[str, Any]], n_adapters: int, n_controls: int) -> list[dict[str, Any]]:
    """The rows the comparison uses: every adapter of the fixed methods, the first `n_adapters`
    of each design and the first `n_controls` of each control kind (the same draws in every run)."""
    def keep(r: dict[str, Any]) -> bool:
        if r["method"] in SUBJECTS or r["method"].startswith("dnd_"):
            return int(r["adapter"]) < n_adapters
        if r["method"] in CONTROL_KINDS:
            return int(r["adapter"]) < n_controls
        return True
    return [r for r in rows if keep(r)]


def collect(plan: list[dict[str, Any]], folds: dict[str, list[str]], n_adapters: int, n_controls: int
            ) -> tuple[list[tuple[int, int]], dict[str, dict[str, np.ndarray]], pd.DataFrame]:
    """Per target, {name: runs x items} per-item accuracy vectors (every run scored on the same
    items, checked), the runs in plan order, and a scores table (run, target, method, acc)."""
    runs = list(dict.fromkeys((int(p["zoo"]), int(p["generator"])) for p in plan))
    targets = list(dict.fromkeys(p["target"] for p in plan))
    by_run_target = {((int(p["zoo"]), int(p["generator"])), p["target"]): p["eval"] for p in plan}
    missing = [f"{run_name(*r)}/{t}" for r in runs for t in targets if (r, t) not in by_run_target]
    if missing:
        raise ValueError(f"the plan lacks the evaluation of {', '.join(missing)}: every run needs every target")
    vectors: dict[str, dict[str, list]] = {}
    records = []
    for t in targets:
        ids = None
        for r in runs:
            rows = [x for x in _kept(load_eval_rows([by_run_target[(r, t)]]), n_adapters, n_controls)
                    if x["target"] == t]
            if not rows:
                raise ValueError(f"{by_run_target[(r, t)]}: no rows for target {t}")
            got = rows[0]["ids"]
            if ids is None:
                ids = got
            elif got != ids:
                raise ValueError(f"run {run_name(*r)} scored other items of {t} than run {run_name(*runs[0])}: "
                                 "the runs must share the test items")
            vec = item_vectors(rows, folds[t])
            for name, v in vec.items():
                vectors.setdefault(t, {}).setdefault(name, []).append(v)
                records.append({"run": run_name(*r), "zoo_seed": r[0], "generator_seed": r[1], "target": t,
                                "method": name, "acc": float(np.mean(v))})
        lengths = {name: len(v) for name, v in vectors[t].items()}
        partial = [name for name, n in lengths.items() if n != len(runs)]
        if partial:
            raise ValueError(f"target {t}: {', '.join(partial)} missing from some runs")
    arrays = {t: {name: np.stack(v) for name, v in d.items()} for t, d in vectors.items()}
    return runs, arrays, pd.DataFrame(records)


def seed_metrics(runs: list[tuple[int, int]], arrays: dict[str, dict[str, np.ndarray]], resamples: int,
                 seed: int) -> dict[str, Any]:
    """Flat '{target}/{subject}_minus_{baseline}/acc...' figures (targets and MEAN_TARGET): the mean
    over runs, the two-level 95% CI (`_ci_low/_ci_high`), the default run's items-only CI
    (`_item_ci_low/_item_ci_high`, run (0, 0) or the first) and the SPREADS."""
    targets = list(arrays)
    weights = seed_draws(runs, resamples, seed)
    first = runs.index((0, 0)) if (0, 0) in runs else 0
    kinds = set.intersection(*(set(arrays[t]) for t in targets))
    out: dict[str, Any] = {"runs": [run_name(*r) for r in runs], "targets": targets,
                           "n_zoo_seeds": len({z for z, _ in runs}), "n_runs": len(runs)}
    for t in targets:
        out[f"{t}/n"] = int(next(iter(arrays[t].values())).shape[1])
        for name in sorted(arrays[t]):
            out[f"{t}/{name}"] = float(arrays[t][name].mean())
    for subject, base in pairs(kinds):
        key = f"{subject}_minus_{base}/acc"
        hier, items, per_run = [], [], []
        for t in targets:
            diff = arrays[t][subject] - arrays[t][base]
            idx = bootstrap_indices(diff.shape[1], resamples, seed, t)
            h, i = hierarchical_boot_means(diff, weights, idx), boot_means(diff[first], idx)
            hier.append(h)
            items.append(i)
            per_run.append(diff.mean(axis=1))
            out[f"{t}/{key}"] = float(diff.mean())
            out[f"{t}/{key}_ci_low"], out[f"{t}/{key}_ci_high"] = percentile_ci(h)
            out[f"{t}/{key}_item_ci_low"], out[f"{t}/{key}_item_ci_high"] = percentile_ci(i)
            for name, v in seed_item_spread(diff, runs).items():
                out[f"{t}/{key}_{name}"] = v
            out[f"{t}/{key}_by_run"] = [float(x) for x in diff.mean(axis=1)]
        pooled_runs = np.mean(per_run, axis=0)
        out[f"{MEAN_TARGET}/{key}"] = float(pooled_runs.mean())
        ok = all(h is not None for h in hier)
        out[f"{MEAN_TARGET}/{key}_ci_low"], out[f"{MEAN_TARGET}/{key}_ci_high"] = (
            percentile_ci(np.mean(hier, axis=0)) if ok else (math.nan, math.nan))
        out[f"{MEAN_TARGET}/{key}_item_ci_low"], out[f"{MEAN_TARGET}/{key}_item_ci_high"] = (
            percentile_ci(np.mean(items, axis=0)) if ok else (math.nan, math.nan))
        spread = seed_item_spread(np.stack(per_run).T, runs)  # runs x targets: spreads of the pooled mean
        item_se = [out[f"{t}/{key}_item_se"] for t in targets]
        spread["item_se"] = float(math.sqrt(sum(s * s for s in item_se)) / len(targets))
        for name, v in spread.items():
            out[f"{MEAN_TARGET}/{key}_{name}"] = v
        out[f"{MEAN_TARGET}/{key}_by_run"] = [float(x) for x in pooled_runs]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


# ============================================================================ report
def _label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def _pts(m: dict[str, Any], key: str) -> float:
    v = m.get(key)
    return 100 * float(v) if isinstance(v, (int, float)) else math.nan


def claim_verdict(m: dict[str, Any], paper_gain: float | None, target: str = MEAN_TARGET) -> str:
    """The verdict on the paper's "DnD beats the training LoRAs" from the two-level CI, "not
    testable here" when the oracle's two-level CI over the training average is not above 0."""
    k, head = f"{target}/dnd_minus_train_avg/acc", f"{target}/{HEADROOM[0]}_minus_{HEADROOM[1]}/acc"
    oracle_ci = (_pts(m, head + "_ci_low"), _pts(m, head + "_ci_high"))
    return verdict(_pts(m, k + "_ci_low"), _pts(m, k + "_ci_high"), paper_gain,
                   untestable_reason(oracle_ci=oracle_ci))


def comparison_table(m: dict[str, Any], target: str = MEAN_TARGET) -> pd.DataFrame:
    """One row per pair: the difference over every run (points), its two-level CI, the default
    run's items-only CI, the seed SD beside the item SE, and the relation in words."""
    rows = []
    present = {k.split("/")[1] for k in m if k.startswith(f"{target}/") and "_minus_" in k}
    for key in [k for k in PAIR_ORDER if k in present]:
        subject, base = key.split("_minus_")
        k = f"{target}/{key}/acc"
        if k not in m:
            continue
        lo, hi = _pts(m, k + "_ci_low"), _pts(m, k + "_ci_high")
        ilo, ihi = _pts(m, k + "_item_ci_low"), _pts(m, k + "_item_ci_high")
        words = relation(lo, hi, _label(subject), _label(base))
        rows.append({"Comparison": f"{_label(subject)} − {_label(base)}",
                     "Δ (points; 95% CI, seeds and items)": ci(_pts(m, k), lo, hi),
                     "95% CI, items only (seed 0)": f"[{signed(ilo)}, {signed(ihi)}]",
                     "Seed SD": number(_pts(m, k + "_seed_sd"), 2),
                     "Zoo-seed SD": number(_pts(m, k + "_zoo_sd"), 2),
                     "Generator-seed SD": number(_pts(m, k + "_generator_sd"), 2),
                     "Item SE": number(_pts(m, k + "_item_se"), 2),
                     "In words": words})
    return pd.DataFrame(rows)


def per_run_table(m: dict[str, Any], key: str = "dnd_minus_train_avg") -> pd.DataFrame:
    """DnD minus the training average per target (rows) and run (columns), in points."""
    runs = m.get("runs", [])
    rows = []
    for t in [*m.get("targets", []), MEAN_TARGET]:
        vals = m.get(f"{t}/{key}/acc_by_run") or []
        rows.append({"Target": title(t), **{r: signed(100 * v) for r, v in zip(runs, vals)}})
    return pd.DataFrame(rows)


def seeds_figure(m: dict[str, Any], out: Path) -> None:
    """Per pair (rows), the pooled difference with its two-level CI (dark) and the default run's
    items-only CI (light), and each run's pooled difference (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {k.split("/")[1] for k in m if k.startswith(f"{MEAN_TARGET}/") and k.endswith("/acc")}
    tab = [k for k in PAIR_ORDER if k in present]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * max(len(tab), 1)))
    for y, key in enumerate(tab):
        k = f"{MEAN_TARGET}/{key}/acc"
        d = _pts(m, k)
        for sfx, color, lw in (("_item_ci", OKABE_ITO["skyblue"], 6), ("_ci", OKABE_ITO["blue"], 2)):
            lo, hi = _pts(m, k + sfx + "_low"), _pts(m, k + sfx + "_high")
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=color, lw=lw, solid_capstyle="butt")
        ax.plot([100 * v for v in m.get(k + "_by_run") or []], [y] * len(m.get(k + "_by_run") or []), "o",
                color=DARK_GREY, ms=3)
        ax.plot([d], [y], "D", color=POOLED_COLOR, ms=5)
    subject_base = [k.split("_minus_") for k in tab]
    ax.set_yticks(range(len(tab)), [f"{_label(s)} − {_label(b)}" for s, b in subject_base], fontsize=7)
    ax.invert_yaxis()  # the table's order, top to bottom
    paired_band(ax, EQUIVALENT)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("difference, accuracy points (pooled over targets); grey band: ±1 point (level)")
    ax.set_title("Seeds: two-level CI (dark), default run's items-only CI (light), runs (dots)", fontsize=8)
    save_png(fig, out)


def budget_lines(stages: pd.DataFrame | None, timing: tuple[float, float, int] | None) -> list[str]:
    """The "Budget" section: the experiment's own jobs (the default run's, reused as run z0g0, are not
    counted), per stage and in all, from their Snakemake benchmarks."""
    if timing is None:
        return ["### Budget", "", "No benchmark files were passed (`--benchmarks`): job times not stated.", ""]
    wall, cpu, jobs = timing
    return ["### Budget", "",
            f"The experiment's own {jobs} jobs took {wall / 60:.1f} h of job time ({wall:.0f} min) and "
            f"{cpu:.0f} min of CPU time, summed from their Snakemake benchmarks (the default run's jobs, reused as "
            "run z0g0, are not counted); wall time on 2 cores is at most that sum, less where jobs overlap. Jobs "
            "that ran beside other work on the same cores count their contended times.", "",
            md_table(stages) if stages is not None else "", ""]


def seeds_markdown(m: dict[str, Any], params: dict[str, Any], figure: str, paper_gain: float | None = None,
                   budget: list[str] | None = None) -> str:
    main = f"{MEAN_TARGET}/dnd_minus_train_avg/acc"
    seed_sd, item_se = _pts(m, main + "_seed_sd"), _pts(m, main + "_item_se")
    if math.isfinite(seed_sd) and math.isfinite(item_se) and max(seed_sd, item_se) > 0:
        limit = ("the training seed, not the test items, limits the verdict" if seed_sd > item_se else
                 "the test items, not the training seed, limit the verdict")
    elif math.isfinite(seed_sd) and math.isfinite(item_se):
        limit = "neither seeds nor items move it"
    else:
        limit = "one run only: no seed spread"
    lines = [
        "## Seeds: the main comparison over training seeds", "",
        f"{m.get('n_runs')} runs ({', '.join(m.get('runs', []))}: zoo seed z, generator seed g; z0g0 is the default "
        f"run) over {len(m.get('targets', []))} target(s) ({', '.join(title(t) for t in m.get('targets', []))}); "
        f"{params.get('n_adapters')} adapters per design and {params.get('n_controls')} per control kind in each "
        f"run, on the same prompt draws and test items. DnD: the paper's decoder as built here (design "
        f"`{params.get('design', 'n/a')}`); the source-basis mixer (design `basis`) is ours, beyond the paper; the "
        "controls come from DnD's generator. CIs: 2-level bootstrap (zoo seeds, then generator seeds "
        f"within each; then items), {params.get('bootstrap')} resamples; items only: the default run alone.", "",
        f"![seeds]({figure})", "",
        "### Pooled over targets", "",
        md_table(comparison_table(m)), "",
        f"DnD minus the training average: seed SD {number(seed_sd, 2)} points against an item SE of "
        f"{number(item_se, 2)}: {limit}.", "",
        "**The paper's claim** (DnD beats the training LoRAs"
        + (f", {paper_gain:+.1f} points on average" if paper_gain is not None else "") + "), over seeds and items: "
        f"**Verdict: {claim_verdict(m, paper_gain)}.**", "",
        "### DnD minus the training-LoRA average, per run (points)", "",
        md_table(per_run_table(m)), "",
    ]
    lines += budget or []
    for t in m.get("targets", []):
        lines += [f"### {title(t)}", "", md_table(comparison_table(m, t)), ""]
    return "\n".join(lines).rstrip() + "\n"


# ============================================================================ commands
def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help="JSON: {plan: [{zoo, generator, target, eval}], folds, n_adapters, n_controls, "
                        "bootstrap, seed}")
    p.add_argument("--scores", required=True, type=Path, help="output CSV (run, target, method, acc)")
    p.add_argument("--metrics", required=True, type=Path, help="output JSON")


def _run_summary(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    for key in ("plan", "folds", "n_adapters", "n_controls"):
        if key not in params:
            raise ValueError(f"--params needs {key!r}")
    runs, arrays, scores = collect(params["plan"], params["folds"], int(params["n_adapters"]),
                                   int(params["n_controls"]))
    metrics = seed_metrics(runs, arrays, int(params.get("bootstrap", 2000)), int(params.get("seed", 0)))
    with atomic_path(args.scores) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.6f")
    write_json(args.metrics, metrics, indent=1)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {n_adapters, n_controls, bootstrap, design}")
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--paper-numbers", type=Path, default=None, help="config/paper_numbers.yaml (the average gain)")
    add_declared_option(p, "--benchmarks", "the experiment's own jobs' benchmark files (benchmarks/seeds/...: "
                        "job times)", required=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def _run_report(args: argparse.Namespace) -> None:
    if not args.metrics.is_file():
        raise FileNotFoundError(f"{args.metrics} not found: run `snakemake --cores all seeds` first")
    m = json.loads(args.metrics.read_text())
    gain = (read_paper_numbers(args.paper_numbers).get("common_sense") or {}).get("average_gain")
    seeds_figure(m, args.figure)
    # stages are the folders under benchmarks/seeds/, the experiment's own folder
    budget = budget_lines(compute_table(args.benchmarks, root=experiment_root(args.benchmarks))
                          if args.benchmarks else None,
                          benchmark_minutes(args.benchmarks))
    write_report(args.out, seeds_markdown(m, parse_params(args.params), figure_link(args.figure, args.out),
                                          float(gain) if gain is not None else None, budget), args.figure)


COMMANDS = {"seeds-summary": (_add_summary, _run_summary), "seeds-report": (_add_report, _run_report)}
