"""Summary of the scores: bootstrap CIs, the main comparison table and the headline metrics.

  dnd summarize --params JSON --eval FILE... --scores CSV --metrics JSON

merges the per-target files of `dnd evaluate` into results/scores.csv and results/metrics.json,
and refuses incomplete inputs (`require_complete`, shared by every summary command that reads
per-item evaluation rows). `main_table(scores, folds)` computes the comparison table from
scores.csv alone; `training_loras` is the one place that selects the training LoRAs. This module
reads no model and imports neither lm-eval nor torch; it also names the vocabulary of the
evaluation rows (`METHODS`, `GENERATED_KINDS`) that `dnd evaluate` writes.

--params, the aggregate "mean" rows, the paired CIs and the metrics.json keys: docs/modules.md,
section `src/dnd/summary.py`; the file formats: docs/contracts.md.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from .config import folds as config_folds, parse_params, section
from .io import read_jsonl, write_json, write_text
from .schedule import GENERATED_KINDS
from .stats import EQUIVALENT, boot_means, bootstrap_indices, ci_class, percentile_ci, pooled_ci, relation, verdict  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# GENERATED_KINDS (dnd.schedule): dnd (the default generator), dnd_<design> (a variant design side
# by side), the controls; `dnd evaluate` requires dnd, the others are optional
CONTROL_KINDS = tuple(k for k in GENERATED_KINDS if k.startswith("control_"))
VARIANT_KINDS = tuple(k for k in GENERATED_KINDS if k.startswith("dnd_"))
# baselines that see more labels than one source LoRA: the multi-task LoRA on the union of the fold's source train
# splits (the default run's: `dnd evaluate-multitask`; zero-shot for the target, it never sees it) and the source
# LoRA picked on labeled validation items of the target (the function_space experiment's)
MULTITASK, VAL_PICKED = "multitask_lora", "val_picked"
LABELED_METHODS = (MULTITASK, VAL_PICKED)
METHODS = ("base", "source_lora", "soup", "nearest", *GENERATED_KINDS, *LABELED_METHODS)
# methods whose adapter is the source LoRA they picked for the target (by prompt embeddings, by validation items)
PICKED_METHODS = ("nearest", VAL_PICKED)
SCORE_COLUMNS = ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob"]
MAIN_COLUMNS = ["target", "base", "train_avg", "best_train", "soup", "nearest", "multitask", "dnd_mean", "dnd_sd",
                "dnd_ci_low", "dnd_ci_high", "oracle", "gap_closed"]
MEAN_ADAPTER = "mean"  # adapter name of the per-target aggregate row of a multi-adapter method
MEAN_TARGET = "mean"  # row / key name of the average over targets
BOOT_FIGURES = ("dnd_mean", "dnd_minus_train_avg", "train_avg")  # over-target means with a bootstrap CI
# zero-shot baselines DnD is compared with, item by item (paired bootstrap), per target and pooled
COMPARED = ("train_avg", "soup", "nearest", *CONTROL_KINDS)
# what each variant design (dnd_<design>) is compared with: the zero-shot baselines and dnd
VARIANT_COMPARED = ("train_avg", "soup", "nearest", "dnd")
# what each labeled baseline present (the function_space experiment's) is compared with; dnd is compared with each
LABELED_COMPARED = ("train_avg", "soup", "nearest")
# the headroom a DnD claim needs: the oracle (the target's own LoRA) minus the training-LoRA average
HEADROOM = ("oracle", "train_avg")
ITEM_METRICS = ("acc", "gold_logprob")  # per item: correct (0/1); log P(gold answer), summed over its tokens


# ============================================================================ inputs
# methods every per-target evaluation file holds (`dnd evaluate` always scores them); the other
# kinds (variants, controls) are optional, but then on every target alike
REQUIRED_METHODS = ("base", "source_lora", "soup", "nearest", "dnd")


class IncompleteInputError(ValueError):
    """Summary inputs that lack a target, a method/adapter or items: an error naming what is
    missing, never a summary over whatever is there."""


def read_eval_files(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of per-target evaluation files ({target}.jsonl); a missing file, or one without
    rows (an interrupted or emptied evaluation), is an error naming it and its target."""

    rows: list[dict[str, Any]] = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"evaluation file not found: {p}")
        got = read_jsonl(p)
        if not got:
            raise IncompleteInputError(f"target {Path(p).stem}: evaluation file {p} is empty (no rows)")
        rows.extend(got)
    return rows


