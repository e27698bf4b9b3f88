"""The report's tables, as DataFrames: numbers from the run's files (scores.csv through
dnd.summary.main_table, metrics.json, efficiency timings, Snakemake benchmarks, the paper's
numbers), formatted for display. dnd.report renders them into Markdown (and, with
--tables-dir, CSV). Imports nothing that scores a model.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnd.benchmarks.datasets import title
from dnd.paths import declared
from dnd.reporting.format import ci, ci_digits, model_name, number as fmt
from dnd.stats import untestable_reason, verdict
from dnd.summary import (
    CONTROL_KINDS,
    GENERATED_KINDS,
    HEADROOM,
    MEAN_ADAPTER,
    MEAN_TARGET,
    MULTITASK,
    VAL_PICKED,
    compared_kinds,
    comparison_pairs,
    main_table,
    training_loras,
)

log = logging.getLogger(__name__)

# With --tables-dir, the report's tables as displayed (strings, accuracies in %), as CSV.
TABLES = ["decoder_deviations", "zoo_settings", "main_table", "main_detail", "comparisons", "paper_comparison",
          "controls", "diagnostics", "eval_backend", "efficiency", "compute"]

METHOD_LABELS = {
    "base": "Base",
    "train_avg": "Training LoRAs (avg)",
    "best_train": "Best training LoRA",
    "soup": "Soup",
    "nearest": "Nearest",
    "dnd": "DnD",
    "oracle": "Oracle",
    "control_other": "Control: other prompts",
    "control_random": "Control: random text",
    "control_shuffled": "Control: shuffled words",
    "dnd_hyperconv": "DnD (hyper-conv design)",
    "dnd_basis": "Source-basis mixer (ours)",
    MULTITASK: "Multi-task LoRA",
    VAL_PICKED: "Source picked on labeled items",
}
# Zero-shot methods compete for the bold mark. best_train is picked with the target's test
# labels and oracle is trained on the target's labeled data: both are references only.
ZERO_SHOT = ["base", "train_avg", "soup", "nearest", "dnd"]
CONTROL_METHODS = ["dnd", *CONTROL_KINDS]
DELTA_COLUMN = "DnD − training avg (95% CI)"
HEADROOM_COLUMN = "Oracle − training avg (95% CI)"
# The main table: at most 7 columns (the zero-shot baselines a reader compares DnD with: the base model, the paper's
# training-LoRA average, nearest and, where it was scored, the multi-task LoRA (Text-to-LoRA's baseline: zero-shot for
# the target, trained on every source's labels at once); DnD with its CI, its paired gain); the soup (our extra
# zero-shot baseline, in the bold rule and the pooled comparisons all the same), the references and the spread in the
# detail table; everything else in metrics.json.
MULTITASK_HEADER = "Multi-task LoRA"
MAIN_HEADERS = ["Target", "Base", "Training LoRAs (avg)", "Nearest", MULTITASK_HEADER, "DnD (95% CI)", DELTA_COLUMN]
DETAIL_HEADERS = ["Target", "Soup", "DnD sd over adapters", "Best training LoRA †", "Oracle ‡", HEADROOM_COLUMN]

VERSION_PACKAGES = ["dnd-repro", "torch", "transformers", "peft", "lm-eval", "snakemake", "dvc",
                    "pandas", "seaborn", "matplotlib", "numpy", "safetensors"]
LORA_BENCH_STAGE = "train_lora"  # benchmarks/{stage}/{ds}.tsv of the source LoRA jobs


# DnD's settings that the paper fixes (config/paper.yaml): the report lists each beside this run's.
DECODER_SETTINGS = {
    "base_model.name": "Base model",
    "generator.design": "Generator design",
    "generator.stages": "Decoder stages (channels, length, width)",
    "generator.kernel": "Convolution kernel",
    "generator.head": "Last layer",
    "generator.output_init": "Output layer init",
    "generator.output_offset": "Output offset",
    "generator.chunk_width": "LoRA token width",
    "generator.n_prompts": "Prompts per condition",
    "generator.lr": "Learning rate",
    "generator.weight_decay": "Weight decay",
    "generator.batch_size": "Batch",
    "generator.steps": "Steps",
    "generator.warmup_steps": "Warm-up steps",
    "encoder.max_length": "Encoder tokens per prompt",
    "encoder.dtype": "Encoder dtype",
    "generate.n_adapters": "Adapters per target",
}


def decoder_deviations(run: dict, paper: dict) -> pd.DataFrame:
    """DnD's settings in this run beside the paper profile's (both validated configs, defaults
    filled), one row per DECODER_SETTINGS key, and whether they differ."""
    def shown(v: Any) -> str:
        return "n/a" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    rows = []
    for key, name in DECODER_SETTINGS.items():
        here = lookup(run, key) if key != "base_model.name" else _base_model_name(run)
        there = lookup(paper, key) if key != "base_model.name" else _base_model_name(paper)
        rows.append({"Setting": name, "Here": shown(here), "Paper (config/paper.yaml)": shown(there),
                     "Deviation": "yes" if here != there else ""})
    return pd.DataFrame(rows)


def zoo_table(params: dict, paper: dict, n_train: dict[str, int]) -> pd.DataFrame | None:
    """This run's source-LoRA training beside the authors' (config/paper_numbers.yaml `zoo`), per
    dataset: training items, phase-1 examples and epochs, checkpoint batch, checkpoints and lr.
    The authors' batches count `gpus_inferred` devices. None without the paper's zoo settings."""
    zoo = lookup(paper, "zoo", {}) or {}
    per = zoo.get("per_dataset") or {}
    if not per:
        return None
    lora, gpus = params.get("lora", {}) or {}, int(zoo.get("gpus_inferred", 1))
    batch, steps, k = lora.get("batch_size"), lora.get("phase1_steps"), lora.get("checkpoint_steps")
    rows = []
    for ds in lookup(params, "data.datasets", []) or list(per):
        a, n = per.get(ds), n_train.get(ds)
        ours_ex = steps * batch if steps and batch else None
        theirs_ex = a["resume_step"] * a["phase1_batch"] * gpus if a else None

        def pair(ours: Any, theirs: Any) -> str:
            return f"{ours if ours is not None else 'n/a'} / {theirs if theirs is not None else 'n/a'}"

        rows.append({
            "Dataset": title(ds),
            "Train items (ours / authors)": pair(n, a and a["n_train"]),
            "Phase-1 examples (ours / authors)": pair(ours_ex, theirs_ex),
            "Phase-1 epochs": pair(f"{ours_ex / n:.2f}" if ours_ex and n else None,
                                   f"{theirs_ex / a['n_train']:.2f}" if a else None),
            "Checkpoint batch": pair(batch, a and a["phase2_batch"] * gpus),
            "Checkpoints used, every": pair(f"{k}, 1 step" if k else None,
                                            a and f"50, {a['phase2_save_steps']} step(s)"),
            "lr": pair(lora.get("lr"), a and a["lr"]),
        })
    return pd.DataFrame(rows)


def _base_model_name(cfg: dict) -> str:
    return model_name(cfg.get("base_model", {}) or {})


# ------------------------------------------------------------------------------ formatting
def lookup(d: dict, dotted: str, default: Any = None) -> Any:
    """d["a"]["b"] for dotted "a.b", or `default` where a level is missing."""
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _fmt_s(x: Any) -> str:
    """Seconds with a precision that suits their size."""
    v = _float(x)
    if not math.isfinite(v):
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def dataset_order(datasets: list[str], *names: Any) -> list[str]:
    """`datasets` (config order) first, then any other names seen, sorted."""
    order = list(datasets)
    extra = sorted({str(n) for group in names for n in group} - set(order))
    return order + extra


# ------------------------------------------------------------------------------ scores
def load_scores(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"scores file not found: {path} (run `dnd summarize` first)")
    scores = pd.read_csv(path)
    missing = {"target", "method", "adapter", "acc"} - set(scores.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; expected target,method,adapter,n,acc,...")
    if scores.empty:
        raise ValueError(f"{path} has no rows")
    scores["adapter"] = scores["adapter"].fillna("").astype(str)
    return scores


def pct_factor(scores: pd.DataFrame) -> float:
    """Accuracies are fractions in scores.csv; tolerate a file already in percent."""
    return 1.0 if float(scores["acc"].max()) > 1.0 + 1e-9 else 100.0


def tidy_scores(scores: pd.DataFrame, folds: dict | None = None) -> pd.DataFrame:
    """Long table (target, method, adapter, acc%) with the derived methods of the main table:
    train_avg = every training LoRA's accuracy on the target (the figure averages them),
    best_train = the best of them, oracle = the target's own LoRA. The per-target aggregate
    rows of the generated kinds (adapter 'mean') are left out: one row per adapter."""
    f = pct_factor(scores)
    train_of = training_loras(scores, folds)
    out = []
    for t in scores.target.unique():
        s = scores[scores.target == t]
        for m in ("base", "soup", "nearest", MULTITASK, *GENERATED_KINDS):
            for _, r in s[(s.method == m) & (s.adapter != MEAN_ADAPTER)].iterrows():
                out.append((t, m, r.adapter, f * r.acc))
        src = s[s.method == "source_lora"]
        train = src[src.adapter.isin(train_of[t])]
        for _, r in train.iterrows():
            out.append((t, "train_avg", r.adapter, f * r.acc))
        if not train.empty:
            best = train.loc[train.acc.idxmax()]
            out.append((t, "best_train", best.adapter, f * best.acc))
        for _, r in src[src.adapter == t].iterrows():  # the oracle: the target's own LoRA
            out.append((t, "oracle", r.adapter, f * r.acc))
    return pd.DataFrame(out, columns=["target", "method", "adapter", "acc"])


# ------------------------------------------------------------------------------ tables
def get_main_table(scores: pd.DataFrame, folds: dict | None = None) -> pd.DataFrame:
    """dnd.summary.main_table(scores, folds), indexed by target (+ 'mean'), accuracies in %."""
    mt = main_table(scores, folds).set_index("target")
    f = pct_factor(scores)
    for c in mt.columns:
        if c != "gap_closed":
            mt[c] = pd.to_numeric(mt[c], errors="coerce") * f
    return mt


def _is_mean_row(idx: Any) -> bool:
    """The main table's over-target mean row (dnd.summary.MEAN_TARGET)."""
    return str(idx).lower() == MEAN_TARGET


