"""The report's figures (seaborn PNGs), drawn from the run's files only.

`FIGURES` is the one list of them (the Snakemake rule `report` declares its outputs from it):
  bars.png        accuracy per held-out dataset and method (the main table as bars)
  transfer.png    source LoRA x target dataset accuracy (diagonal = oracle)
  efficiency.png  LoRA tuning time of the oracle vs DnD generation time, log scale
  pca.png         PCA of real LoRA checkpoints and generated adapters (numpy SVD over the
                  flattened safetensors)
  curves.png      loss curves of the LoRA zoo and of the generators
  controls.png    DnD minus each control (other dataset's prompts, random text, shuffled words)
                  with paired 95% CIs, per target and pooled (metrics.json)
  comparisons.png DnD (and each variant) minus each zero-shot baseline with paired 95% CIs, per
                  target and pooled, on accuracy (with the ±1-point "level" band) and on the gold
                  answer's log-probability (metrics.json)
  diagnostics.png per fold, each generator's fit ratio, retrieval accuracy, prompt sensitivity,
                  held-out stray and the zoo's reachability, goals dashed (results/diagnostics.csv)
Every figure takes its colours from the one palette below (Okabe-Ito, colour-blind safe): a fixed
colour per method and per dataset, a marker per dataset where points are drawn; legends sit
outside the panels.
A figure whose input the run lacks is still written, as a placeholder naming what is missing,
so the set of outputs is the same for every run. Captions for the Snakemake report are in
workflow/report/fig_{name}.rst; `CAPTIONS` are the report's one-line index entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dnd.benchmarks.datasets import title
from dnd.io import atomic_path, check_safetensors
from dnd.reporting.tables import METHOD_LABELS, dataset_order, pct_factor
from dnd.summary import MEAN_TARGET, MULTITASK, compared_kinds, comparison_pairs

CAPTIONS: dict[str, str] = {
    "bars": "accuracy per held-out dataset and method",
    "transfer": "source LoRA × target accuracy (diagonal = oracle)",
    "efficiency": "LoRA tuning time vs DnD generation time (log scale)",
    "pca": "PCA of real LoRA checkpoints and generated adapters",
    "curves": "training curves of the LoRA zoo and the generators",
    "controls": "DnD minus each control adapter, paired 95% CIs (accuracy, gold log-prob)",
    "comparisons": "DnD minus each zero-shot baseline, paired 95% CIs (accuracy, gold log-prob)",
    "diagnostics": "generator diagnostics per fold: fit, retrieval, prompt sensitivity, held-out stray, "
                   "reachability",
}
FIGURES: dict[str, str] = {key: f"{key}.png" for key in CAPTIONS}  # name -> file under --figures-dir

# The one palette of every figure (the main report's and the extra experiments'): the
# Okabe-Ito colours (distinct under the common colour-vision deficiencies), one fixed colour per
# method and one per dataset, with a marker per dataset as a second cue where points are drawn.
OKABE_ITO = {"blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
             "skyblue": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000"}
GREY, DARK_GREY, WINE, INDIGO = "#999999", "#555555", "#882255", "#332288"  # the last two: Paul Tol's, CVD-safe
# One fixed order (bars, legends) and colour per method, shared by every figure.
MAIN_METHODS = ["base", "train_avg", "best_train", "soup", "nearest", MULTITASK, "dnd", "oracle"]
METHOD_COLORS = {"base": GREY, "train_avg": OKABE_ITO["skyblue"], "best_train": OKABE_ITO["blue"],
                 "soup": OKABE_ITO["green"], "nearest": OKABE_ITO["orange"], "dnd": OKABE_ITO["vermillion"],
                 "oracle": OKABE_ITO["black"], "control_other": OKABE_ITO["yellow"],
                 "control_random": OKABE_ITO["purple"], "control_shuffled": DARK_GREY,
                 "dnd_basis": WINE, "dnd_hyperconv": OKABE_ITO["vermillion"], "zoo": GREY,
                 "fewshot_ft": OKABE_ITO["blue"], "icl": OKABE_ITO["green"], MULTITASK: INDIGO}
DATASET_COLORS = [*(OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion", "skyblue", "purple")), WINE,
                  OKABE_ITO["yellow"]]
DATASET_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
POOLED_COLOR = OKABE_ITO["black"]


def apply_style() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette=DATASET_COLORS)
    matplotlib.rcParams.update({"savefig.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42})


def method_color(method: str) -> str:
    """A method's colour (METHOD_COLORS; grey for one it lacks)."""
    return METHOD_COLORS.get(method, GREY)