def load_eval_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read per-target JSONL files (`read_eval_files`) and check each row's format; whether
    they are complete and comparable item by item is `require_complete`'s check."""
    rows = read_eval_files(paths)
    check_eval_rows(rows, METHODS, "evaluation rows")
    return rows


def check_eval_rows(rows: list[dict[str, Any]], known: Iterable[str], what: str) -> None:
    """Each row's method is `known`, each (target, method, adapter) appears once, and each row has its
    per-item gold log-probabilities; a ValueError naming the row otherwise (`what`: the rows' name)."""
    known = set(known)
    seen: set[tuple[str, str, str]] = set()
    for r in rows:
        key = (r["target"], r["method"], str(r["adapter"]))
        if r["method"] not in known:
            raise ValueError(f"unknown method {r['method']!r} in {what}")
        if key in seen:
            raise ValueError(f"duplicate evaluation row {key}")
        seen.add(key)
        if len(r.get("gold_logprob") or []) != len(r["correct"]):
            raise ValueError(f"row {key}: no per-item gold_logprob (an evaluation file from an older version? "
                             "rerun the evaluate stage)")


def eval_cell(r: dict[str, Any]) -> tuple:
    """What a row is within its target: (method, adapter); the adapter of a method that picks one
    source per target (PICKED_METHODS: nearest, val_picked) is the source it chose for that target,
    so it is "*" (one such row, whichever it is)."""
    return r["method"], "*" if r["method"] in PICKED_METHODS else str(r["adapter"])


def _label(cell: tuple) -> str:
    return "/".join(str(x) for x in cell if x is not None)


def require_complete(rows: list[dict[str, Any]], targets: Iterable[str] | None = None, *,
                     required: Iterable[str] = REQUIRED_METHODS, sources: dict[str, list[str]] | None = None,
                     adapters: dict[str, int] | None = None, items: dict[str, int] | None = None,
                     cells_of: dict[str, Iterable[tuple]] | None = None,
                     excused: dict[str, Iterable[tuple]] | None = None,
                     cell=eval_cell, group=None, axes=None, where: str = "") -> None:
    """Refuse incomplete summary inputs: IncompleteInputError, one line naming every gap, unless
    - every target of `targets` (default: the targets of `rows`) has rows, and no other target does;
    - every target has rows of each `required` method, a source_lora row for each of its
      `sources` (target -> datasets), at least `adapters[method]` adapters of `method`, the
      cells `cells_of[target]` (`cell(row)`: (method, adapter) by default) and the same cells as
      every other target but its `excused` ones (cells its run records as left out, e.g. an ICL
      k that does not fit its context), so that a mean over targets is a mean over the same
      targets for every method; and, with `axes(row)` = (a, b) (e.g. (method/adapter,
      protocol/seed)), every a of a target with every b of it;
    - within a target (or `group(row)`: a finer grouping) every row has the same items (ids, in
      order), n of them (`items[target]` when given, else the count most rows have), with one
      `correct` value per item.
    `where` names the inputs in the message (e.g. the ablation cell)."""

    present = list(dict.fromkeys(r["target"] for r in rows))
    expected = list(dict.fromkeys(targets)) if targets is not None else present
    problems = [f"rows of target {t}, which is not among the expected targets {expected}"
                for t in present if t not in expected]
    problems += [f"target {t}: no evaluation rows" for t in expected if t not in present]
    by_target = {t: [r for r in rows if r["target"] == t] for t in expected if t in present}
    cells = {t: {cell(r) for r in trows} for t, trows in by_target.items()}
    every = set().union(*cells.values()) if cells else set()
    for t, trows in by_target.items():
        methods = {r["method"] for r in trows}
        absent = [m for m in required if m not in methods]
        problems += [f"target {t}: no {m} rows" for m in absent]
        have = {str(r["adapter"]) for r in trows if r["method"] == "source_lora"}
        problems += [f"target {t}: no source_lora/{d} row" for d in (sources or {}).get(t, []) if d not in have]
        for m, k in (adapters or {}).items():
            found = sorted({str(r["adapter"]) for r in trows if r["method"] == m})
            if m in methods and len(found) < k:
                problems.append(f"target {t}: {len(found)} {m} adapters {found}, expected {k}")
        missing = sorted((c for c in (every | set((cells_of or {}).get(t, ()))) - cells[t]
                          - set((excused or {}).get(t, ())) if c[0] not in absent), key=str)
        if missing:
            problems.append(f"target {t}: no {', '.join(_label(c) for c in missing)}")
        if axes:
            pairs = {axes(r) for r in trows}
            firsts, seconds = dict.fromkeys(a for a, _ in pairs), dict.fromkeys(b for _, b in pairs)
            gaps = [f"{_label(a)} under {_label(b)}" for a in firsts for b in seconds if (a, b) not in pairs]
            if gaps:
                problems.append(f"target {t}: no {', '.join(gaps)}")
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(group(r) if group else r["target"], []).append(r)
    for g, grows in groups.items():
        t = grows[0]["target"]
        ref, _ = Counter(tuple(map(str, r["ids"])) for r in grows).most_common(1)[0]
        n = (items or {}).get(t, len(ref))
        for r in grows:
            name = f"target {t}: {_label(cell(r))}"
            if g != t:
                name += f" ({_label(g[1:]) if isinstance(g, tuple) else g})"
            ids = tuple(map(str, r["ids"]))
            if len(ids) != n or len(r["correct"]) != n or int(r.get("n", n)) != n:
                problems.append(f"{name} has {len(r['correct'])} items ({len(ids)} ids, n={r.get('n')}), expected {n}")
            elif ids != ref:
                problems.append(f"{name} scored other items than the other rows of its target")
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise IncompleteInputError(f"incomplete evaluation rows{' in ' + where if where else ''}: " + "; ".join(shown))


