"""The paper's ablations (target `ablations`, outside `all`): each family changes one setting of
the default pipeline, on a few fixed held-out targets, and compares DnD with the training-LoRA
average on the default run's test items and scorer.

  dnd ablation-summary --params JSON --family F --eval results/ablations/F/*/{target}/eval.jsonl
      [--default-eval results/eval/{target}.jsonl ...] --out results/ablations/F.csv
      --metrics results/ablations/F.json
  dnd ablation-report --params JSON --metrics results/ablations/*.json [--benchmarks
      benchmarks/ablations/... ...] --out results/ablations/report.md --figure results/ablations/figures/ablations.png

`setting_overrides` turns (family, setting) into the settings and sources that change; the
`sources` family names a count n in source order 0 "n" and in order k >= 1 "n" + "o" + k ("3o1",
`parse_source_setting`), and compares counts run in several orders as the mean over orders. The
families (condition, extractor, pool, pairing, sources), how the workflow runs them and what
{family}.csv and {family}.json hold: docs/modules.md, section
`src/dnd/experiments/ablations/report.py`; how to read the report: docs/experiments/ablations.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from dnd.io import atomic_path, read_jsonl, write_json
from dnd.paths import add_declared_option, declared
from dnd.reporting.format import ci, md_table, signed
from dnd.reporting.output import figure_link, write_report
from dnd.schedule import derive_seed
from dnd.stats import (
    EQUIVALENT,  # ±EQUIVALENT points: no difference (the paper states directions only)
    LEVEL,
    VERDICTS,
    boot_means,
    bootstrap_indices,
    hierarchical_boot_means,
    paired_boot_means,
    percentile_ci,
    pooled_ci,
    relation,
    seed_draws,
    seed_item_spread,
    verdict,
    verdict_word,
)

log = logging.getLogger(__name__)

FAMILIES = ("condition", "extractor", "pool", "pairing", "sources")
DEFAULT_SETTING = {"condition": "prompt", "extractor": "minilm", "pool": "all", "pairing": "random"}
FAMILY_TITLES = {"condition": "Condition form", "extractor": "Condition extractor", "pool": "Prompts per source",
                 "pairing": "Pairing of prompts and checkpoints", "sources": "Number of training datasets"}
# The paper's direction for each family, as a claim on DnD minus the training-LoRA average:
# (the setting it finds best, the settings it finds worse, in words)
PAPER = {
    "condition": ("prompt", "prompts beat prompt+answer and answers as conditions"),
    "extractor": ("minilm", "Sentence-BERT beats the other extractors"),
    "pool": ("all", "more prompts per source help"),
    "pairing": ("random", "drawing conditions at random from a pool beats fixed pairing"),
    "sources": (None, "more (and more diverse) training datasets help"),
}


_SOURCE_SETTING = re.compile(r"(\d+)(?:o([1-9]\d*))?")


def source_setting(count: int, order: int = 0) -> str:
    """The `sources` family's setting name for `count` datasets in source order `order`: "3" for
    order 0 (the names the curve always had), "3o1" for order 1."""
    return str(int(count)) if int(order) == 0 else f"{int(count)}o{int(order)}"


def parse_source_setting(setting: str | int) -> tuple[int, int]:
    """(count, order) of a `sources` setting name ("3" -> (3, 0), "3o1" -> (3, 1))."""
    m = _SOURCE_SETTING.fullmatch(str(setting))
    if not m:
        raise ValueError(f"sources setting {setting!r} is not a count (\"3\") or a count in an order (\"3o1\")")
    return int(m[1]), int(m[2] or 0)


def _other_orders(target: str, datasets: list[str], seed: int, order: int) -> list[list[str]]:
    """The target's other datasets in orders 0..order: order 0 the one seeded order the curve
    always took; order o >= 1 a shuffle seeded by (seed, target, o), drawn again (seeded) while it
    repeats an earlier order and unused orders remain."""
    others = [d for d in datasets if d != target]
    random.Random(derive_seed(seed, "ablation-sources", target)).shuffle(others)
    orders = [others]
    for o in range(1, order + 1):
        distinct = len(orders) < math.factorial(len(others))
        for attempt in range(1000):
            cand = sorted(others)
            random.Random(derive_seed(seed, "ablation-sources", target, "order", o, attempt)).shuffle(cand)
            if not distinct or cand not in orders:
                break
        orders.append(cand)
    return orders


def source_order(target: str, datasets: list[str], seed: int, extra: list[str] | tuple[str, ...] = (),
                 order: int = 0) -> list[str]:
    """The order the `sources` family takes a prefix of: the target's other datasets in a fixed,
    seeded order (`order` 0) or in another seeded order (`order` >= 1, distinct from the lower
    ones while the datasets allow), then the extra source tasks (`ablations.extra_sources`, never
    targets) in one seeded order shared by every target and every order. A prefix of at most
    len(datasets) - 1 never holds an extra task, so adding extras leaves the smaller settings as
    they were."""

    others = _other_orders(target, datasets, seed, int(order))[-1]
    clash = sorted(set(extra) & set(datasets))
    if clash:
        raise ValueError(f"extra source tasks {clash} are also in data.datasets")
    more = sorted(extra)
    random.Random(derive_seed(seed, "ablation-extra-sources")).shuffle(more)
    return others + more


def family_settings(family: str, settings: list, n_datasets: int, source_orders: int = 1) -> list[str]:
    """A family's settings as the workflow runs them (the one place that builds the list): the
    configured ones as strings; for `sources`, each count below n_datasets - 1 (where the order of
    the other datasets matters) also in orders 1..source_orders - 1, next to its order 0."""
    out = []
    for s in settings:
        if family != "sources":
            out.append(str(s))
            continue
        count, order = parse_source_setting(s)
        if order:
            raise ValueError(f"ablations.sources lists counts; {s!r} names an order (set ablations.source_orders)")
        orders = range(max(int(source_orders), 1)) if count < n_datasets - 1 else range(1)
        out += [source_setting(count, o) for o in orders]
    return list(dict.fromkeys(out))


def is_default(family: str, setting: str, n_datasets: int) -> bool:
    """Whether (family, setting) is the default run's configuration."""
    if family == "sources":
        return parse_source_setting(setting) == (n_datasets - 1, 0)
    return setting == DEFAULT_SETTING[family]


