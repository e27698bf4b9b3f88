"""The report's figures (seaborn PNGs), drawn from the run's files only.

`FIGURES` is the one list of them (the Snakemake rule `report` declares its outputs from it):
  bars.png        accuracy per held-out dataset and method (the main table as bars)
  transfer.png    source LoRA x target dataset accuracy (diagonal = oracle)
  efficiency.png  LoRA tuning time of the oracle vs DnD generation time, log scale
  pca.png         PCA of real LoRA checkpoints and generated adapters (numpy SVD over the
                  flattened safetensors)
  curves.png      loss curves of the LoRA zoo and of the generators
  controls.png    DnD vs its controls (other dataset's prompts, random text)
  comparisons.png DnD minus each zero-shot baseline with paired 95% CIs, per target and pooled,
                  on accuracy and on the gold answer's log-probability (metrics.json)
  diagnostics.png per fold, each generator's fit ratio, retrieval accuracy, prompt sensitivity
                  and redraw spread, and the zoo's reachability (results/diagnostics.csv)
A figure whose input the run lacks is still written, as a placeholder naming what is missing,
so the set of outputs is the same for every run. Captions for the Snakemake report are in
workflow/report/fig_{name}.rst; `CAPTIONS` are the report's one-line index entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dnd.benchmarks.datasets import title
from dnd.io import atomic_path, check_safetensors
from dnd.reporting.tables import METHOD_LABELS, dataset_order, pct_factor
from dnd.summary import MEAN_TARGET, compared_kinds, comparison_pairs

CAPTIONS: dict[str, str] = {
    "bars": "accuracy per held-out dataset and method",
    "transfer": "source LoRA × target accuracy (diagonal = oracle)",
    "efficiency": "LoRA tuning time vs DnD generation time (log scale)",
    "pca": "PCA of real LoRA checkpoints and generated adapters",
    "curves": "training curves of the LoRA zoo and the generators",
    "controls": "DnD vs control adapters",
    "comparisons": "DnD minus each zero-shot baseline, paired 95% CIs (accuracy, gold log-prob)",
    "diagnostics": "generator diagnostics per fold: fit, retrieval, prompt sensitivity, reachability",
}
FIGURES: dict[str, str] = {key: f"{key}.png" for key in CAPTIONS}  # name -> file under --figures-dir

# One fixed order (bars, legends) and colour per method, shared by every figure.
MAIN_METHODS = ["base", "train_avg", "best_train", "soup", "nearest", "dnd", "oracle"]
_PALETTE_INDEX = {"base": 7, "train_avg": 0, "best_train": 9, "soup": 4, "nearest": 8, "dnd": 3,
                  "oracle": 2, "control_other": 5, "control_random": 6, "control_shuffled": 1,
                  "dnd_basis": 3, "dnd_hyperconv": 3}


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
    import seaborn as sns

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



def fig_comparisons(metrics: dict | None, targets: list[str], path: Path, factor: float = 100.0) -> bool:
    """Forest plot: per baseline (rows) and target (+ the pooled mean, bold), DnD minus the
    baseline with its paired bootstrap 95% CI; left panel accuracy (points), right panel gold
    log-probability (nats). False (a placeholder) without metrics.json's comparisons."""
    import matplotlib.pyplot as plt

    metrics = metrics or {}
    if not any(k.endswith("/acc") and "/dnd_minus_" in k for k in metrics):
        placeholder(path, "no DnD-minus-baseline comparisons in metrics.json")
        return False
    names = [*targets, MEAN_TARGET]
    colors = {**dataset_palette(targets), title(MEAN_TARGET): (0, 0, 0)}
    pairs = [(s, b) for s, b in comparison_pairs(compared_kinds(metrics))
             if isinstance(metrics.get(f"{MEAN_TARGET}/{s}_minus_{b}/acc"), (int, float))]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 + 0.9 * len(pairs)), sharey=True)
    for ax, (metric, scale, unit) in zip(axes, (("acc", factor, "accuracy (points)"),
                                                ("gold_logprob", 1.0, "gold log-prob (nats)"))):
        for bi, (subject, b) in enumerate(pairs):
            for ti, t in enumerate(names):
                key = f"{t}/{subject}_minus_{b}/{metric}"
                d, lo, hi = (metrics.get(key + sfx) for sfx in ("", "_ci_low", "_ci_high"))
                if not all(isinstance(v, (int, float)) for v in (d, lo, hi)):
                    continue
                y = bi + (ti - (len(names) - 1) / 2) * 0.8 / max(len(names), 1)
                pooled = t == MEAN_TARGET
                ax.errorbar(scale * d, y, xerr=[[scale * (d - lo)], [scale * (hi - d)]], fmt="D" if pooled else "o",
                            ms=5 if pooled else 3, color=colors[title(t)], lw=1.6 if pooled else 0.8,
                            label=("pooled over targets" if pooled else title(t)) if bi == 0 else None)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"method − baseline, {unit}")
    axes[0].set_yticks(range(len(pairs)), [f"{METHOD_LABELS[s]} − {METHOD_LABELS[b]}" for s, b in pairs],
                       fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=7)
    _save(fig, path)
    return True


DIAGNOSTIC_PANELS = (("fit_ratio", "fit ratio (token space; goal ≤ 0.3)", 0.3),
                     ("retrieval_acc", "retrieval accuracy (goal ≥ 0.9)", 0.9),
                     ("sensitivity_ratio", "prompt sensitivity (1 = as far apart as the real LoRAs)", None),
                     ("reachability", "reachability of the held-out LoRA (zoo)", None))


def fig_diagnostics(diag: pd.DataFrame | None, targets: list[str], path: Path) -> bool:
    """Four panels of grouped bars, one group per fold: fit_ratio, retrieval_acc,
    sensitivity_ratio (per generator: dnd and each variant) and the zoo's reachability, with the
    goals as dashed lines. False (a placeholder) without diagnostics."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if diag is None or diag.empty:
        placeholder(path, "no generator diagnostics (results/diagnostics.csv)")
        return False
    folds = [t for t in targets if t in set(diag["fold"])]
    fig, axes = plt.subplots(1, len(DIAGNOSTIC_PANELS), figsize=(4.2 * len(DIAGNOSTIC_PANELS), 3.6))
    for ax, (metric, label, goal) in zip(axes, DIAGNOSTIC_PANELS):
        sub = diag[(diag["metric"] == metric) & diag["fold"].isin(folds)].copy()
        if sub.empty:
            ax.set_axis_off()
            continue
        sub["fold"] = sub["fold"].map(title)
        sub["variant"] = sub["variant"].map(lambda v: METHOD_LABELS.get(v, v))
        sns.barplot(data=sub, x="fold", y="value", hue="variant", order=[title(t) for t in folds], ax=ax)
        if goal is not None:
            ax.axhline(goal, color="grey", lw=0.8, ls="--")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    _save(fig, path)
    return True