def _row_label(idx: Any) -> str:
    return "Mean" if _is_mean_row(idx) else title(str(idx))


def _metric(metrics: dict, key: str) -> float:
    v = metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _pair_ci(metrics: dict, target: Any, subject: str, baseline: str, factor: float,
             metric: str = "acc") -> tuple[float, float, float]:
    """(estimate, low, high) of metrics.json's paired `subject` minus `baseline` for `target`,
    scaled by `factor` (NaN where absent)."""
    key = f"{target}/{subject}_minus_{baseline}/{metric}"
    return tuple(factor * _metric(metrics, key + sfx) for sfx in ("", "_ci_low", "_ci_high"))  # type: ignore


def dnd_ahead_of_all(metrics: dict, target: Any, row: Any) -> bool:
    """Whether DnD is ahead of every other zero-shot method of the main table's row: its paired
    95% CI against each compared baseline (training average, soup, nearest, and the multi-task
    LoRA where the row has it; metrics.json) lies above 0 and its mean is above the base model's.
    The main table bolds DnD only then."""
    compared = [b for b in ZERO_SHOT if b not in ("dnd", "base")]
    if np.isfinite(_float(row.get("multitask"))):  # the multi-task LoRA, where it was scored
        compared.append(MULTITASK)
    lows = [_pair_ci(metrics, target, "dnd", b, 1.0)[1] for b in compared]
    return (all(np.isfinite(lo) and lo > 0 for lo in lows)
            and _float(row.get("dnd_mean")) > _float(row.get("base")))