def training_loras(scores, folds: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Target -> the training LoRAs of its fold (fold order), for every target of `scores`.

    `folds` is `dnd.config.folds` of the run's config (summarize gets it in --params, the
    report from its config); without one, `dnd.config.folds` of a config listing the scored
    datasets (leave-one-out). Every fold dataset must have a source_lora row on its target."""

    adapters = scores["adapter"].fillna("").astype(str)
    src = scores["method"] == "source_lora"
    if folds is None:
        folds = config_folds({"data": {"datasets": list(dict.fromkeys([*adapters[src], *scores["target"]]))}})
    out = {}
    for t in dict.fromkeys(scores["target"]):
        if t not in folds:
            raise ValueError(f"the folds have no entry for target {t!r}")
        missing = sorted(set(folds[t]) - set(adapters[src & (scores["target"] == t)]))
        if missing:
            raise ValueError(f"fold {t}: no source_lora rows for {missing}")
        out[t] = list(folds[t])
    return out


# ============================================================================ scores.csv
def scores_frame(rows: list[dict[str, Any]], resamples: int, seed: int):
    """scores.csv as a DataFrame: one row per (target, method, adapter), plus an adapter
    'mean' row per multi-adapter method; 95% percentile bootstrap CIs over items."""
    import numpy as np
    import pandas as pd

    out = []
    order = {m: i for i, m in enumerate(METHODS)}
    for t in dict.fromkeys(r["target"] for r in rows):
        trows = sorted((r for r in rows if r["target"] == t), key=lambda r: order[r["method"]])  # stable
        n = trows[0]["n"]
        idx = bootstrap_indices(n, resamples, seed, t)

        def add(adapter: str, correct, gold_lp) -> None:
            out.append([t, method, adapter, n, float(correct.mean()), *percentile_ci(boot_means(correct, idx)),
                        float(gold_lp.mean())])

        def vec(r, key):
            return np.asarray(r[key], dtype=np.float64)

        for method in METHODS:
            mrows = [r for r in trows if r["method"] == method]
            for r in mrows:
                add(str(r["adapter"]), vec(r, "correct"), vec(r, "gold_logprob"))
            if method in GENERATED_KINDS and mrows:
                add(MEAN_ADAPTER, np.mean([vec(r, "correct") for r in mrows], axis=0),
                    np.mean([vec(r, "gold_logprob") for r in mrows], axis=0))
    return pd.DataFrame(out, columns=SCORE_COLUMNS)


# ============================================================================ main table
def gap_closed(dnd: float, train_avg: float, oracle: float) -> float:
    """Share of the training-LoRA -> oracle gap that DnD closes (NaN if there is no gap)."""
    denom = oracle - train_avg
    if not (denom > 0) or math.isnan(dnd):
        return math.nan
    return (dnd - train_avg) / denom


def _main_row(st, target: str, train: list[str]) -> dict[str, Any]:
    """The main table's row of one target from its scores rows `st`."""

    def acc(method, adapter=None):
        sel = st[st["method"] == method]
        if adapter is not None:
            sel = sel[sel["adapter"] == adapter]
        return float(sel["acc"].iloc[0]) if len(sel) else math.nan

    src = st[st["method"] == "source_lora"]
    tr = src[src["adapter"].isin(train)]
    dnd = st[(st["method"] == "dnd") & (st["adapter"] != MEAN_ADAPTER)]
    dmean = st[(st["method"] == "dnd") & (st["adapter"] == MEAN_ADAPTER)]
    rec = {
        "target": target, "base": acc("base"),
        "train_avg": float(tr["acc"].mean()) if len(tr) else math.nan,
        "best_train": float(tr["acc"].max()) if len(tr) else math.nan,
        "soup": acc("soup"), "nearest": acc("nearest"), "multitask": acc(MULTITASK),
        "dnd_mean": float(dnd["acc"].mean()) if len(dnd) else math.nan,
        "dnd_sd": float(dnd["acc"].std(ddof=1)) if len(dnd) > 1 else math.nan,
        "dnd_ci_low": float(dmean["ci_low"].iloc[0]) if len(dmean) else math.nan,
        "dnd_ci_high": float(dmean["ci_high"].iloc[0]) if len(dmean) else math.nan,
        "oracle": acc("source_lora", target),
    }
    rec["gap_closed"] = gap_closed(rec["dnd_mean"], rec["train_avg"], rec["oracle"])
    return rec


