"""The function_space experiment's report (issue 30 item 6): does a generator trained through the model
(objective sft), or of another family (t2l), or on a zoo without initialization noise (shared A), beat
the nearest source LoRA and the multi-task LoRA (and the paper's baseline, the training-LoRA average)?

  fs-report  dnd fs-report --params JSON --default-eval FILE... --labeled-eval FILE...
                 --generators-eval FILE... --checks CSV... --diagnostics CSV... --benchmarks TSV...
                 --scores CSV --metrics JSON --out MD --figure PNG

Inputs per target: the default run's rows (results/eval/{T}.jsonl: base, source LoRAs, soup, nearest,
dnd and its controls; results/eval_multitask/{T}.jsonl: multitask_lora), the labeled baseline's
(fs-evaluate: val_picked), the generators'
side (fs-score: each new generator <g>, its controls <g>_<control kind>, every generator's noise baseline
<g>_noise, shared_a_nearest), the memorization checks (fs-checks) and the zoo diagnostics (diagnose-fold).

scores.csv has the main table's schema (dnd.summary.SCORE_COLUMNS): one row per (target, method,
adapter) and an adapter "mean" row per multi-adapter method, 95% bootstrap CIs over items with the
default run's resample indices (dnd.stats.bootstrap_indices: seeded by seed and target, so every CI of
a target is paired with the default run's).

metrics.json: `{T}/{subject}_minus_{baseline}/{m}` for m in acc (fraction) and gold_logprob (nats), with
`_ci_low`/`_ci_high` (paired 95% bootstrap CI over items), and `mean/...` pooled over targets (every
target weighs the same; dnd.stats.pooled_ci). Subjects: dnd (the default run's) and each new generator,
each against nearest, multitask_lora, train_avg, soup, its own controls and its noise baseline (a
shared-A generator also against shared_a_nearest); multitask_lora and val_picked against nearest and
train_avg. Also `{T}/{g}/dist_ratio` (the mean over its adapters of the ΔW distance to the nearest
training LoRA over the smallest distance between two training LoRAs), `{T}/{zoo}/reachability`,
`mean/{subject}_minus_{baseline}/verdict` (dnd.stats.verdict on the claim "subject beats baseline",
in points), `mean/headroom` (the oracle's lead over the training-LoRA average), `mean/room/{baseline}`
(room_reason: "testable" or why not), `targets` and `generators` (each one's design, objective and zoo).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from dnd.config import parse_params
from dnd.io import write_json, write_text
from dnd.paths import add_declared_option
from dnd.stats import (
    EQUIVALENT,
    NOT_TESTABLE,
    boot_means,
    bootstrap_indices,
    ci_class,
    percentile_ci,
    pooled_ci,
    relation,
    untestable_reason,
    verdict,
)
from dnd.summary import (
    CONTROL_KINDS,
    MEAN_ADAPTER,
    MEAN_TARGET,
    MULTITASK,
    SCORE_COLUMNS,
    VAL_PICKED,
    check_eval_rows,
    eval_cell,
    item_vectors,
    load_eval_rows,
    read_eval_files,
    require_complete,
    scores_frame,
    training_loras,
)

log = logging.getLogger(__name__)

NOISE = "noise"
SHARED_A_NEAREST = "shared_a_nearest"
ZERO_SHOT = ("nearest", "train_avg", "soup")
# adapters trained on the target's own labels: where none of them beats a claim's baseline, the claim
# "a generator beats it" is not testable on these targets (room_reason)
LABELED_REFERENCES = {"oracle": "the target's own LoRA", MULTITASK: "the multi-task LoRA"}
BASELINE_NAMES = {"nearest": "the nearest source", MULTITASK: "the multi-task LoRA",
                  "train_avg": "the training-LoRA average"}
METRICS = ("acc", "gold_logprob")


# ============================================================================ rows and vectors
def generator_methods(generators: Sequence[str]) -> dict[str, list[str]]:
    """generator -> its methods in the fs-score rows: itself, its controls, its noise baseline; dnd
    (the default run's, whose own rows and controls are the default run's) -> its noise baseline."""
    out = {"dnd": [f"dnd_{NOISE}"]}
    for g in generators:
        out[g] = [g, *(f"{g}_{k}" for k in CONTROL_KINDS), f"{g}_{NOISE}"]
    return out


def check_generator_rows(rows: list[dict[str, Any]], generators: Sequence[str]) -> None:
    """The fs-score rows must hold known methods, once per (target, method, adapter), with per-item
    gold log-probabilities."""
    known = {m for ms in generator_methods(generators).values() for m in ms} | {SHARED_A_NEAREST}
    check_eval_rows(rows, known, "the generators' evaluation rows")


def extra_vectors(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Per-item vectors of the generators' rows of one target: each method's mean over its adapters."""
    import numpy as np

    key = {"acc": "correct", "gold_logprob": "gold_logprob"}[metric]
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(np.asarray(r[key], dtype=np.float64))
    return {m: np.mean(v, axis=0) for m, v in by.items()}