def _dnd_ci(r: Any, idx: Any, metrics: dict, factor: float) -> tuple[float, float]:
    lo, hi = _float(r.get("dnd_ci_low")), _float(r.get("dnd_ci_high"))
    if _is_mean_row(idx) and not (np.isfinite(lo) and np.isfinite(hi)):
        lo = factor * _metric(metrics, f"{MEAN_TARGET}/dnd_ci_low")
        hi = factor * _metric(metrics, f"{MEAN_TARGET}/dnd_ci_high")
    return lo, hi


def render_main_table(mt: pd.DataFrame, metrics: dict | None = None, factor: float = 100.0) -> pd.DataFrame:
    """The main table (MAIN_HEADERS, at most 7 columns; the multi-task LoRA's only where it was
    scored): the zero-shot methods' accuracy (%) with one decimal, DnD (mean over adapters) with
    its 95% CI, and DnD minus the training average with its paired 95% CI (metrics.json; the
    Mean row's from there too). DnD is bold only where it is ahead of every other zero-shot
    method (`dnd_ahead_of_all`); the references (best training LoRA, oracle) and the spread over
    adapters are in `render_detail_table`."""
    metrics = metrics or {}
    rows = []
    for idx, r in mt.iterrows():
        lo, hi = _dnd_ci(r, idx, metrics, factor)
        dnd = ci(r.get("dnd_mean"), lo, hi, sign=False)
        # the gain the verdicts read (`_gain_ci`: {target}/dnd_minus_train_avg), else the pair's
        d, dl, dh = (factor * _metric(metrics, f"{idx}/dnd_minus_train_avg{sfx}")
                     for sfx in ("", "_ci_low", "_ci_high"))
        if not np.isfinite(d):
            d, dl, dh = _pair_ci(metrics, idx, "dnd", "train_avg", factor)
        rows.append({
            "Target": _row_label(idx),
            "Base": fmt(r.get("base")),
            "Training LoRAs (avg)": fmt(r.get("train_avg")),
            "Nearest": fmt(r.get("nearest")),
            MULTITASK_HEADER: fmt(r.get("multitask")),
            "DnD (95% CI)": f"**{dnd}**" if dnd_ahead_of_all(metrics, idx, r) else dnd,
            DELTA_COLUMN: ci(d, dl, dh),
        })
    table = pd.DataFrame(rows, columns=MAIN_HEADERS)
    if "multitask" not in mt or not mt["multitask"].notna().any():  # a run without the multi-task LoRA
        table = table.drop(columns=[MULTITASK_HEADER])
    return table