def setting_overrides(family: str, setting: str, target: str, datasets: list[str], seed: int,
                      base_model: str, extra: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """{"encoder": {...}, "generator": {...}, "sources": [...]} that (family, setting) changes
    (the sources are always given). `extra`: the extra source tasks the `sources` family adds
    after the target's other datasets (settings above len(datasets) - 1). A `sources` setting in
    order o >= 1 ("3o1") exists only below len(datasets) - 1 datasets."""
    sources = [d for d in datasets if d != target]
    out: dict[str, Any] = {"encoder": {}, "generator": {}, "sources": sources}
    if family == "condition":
        out["encoder"]["form"] = setting
    elif family == "extractor":
        out["encoder"]["kind"] = setting
        if setting == "llm":
            out["encoder"]["path"] = base_model
    elif family == "pool":
        out["generator"]["pool_size"] = None if setting == "all" else int(setting)
    elif family == "pairing":
        out["generator"]["pairing"] = setting
    elif family == "sources":
        n, o = parse_source_setting(setting)
        if o and n >= len(sources):
            raise ValueError(f"sources setting {setting}: order {o} at {n} datasets, but every other order is the "
                             f"same there ({len(sources)} other datasets)")
        order = source_order(target, datasets, seed, extra, o)
        if not 1 <= n <= len(order):
            raise ValueError(f"sources setting {n} is outside 1..{len(order)} for target {target} "
                             f"({len(sources)} other datasets, {len(extra)} extra source tasks)")
        out["sources"] = order[:n]
    else:
        raise ValueError(f"unknown ablation family {family!r} (one of {', '.join(FAMILIES)})")
    return out


def encoding_variant(family: str, setting: str) -> str | None:
    """The name of the encoded-prompt cache a setting needs (None: the default run's)."""
    if family in ("condition", "extractor") and setting != DEFAULT_SETTING[family]:
        return f"{family}-{setting}"
    return None


def reference_setting(family: str, settings: list[str]) -> str | None:
    """The setting the others are compared with: the paper's preferred one (sources: the most)."""
    if family == "sources":  # the most datasets, in order 0
        return max(settings, key=lambda x: (parse_source_setting(x)[0], -parse_source_setting(x)[1]),
                   default=None)
    best = PAPER[family][0]
    return best if best in settings else None


# ============================================================================ summary
def _vectors(rows: list[dict], sources: list[str], n_adapters: int) -> dict[str, dict[str, np.ndarray]]:
    """Per-item vectors (acc: 0/1, gold_logprob) of dnd (mean over its first n adapters),
    train_avg (mean over `sources`) and base."""
    out: dict[str, dict[str, np.ndarray]] = {}
    dnd = sorted((r for r in rows if r["method"] == "dnd"), key=lambda r: int(str(r["adapter"]).split("_")[-1]))
    dnd = dnd[:n_adapters]
    train = [r for r in rows if r["method"] == "source_lora" and r["adapter"] in sources]
    base = [r for r in rows if r["method"] == "base"]
    for name, group in (("dnd", dnd), ("train_avg", train), ("base", base)):
        if not group:
            continue
        ids = group[0]["ids"]
        if any(r["ids"] != ids for r in group):
            raise ValueError(f"{name} rows of {rows[0]['target']} are not scored on the same items")
        out[name] = {"acc": np.mean([r["correct"] for r in group], 0),
                     "gold_logprob": np.mean([r["gold_logprob"] for r in group], 0), "ids": ids}
    missing = {"dnd", "train_avg"} - set(out)
    if missing:
        raise ValueError(f"no {sorted(missing)} rows for {rows[0]['target'] if rows else '?'}")
    if len(train) != len(sources):
        raise ValueError(f"{rows[0]['target']}: {len(train)} of the {len(sources)} training LoRAs were scored")
    return out


def summarize(cells: dict[tuple[str, str], list[dict]], family: str, sources: dict[tuple[str, str], list[str]],
              n_adapters: int, resamples: int, seed: int,
              extra: list[str] | tuple[str, ...] = ()) -> tuple[list[dict], dict[str, Any]]:
    """cells: (setting, target) -> eval rows; `extra`: the extra source tasks (beyond the run's
    datasets). Returns the csv rows and the metrics."""

    rows, metrics = [], {"family": family}
    boots: dict[str, dict[str, list]] = {}
    dnd: dict[tuple[str, str], dict[str, Any]] = {}
    vecs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for (setting, target), erows in cells.items():
        v = _vectors(erows, sources[(setting, target)], n_adapters)
        dnd[(setting, target)] = v["dnd"]
        vecs[(setting, target)] = v
        if len(v["dnd"]["ids"]) != len(v["train_avg"]["ids"]) or v["dnd"]["ids"] != v["train_avg"]["ids"]:
            raise ValueError(f"{family}/{setting}/{target}: DnD and the training LoRAs were scored on other items")
        n = len(v["dnd"]["ids"])
        for method, vec in v.items():
            rows.append({"family": family, "setting": setting, "target": target, "method": method, "n": n,
                         "acc": float(vec["acc"].mean()), "gold_logprob": float(vec["gold_logprob"].mean())})
        for metric, factor in (("acc", 100.0), ("gold_logprob", 1.0)):
            diff = factor * (v["dnd"][metric] - v["train_avg"][metric])
            key = f"{setting}/{target}/dnd_minus_train_avg/{metric}"
            metrics[key] = float(diff.mean())
            b = paired_boot_means(diff, resamples, seed, target)
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = percentile_ci(b)
            boots.setdefault(f"{setting}/{metric}", []).append(b)
        metrics[f"{setting}/{target}/n_sources"] = len(sources[(setting, target)])
        metrics[f"{setting}/{target}/sources"] = list(sources[(setting, target)])
        metrics[f"{setting}/{target}/n_extra_sources"] = sum(d in extra for d in sources[(setting, target)])
        for method, vec in v.items():
            metrics[f"{setting}/{target}/{method}/acc"] = 100 * float(vec["acc"].mean())
    settings = list(dict.fromkeys(s for s, _ in cells))
    targets = list(dict.fromkeys(t for _, t in cells))
    metrics["settings"], metrics["targets"] = settings, targets
    # the extra source tasks in the order the settings add them
    metrics["extra_sources"] = list(dict.fromkeys(d for k in cells for d in sources[k] if d in extra))
    for setting in settings:  # accuracy of each method, pooled over targets (every target weighing the same)
        for method in ("dnd", "train_avg", "base"):
            vals = [metrics.get(f"{setting}/{t}/{method}/acc") for t in targets]
            if all(x is not None for x in vals):
                metrics[f"{setting}/mean/{method}/acc"] = float(np.mean(vals))
    # the paper's preferred setting (sources: the most) minus each other one, paired over items
    ref = reference_setting(family, settings)
    metrics["reference"] = ref
    for other in (s for s in settings if s != ref):
        for metric, factor in (("acc", 100.0), ("gold_logprob", 1.0)):
            bs, means = [], []
            for t in targets:
                a, b = dnd.get((ref, t)), dnd.get((other, t))
                if a is None or b is None:
                    break
                if a["ids"] != b["ids"]:
                    raise ValueError(f"{family}: {ref} and {other} were scored on other items of {t}")
                diff = factor * (a[metric] - b[metric])
                bs.append(paired_boot_means(diff, resamples, seed, t))
                means.append(float(diff.mean()))
            else:
                key = f"{ref}_minus_{other}/mean/dnd/{metric}"
                metrics[key] = float(np.mean(means))
                metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = pooled_ci(bs)
    for setting in settings:
        for metric in ("acc", "gold_logprob"):
            bs = boots.get(f"{setting}/{metric}", [])
            if len(bs) != len(targets):
                continue
            key = f"{setting}/mean/dnd_minus_train_avg/{metric}"
            metrics[key] = float(np.mean([metrics[f"{setting}/{t}/dnd_minus_train_avg/{metric}"] for t in targets]))
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = pooled_ci(bs)
    if family == "sources":
        _over_orders(metrics, vecs, settings, targets, ref, resamples, seed)
    return rows, metrics


def order_key(count: int | str, target: str, metric: str = "acc", ref: str | None = None) -> str:
    """The metrics key of a source count's figure over its orders (`target`: a target or "mean",
    over targets): DnD minus the training-LoRA average, or (ref given) DnD of `ref` minus DnD of
    the count."""
    if ref is None:
        return f"{count}/orders/{target}/dnd_minus_train_avg/{metric}"
    return f"{ref}_minus_{count}/orders/{target}/dnd/{metric}"


def _over_orders(m: dict[str, Any], vecs: dict, settings: list[str], targets: list[str], ref: str | None,
                 resamples: int, seed: int) -> None:
    """For each source count run in >= 2 orders ("3", "3o1", ...): DnD minus the training-LoRA
    average and `ref` (the most datasets) minus the count, as the mean over orders, with a 95% CI
    from a two-level bootstrap, orders then items (dnd.stats.seed_draws with order o as run (o, 0),
    one draw of orders shared by every target of a resample; hierarchical_boot_means), per target
    and pooled over targets; beside it the items-only CI of order 0, the SD over orders and the
    item SE (seed_item_spread). m["orders"]: count -> its settings, order 0 first."""
    by_count: dict[int, list[tuple[int, str]]] = {}
    for s in settings:
        n, o = parse_source_setting(s)
        by_count.setdefault(n, []).append((o, s))
    m["orders"] = {}
    for n, pairs in sorted(by_count.items()):
        if len(pairs) < 2 or any((s, t) not in vecs for _, s in pairs for t in targets):
            continue
        pairs = sorted(pairs)
        names = [s for _, s in pairs]
        m["orders"][str(n)] = names
        runs = [(o, 0) for o, _ in pairs]
        weights = seed_draws(runs, resamples, seed)
        comparisons: list[tuple[str | None, Any]] = [
            (None, lambda s, t, k: vecs[(s, t)]["dnd"][k] - vecs[(s, t)]["train_avg"][k])]
        if ref is not None and parse_source_setting(ref)[0] != n and all((ref, t) in vecs for t in targets):
            comparisons.append((ref, lambda s, t, k: vecs[(ref, t)]["dnd"][k] - vecs[(s, t)]["dnd"][k]))
        for metric, factor in (("acc", 100.0), ("gold_logprob", 1.0)):
            for r, fn in comparisons:
                hier, items, per_order, ses = [], [], [], []
                for t in targets:
                    ids = vecs[(names[0], t)]["dnd"]["ids"]
                    if any(vecs[(s, t)]["dnd"]["ids"] != ids for s in names) or (
                            r is not None and vecs[(r, t)]["dnd"]["ids"] != ids):
                        raise ValueError(f"sources: the orders of {n} datasets were scored on other items of {t}")
                    diff = factor * np.stack([fn(s, t, metric) for s in names])  # orders x items
                    idx = bootstrap_indices(diff.shape[1], resamples, seed, t)
                    h, i = hierarchical_boot_means(diff, weights, idx), boot_means(diff[0], idx)
                    hier.append(h)
                    items.append(i)
                    per_order.append(diff.mean(axis=1))
                    spread = seed_item_spread(diff, runs)
                    ses.append(spread["item_se"])
                    key = order_key(n, t, metric, r)
                    m[key] = float(diff.mean())
                    m[f"{key}_ci_low"], m[f"{key}_ci_high"] = percentile_ci(h)
                    m[f"{key}_item_ci_low"], m[f"{key}_item_ci_high"] = percentile_ci(i)
                    m[f"{key}_order_sd"], m[f"{key}_item_se"] = spread["seed_sd"], spread["item_se"]
                    m[f"{key}_by_order"] = [float(x) for x in diff.mean(axis=1)]
                pooled = np.mean(per_order, axis=0)  # per order, the mean over targets
                ok = all(h is not None for h in hier)
                key = order_key(n, "mean", metric, r)
                m[key] = float(pooled.mean())
                m[f"{key}_ci_low"], m[f"{key}_ci_high"] = (percentile_ci(np.mean(hier, axis=0)) if ok
                                                           else (math.nan, math.nan))
                m[f"{key}_item_ci_low"], m[f"{key}_item_ci_high"] = (percentile_ci(np.mean(items, axis=0)) if ok
                                                                     else (math.nan, math.nan))
                m[f"{key}_order_sd"] = float(np.std(pooled, ddof=1))
                m[f"{key}_item_se"] = float(math.sqrt(sum(x * x for x in ses)) / len(targets))
                m[f"{key}_by_order"] = [float(x) for x in pooled]


# ============================================================================ report
def _sources(setting: str) -> str:
    n, o = parse_source_setting(setting)
    return f"{n} source" + ("" if n == 1 else "s") + (f", order {o}" if o else "")


def _comparisons(m: dict[str, Any]) -> list[tuple[str, str]]:
    """(metrics key of DnD of the reference minus DnD of the other, the other's label) for each
    setting the family's verdict tests: for `sources`, a count run in several orders once, as the
    mean over its orders (CI over orders and items), else each setting (CI over items)."""
    family, ref = m["family"], m.get("reference")
    out, done = [], set()
    for s in m["settings"]:
        if s == ref:
            continue
        if family == "sources":
            n, _ = parse_source_setting(s)
            key = order_key(n, "mean", ref=ref)
            if key in m:
                if n not in done:
                    done.add(n)
                    out.append((key, f"{_sources(str(n))}, mean over {len(m['orders'][str(n)])} orders"))
                continue
        if f"{ref}_minus_{s}/mean/dnd/acc" in m:
            out.append((f"{ref}_minus_{s}/mean/dnd/acc", _sources(s) if family == "sources" else s))
    return out


def family_verdict(m: dict[str, Any]) -> str:
    """The paper's direction for the family and ours, in words. The claim is tested against each
    other setting: DnD of the paper's preferred setting (sources: the most datasets) minus DnD of
    that setting, paired over items and pooled over targets; its 95% CI gives the relation
    (dnd.stats.relation: ahead, behind, level or not told apart) and the verdict on the claim
    (dnd.stats.verdict, the README's words: reproduced, not reproduced, level, not told apart).
    The family's verdict: the one word when every setting earns the same; otherwise each word that
    occurs with its count, in the order of dnd.stats.VERDICTS ("**reproduced** against 2 of 3
    settings, **not told apart** against 1"): no word stands for a family whose settings disagree."""
    family = m["family"]
    _, claim = PAPER[family]
    ref = m.get("reference")
    others = _comparisons(m) if ref is not None else []
    if ref is None or not others:
        return f"The paper: {claim}. Its preferred setting and another were not both run, so no verdict."
    label = _sources(ref) if family == "sources" else ref

    words, counts = [], dict.fromkeys(VERDICTS, 0)
    for key, other in others:
        d, lo, hi = m[key], m[f"{key}_ci_low"], m[f"{key}_ci_high"]
        counts[verdict_word(verdict(lo, hi))] += 1
        words.append(f"{relation(lo, hi, f'DnD ({label})', f'DnD ({other})')} "
                     f"({signed(d)} points [{signed(lo)}, {signed(hi)}])")
    found = [(w, n) for w, n in counts.items() if n]
    if len(found) == 1:
        stated = f"**{found[0][0]}**"
    else:
        stated = ", ".join(f"**{w}** against {n}" + (f" of {len(others)} settings" if i == 0 else "")
                           for i, (w, n) in enumerate(found))
    tail = (f" Every CI lies inside ±{EQUIVALENT:g} point: the settings make no difference of that size."
            if counts[LEVEL] == len(others) else "")
    how = ("paired 95% CIs over items, pooled over targets" if not any("/orders/" in k for k, _ in others) else
           "paired 95% CIs pooled over targets: over source orders and items where a count ran in several orders, "
           "else over items")
    return (f"The paper: {claim}. Here ({how}): " + "; ".join(words)
            + ". Verdict: " + stated + "." + tail)


def family_table(m: dict[str, Any]):
    import pandas as pd

    from dnd.benchmarks.datasets import title

    recs = []
    for s in m["settings"]:
        rec = {"Setting": s + (" (default)" if s in m.get("defaults", []) else "")}
        for t in m["targets"]:
            k = f"{s}/{t}/dnd_minus_train_avg/acc"
            rec[title(t)] = _ci(m, k)
        k = f"{s}/mean/dnd_minus_train_avg/acc"
        rec["Mean over targets"] = _ci(m, k)
        k = f"{s}/mean/dnd_minus_train_avg/gold_logprob"
        rec["Gold log-prob (nats)"] = _ci(m, k, 3)
        recs.append(rec)
    return pd.DataFrame(recs)


def _ci(m: dict[str, Any], key: str, digits: int = 1) -> str:
    """`key` with its 95% CI in the reports' one format (dnd.reporting.format.ci); "n/a" when absent."""
    if key not in m:
        return "n/a"
    return ci(m[key], m.get(key + "_ci_low"), m.get(key + "_ci_high"), digits)


def _counts(m: dict[str, Any]) -> dict[int, list[str]]:
    """count -> its settings (order 0 first), every count of the `sources` family."""
    out: dict[int, list[tuple[int, str]]] = {}
    for s in m["settings"]:
        n, o = parse_source_setting(s)
        out.setdefault(n, []).append((o, s))
    return {n: [s for _, s in sorted(v)] for n, v in sorted(out.items())}


def curve_table(m: dict[str, Any]):
    """The source-count curve: per count, DnD minus the training-LoRA average in accuracy points
    (per target and over targets) and the reference (most datasets) minus the count; a count run
    in several orders as the mean over orders with its 95% CI over orders and items (beside it
    order 0's CI over items only, the SD over orders and the item SE), else its one setting's CI
    over items."""
    import pandas as pd

    from dnd.benchmarks.datasets import title

    ref, recs = m.get("reference"), []
    for n, names in _counts(m).items():
        pooled = order_key(n, "mean") in m
        rec = {"Datasets": str(n), "Orders": str(len(names)) if pooled else "1"}
        for t in m["targets"]:
            rec[title(t)] = _ci(m, order_key(n, t) if pooled else f"{names[0]}/{t}/dnd_minus_train_avg/acc")
        key = order_key(n, "mean") if pooled else f"{names[0]}/mean/dnd_minus_train_avg/acc"
        rec["Mean over targets"] = _ci(m, key)
        rec["Order 0, CI over items"] = (ci(m[key + "_by_order"][0], m[key + "_item_ci_low"], m[key + "_item_ci_high"])
                                         if pooled else "-")
        rec["SD over orders / item SE"] = (f"{m[key + '_order_sd']:.1f} / {m[key + '_item_se']:.1f}"
                                           if pooled else "-")
        other = order_key(n, "mean", ref=ref) if pooled else f"{ref}_minus_{names[0]}/mean/dnd/acc"
        rec[f"DnD ({_sources(ref) if ref else 'most'}) minus DnD (this count)"] = (
            _ci(m, other) if names[0] != ref else "(reference)")
        recs.append(rec)
    return pd.DataFrame(recs)


def added_datasets(m: dict[str, Any], target: str) -> list[str]:
    """Per count, the datasets each order adds to the target's sources since the count before it
    in the same order ("4 sources: order 0: +arc_easy; order 1: +piqa"); the first count, and a
    count whose order the count before did not run, lists all its sources."""
    lines, prev = [], {}
    for n, names in _counts(m).items():
        parts = []
        for s in names:
            o = parse_source_setting(s)[1]
            srcs = m.get(f"{s}/{target}/sources")
            if srcs is None:
                continue
            before = prev.get(o)
            new = [d for d in srcs if d not in before] if before is not None else list(srcs)
            parts.append(f"order {o}: " + ", ".join(f"+{d}" for d in new) if new else f"order {o}: (none)")
            prev[o] = srcs
        if parts:
            lines.append(f"{_sources(str(n))}: " + "; ".join(parts))
    return lines


def _n_without_extra(m: dict[str, Any]) -> int:
    """The largest setting of the sources family that trains on none of the extra tasks."""
    return max((parse_source_setting(s)[0] for s in m["settings"]
                if not any(m.get(f"{s}/{t}/n_extra_sources", 0) for t in m["targets"])), default=0)


def accuracy_table(m: dict[str, Any]):
    """Accuracy (%) of DnD, the training-LoRA average and the base model per setting, pooled over
    targets."""
    import pandas as pd

    recs = []
    for s in m["settings"]:
        recs.append({"Setting": s, **{label: (f"{m[f'{s}/mean/{k}/acc']:.1f}" if f"{s}/mean/{k}/acc" in m else "n/a")
                                      for k, label in (("dnd", "DnD"), ("train_avg", "Training LoRAs (avg)"),
                                                       ("base", "Base"))}})
    return pd.DataFrame(recs)


def ablations_markdown(families: list[dict[str, Any]], figure_rel: str, timing: dict[str, tuple[float, float, int]],
                       n_adapters: int, design: str | None = None) -> str:
    md_lines = ["## Ablations", "",
                "Each family changes one setting of the default pipeline (everything else as in the default run, "
                f"design `{design or 'n/a'}`), on the same fixed held-out targets, test items and scorer as the main "
                "table. Cells: "
                "DnD minus the training-LoRA average in accuracy points with its paired 95% CI over items (DnD: the "
                f"mean of {n_adapters} adapter{'s' if n_adapters != 1 else ''} per item). Settings marked (default) "
                "are the default run's own generator and adapters. Condition forms other than `prompt` read labels, "
                "also the target's. Verdicts compare DnD between settings directly (paired over the same items).", ""]
    for m in families:
        fam = m["family"]
        md_lines += [f"### {FAMILY_TITLES.get(fam, fam)}", "",
                     md_table(family_table(m)), "", family_verdict(m), ""]
        if fam == "sources" and m.get("orders"):
            n_orders = max(len(v) for v in m["orders"].values())
            md_lines += [f"The curve over {n_orders} seeded orders of each target's other datasets (setting n: order "
                         "0, the one order above; n + \"o\" + k: order k, at counts below all the other datasets, "
                         "where the order matters). DnD minus the training-LoRA average (accuracy points) by number "
                         "of datasets: for a count run in several orders, the mean over orders with its 95% CI over "
                         "orders, then items (a two-level bootstrap, one draw of orders for every target; "
                         "dnd.stats.seed_draws), beside order 0's CI over items alone and the SD over orders against "
                         "the item SE (an SD over orders well above the item SE: which datasets enter moves the "
                         "figure, not only how many).", "",
                         md_table(curve_table(m)), "",
                         "The datasets each order adds at each count, per target:", ""]
            from dnd.benchmarks.datasets import title

            for t in m["targets"]:
                md_lines += [f"- {title(t)}:"] + [f"  - {line}" for line in added_datasets(m, t)]
            md_lines += [""]
        if m.get("extra_sources"):
            md_lines += [f"Beyond the paper's range, settings above {_n_without_extra(m)} add extra source tasks that "
                         "only train (ablations.extra_sources; never targets), after each target's other datasets, in "
                         f"this order: {', '.join(m['extra_sources'])}. The training-LoRA average of a setting is over "
                         "its own sources. Accuracy (%) by setting, mean over targets:", "",
                         md_table(accuracy_table(m)), ""]
        if fam in timing:
            w, c, j = timing[fam]
            md_lines += [f"Budget: {j} jobs, {w:.1f} min of wall time in total, {c:.1f} min of CPU time (Snakemake "
                         "benchmarks)" + (", of which the extra tasks' data, LoRAs, tokens and encodings {:.1f} min "
                                          "({} jobs)".format(timing[f"{fam}/extra"][0], timing[f"{fam}/extra"][2])
                                          if f"{fam}/extra" in timing else "") + ".", ""]
    md_lines += [f"![Ablations]({figure_rel})", ""]
    return "\n".join(md_lines)


def ablations_figure(families: list[dict[str, Any]], out: Path) -> None:
    """One panel per family: the comparisons its verdict reads (`_comparisons`): DnD of the
    paper's preferred setting (sources: the most datasets) minus DnD of each other setting, paired
    95% CIs pooled over targets (over source orders and items where a count ran in several
    orders), with the ±EQUIVALENT level band. With extra source tasks, a last panel: accuracy of
    DnD and of the training-LoRA average by number of training datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnd.reporting.figures import (
        DARK_GREY,
        apply_style,
        forest,
        forest_legend,
        method_color,
        save_png,
    )

    apply_style()
    curve = next((m for m in families if m["family"] == "sources" and m.get("extra_sources")), None)
    n_panels = max(len(families), 1) + (curve is not None)
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[n_panels:]:
        ax.axis("off")
    for ax, m in zip(axes, families):
        ref = m.get("reference")
        pairs = _comparisons(m) if ref is not None else []
        label = _sources(ref) if m["family"] == "sources" and ref is not None else ref
        if not pairs:
            ax.text(0.5, 0.5, "the preferred setting and another\nwere not both run", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            ax.set_axis_off()
        else:
            forest(ax, [{"label": f"− {other}", "est": m[key], "lo": m.get(f"{key}_ci_low"),
                         "hi": m.get(f"{key}_ci_high"), "color": method_color("dnd")} for key, other in pairs],
                   EQUIVALENT, "DnD difference (points), paired 95% CI")
            ax.tick_params(axis="y", labelsize=8)
        ax.set_title(f"{FAMILY_TITLES.get(m['family'], m['family'])}:\nDnD ({label}) minus DnD (setting)", fontsize=9)
    if curve is not None:  # the source-count curve in accuracy: DnD and the average of its sources' LoRAs
        ax = axes[n_panels - 1]
        counts = {n: [x for x in names if f"{x}/mean/dnd/acc" in curve] for n, names in _counts(curve).items()}
        xs = [n for n, names in counts.items() if names]
        for k, label in (("dnd", "DnD"), ("train_avg", "training LoRAs (avg)")):  # the mean over orders
            ax.plot(xs, [np.mean([curve[f"{x}/mean/{k}/acc"] for x in counts[n]]) for n in xs], marker="o",
                    color=method_color(k), label=label)
        ax.axvline(_n_without_extra(curve) + 0.5, color=DARK_GREY, ls="--", lw=0.8)
        ax.text(_n_without_extra(curve) + 0.6, 0.02, "+ extra tasks", transform=ax.get_xaxis_transform(),
                fontsize=7, color=DARK_GREY)
        ax.set_xlabel("training datasets")
        ax.set_ylabel("accuracy (%), mean over targets")
        ax.set_title("Number of training datasets: accuracy", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    forest_legend(fig, EQUIVALENT, False)
    save_png(fig, out)


# ============================================================================ CLI
def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help="JSON: {family, cells: [[setting, target, eval file or null = the default run's, "
                        "[sources]]], n_adapters, bootstrap, seed, extra_sources: [names]}")
    p.add_argument("--out", required=True, type=Path, help="results/ablations/{family}.csv")
    p.add_argument("--metrics", required=True, type=Path, help="results/ablations/{family}.json")
    add_declared_option(p, "--default-eval",
                        "the default run's per-target eval files (results/eval/{target}.jsonl: the default setting)",
                        required=False)


def _run_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from dnd.config import parse_params
    from dnd.summary import require_complete

    params = parse_params(args.params)
    family = params["family"]
    cells, sources = {}, {}
    for setting, target, path, srcs in params["cells"]:
        file = Path(path) if path else declared(args.default_eval, f"{target}.jsonl",
                                                 f"{family}/{setting}/{target}: the default run's rows",
                                                 "--default-eval")
        if not file.is_file():
            raise FileNotFoundError(f"{family}/{setting}/{target}: {file} not found")
        cells[(str(setting), target)] = [r for r in read_jsonl(file) if r.get("target") == target]
        sources[(str(setting), target)] = list(srcs)
        # the rows the cell's figures use: base, its training LoRAs, n_adapters DnD adapters, same items
        require_complete(cells[(str(setting), target)], [target], required=("base", "source_lora", "dnd"),
                         sources={target: list(srcs)}, adapters={"dnd": int(params["n_adapters"])},
                         where=f"{family}/{setting}/{target} ({file})")
    rows, metrics = summarize(cells, family, sources, int(params["n_adapters"]), int(params.get("bootstrap", 2000)),
                              int(params.get("seed", 0)), list(params.get("extra_sources") or []))
    metrics["defaults"] = sorted({str(s) for s, _, path, _ in params["cells"] if not path})
    with atomic_path(args.out) as tmp:
        pd.DataFrame(rows, columns=["family", "setting", "target", "method", "n", "acc", "gold_logprob"]).to_csv(
            tmp, index=False)
    write_json(args.metrics, metrics)
    log.info("wrote %s (%d rows) and %s", args.out, len(rows), args.metrics)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {n_adapters}")
    p.add_argument("--metrics", required=True, nargs="+", type=Path, help="results/ablations/{family}.json")
    add_declared_option(p, "--benchmarks", "the ablations' jobs' benchmark files (benchmarks/ablations/...: job "
                        "times per family)", required=False)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def family_jobs(m: dict[str, Any], extra_only: bool = False):
    """Picks the benchmark files (benchmarks/ablations/..., matched on their last components) of
    the jobs the family's target runs with its settings now: its cells' generator, adapters and
    scoring ({family}/), its summary, its own encodings (encode/) and, for the sources curve, the
    extra tasks it trains on ({family}/extra/). Files of settings no longer configured are left out."""
    fam = m["family"]
    alt = "|".join(map(re.escape, sorted(m["settings"], key=len, reverse=True)))
    targets = "|".join(map(re.escape, m["targets"]))
    cell = re.compile(rf"^(train_generator|generate|evaluate)_({alt})_({targets})(_\d+)?$")
    extra = re.compile(rf"^\w+?_({'|'.join(map(re.escape, m.get('extra_sources') or [])) or '(?!)'})(_train)?$")
    encode = re.compile(rf"^{re.escape(fam)}-({alt})_")

    def keep(path: Path) -> bool:
        folders, stem = path.parts[:-1], path.stem
        if folders[-2:] == (fam, "extra"):
            return bool(extra.match(stem))
        if extra_only:
            return False
        if folders[-1:] == (fam,):
            return stem == "summary" or bool(cell.match(stem))
        return folders[-1:] == ("encode",) and bool(encode.match(stem))

    return keep


def _run_report(args: argparse.Namespace) -> None:
    from dnd.config import parse_params
    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    families = [json.loads(p.read_text()) for p in args.metrics]
    timing = {}
    for m in families if args.benchmarks else []:
        for name, keep in ((m["family"], family_jobs(m)), (f"{m['family']}/extra", family_jobs(m, extra_only=True))):
            if t := benchmark_minutes(args.benchmarks, keep):
                timing[name] = t
    ablations_figure(families, args.figure)
    write_report(args.out, ablations_markdown(families, figure_link(args.figure, args.out), timing,
                                              int(params.get("n_adapters", 0)), params.get("design")),
                 args.figure)


COMMANDS = {"ablation-summary": (_add_summary, _run_summary), "ablation-report": (_add_report, _run_report)}