def method_palette() -> dict[str, Any]:
    """Display label (METHOD_LABELS) -> colour."""
    return {METHOD_LABELS[m]: METHOD_COLORS[m] for m in METHOD_LABELS if m in METHOD_COLORS}


def dataset_palette(names: list[str]) -> dict[str, Any]:
    """Display title -> colour, in the order of `names` (config order); colours repeat after 7,
    the markers (`dataset_markers`) then tell datasets apart."""
    return {title(n): DATASET_COLORS[i % len(DATASET_COLORS)] for i, n in enumerate(names)}


def dataset_markers(names: list[str]) -> dict[str, str]:
    """Display title -> marker, in the order of `names`."""
    return {title(n): DATASET_MARKERS[i % len(DATASET_MARKERS)] for i, n in enumerate(names)}


def paired_band(ax, width: float, vertical: bool = True) -> None:
    """The zero line and the ±`width` band (dnd.stats.EQUIVALENT points: "level") behind paired
    differences."""
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    span(-width, width, color=GREY, alpha=0.18, lw=0, zorder=0,
         label=f"±{width:g} point (level)" if width else None)
    line(0, color=DARK_GREY, lw=0.8, zorder=1)


def legend_below(fig, handles: list, labels: list[str], ncol: int | None = None) -> None:
    """One legend for the whole figure, under its panels (never over the data)."""
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
                   ncol=ncol or min(len(labels), 4), fontsize=8)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_png(fig, out: Path, dpi: int = 110) -> None:
    """Lay out, write atomically as PNG (creating the folder) and close a figure of an extra
    experiment's report."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def placeholder(path: Path, message: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, path)


def method_bars(tidy: pd.DataFrame, methods: list[str], targets: list[str], path: Path,
                ylabel: str = "accuracy (%)") -> None:
    """Bars of `methods` per target (tidy_scores rows; error bars: sd over a method's rows)."""
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

    f = pct_factor(scores)
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
    rows = [d for d in dataset_order(datasets, pv.index) if d in pv.index]
    cols = [d for d in dataset_order(datasets, pv.columns) if d in pv.columns]
    pv = pv.loc[rows, cols]
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(cols), 0.8 + 0.6 * len(rows)))
    sns.heatmap(pv.rename(index=title, columns=title), annot=True, fmt=".1f", cmap="viridis",
                cbar_kws={"label": "accuracy (%)"}, ax=ax, linewidths=0.5, linecolor="white")
    for i, r in enumerate(rows):  # the oracle cells: a thick outline in the figure's one contrast colour
        if r in cols:
            ax.add_patch(Rectangle((cols.index(r) + 0.04, i + 0.04), 0.92, 0.92, fill=False,
                                   edgecolor=OKABE_ITO["vermillion"], lw=2.6, zorder=5))
    ax.set_xlabel("evaluated on (target)")
    ax.set_ylabel("LoRA trained on (source)")
    ax.set_title("Transfer of source LoRAs (outlined in red: the diagonal, the oracle)")
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
    pal = {"LoRA tuning (oracle)": method_color("oracle"), "DnD generation (median)": method_color("dnd")}
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


def collect_pca_inputs(checkpoints: Sequence[Path], adapters: Sequence[Path],
                       per_dataset: int) -> list[tuple[str, str, Path]]:
    """(dataset, kind, file): evenly spaced real checkpoints per dataset (of the declared zoo
    folders .../{ds}/checkpoints), every DnD adapter (of the declared .../{T}/dnd_{i} folders),
    by dataset and target name."""
    items: list[tuple[str, str, Path]] = []
    for d in sorted(Path(p) for p in checkpoints if Path(p).is_dir()):
        ck = sorted(d.glob("step-*.safetensors"))
        if not ck:
            continue
        sel = sorted(set(np.linspace(0, len(ck) - 1, min(per_dataset, len(ck))).round().astype(int)))
        items += [(d.parent.name, "LoRA checkpoint", ck[i]) for i in sel]
    for a in sorted(Path(p) / "adapter_model.safetensors" for p in adapters):
        if a.parent.name.removeprefix("dnd_").isdigit() and a.exists():  # the default design's, not dnd_<design>_i
            items.append((a.parent.parent.name, "DnD adapter", a))
    return items