def render_detail_table(mt: pd.DataFrame, metrics: dict | None = None, factor: float = 100.0) -> pd.DataFrame:
    """The main table's second part: the soup, DnD's spread over adapters (sd), the two references (best
    training LoRA, picked with the test labels; the oracle, the target's own LoRA) and the
    oracle's headroom over the training average with its paired 95% CI (whether the paper's claim
    is testable)."""
    metrics = metrics or {}
    rows = []
    for idx, r in mt.iterrows():
        rows.append({"Target": _row_label(idx), "Soup": fmt(r.get("soup")),
                     "DnD sd over adapters": fmt(r.get("dnd_sd")),
                     "Best training LoRA †": fmt(r.get("best_train")), "Oracle ‡": fmt(r.get("oracle")),
                     HEADROOM_COLUMN: ci(*_pair_ci(metrics, idx, HEADROOM[0], HEADROOM[1], factor))})
    return pd.DataFrame(rows, columns=DETAIL_HEADERS)


def comparisons_table(metrics: dict, targets: list[str], factor: float = 100.0) -> pd.DataFrame | None:
    """DnD minus each zero-shot baseline and control (dnd.summary.COMPARED), and each variant
    design minus the baselines and DnD (VARIANT_COMPARED), pooled over targets, on accuracy
    (points) and on the gold answer's log-probability (nats), each with its paired bootstrap
    95% CI, and on how many targets the first is ahead on accuracy (None without metrics.json's
    comparisons). Pairs whose figures are absent (e.g. a control that was not run) are left out."""
    if not any("/dnd_minus_" in k and k.endswith("/acc") for k in metrics):
        return None
    rows = []
    pairs = [(s, b) for s, b in comparison_pairs(compared_kinds(metrics))
             if np.isfinite(_metric(metrics, f"{MEAN_TARGET}/{s}_minus_{b}/acc"))]
    lp = {p: _pair_ci(metrics, MEAN_TARGET, *p, 1.0, "gold_logprob") for p in pairs}
    lp_digits = ci_digits([(hi - lo) / 2 for _, lo, hi in lp.values()])
    for subject, b in pairs:
        per = [_metric(metrics, f"{t}/{subject}_minus_{b}/acc") for t in targets]
        per = [x for x in per if np.isfinite(x)]
        rows.append({"Method": METHOD_LABELS[subject], "minus": METHOD_LABELS[b],
                     "Accuracy (points, 95% CI)": ci(*_pair_ci(metrics, MEAN_TARGET, subject, b, factor)),
                     "Gold log-prob (nats, 95% CI)": ci(*lp[(subject, b)], digits=lp_digits),
                     "Targets ahead (acc)": f"{sum(x > 0 for x in per)}/{len(per)}"})
    return pd.DataFrame(rows)


DIAGNOSTIC_COLUMNS = {"fit_ratio": "Fit ratio (tokens)", "fit_ratio_dw": "Fit ratio (ΔW)",
                      "retrieval_acc": "Retrieval", "sensitivity_ratio": "Sensitivity",
                      "redraw_ratio": "Redraw spread", "heldout_norm_ratio": "Held-out stray"}