def main_table(scores, folds: dict[str, list[str]] | None = None):
    """The main comparison from a scores DataFrame (scores.csv): one row per target, then a
    'mean' row (column means over targets; its gap_closed is computed from those means, its
    CI columns are NaN because a CI of the mean needs the items: see metrics.json).

    train_avg / best_train: mean / max accuracy of the fold's training LoRAs (`training_loras`);
    multitask: the fold's multi-task LoRA (NaN where it was not scored); oracle: the target's own
    LoRA; dnd_mean / dnd_sd: mean / sample sd over DnD adapters; dnd_ci_*: the CI of the adapter
    'mean' row; gap_closed = (dnd_mean - train_avg) / (oracle - train_avg), NaN when
    oracle <= train_avg."""
    import numpy as np
    import pandas as pd

    s = scores.copy()
    s["adapter"] = s["adapter"].fillna("").astype(str)
    train = training_loras(s, folds)
    table = pd.DataFrame([_main_row(s[s["target"] == t], t, train[t]) for t in train], columns=MAIN_COLUMNS)
    if len(table):
        mean = {c: float(table[c].mean()) for c in MAIN_COLUMNS[1:]}
        mean.update(target=MEAN_TARGET, dnd_ci_low=math.nan, dnd_ci_high=math.nan,
                    gap_closed=gap_closed(mean["dnd_mean"], mean["train_avg"], mean["oracle"]))
        table = pd.concat([table, pd.DataFrame([mean], columns=MAIN_COLUMNS)], ignore_index=True)
    return table.astype({c: np.float64 for c in MAIN_COLUMNS[1:]})


# ============================================================================ metrics.json
def item_vectors(rows: list[dict], train: list[str], metric: str = "acc"):
    """Per-item vectors of a target under `metric` (ITEM_METRICS): {name: np.array} for
    train_avg (mean over the training LoRAs), the oracle (the target's own LoRA, when scored), soup,
    nearest and the mean over adapters of each generated kind."""
    import numpy as np

    key = {"acc": "correct", "gold_logprob": "gold_logprob"}[metric]
    by = {(r["method"], str(r["adapter"])): np.asarray(r[key], dtype=np.float64) for r in rows}
    vec = {}
    if train:
        vec["train_avg"] = np.mean([by[("source_lora", d)] for d in train], axis=0)
    own = ("source_lora", str(rows[0]["target"])) if rows else None
    if own in by:  # the oracle: the target's own LoRA
        vec["oracle"] = by[own]
    for method in ("soup", "nearest"):
        got = [v for (m, _), v in by.items() if m == method]
        if got:
            vec[method] = got[0]
    for kind in GENERATED_KINDS:
        got = [v for (m, _), v in by.items() if m == kind]
        if got:
            vec[kind] = np.mean(got, axis=0)
    for method in LABELED_METHODS:  # one row each, when scored (the function_space experiment)
        got = [v for (m, _), v in by.items() if m == method]
        if got:
            vec[method] = got[0]
    return vec