def pca_coordinates(items: list[tuple[str, str, Path]], n_coords: int,
                    seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """PCA (numpy SVD) of the flattened LoRA vectors over the keys all files share, on a fixed
    random subset of coordinates when the vectors are long. Returns (coords, explained ratio)."""
    from safetensors import safe_open

    key_sets, sizes = [], {}
    for _, kind, p in items:
        check_safetensors(p, kind)
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


def fig_pca(checkpoints: Sequence[Path], adapters: Sequence[Path], datasets: list[str], path: Path,
            per_dataset: int, n_coords: int, seed: int) -> str | None:
    import matplotlib.pyplot as plt

    items = collect_pca_inputs(checkpoints, adapters, per_dataset)
    if len(items) < 3:
        placeholder(path, "Too few LoRA checkpoints / generated adapters for a PCA.")
        return None
    try:
        df, var = pca_coordinates(items, n_coords, seed)
    except ValueError as exc:
        placeholder(path, str(exc))
        return None
    names = dataset_order(datasets, df.dataset)
    df["Dataset"] = df.dataset.map(title)
    df["Kind"] = df.kind
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    pal, marks = dataset_palette(names), dataset_markers(names)
    shown = [title(n) for n in names if n in set(df.dataset)]
    for name in shown:  # a colour and a marker per dataset; real checkpoints hollow, DnD adapters filled
        d = df[df.Dataset == name]
        real, gen = d[d.Kind == "LoRA checkpoint"], d[d.Kind == "DnD adapter"]
        ax.scatter(real.PC1, real.PC2, s=28, marker=marks[name], facecolors="none", edgecolors=pal[name], lw=1.0,
                   alpha=0.9)
        ax.scatter(gen.PC1, gen.PC2, s=60, marker=marks[name], color=pal[name], edgecolors="black", lw=0.6,
                   zorder=3)
    handles = [Line2D([], [], ls="", marker=marks[n], color=pal[n], label=n) for n in shown]
    handles += [Line2D([], [], ls="", marker="o", mfc="none", mec=DARK_GREY, label="LoRA checkpoint (hollow)"),
                Line2D([], [], ls="", marker="o", color=DARK_GREY, mec="black", label="DnD adapter (filled)")]
    ax.set_xlabel(f"PC1 ({100 * var[0]:.1f}% var.)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.1f}% var.)" if len(var) > 1 else "PC2")
    ax.set_title("LoRA parameter space: real checkpoints vs generated adapters")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    _save(fig, path)
    n_real = int((df.kind == "LoRA checkpoint").sum())
    n_gen = int((df.kind == "DnD adapter").sum())
    return (f"{n_real} real checkpoints and {n_gen} generated adapters; "
            f"{'a fixed random subset of ' + str(n_coords) + ' coordinates' if n_coords else 'all coordinates'}"
            f" of the flattened LoRA vectors; PC1+PC2 explain {100 * float(var.sum()):.1f}% of the variance")


def _smooth(y: pd.Series) -> pd.Series:
    w = max(1, len(y) // 20)
    return y.rolling(w, center=True, min_periods=1).mean()


def fig_curves(zoo_logs: Sequence[Path], generator_logs: Sequence[Path], datasets: list[str], path: Path,
               design: str = "hyperconv") -> bool:
    """Loss curves of the zoo's LoRAs (the declared .../{ds}/train_log.csv) and of the default
    design's generators (the declared .../{target}/train_log_{design}.csv)."""
    import matplotlib.pyplot as plt

    zoo = {p.parent.name: p for p in sorted(map(Path, zoo_logs)) if p.name == "train_log.csv" and p.is_file()}
    logs = sorted(p for p in map(Path, generator_logs) if p.name == f"train_log_{design}.csv" and p.is_file())
    gen = {p.parent.name: p for p in logs}
    if not zoo and not gen:
        placeholder(path, "No training logs (zoo or generators) for this run.")
        return False
    names = dataset_order(datasets, zoo, gen)
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



def is_control_pair(pair: tuple[str, str]) -> bool:
    """A (subject, baseline) pair of comparison_pairs whose baseline is a control adapter."""
    return pair[1].startswith("control_")


def fig_comparisons(metrics: dict | None, targets: list[str], path: Path, factor: float = 100.0,
                    keep: Callable[[tuple[str, str]], bool] | None = None, what: str = "comparisons") -> bool:
    """Forest plot: per pair (rows, in blocks on alternating shades; `keep` picks the pairs of
    dnd.summary.comparison_pairs) and target (a colour and a marker each; the pooled mean: a black
    diamond), the subject minus the baseline with its paired bootstrap 95% CI; left panel accuracy
    (points, with the ±EQUIVALENT "level" band), right panel gold log-probability (nats). False (a
    placeholder) without metrics.json's comparisons."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from dnd.stats import EQUIVALENT

    metrics = metrics or {}
    pairs = [(s, b) for s, b in comparison_pairs(compared_kinds(metrics))
             if isinstance(metrics.get(f"{MEAN_TARGET}/{s}_minus_{b}/acc"), (int, float))
             and (keep is None or keep((s, b)))]
    if not pairs:
        placeholder(path, f"no paired {what} in metrics.json")
        return False
    names = [*targets, MEAN_TARGET]
    colors, marks = dataset_palette(targets), dataset_markers(targets)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.9 + 0.95 * len(pairs)), sharey=True)
    step = 0.8 / max(len(names), 1)
    for ax, (metric, scale, unit) in zip(axes, (("acc", factor, "accuracy (points)"),
                                                ("gold_logprob", 1.0, "gold log-prob (nats)"))):
        for bi in range(len(pairs)):
            if bi % 2:
                ax.axhspan(bi - 0.5, bi + 0.5, color=GREY, alpha=0.12, lw=0, zorder=0)
        paired_band(ax, EQUIVALENT if metric == "acc" else 0.0)
        for bi, (subject, b) in enumerate(pairs):
            for ti, t in enumerate(names):
                key = f"{t}/{subject}_minus_{b}/{metric}"
                d, lo, hi = (metrics.get(key + sfx) for sfx in ("", "_ci_low", "_ci_high"))
                if not all(isinstance(v, (int, float)) for v in (d, lo, hi)):
                    continue
                y = bi + (ti - (len(names) - 1) / 2) * step
                pooled = t == MEAN_TARGET
                ax.errorbar(scale * d, y, xerr=[[scale * (d - lo)], [scale * (hi - d)]],
                            fmt="D" if pooled else marks[title(t)], ms=6 if pooled else 3.5,
                            color=POOLED_COLOR if pooled else colors[title(t)], lw=1.8 if pooled else 0.9,
                            zorder=4 if pooled else 3)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"method − baseline, {unit}, paired 95% CI")
    axes[0].set_ylim(len(pairs) - 0.5, -0.5)
    axes[0].set_yticks(range(len(pairs)), [f"{METHOD_LABELS[s]} − {METHOD_LABELS[b]}" for s, b in pairs],
                       fontsize=7)
    handles = [Line2D([], [], ls="", marker=marks[title(t)], color=colors[title(t)], label=title(t)) for t in targets]
    handles += [Line2D([], [], ls="", marker="D", color=POOLED_COLOR, ms=6, label="pooled over targets"),
                plt.Rectangle((0, 0), 1, 1, color=GREY, alpha=0.35, label=f"±{EQUIVALENT:g} point (level)")]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=7)
    _save(fig, path)
    return True


DIAGNOSTIC_PANELS = (("fit_ratio", "fit ratio (token space)"),
                     ("retrieval_acc", "retrieval accuracy"),
                     ("sensitivity_ratio", "prompt sensitivity\n(1 = as far apart as the real LoRAs)"),
                     ("heldout_norm_ratio", "held-out stray\n(distance from the sources' mean)"),
                     ("reachability", "reachability of the held-out LoRA (zoo)"))


def fig_diagnostics(diag: pd.DataFrame | None, targets: list[str], path: Path,
                    goals: dict[str, tuple[str, float]] | None = None) -> bool:
    """One panel per diagnostic (DIAGNOSTIC_PANELS), grouped bars, one group per fold and one bar
    per generator (dnd and each variant; the zoo's reachability), each generator in its method
    colour; `goals` (metric -> ("≤" or "≥", value), dnd.diagnostics' FIT_GOAL, RETRIEVAL_GOAL,
    STRAY_LIMIT) as dashed lines; one legend under the panels. False (a placeholder) without
    diagnostics."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if diag is None or diag.empty:
        placeholder(path, "no generator diagnostics (results/diagnostics.csv)")
        return False
    goals = goals or {}
    folds = [t for t in targets if t in set(diag["fold"])]
    panels = [p for p in DIAGNOSTIC_PANELS if (diag["metric"] == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.4), squeeze=False)
    seen: dict[str, Any] = {}
    for ax, (metric, label) in zip(axes[0], panels):
        sub = diag[(diag["metric"] == metric) & diag["fold"].isin(folds)]
        variants = list(dict.fromkeys(sub["variant"]))
        width = 0.8 / max(len(variants), 1)
        for vi, v in enumerate(variants):
            vals = sub[sub["variant"] == v].set_index("fold")["value"]
            xs = [i + (vi - (len(variants) - 1) / 2) * width for i, f in enumerate(folds) if f in vals.index]
            seen[METHOD_LABELS.get(v, v)] = ax.bar(xs, [float(vals[f]) for f in folds if f in vals.index],
                                                   width=width, color=method_color(v), edgecolor="white", lw=0.4)
        if metric in goals:
            op, value = goals[metric]
            ax.axhline(value, color="black", lw=1.0, ls="--", zorder=4)
            seen.setdefault("goal (dashed)", Line2D([], [], color="black", ls="--", lw=1.0))
            ax.set_title(f"{label} (goal {op} {value:g})", fontsize=8)
        else:
            ax.set_title(label, fontsize=8)
        top = max(float(sub["value"].max()), goals.get(metric, ("", 0.0))[1])
        ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        ax.set_xticks(range(len(folds)), [title(f) for f in folds], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("")
    fig.tight_layout()
    legend_below(fig, list(seen.values()), list(seen.keys()))
    _save(fig, path)
    return True


def forest(ax, rows: list[dict[str, Any]], band: float | None = None, xlabel: str = "") -> None:
    """Horizontal estimates with their 95% CIs, one row each, top to bottom, on alternating
    shades (no gridline through a row): `rows` of {"label", "est", "lo", "hi", "color", and
    optionally "marker", "paper" (a claimed value drawn as a hollow diamond)}. `band`: the ±band
    (and zero line) behind paired differences (dnd.stats.EQUIVALENT); None for levels. The x
    range always spans at least 4 units, so an axis of zeros is still read as zeros."""
    import math

    for i, r in enumerate(rows):
        if i % 2:
            ax.axhspan(i - 0.5, i + 0.5, color=GREY, alpha=0.12, lw=0, zorder=0)
        est, lo, hi = (float(r.get(k, math.nan)) for k in ("est", "lo", "hi"))
        if math.isfinite(est):
            err = [[est - lo], [hi - est]] if math.isfinite(lo) and math.isfinite(hi) else None
            ax.errorbar(est, i, xerr=err, fmt=r.get("marker", "o"), color=r["color"], ms=6, lw=1.4, capsize=3,
                        zorder=3)
        if r.get("paper") is not None:
            ax.plot(float(r["paper"]), i, marker="D", ms=7, mfc="none", mec="black", mew=1.2, ls="", zorder=4)
    if band is not None:
        paired_band(ax, band)
    vals = [float(v) for r in rows for v in (r.get("est"), r.get("lo"), r.get("hi"), r.get("paper"))
            if v is not None and math.isfinite(float(v))] + ([-band, band] if band else [])
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 4:
        mid = (hi + lo) / 2
        lo, hi = mid - 2, mid + 2
        if band is None and min(vals, default=0.0) >= 0 > lo:  # levels (accuracies): from 0
            lo, hi = 0.0, 4.0
    pad = 0.06 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(xlabel)


def forest_legend(fig, band: float | None, paper: bool) -> None:
    """The legend of `forest` panels, under the figure: the level band and the paper's claim."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    if band:
        handles.append(Patch(color=GREY, alpha=0.35, label=f"±{band:g} point: level"))
    if paper:
        handles.append(Line2D([], [], marker="D", mfc="none", mec="black", ls="", label="the paper's claimed gain"))
    legend_below(fig, handles, [h.get_label() for h in handles])