def diagnostics_table(diag: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """One row per fold and generator (+ a mean row per generator): the weight-space diagnostics
    of results/diagnostics.csv (dnd.diagnostics) and the zoo's reachability of that fold."""
    folds = [t for t in targets if t in set(diag["fold"])]
    val = {(r.fold, r.variant, r.metric): float(r.value) for r in diag.itertuples()}
    variants = [v for v in dict.fromkeys(diag["variant"]) if v != "zoo" and
                any((t, v, "fit_ratio") in val for t in folds)]
    rows = []
    for v in variants:
        for t in [*folds, None]:
            def get(metric: str, variant: str = v) -> float:
                got = [val[(f, variant, metric)] for f in ([t] if t else folds) if (f, variant, metric) in val]
                return float(np.mean(got)) if got else float("nan")

            row = {"Fold": title(t) if t else "Mean", "Generator": METHOD_LABELS.get(v, v)}
            row.update({label: f"{get(m):.3f}" for m, label in DIAGNOSTIC_COLUMNS.items()})
            row["Reachability (zoo)"] = f"{get('reachability', 'zoo'):.3f}"
            rows.append(row)
    return pd.DataFrame(rows)


def _agreement_kinds(labels) -> dict[str, str]:
    """Which comparison label of eval_agreement.csv is which: main (the evaluation dtype),
    exact (float32), hf_ref / ours_ref (each backend's evaluation-dtype answers against hf's
    float32 ones; absent when the dtype is float32)."""
    labels = list(dict.fromkeys(labels))
    same = [c for c in labels if c.startswith("dnd-prefix vs hf, ")]
    out = {"exact": next((c for c in same if c.endswith("float32")), "")}
    out["main"] = next((c for c in same if not c.endswith("float32")), out["exact"])
    out["hf_ref"] = next((c for c in labels if c.startswith("hf ") and c.endswith(" vs hf float32")), "")
    out["ours_ref"] = next((c for c in labels if c.startswith("dnd-prefix ") and c.endswith(" vs hf float32")), "")
    return out


def eval_backend_table(speed: pd.DataFrame, agreement: pd.DataFrame) -> pd.DataFrame:
    """Per target and pooled: items/s of each backend and the speed-up; how often the two
    backends chose the same answer (acc) in the evaluation dtype and in float32, the largest
    float32 log-likelihood difference, and how often each backend's evaluation-dtype answer is
    the float32 reference's (hf in float32)."""
    kinds = _agreement_kinds(agreement["comparison"])
    rows = []
    for t in [*dict.fromkeys(speed["target"]), None]:
        sp = speed if t is None else speed[speed["target"] == t]
        ag = agreement if t is None else agreement[agreement["target"] == t]
        rate = {b: sp.loc[sp.backend == b, "items"].sum() / sp.loc[sp.backend == b, "seconds"].sum()
                for b in ("hf", "dnd-prefix")}

        def same(kind: str) -> str:
            g = ag[ag["comparison"] == kinds[kind]]
            n = int(g["items"].sum())
            return f"{100 * float((g['same_choice'] * g['items']).sum()) / n:.1f} ({n})" if n else "n/a"

        exact = ag[ag["comparison"] == kinds["exact"]]
        rows.append({"Target": "Pooled" if t is None else title(str(t)),
                     "hf (items/s)": f"{rate['hf']:.2f}", "dnd-prefix (items/s)": f"{rate['dnd-prefix']:.2f}",
                     "Speed-up": f"{rate['dnd-prefix'] / rate['hf']:.2f}×",
                     "Same answer (%, n)": same("main"),
                     "Same answer, float32 (%, n)": same("exact"),
                     "Largest Δ log-lik, float32 (nats)": (f"{float(exact['max_abs_ll_diff'].max()):.1e}"
                                                           if len(exact) else "n/a"),
                     "hf = float32 ref (%, n)": same("hf_ref"),
                     "dnd-prefix = float32 ref (%, n)": same("ours_ref")})
    return pd.DataFrame(rows)


def speedup_ci(speed: pd.DataFrame, seed: int, n_boot: int = 2000) -> tuple[float, float, int]:
    """The pooled speed-up of dnd-prefix over hf (total hf seconds over total dnd-prefix seconds on the
    same items) with a 95% percentile bootstrap over the (target, adapter) cells, each cell resampled
    with both backends' times (paired): how much the figure moves with the workloads it was measured
    on (a 30-item timing is a few seconds, so one cell's noise moves it). Returns (low, high, cells)."""
    cells = speed.pivot_table(index=["target", "adapter"], columns="backend", values="seconds", aggfunc="sum")
    items = speed.pivot_table(index=["target", "adapter"], columns="backend", values="items", aggfunc="sum")
    if not {"hf", "dnd-prefix"} <= set(cells.columns) or not (items["hf"] == items["dnd-prefix"]).all():
        raise ValueError("eval_speed.csv: each (target, adapter) needs both backends on the same items")
    hf, ours = cells["hf"].to_numpy(float), cells["dnd-prefix"].to_numpy(float)
    idx = np.random.default_rng(seed).integers(0, len(hf), size=(n_boot, len(hf)))
    ratios = hf[idx].sum(axis=1) / ours[idx].sum(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi), len(hf)


def controls_table(tidy: pd.DataFrame, targets: list[str], metrics: dict | None = None,
                   factor: float = 100.0) -> pd.DataFrame | None:
    """Per target (+ Mean): accuracy (%) of DnD and of each control (mean over their adapters) and
    DnD minus each control with its paired 95% CI (metrics.json; "n/a" without it)."""
    sub = tidy[tidy.method.isin(CONTROL_METHODS)]
    if sub.empty or not (sub.method != "dnd").any():
        return None
    metrics = metrics or {}
    means = sub.groupby(["target", "method"]).acc.mean()
    kinds = [m for m in CONTROL_KINDS if (sub.method == m).any()]
    rows = []
    for t in [*targets, MEAN_TARGET]:
        row = {"Target": _row_label(t)}
        for m in ["dnd", *kinds]:
            vals = [means[(x, m)] for x in (targets if t == MEAN_TARGET else [t]) if (x, m) in means.index]
            row[METHOD_LABELS[m]] = fmt(np.mean(vals)) if vals else "n/a"
        for m in kinds:
            row[f"DnD − {METHOD_LABELS[m].split(': ')[1]} (95% CI)"] = ci(*_pair_ci(metrics, t, "dnd", m, factor))
        rows.append(row)
    return pd.DataFrame(rows)


def _gain_ci(m: dict, target: str, factor: float) -> tuple[float, float]:
    """The paired 95% CI of DnD minus the training average for `target` (the main table's DnD −
    training avg column), in points."""
    key = f"{target}/dnd_minus_train_avg"
    return factor * _metric(m, key + "_ci_low"), factor * _metric(m, key + "_ci_high")


def claim_verdict(metrics: dict | None, target: str, paper_gain: float | None, factor: float = 100.0) -> str:
    """The verdict (dnd.stats.verdict) on the paper's "DnD beats the training LoRAs by `paper_gain`
    points" for `target` (or MEAN_TARGET, pooled), from metrics.json: the paired 95% CI of DnD minus
    the training average, "not testable here" when every method is at a floor or ceiling or the
    oracle does not beat the training average (its paired CI, the HEADROOM pair)."""
    m = metrics or {}
    lo, hi = _gain_ci(m, target, factor)
    accs = [_metric(m, f"{target}/{k}") for k in ("base", "train_avg", "dnd_mean", "oracle")]
    head = f"{target}/{HEADROOM[0]}_minus_{HEADROOM[1]}/acc"
    oracle_ci = tuple(factor * _metric(m, head + sfx) for sfx in ("_ci_low", "_ci_high"))
    untestable = untestable_reason([a for a in accs if np.isfinite(a)],
                                   oracle_ci if head in m else None)
    return verdict(lo, hi, paper_gain, untestable)


def paper_table(mt: pd.DataFrame, paper: dict, metrics: dict | None = None, factor: float = 100.0
                ) -> pd.DataFrame | None:
    """The paper's common-sense numbers beside ours, per dataset and for the average gain, with our
    paired 95% CI of the gain and the verdict on the paper's (`claim_verdict`)."""
    cs = lookup(paper, "common_sense", {}) or {}
    per = cs.get("per_dataset") or {}
    if not per and cs.get("average_gain") is None:
        return None
    m = metrics or {}

    def gain(target: str, est: float) -> str:
        lo, hi = _gain_ci(m, target, factor)
        return ci(est, lo, hi)

    rows = []
    for ds, v in per.items():
        p_base, p_dnd = v.get("train_avg"), v.get("dnd")
        p_gain = p_dnd - p_base if p_base is not None and p_dnd is not None else None
        ours = mt.loc[ds] if ds in mt.index else None
        o_base = ours["train_avg"] if ours is not None else None
        o_dnd = ours["dnd_mean"] if ours is not None else None
        rows.append({
            "Dataset": title(ds),
            "Paper: training LoRAs": fmt(p_base), "Paper: DnD": fmt(p_dnd),
            "Paper: Δ": f"{p_gain:+.1f}" if p_gain is not None else "n/a",
            "Ours: training LoRAs": fmt(o_base) if ours is not None else "not in this run",
            "Ours: DnD": fmt(o_dnd) if ours is not None else "not in this run",
            "Ours: Δ (95% CI)": gain(ds, o_dnd - o_base) if ours is not None else "not in this run",
            "Verdict": claim_verdict(m, ds, p_gain, factor) if ours is not None else "",
        })
    if cs.get("average_gain") is not None:
        mean = next((i for i in mt.index if _is_mean_row(i)), None)
        gain = mt.loc[mean, "dnd_mean"] - mt.loc[mean, "train_avg"] if mean is not None else None
        rows.append({
            "Dataset": "Average gain (held-out datasets)",
            "Paper: training LoRAs": "", "Paper: DnD": "", "Paper: Δ": f"{float(cs['average_gain']):+.1f}",
            "Ours: training LoRAs": "", "Ours: DnD": "",
            "Ours: Δ (95% CI)": ci(gain, *_gain_ci(m, MEAN_TARGET, factor)) if gain is not None else "n/a",
            "Verdict": claim_verdict(m, MEAN_TARGET, float(cs["average_gain"]), factor),
        })
    return pd.DataFrame(rows)


def read_lora_loop_seconds(timings_dir: Path, ds: str) -> float | None:
    """Train-loop seconds of a source LoRA (both phases, resumed time included), from the
    timings file `dnd train-lora --timings` wrote (kept apart from the hashed zoo)."""
    p = timings_dir / "train_lora" / f"{ds}.json"
    if not p.exists():
        return None
    loop = json.loads(p.read_text()).get("loop_s")
    return float(loop) if isinstance(loop, (int, float)) else None


def read_bench(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", na_values=["-", "NA", "nan", ""])
    for c in df.columns:
        if c != "h:m:s":
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def lora_bench_seconds(benchmarks: Iterable[str | Path], ds: str) -> float | None:
    """Mean wall seconds of the Snakemake benchmark of a source LoRA's job
    (.../{LORA_BENCH_STAGE}/{ds}.tsv among the declared `benchmarks`), if one is declared."""
    rel = Path(LORA_BENCH_STAGE, f"{ds}.tsv")
    benchmarks = list(benchmarks)
    if not any(Path(f).parts[-2:] == rel.parts for f in benchmarks):
        return None
    (path,) = declared_benchmarks([declared(benchmarks, rel, f"the benchmark of {ds}'s LoRA job", "--benchmarks")])
    s = read_bench(path)["s"].dropna()
    return float(s.mean()) if not s.empty else None


def efficiency_table(eff: pd.DataFrame, targets: list[str], timings_dir: Path,
                     benchmarks: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per target: median timings over DnD adapters, tuning time of the oracle, ratio (the LoRA
    jobs' times from the declared benchmark files `benchmarks`).
    Returns (display table, numeric table)."""
    benchmarks = list(benchmarks)
    if "kind" in eff.columns:
        e = eff[eff["kind"].astype(str) == "dnd"]
    elif "adapter" in eff.columns and eff["adapter"].astype(str).str.startswith("dnd").any():
        e = eff[eff["adapter"].astype(str).str.startswith("dnd")]
    else:
        e = eff
    eff_targets = [t for t in targets if t in set(e.target)] + sorted(set(e.target) - set(targets))
    num = []
    for t in eff_targets:
        g = e[e.target == t]
        row: dict[str, Any] = {"target": t, "n_adapters": len(g)}
        for c in ("encode_s", "decode_s", "write_s", "total_s", "load_s"):
            row[c] = float(g[c].median()) if c in g.columns else float("nan")
        row["generator_params"] = (float(g["generator_params"].max()) if "generator_params" in g.columns
                                   else float("nan"))
        row["peak_rss_mb"] = float(g["peak_rss_mb"].max()) if "peak_rss_mb" in g.columns else float("nan")
        loop = read_lora_loop_seconds(timings_dir, t)
        job = lora_bench_seconds(benchmarks, t)
        row["tuning_loop_s"] = loop if loop is not None else float("nan")
        row["tuning_job_s"] = job if job is not None else float("nan")
        tuning = loop if loop is not None else job
        row["tuning_s"] = tuning if tuning is not None else float("nan")
        row["ratio"] = (tuning / row["total_s"]) if tuning is not None and row["total_s"] > 0 else float("nan")
        num.append(row)
    num_df = pd.DataFrame(num)
    disp = pd.DataFrame({
        "Target": [title(t) for t in num_df.target],
        "Adapters": num_df.n_adapters.astype(int),
        "Encode (s)": num_df.encode_s.map(_fmt_s),
        "Decode (s)": num_df.decode_s.map(_fmt_s),
        "Write (s)": num_df.write_s.map(_fmt_s),
        "Total (s)": num_df.total_s.map(_fmt_s),
        "Generator params (M)": num_df.generator_params.map(lambda v: fmt(v / 1e6, 2)),
        "Peak RSS (MB)": num_df.peak_rss_mb.map(lambda v: fmt(v, 0)),
        "LoRA tuning, train loop (s)": num_df.tuning_loop_s.map(_fmt_s),
        "LoRA tuning, whole job (s)": num_df.tuning_job_s.map(_fmt_s),
        "Tuning / generation": num_df.ratio.map(lambda v: f"{v:,.0f}×" if np.isfinite(v) else "n/a"),
    })
    return disp, num_df


def declared_benchmarks(files: Iterable[str | Path] | None, option: str = "--benchmarks") -> list[Path]:
    """The Snakemake benchmark files a rule declared and passed with `option`, sorted; one line
    naming the first missing one (and how many more) when any is not there."""
    paths = sorted(Path(f) for f in files or [])
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{option}: declared benchmark file {missing[0]} not found{more}")
    return paths


def benchmark_minutes(files: Iterable[str | Path] | None, keep=None,
                      option: str = "--benchmarks") -> tuple[float, float, int] | None:
    """(total wall minutes, total CPU minutes, jobs) of the Snakemake benchmark files `files` (the
    ones a rule declared, passed with `option`; the last run of each job); `keep(path) -> bool`
    picks the files to count (default: all). None when it picks none; a missing declared file is
    one line (`declared_benchmarks`)."""
    rows = [pd.read_csv(f, sep="\t").iloc[-1] for f in declared_benchmarks(files, option)
            if keep is None or keep(f)]
    if not rows:
        return None
    return (sum(float(r["s"]) for r in rows) / 60, sum(float(r.get("cpu_time", float("nan"))) for r in rows) / 60,
            len(rows))


def benchmark_stage(path: str | Path, root: str | Path | None = None) -> str:
    """The stage of a Snakemake benchmark file: its folder right under `root` (default: the last
    folder named `benchmarks` on its path, where the workflow writes them), or its stem for a file
    directly in it (benchmarks/{rule}.tsv, benchmarks/{rule}/{job}.tsv)."""
    path = Path(path)
    rel = path.relative_to(root).parts if root is not None else _under_benchmarks(path)
    if rel is None:
        raise ValueError(f"benchmark file {path} is not under a benchmarks/ folder: no stage")
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def _under_benchmarks(path: Path) -> tuple[str, ...] | None:
    """The parts of `path` below the last folder named `benchmarks` on it, or None when none is."""
    folders = path.parts[:-1]
    if "benchmarks" not in folders:
        return None
    return path.parts[len(folders) - folders[::-1].index("benchmarks"):]


def experiment_root(files: Iterable[str | Path]) -> Path | None:
    """benchmarks/<experiment>/ of an experiment's benchmark files (the folder right under the last
    `benchmarks` folder of the first file that lies below it), whose subfolders are its stages; None
    when no file lies that deep."""
    for f in map(Path, files):
        rel = _under_benchmarks(f)
        if rel is not None and len(rel) > 1:
            return Path(*f.parts[:len(f.parts) - len(rel) + 1])
    return None


def read_stage_benchmarks(files: Iterable[str | Path], exclude: tuple[str, ...] = (),
                          root: str | Path | None = None) -> pd.DataFrame | None:
    """One row per Snakemake benchmark file of `files` (declared: `declared_benchmarks`): stage
    (`benchmark_stage`), s, max_rss, cpu_time; the stages named in `exclude` (other experiments'
    jobs) are left out."""
    rows = []
    for f in declared_benchmarks(files):
        stage = benchmark_stage(f, root)
        if stage in exclude:
            continue
        try:
            df = read_bench(f)
        except Exception as exc:  # a malformed benchmark must not sink the report
            log.warning("skipping benchmark %s: %s", f, exc)
            continue
        if "s" not in df.columns or df.empty:
            continue
        rows.append({"stage": stage, "s": float(df["s"].mean()),
                     "max_rss": float(df["max_rss"].max()) if "max_rss" in df.columns else float("nan"),
                     "cpu_time": float(df["cpu_time"].mean()) if "cpu_time" in df.columns else float("nan")})
    return pd.DataFrame(rows) if rows else None


def compute_table(files: Iterable[str | Path], exclude: tuple[str, ...] = (),
                  root: str | Path | None = None) -> pd.DataFrame | None:
    """Wall time, CPU time and peak memory per stage of the benchmark files `files`
    (`read_stage_benchmarks`; stages named from `root`, `benchmark_stage`)."""
    b = read_stage_benchmarks(files, exclude, root)
    if b is None:
        return None
    agg = b.groupby("stage", sort=True).agg(jobs=("s", "size"), total_s=("s", "sum"), max_s=("s", "max"),
                                             max_rss=("max_rss", "max"), cpu_s=("cpu_time", "sum"))
    agg = agg.sort_values("total_s", ascending=False)
    out = pd.DataFrame({
        "Stage (rule)": agg.index,
        "Jobs": agg.jobs.astype(int).values,
        "Wall, total (s)": agg.total_s.map(_fmt_s).values,
        "Wall, total (h:m:s)": agg.total_s.map(_hms).values,
        "Wall, slowest job (s)": agg.max_s.map(_fmt_s).values,
        "Peak RSS (MB)": agg.max_rss.map(lambda v: fmt(v, 0)).values,
        "CPU time (s)": agg.cpu_s.map(_fmt_s).values,
    })
    total = {"Stage (rule)": "**all stages**", "Jobs": int(agg.jobs.sum()),
             "Wall, total (s)": _fmt_s(agg.total_s.sum()), "Wall, total (h:m:s)": _hms(agg.total_s.sum()),
             "Wall, slowest job (s)": _fmt_s(agg.max_s.max()), "Peak RSS (MB)": fmt(agg.max_rss.max(), 0),
             "CPU time (s)": _fmt_s(agg.cpu_s.sum())}
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def _hms(s: float) -> str:
    if not np.isfinite(s):
        return "n/a"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def versions() -> pd.DataFrame:
    rows = [("python", platform.python_version())]
    for name in VERSION_PACKAGES:
        try:
            rows.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["Package", "Version"])