def comparison_pairs(generators: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(subject, baseline) pairs of metrics.json (module doc)."""
    pairs = []
    for g in ["dnd", *generators]:
        pairs += [(g, b) for b in (*ZERO_SHOT, MULTITASK)]
        pairs += [(g, f"{g}_{k}" if g != "dnd" else k) for k in CONTROL_KINDS]
        pairs.append((g, f"{g}_{NOISE}"))
        if g != "dnd" and generators[g].get("zoo") == "shared_a":
            pairs.append((g, SHARED_A_NEAREST))
    pairs += [(m, b) for m in (MULTITASK, VAL_PICKED) for b in ("nearest", "train_avg")]
    return pairs + [("oracle", "train_avg")]


def gated_baselines(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The baselines of the generators' claims (every pair whose subject is not itself trained on
    labels): each one's verdicts need room above it (room_reason)."""
    return list(dict.fromkeys(b for s, b in pairs if s not in (*LABELED_REFERENCES, VAL_PICKED)))


def room_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(labeled reference, baseline) pairs that measure the room above each gated baseline and are not
    in `pairs` already."""
    have = set(pairs)
    return [(ref, b) for b in gated_baselines(pairs) for ref in LABELED_REFERENCES
            if ref != b and (ref, b) not in have]


def room_reason(metrics: dict[str, Any], baseline: str) -> str | None:
    """None where an adapter trained on the target's labels (LABELED_REFERENCES) beats `baseline`
    (pooled paired 95% CI of the accuracy difference above 0: room that a prompt-conditioned
    generator could reach), else why a claim "subject beats `baseline`" is not testable here
    (dnd.stats.verdict's `untestable`). The paper's own gate (the oracle ahead of the training-LoRA
    average) is this rule with the oracle as the only labeled adapter."""
    parts, room = [], False
    for ref, name in LABELED_REFERENCES.items():
        if ref == baseline:
            continue
        key = f"{MEAN_TARGET}/{ref}_minus_{baseline}/acc"
        lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
            parts.append(f"{name}: no CI")
            continue
        room |= lo > 0
        parts.append(f"{name} {_ci(metrics, f'{ref}_minus_{baseline}/acc')}")
    return None if room else f"no adapter trained on the target's labels beats {baseline} ({'; '.join(parts)})"


def _cell(r: dict[str, Any]) -> tuple:
    """eval_cell, shared_a_nearest among the methods whose adapter is the source picked per target."""
    return eval_cell(r) if r["method"] != SHARED_A_NEAREST else (SHARED_A_NEAREST, "*")


# ============================================================================ scores.csv
def extra_scores(rows: list[dict[str, Any]], resamples: int, seed: int):
    """scores.csv rows of the generators' side (scores_frame's columns and CIs): each row, and an
    adapter 'mean' row per method with several adapters."""
    import numpy as np
    import pandas as pd

    out = []
    for t in dict.fromkeys(r["target"] for r in rows):
        trows = [r for r in rows if r["target"] == t]
        n = trows[0]["n"]
        idx = bootstrap_indices(n, resamples, seed, t)
        for method in dict.fromkeys(r["method"] for r in trows):
            mrows = [r for r in trows if r["method"] == method]
            cells = [(str(r["adapter"]), np.asarray(r["correct"], float), np.asarray(r["gold_logprob"], float))
                     for r in mrows]
            if len(mrows) > 1:
                cells.append((MEAN_ADAPTER, np.mean([c[1] for c in cells], axis=0),
                              np.mean([c[2] for c in cells], axis=0)))
            for adapter, correct, lp in cells:
                out.append([t, method, adapter, n, float(correct.mean()), *percentile_ci(boot_means(correct, idx)),
                            float(lp.mean())])
    return pd.DataFrame(out, columns=SCORE_COLUMNS)


# ============================================================================ metrics.json
def _read_csv(paths: Sequence[Path]) -> list[dict[str, str]]:
    rows = []
    for p in paths:
        with open(p, newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def experiment_metrics(known: list[dict[str, Any]], extra: list[dict[str, Any]], folds: dict[str, list[str]],
                       generators: dict[str, dict[str, Any]], resamples: int, seed: int,
                       checks: list[dict[str, str]] = (), diagnostics: list[dict[str, str]] = ()) -> dict[str, Any]:
    """metrics.json (module doc) from the rows of the default run and the labeled baselines (`known`),
    the generators' rows (`extra`), the fs-checks and diagnose-fold rows."""
    import numpy as np
    import pandas as pd

    targets = list(folds)
    scores = pd.DataFrame([{"target": r["target"], "method": r["method"], "adapter": str(r["adapter"])}
                           for r in known])
    train = training_loras(scores, folds)
    compared = comparison_pairs(generators)
    claims = [p for p in compared if p != ("oracle", "train_avg")]
    pairs = [*compared, *room_pairs(claims)]
    out: dict[str, Any] = {f"{MEAN_TARGET}/n_targets": len(targets), "targets": targets,
                           "generators": {g: dict(zip(("design", "objective", "zoo"), _label(g, generators)))
                                          for g in generators}}
    boots: dict[tuple[str, str, str], list] = {(s, b, m): [] for s, b in pairs for m in METRICS}
    for t in targets:
        krows = [r for r in known if r["target"] == t]
        erows = [r for r in extra if r["target"] == t]
        idx = bootstrap_indices(krows[0]["n"], resamples, seed, t)
        out[f"{t}/n"] = krows[0]["n"]
        for m in METRICS:
            vec = {**item_vectors(krows, train[t], m), **extra_vectors(erows, m)}
            for s, b in pairs:
                diff = vec[s] - vec[b] if s in vec and b in vec else None
                boots[(s, b, m)].append(boot_means(diff, idx))
                key = f"{t}/{s}_minus_{b}/{m}"
                out[key] = float(diff.mean()) if diff is not None else math.nan
                out[f"{key}_ci_low"], out[f"{key}_ci_high"] = percentile_ci(boots[(s, b, m)][-1])
            if m == "acc":
                for name, v in vec.items():
                    out[f"{t}/{name}/acc"] = float(v.mean())
    for s, b in pairs:
        for m in METRICS:
            key = f"{s}_minus_{b}/{m}"
            out[f"{MEAN_TARGET}/{key}"] = float(np.mean([out[f"{t}/{key}"] for t in targets]))
            out[f"{MEAN_TARGET}/{key}_ci_low"], out[f"{MEAN_TARGET}/{key}_ci_high"] = pooled_ci(boots[(s, b, m)])
    for name in {k.split("/")[1] for k in out if k.endswith("/acc") and "_minus_" not in k}:
        vals = [out.get(f"{t}/{name}/acc", math.nan) for t in targets]
        out[f"{MEAN_TARGET}/{name}/acc"] = float(np.mean(vals))
    lo, hi = (100 * out[f"{MEAN_TARGET}/oracle_minus_train_avg/acc_ci_{e}"] for e in ("low", "high"))
    headroom = untestable_reason(oracle_ci=(lo, hi))
    out[f"{MEAN_TARGET}/headroom"] = headroom or "testable"
    room = {b: room_reason(out, b) for b in gated_baselines(claims)}
    for b, reason in room.items():
        out[f"{MEAN_TARGET}/room/{b}"] = reason or "testable"
    for s, b in claims:
        key = f"{MEAN_TARGET}/{s}_minus_{b}/acc"
        # a labeled subject (multi-task LoRA, validation-picked source) is itself a measurement of room: no gate
        gate = None if s in (*LABELED_REFERENCES, VAL_PICKED) else room[b]
        out[f"{MEAN_TARGET}/{s}_minus_{b}/verdict"] = verdict(100 * out[f"{key}_ci_low"], 100 * out[f"{key}_ci_high"],
                                                              untestable=gate)
    for g in ["dnd", *generators]:
        for t in targets:
            ratios = [float(r["ratio_to_min_between"]) for r in checks if r["target"] == t and r["generator"] == g]
            out[f"{t}/{g}/dist_ratio"] = float(np.mean(ratios)) if ratios else math.nan
            close = [float(r["dist_nearest_dw"]) < float(r["min_between"]) for r in checks
                     if r["target"] == t and r["generator"] == g]
            out[f"{t}/{g}/share_closer_than_sources"] = float(np.mean(close)) if close else math.nan
        out[f"{MEAN_TARGET}/{g}/dist_ratio"] = float(np.nanmean([out[f"{t}/{g}/dist_ratio"] for t in targets]))
    for r in diagnostics:
        if r.get("variant") == "zoo" and r.get("metric") in ("reachability", "checkpoint_spread"):
            out[f"{r['fold']}/{r['zoo']}/{r['metric']}"] = float(r["value"])
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


# ============================================================================ report.md and figure
def _pts(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:+.1f}"


def _ci(metrics: dict[str, Any], key: str) -> str:
    v, lo, hi = (metrics.get(f"{MEAN_TARGET}/{key}{e}") for e in ("", "_ci_low", "_ci_high"))
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return _pts(v)
    return f"{_pts(v)} [{_pts(lo)}, {_pts(hi)}]"


def _label(g: str, generators: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    """(family, training mode, zoo) of a subject."""
    if g == "dnd":
        return "hyperconv (the default run's DnD)", "reconstruction", "default"
    if g in (MULTITASK, VAL_PICKED):
        return "LoRA", "labeled" if g == MULTITASK else "picked on labeled items", "default"
    spec = generators[g]
    return spec.get("design", "hyperconv"), spec.get("objective", "reconstruction"), spec.get("zoo", "default")


def _room_refs(metrics: dict[str, Any], baseline: str) -> str:
    """Each labeled reference minus `baseline`, pooled (points, CI)."""
    return "; ".join(f"{name} {_ci(metrics, f'{ref}_minus_{baseline}/acc')}"
                     for ref, name in LABELED_REFERENCES.items() if ref != baseline)


def _word_cell(text: str) -> str:
    """A verdict for a table cell: "not testable here" without its reason (the room list gives it)."""
    return NOT_TESTABLE if str(text).startswith(NOT_TESTABLE) else str(text)


def _answer(metrics: dict[str, Any], subjects: Sequence[str], baseline: str, name: str) -> str:
    """Which subjects are ahead of `baseline` (pooled CI above 0, read from the CI whatever the room),
    and, where none is, whether that is a verdict (level: a decisive no) or there was no room."""
    cis = {s: (metrics.get(f"{MEAN_TARGET}/{s}_minus_{baseline}/acc_ci_low"),
               metrics.get(f"{MEAN_TARGET}/{s}_minus_{baseline}/acc_ci_high")) for s in subjects}
    cis = {s: (lo, hi) for s, (lo, hi) in cis.items() if lo is not None and hi is not None}
    ahead = [s for s, (lo, _) in cis.items() if lo > 0]
    if ahead:
        return f"Ahead of {name} (pooled CI above 0): {', '.join(ahead)}."
    out = f"No generator is ahead of {name} (no pooled CI above 0)"
    if metrics.get(f"{MEAN_TARGET}/room/{baseline}") != "testable":
        return out + "; nor is any adapter trained on the targets' labels, so the claim is not testable here."
    level = [s for s, (lo, hi) in cis.items() if ci_class(100 * lo, 100 * hi) == "level"]
    return out + (f", although labels can beat it ({_room_refs(metrics, baseline)}); level with it (CI inside "
                  f"±{EQUIVALENT:g} point): {', '.join(level) or 'none'}.")


def report_markdown(metrics: dict[str, Any], generators: dict[str, dict[str, Any]], targets: Sequence[str],
                    figure: str, minutes: tuple[float, float, int] | None,
                    job_times: dict[str, tuple[int, float]] | None = None) -> str:
    """report.md in plain words (module doc): which training mode, family and zoo, and whether any
    generator beats the nearest source and the multi-task LoRA (dnd.stats.verdict)."""
    subjects = ["dnd", *generators]
    lines = ["# Beyond weight space: generators trained through the model", "",
             f"Targets: {', '.join(targets)} (held out; each generator trained on the other datasets). Accuracy "
             "differences in points, paired 95% bootstrap CIs over the test items, pooled over the targets "
             "(every target weighs the same). A verdict reads the claim \"the subject beats the baseline\" "
             "(dnd.stats.verdict): *reproduced* = the subject is ahead (Text-to-LoRA's claim for its generators "
             "holds here), *level* = the CI holds 0 and lies inside ±1 point (a decisive no), *not told apart* = "
             "the data cannot tell, *not reproduced* = the baseline is ahead, *not testable here* = no adapter "
             "trained on the targets' labels (their own LoRAs, the multi-task LoRA) beats the baseline either, so "
             "these targets leave a generator no room to show the claim (the CI is given all the same).", "",
             f"Headroom (the target's own LoRA minus the training-LoRA average): "
             f"{_ci(metrics, 'oracle_minus_train_avg/acc')} points, {metrics.get(f'{MEAN_TARGET}/headroom')}.", "",
             "Room above each baseline (an adapter trained on the targets' labels ahead of it, pooled paired CI "
             "above 0):", "",
             *[f"- {b}: " + (f"room ({_room_refs(metrics, b)})" if metrics.get(f"{MEAN_TARGET}/room/{b}") == "testable"
                             else f"not testable here, {metrics.get(f'{MEAN_TARGET}/room/{b}')}")
               for b in (*ZERO_SHOT, MULTITASK) if f"{MEAN_TARGET}/room/{b}" in metrics], "",
             "## Against the nearest source and the multi-task LoRA", "",
             "| Subject | Family | Training | Zoo | Accuracy | minus nearest | Verdict | minus multi-task LoRA "
             "| Verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in [*subjects, MULTITASK, VAL_PICKED]:
        fam, mode, zoo = _label(s, generators)
        acc = metrics.get(f"{MEAN_TARGET}/{s}/acc")
        near = _ci(metrics, f"{s}_minus_nearest/acc")
        vn = _word_cell(metrics.get(f"{MEAN_TARGET}/{s}_minus_nearest/verdict", ""))
        if s == MULTITASK:
            mt, vm = "", ""
        else:
            mt = _ci(metrics, f"{s}_minus_{MULTITASK}/acc") if s != VAL_PICKED else ""
            vm = _word_cell(metrics.get(f"{MEAN_TARGET}/{s}_minus_{MULTITASK}/verdict", "")) if s != VAL_PICKED else ""
        lines.append(f"| {s} | {fam} | {mode} | {zoo} | {'n/a' if acc is None else f'{100 * acc:.1f}'} | {near} | "
                     f"{vn} | {mt} | {vm} |")
    lines += ["", "Per target, accuracy minus nearest (points, 95% CI); pooled gold log-probability minus nearest "
              "(nats per item):", "",
              "| Subject | " + " | ".join(targets) + " | gold log-prob, pooled |",
              "|---|" + "---|" * (len(targets) + 1)]
    for s in [*subjects, MULTITASK, VAL_PICKED]:
        cells = []
        for t in targets:
            v, lo, hi = (metrics.get(f"{t}/{s}_minus_nearest/acc{e}") for e in ("", "_ci_low", "_ci_high"))
            cells.append("n/a" if v is None else f"{_pts(v)} [{_pts(lo)}, {_pts(hi)}]")
        lp = [metrics.get(f"{MEAN_TARGET}/{s}_minus_nearest/gold_logprob{e}") for e in ("", "_ci_low", "_ci_high")]
        cells.append("n/a" if None in lp else f"{lp[0]:+.3f} [{lp[1]:+.3f}, {lp[2]:+.3f}]")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "**Answer.** " + _answer(metrics, subjects, "nearest", "the nearest source") + " "
              + _answer(metrics, subjects, MULTITASK, "the multi-task LoRA") + " "
              + _answer(metrics, subjects, "train_avg", "the training-LoRA average"), "",
              "Against the training-LoRA average (the paper's baseline), pooled (points, 95% CI, verdict):", "",
              *[f"- {s}: {_ci(metrics, f'{s}_minus_train_avg/acc')}, "
                f"{metrics.get(f'{MEAN_TARGET}/{s}_minus_train_avg/verdict') or 'n/a'}"
                for s in [*subjects, MULTITASK, VAL_PICKED] if f"{MEAN_TARGET}/{s}_minus_train_avg/acc" in metrics], ""]
    sft = [g for g in generators if generators[g].get("objective") != "reconstruction"]
    rec = {generators[g].get("design", "hyperconv"): g for g in generators
           if generators[g].get("objective") == "reconstruction" and generators[g].get("zoo") == "default"}
    rec.setdefault("hyperconv", "dnd")
    mode = []
    for g in sft:
        fam = generators[g].get("design", "hyperconv")
        if fam in rec:
            r = rec[fam]
            lo, hi = (metrics.get(f"{MEAN_TARGET}/{g}_minus_nearest/acc_ci_{e}") for e in ("low", "high"))
            lo2, hi2 = (metrics.get(f"{MEAN_TARGET}/{r}_minus_nearest/acc_ci_{e}") for e in ("low", "high"))
            mode.append(f"- {fam}: trained through the model ({g}) {_ci(metrics, f'{g}_minus_nearest/acc')} against "
                        f"nearest, by reconstruction ({r}) {_ci(metrics, f'{r}_minus_nearest/acc')}"
                        + ("" if None in (lo, hi, lo2, hi2) else
                           f"; {relation(100 * lo, 100 * hi, g, 'nearest')}, "
                           f"{relation(100 * lo2, 100 * hi2, r, 'nearest')}")
                        + ".")
    if mode:
        lines += ["## Training mode (through the model against reconstruction)", "", *mode, ""]
    lines += ["## Controls and memorization", "",
              "Each generator minus its own controls (other dataset's prompts, random text, shuffled words) and "
              "minus its noise baseline (the nearest source plus Gaussian noise at the generator's own ΔW distance "
              "from it); ΔW ratio: distance to the nearest training LoRA over the smallest distance between two "
              "training LoRAs (below 1: closer to a training LoRA than the training LoRAs are to each other).", "",
              "| Subject | minus other prompts | minus random text | minus shuffled words | minus noise | ΔW ratio |",
              "|---|---|---|---|---|---|"]
    for s in subjects:
        cells = [_ci(metrics, f"{s}_minus_{k if s == 'dnd' else f'{s}_{k}'}/acc") for k in CONTROL_KINDS]
        ratio = metrics.get(f"{MEAN_TARGET}/{s}/dist_ratio")
        lines.append(f"| {s} | {' | '.join(cells)} | {_ci(metrics, f'{s}_minus_{s}_{NOISE}/acc')} | "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}'} |")
    shared = [g for g in generators if generators[g].get("zoo") == "shared_a"]
    lines += ["", "## Zoo (shared A against the default zoo)", ""]
    for t in targets:
        r0, r1 = metrics.get(f"{t}/default/reachability"), metrics.get(f"{t}/shared_a/reachability")
        if r0 is not None or r1 is not None:
            lines.append(f"- {t}: reachability of the held-out LoRA {'n/a' if r0 is None else f'{r0:.3f}'} (default "
                         f"zoo), {'n/a' if r1 is None else f'{r1:.3f}'} (shared A).")
    for g in shared:
        own = _ci(metrics, f"{g}_minus_{SHARED_A_NEAREST}/acc")
        lines.append(f"- {g} minus the shared-A zoo's nearest source: {own};"
                     f" minus the default zoo's nearest: {_ci(metrics, f'{g}_minus_nearest/acc')}.")
    lines += ["", "![Each generator minus the nearest source, the multi-task LoRA and the training-LoRA average]"
              f"({figure})", ""]
    if minutes is not None:
        wall, cpu, jobs = minutes
        lines += ["## Compute", "",
                  f"Measured (Snakemake benchmarks of the experiment's jobs): {jobs} jobs, {wall:.0f} min of job wall "
                  f"time ({cpu:.0f} CPU-min); the budget is 3 hours on 2 cores.", ""]
        if job_times:
            lines += ["| Jobs | Count | Wall time (min) |", "|---|---|---|"]
            lines += [f"| {k} | {n} | {sec / 60:.1f} |" for k, (n, sec) in job_times.items()]
            lines.append("")
    return "\n".join(lines) + "\n"


def job_kind(path: str | Path, targets: Sequence[str]) -> str:
    """The kind of an experiment job from its benchmark file's name: the name without its target
    (train_generator_<g>, score, ...) or, for the shared-A zoo's per-dataset jobs, without its dataset."""
    stem = Path(path).stem
    for prefix in ("train_shared_a", "tokenize_shared_a"):
        if stem.startswith(prefix + "_"):
            return prefix
    for t in sorted(targets, key=len, reverse=True):
        if stem.endswith("_" + t):
            return stem[: -len(t) - 1]
    return stem


def job_times(benchmarks: Sequence[Path], targets: Sequence[str]) -> dict[str, tuple[int, float]]:
    """{job kind: (jobs, total wall seconds)} of the declared benchmark files (the last run of each),
    the slowest kinds first."""
    import pandas as pd

    from dnd.reporting.tables import declared_benchmarks

    out: dict[str, list] = {}
    for f in declared_benchmarks(benchmarks):
        k = out.setdefault(job_kind(f, targets), [0, 0.0])
        k[0] += 1
        k[1] += float(pd.read_csv(f, sep="\t").iloc[-1]["s"])
    return {k: (n, sec) for k, (n, sec) in sorted(out.items(), key=lambda kv: -kv[1][1])}


def report_figure(metrics: dict[str, Any], generators: dict[str, dict[str, Any]], out: Path) -> None:
    """Each subject minus nearest, the multi-task LoRA and the training-LoRA average (pooled, points,
    95% CI error bars; seaborn's colour-blind palette)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from dnd.reporting.figures import apply_style, save_png

    apply_style()
    subjects = ["dnd", *generators, MULTITASK, VAL_PICKED]
    baselines = ["nearest", MULTITASK, "train_avg"]
    cb = sns.color_palette("colorblind", len(baselines))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(subjects)), 3.4))
    width = 0.8 / len(baselines)
    for j, b in enumerate(baselines):
        for i, s in enumerate(subjects):
            key = f"{MEAN_TARGET}/{s}_minus_{b}/acc"
            v = metrics.get(key)
            if v is None or s == b:
                continue
            lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
            err = None if lo is None or hi is None else [[100 * (v - lo)], [100 * (hi - v)]]
            first = i == next(k for k, x in enumerate(subjects) if x != b)
            ax.bar(i + (j - (len(baselines) - 1) / 2) * width, 100 * v, width, color=cb[j], yerr=err, capsize=3,
                   label=f"minus {BASELINE_NAMES.get(b, b)}" if first else None)
    ax.axhspan(-EQUIVALENT, EQUIVALENT, color="0.85", zorder=0, label=f"level band (±{EQUIVALENT:g} point)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(subjects)), subjects, rotation=30, ha="right")
    ax.set_ylabel("accuracy difference (points)")
    ax.set_title("pooled over targets, 95% paired CIs")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, never on a bar
    save_png(fig, out)


# ============================================================================ command
def run_report(params: dict[str, Any], default_eval: Sequence[Path], labeled_eval: Sequence[Path],
               generators_eval: Sequence[Path], checks: Sequence[Path], diagnostics: Sequence[Path],
               benchmarks: Sequence[Path], scores_out: Path, metrics_out: Path, md_out: Path, figure: Path) -> dict:
    import pandas as pd

    from dnd.reporting.tables import benchmark_minutes

    folds = dict(params["folds"])
    generators = dict(params.get("generators") or {})
    resamples, seed = int(params["bootstrap"]), int(params.get("seed", 0))
    known = load_eval_rows([*default_eval, *labeled_eval])
    extra = read_eval_files(generators_eval)
    check_generator_rows(extra, list(generators))
    require_complete(known + extra, list(folds), sources=folds,
                     required=("base", "source_lora", "soup", "nearest", "dnd", MULTITASK, VAL_PICKED),
                     cell=_cell)
    missing = [f"{t}: {m}" for t in folds for ms in generator_methods(list(generators)).values() for m in ms
               if not any(r["target"] == t and r["method"] == m for r in extra)]
    if missing:
        raise ValueError(f"incomplete generator rows: no {', '.join(missing[:8])}")
    scores = pd.concat([scores_frame(known, resamples, seed), extra_scores(extra, resamples, seed)],
                       ignore_index=True)
    diag = []
    for p in diagnostics:  # .../diagnostics/{zoo}/{T}.csv
        diag += [{**r, "zoo": Path(p).parent.name} for r in _read_csv([p])]
    metrics = experiment_metrics(known, extra, folds, generators, resamples, seed, _read_csv(checks), diag)
    write_text(scores_out, scores.to_csv(index=False))
    write_json(metrics_out, metrics, sort_keys=True)
    report_figure(metrics, generators, figure)
    rel = Path(figure).relative_to(Path(md_out).parent) if Path(figure).is_relative_to(Path(md_out).parent) \
        else Path(figure)
    write_text(md_out, report_markdown(metrics, generators, list(folds), str(rel),
                                       benchmark_minutes(benchmarks) if benchmarks else None,
                                       job_times(benchmarks, list(folds)) if benchmarks else None))
    return metrics


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="JSON: {bootstrap, seed, folds, generators: {name: {objective, "
                   "zoo, design}}, n_adapters}")
    add_declared_option(p, "--default-eval", "the default run's results/eval/{T}.jsonl")
    add_declared_option(p, "--labeled-eval", "results/function_space/eval/{T}.jsonl")
    add_declared_option(p, "--generators-eval", "results/function_space/eval_generators/{T}.jsonl")
    add_declared_option(p, "--checks", "results/function_space/checks/{T}.csv")
    add_declared_option(p, "--diagnostics", "results/function_space/diagnostics/{zoo}/{T}.csv", required=False)
    add_declared_option(p, "--benchmarks", "the experiment's Snakemake benchmark files", required=False)
    p.add_argument("--scores", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="report.md")
    p.add_argument("--figure", required=True, type=Path)


def _run_report(args: argparse.Namespace) -> None:
    run_report(parse_params(args.params), args.default_eval, args.labeled_eval, args.generators_eval, args.checks,
               args.diagnostics, args.benchmarks, args.scores, args.metrics, args.out, args.figure)


COMMANDS = {"fs-report": (_add_report, _run_report)}