def comparison_pairs(kinds: Iterable[str]) -> list[tuple[str, str]]:
    """(subject, baseline) pairs compared item by item: dnd against COMPARED, each variant kind
    present (dnd_<design>) against VARIANT_COMPARED, each labeled baseline present
    (LABELED_METHODS) against LABELED_COMPARED and dnd against it, and the HEADROOM pair (oracle
    minus training average: whether a DnD claim is testable, dnd.stats.untestable_reason). Kinds
    that are absent add no pair, so the default run's pairs are these of its own kinds."""
    present = set(kinds)
    pairs = [("dnd", b) for b in COMPARED]
    pairs += [(v, b) for v in VARIANT_KINDS if v in present for b in VARIANT_COMPARED]
    pairs += [p for m in LABELED_METHODS if m in present for p in [(m, b) for b in LABELED_COMPARED] + [("dnd", m)]]
    return pairs + [HEADROOM]


def compared_kinds(metrics: Iterable[str]) -> set[str]:
    """The subjects of the `{target}/{subject}_minus_{baseline}/{metric}` keys of metrics.json."""
    return {k.split("/")[1].split("_minus_")[0] for k in metrics if "_minus_" in k}


def _comparisons(t: str, rows: list[dict], train: list[str], idx,
                 pairs: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each subject minus each baseline of `comparison_pairs`, per ITEM_METRICS:
    ('{t}/{subject}_minus_{b}/{m}' with its paired 95% CI, {(subject, b, m): bootstrap means or None})."""
    out: dict[str, Any] = {}
    boots: dict[tuple[str, str, str], Any] = {}
    for m in ITEM_METRICS:
        vec = item_vectors(rows, train, m)
        for subject, b in pairs:
            diff = vec[subject] - vec[b] if subject in vec and b in vec else None
            boots[(subject, b, m)] = boot_means(diff, idx)
            key = f"{t}/{subject}_minus_{b}/{m}"
            out[key] = float(diff.mean()) if diff is not None else math.nan
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = percentile_ci(boots[(subject, b, m)])
    return out, boots


def _target_metrics(t: str, rows: list[dict], train: list[str], idx,
                    pairs: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """('{t}/...' figures beyond the main table, {BOOT_FIGURES name: bootstrap means or None})."""
    vec = item_vectors(rows, train)
    diff = vec["dnd"] - vec["train_avg"] if "dnd" in vec and "train_avg" in vec else None
    near = [r for r in rows if r["method"] == "nearest"]
    src = {str(r["adapter"]): r["acc"] for r in rows if r["method"] == "source_lora"}
    out: dict[str, Any] = {
        f"{t}/n": rows[0]["n"], f"{t}/n_train_loras": len(train),
        f"{t}/n_dnd_adapters": sum(1 for r in rows if r["method"] == "dnd"),
        f"{t}/nearest_adapter": str(near[0]["adapter"]) if near else "",
        f"{t}/best_train_adapter": max(train, key=lambda d: src[d]) if train else "",
        f"{t}/dnd_minus_train_avg": float(diff.mean()) if diff is not None else math.nan,
    }
    for kind in (*VARIANT_KINDS, *CONTROL_KINDS):
        out[f"{t}/{kind}_mean"] = float(vec[kind].mean()) if kind in vec else math.nan
    boots = dict(zip(BOOT_FIGURES, (boot_means(v, idx) for v in (vec.get("dnd"), diff, vec.get("train_avg")))))
    lo, hi = percentile_ci(boots["dnd_minus_train_avg"])
    out[f"{t}/dnd_minus_train_avg_ci_low"], out[f"{t}/dnd_minus_train_avg_ci_high"] = lo, hi
    comp, comp_boots = _comparisons(t, rows, train, idx, pairs)
    out.update(comp)
    boots.update(comp_boots)
    return out, boots


def _mean_metrics(out: dict[str, Any], targets: list[str], boots: dict[str, list]) -> dict[str, Any]:
    """'mean/...' figures over targets: means of per-target figures and bootstrap CIs of the
    over-target means (items resampled within each target)."""
    import numpy as np

    m = {f"{MEAN_TARGET}/n_targets": len(targets)}
    for key in (*(f"{k}_mean" for k in (*VARIANT_KINDS, *CONTROL_KINDS)), "dnd_minus_train_avg"):
        m[f"{MEAN_TARGET}/{key}"] = float(np.mean([out[f"{t}/{key}"] for t in targets]))
    for name in BOOT_FIGURES:
        lo, hi = pooled_ci(boots[name])
        key = "dnd" if name == "dnd_mean" else name
        m[f"{MEAN_TARGET}/{key}_ci_low"], m[f"{MEAN_TARGET}/{key}_ci_high"] = lo, hi
    for subject, b, metric in (k for k in boots if isinstance(k, tuple)):
        # pooled: every target weighs the same, items resampled within each target
        key = f"{subject}_minus_{b}/{metric}"
        m[f"{MEAN_TARGET}/{key}"] = float(np.mean([out[f"{t}/{key}"] for t in targets]))
        m[f"{MEAN_TARGET}/{key}_ci_low"], m[f"{MEAN_TARGET}/{key}_ci_high"] = pooled_ci(boots[(subject, b, metric)])
    return m


def headline_metrics(rows: list[dict[str, Any]], scores, resamples: int, seed: int,
                     folds: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Flat dict '{target}/{figure}' (and 'mean/{figure}' over targets): the main table's
    columns, control means, DnD minus training-LoRA average with its paired bootstrap CI, and
    bootstrap CIs of the over-target means (items resampled within each target)."""
    import numpy as np

    table = main_table(scores, folds).set_index("target")
    train = training_loras(scores, folds)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    out: dict[str, Any] = {}
    boots: dict[Any, list] = {name: [] for name in BOOT_FIGURES}
    pairs = comparison_pairs(r["method"] for r in rows)
    boots.update({(subject, b, m): [] for subject, b in pairs for m in ITEM_METRICS})
    for t in [*targets, MEAN_TARGET] if targets else []:
        out.update({f"{t}/{c}": table.loc[t, c] for c in MAIN_COLUMNS[1:]})
    for t in targets:
        trows = [r for r in rows if r["target"] == t]
        figures, tboots = _target_metrics(t, trows, train[t], bootstrap_indices(trows[0]["n"], resamples, seed, t),
                                          pairs)
        out.update(figures)
        for name in boots:
            boots[name].append(tboots[name])
    if targets:
        out.update(_mean_metrics(out, targets, boots))
    # JSON has no NaN: undefined figures are null
    return {k: (None if isinstance(v, float) and math.isnan(v) else
                (float(v) if isinstance(v, (float, np.floating)) else v)) for k, v in out.items()}


# ============================================================================ command
def _add_summarize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {evaluation: {bootstrap, ...}, seed, folds?}")
    p.add_argument("--eval", required=True, nargs="+", help="results/eval/{target}.jsonl files")
    p.add_argument("--scores", required=True, type=Path, help="output CSV (results/scores.csv)")
    p.add_argument("--metrics", required=True, type=Path, help="output JSON (results/metrics.json)")


def _run_summarize(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    resamples = int(section("evaluation", params.get("evaluation"))["bootstrap"])
    seed = int(params.get("seed", 0))
    folds = params.get("folds") or None
    rows = load_eval_rows(args.eval)
    # every fold's target (default: every file's), each with every method and the same items
    require_complete(rows, folds, sources=folds)
    scores = scores_frame(rows, resamples, seed)
    metrics = headline_metrics(rows, scores, resamples, seed, folds)
    write_text(args.scores, scores.to_csv(index=False))
    write_json(args.metrics, metrics, sort_keys=True)
    log.info("wrote %s (%d rows) and %s; mean over %d targets: base %.3f, train_avg %.3f, dnd %.3f, oracle %.3f",
             args.scores, len(scores), args.metrics, metrics.get(f"{MEAN_TARGET}/n_targets", 0),
             *(metrics.get(f"{MEAN_TARGET}/{k}") or math.nan for k in ("base", "train_avg", "dnd_mean", "oracle")))


COMMANDS = {"summarize": (_add_summarize, _run_summarize)}
