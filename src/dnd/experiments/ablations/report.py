"""The paper's ablations (target `ablations`, outside `all`): each family changes one setting of
the default pipeline, on a few fixed held-out targets, and compares DnD with the training-LoRA
average on the default run's test items and scorer.

  dnd ablation-summary --params JSON --family F --eval results/ablations/F/*/{target}/eval.jsonl
      [--default-eval results/eval/{target}.jsonl ...] --out results/ablations/F.csv
      --metrics results/ablations/F.json
  dnd ablation-report --params JSON --metrics results/ablations/*.json --benchmarks-dir
      benchmarks/ablations --out results/ablations/report.md --figure results/ablations/figures/ablations.png

`setting_overrides` turns (family, setting) into the settings and sources that change. The
families (condition, extractor, pool, pairing, sources), how the workflow runs them and what
{family}.csv and {family}.json hold: docs/modules.md, section
`src/dnd/experiments/ablations/report.py`; the results: README.md, "Ablations".
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
from dnd.reporting.format import signed
from dnd.reporting.output import figure_link, write_report
from dnd.schedule import derive_seed
from dnd.stats import (
    EQUIVALENT,  # ±EQUIVALENT points: no difference (the paper states directions only)
    LEVEL,
    VERDICTS,
    paired_boot_means,
    percentile_ci,
    pooled_ci,
    relation,
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
    for (setting, target), erows in cells.items():
        v = _vectors(erows, sources[(setting, target)], n_adapters)
        dnd[(setting, target)] = v["dnd"]
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
    return rows, metrics


# ============================================================================ report
def _sources(n: str) -> str:
    return f"{n} source" + ("" if str(n) == "1" else "s")


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
    others = [s for s in m["settings"] if s != ref and f"{ref}_minus_{s}/mean/dnd/acc" in m]
    if ref is None or not others:
        return f"The paper: {claim}. Its preferred setting and another were not both run, so no verdict."

    def dnd(s: str) -> str:
        return f"DnD ({_sources(s) if family == 'sources' else s})"

    words, counts = [], dict.fromkeys(VERDICTS, 0)
    for s in others:
        key = f"{ref}_minus_{s}/mean/dnd/acc"
        d, lo, hi = m[key], m[f"{key}_ci_low"], m[f"{key}_ci_high"]
        counts[verdict_word(verdict(lo, hi))] += 1
        words.append(f"{relation(lo, hi, dnd(ref), dnd(s))} ({signed(d)} points [{signed(lo)}, {signed(hi)}])")
    found = [(w, n) for w, n in counts.items() if n]
    if len(found) == 1:
        stated = f"**{found[0][0]}**"
    else:
        stated = ", ".join(f"**{w}** against {n}" + (f" of {len(others)} settings" if i == 0 else "")
                           for i, (w, n) in enumerate(found))
    tail = (f" Every CI lies inside ±{EQUIVALENT:g} point: the settings make no difference of that size."
            if counts[LEVEL] == len(others) else "")
    return (f"The paper: {claim}. Here (paired 95% CIs over items, pooled over targets): " + "; ".join(words)
            + ". Verdict: " + stated + "." + tail)


def family_table(m: dict[str, Any]):
    import pandas as pd

    from dnd.benchmarks.datasets import title

    recs = []
    for s in m["settings"]:
        rec = {"Setting": s + (" (default)" if s in m.get("defaults", []) else "")}
        for t in m["targets"]:
            k = f"{s}/{t}/dnd_minus_train_avg/acc"
            rec[title(t)] = (f"{signed(m.get(k))} [{signed(m.get(k + '_ci_low'))}, {signed(m.get(k + '_ci_high'))}]"
                             if k in m else "n/a")
        k = f"{s}/mean/dnd_minus_train_avg/acc"
        rec["Mean over targets"] = (f"{signed(m.get(k))} [{signed(m.get(k + '_ci_low'))}, "
                                    f"{signed(m.get(k + '_ci_high'))}]"
                                    if k in m else "n/a")
        k = f"{s}/mean/dnd_minus_train_avg/gold_logprob"
        rec["Gold log-prob (nats)"] = (f"{signed(m.get(k), 3)} [{signed(m.get(k + '_ci_low'), 3)}, "
                                       f"{signed(m.get(k + '_ci_high'), 3)}]" if k in m else "n/a")
        recs.append(rec)
    return pd.DataFrame(recs)


def _n_without_extra(m: dict[str, Any]) -> int:
    """The largest setting of the sources family that trains on none of the extra tasks."""
    return max((int(s) for s in m["settings"]
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
                       n_adapters: int) -> str:
    md_lines = ["## Ablations", "",
                "Each family changes one setting of the default pipeline (everything else as in the default run, "
                "design `basis`), on the same fixed held-out targets, test items and scorer as the main table. Cells: "
                "DnD minus the training-LoRA average in accuracy points with its paired 95% CI over items (DnD: the "
                f"mean of {n_adapters} adapter{'s' if n_adapters != 1 else ''} per item). Settings marked (default) "
                "are the default run's own generator and adapters. Condition forms other than `prompt` read labels, "
                "also the target's. Verdicts compare DnD between settings directly (paired over the same items).", ""]
    for m in families:
        fam = m["family"]
        md_lines += [f"### {FAMILY_TITLES.get(fam, fam)}", "",
                     family_table(m).to_markdown(index=False, disable_numparse=True), "", family_verdict(m), ""]
        if m.get("extra_sources"):
            md_lines += [f"Beyond the paper's range, settings above {_n_without_extra(m)} add extra source tasks that "
                         "only train (ablations.extra_sources; never targets), after each target's other datasets, in "
                         f"this order: {', '.join(m['extra_sources'])}. The training-LoRA average of a setting is over "
                         "its own sources. Accuracy (%) by setting, mean over targets:", "",
                         accuracy_table(m).to_markdown(index=False, disable_numparse=True), ""]
        if fam in timing:
            w, c, j = timing[fam]
            md_lines += [f"Budget: {j} jobs, {w:.1f} min of wall time in total, {c:.1f} min of CPU time (Snakemake "
                         "benchmarks)" + (", of which the extra tasks' data, LoRAs, tokens and encodings {:.1f} min "
                                          "({} jobs)".format(timing[f"{fam}/extra"][0], timing[f"{fam}/extra"][2])
                                          if f"{fam}/extra" in timing else "") + ".", ""]
    md_lines += [f"![Ablations]({figure_rel})", ""]
    return "\n".join(md_lines)


def ablations_figure(families: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnd.reporting.figures import save_png

    curve = next((m for m in families if m["family"] == "sources" and m.get("extra_sources")), None)
    n_panels = max(len(families), 1) + (curve is not None)
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    axes = [list(grid.flat)]
    for ax in axes[0][n_panels:]:
        ax.axis("off")
    if curve is not None:  # the source-count curve in accuracy: DnD and the average of its sources' LoRAs
        ax = axes[0][n_panels - 1]
        xs = [int(s) for s in curve["settings"] if f"{s}/mean/dnd/acc" in curve]
        for k, label in (("dnd", "DnD"), ("train_avg", "training LoRAs (avg)")):
            ax.plot(xs, [curve[f"{x}/mean/{k}/acc"] for x in xs], marker="o", label=label)
        ax.axvline(_n_without_extra(curve) + 0.5, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("training datasets")
        ax.set_title("Number of training datasets: accuracy", fontsize=10)
        ax.legend(fontsize=8)
    for ax, m in zip(axes[0], families):
        key = "mean/dnd_minus_train_avg/acc"
        settings = [s for s in m["settings"] if f"{s}/{key}" in m]
        y = [m[f"{s}/{key}"] for s in settings]
        err = [[m[f"{s}/{key}"] - m[f"{s}/{key}_ci_low"] for s in settings],
               [m[f"{s}/{key}_ci_high"] - m[f"{s}/{key}"] for s in settings]]
        if m["family"] == "sources":
            xs = [int(s) for s in settings]
            ax.errorbar(xs, y, yerr=err, marker="o", capsize=3)
            ax.set_xlabel("training datasets")
            if m.get("extra_sources"):
                ax.axvline(_n_without_extra(m) + 0.5, color="grey", ls="--", lw=0.8)
                ax.text(_n_without_extra(m) + 0.7, ax.get_ylim()[1], "+ extra tasks", va="top", fontsize=8)
        else:
            ax.errorbar(range(len(settings)), y, yerr=err, fmt="o", capsize=3)
            ax.set_xticks(range(len(settings)), settings, rotation=20)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(FAMILY_TITLES.get(m["family"], m["family"]), fontsize=10)
    for row in range(nrows):
        axes[0][row * ncols].set_ylabel("DnD − training LoRAs (points, 95% CI)")
    if curve is not None:
        axes[0][n_panels - 1].set_ylabel("accuracy (%), mean over targets")
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
    p.add_argument("--benchmarks-dir", type=Path, default=None, help="benchmarks/ablations (job times per family)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)


def family_jobs(m: dict[str, Any], extra_only: bool = False):
    """The benchmark files (relative to benchmarks/ablations) of the jobs the family's target runs
    with its settings now: its cells' generator, adapters and scoring, its summary, its own
    encodings and, for the sources curve, the extra tasks it trains on. Files of settings no longer
    configured are left out."""
    fam = m["family"]
    alt = "|".join(map(re.escape, sorted(m["settings"], key=len, reverse=True)))
    targets = "|".join(map(re.escape, m["targets"]))
    cell = re.compile(rf"^(train_generator|generate|evaluate)_({alt})_({targets})(_\d+)?$")
    extra = re.compile(rf"^\w+?_({'|'.join(map(re.escape, m.get('extra_sources') or [])) or '(?!)'})(_train)?$")
    encode = re.compile(rf"^{re.escape(fam)}-({alt})_")

    def keep(rel: Path) -> bool:
        parts, stem = rel.parts, rel.stem
        if len(parts) == 3 and parts[:2] == (fam, "extra"):
            return bool(extra.match(stem))
        if extra_only:
            return False
        if len(parts) == 2 and parts[0] == fam:
            return stem == "summary" or bool(cell.match(stem))
        return len(parts) == 2 and parts[0] == "encode" and bool(encode.match(stem))

    return keep


def _run_report(args: argparse.Namespace) -> None:
    from dnd.config import parse_params
    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    families = [json.loads(p.read_text()) for p in args.metrics]
    timing = {}
    for m in families if args.benchmarks_dir else []:
        for name, keep in ((m["family"], family_jobs(m)), (f"{m['family']}/extra", family_jobs(m, extra_only=True))):
            if t := benchmark_minutes(args.benchmarks_dir, keep):
                timing[name] = t
    ablations_figure(families, args.figure)
    write_report(args.out, ablations_markdown(families, figure_link(args.figure, args.out), timing,
                                              int(params.get("n_adapters", 0))),
                 args.figure)


COMMANDS = {"ablation-summary": (_add_summary, _run_summary), "ablation-report": (_add_report, _run_report)}
