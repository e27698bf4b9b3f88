"""One probe of a longer-trained zoo (the `zoo_probe` Snakemake target, outside `all`): does
training a held-out dataset's LoRA longer change how much of it the other datasets' LoRAs can
reach, or how far its own LoRA (the oracle) leads the training-LoRA average?

The workflow (workflow/rules/zoo_probe.smk) trains the LoRA of each `zoo_probe.datasets` entry
again with `zoo_probe.steps_factor` times the zoo's steps (`dnd train-lora` with the schedule of
dnd.zoo.longer_schedule; same seed, data and other settings) into results/zoo_probe/zoo/, then:

  zoo-probe-score   dnd zoo-probe-score --params JSON --target T --model DIR --tasks YAML [...]
                        --lora DIR --out FILE [--cache-dir DIR]
                    the longer LoRA on T's test items with the default run's task and scorer
                    (dnd.evaluate.score_adapters): one row as dnd.evaluate writes (method
                    source_lora, adapter T) plus `zoo: "longer"` and `steps_factor`
  zoo-probe-report  dnd zoo-probe-report --params JSON --default-eval FILE... --probe-eval FILE...
                        --zoo PATH... --probe-zoo PATH... --metrics FILE --out FILE
                    results/zoo_probe/metrics.json and report.md

Nothing of the default run is trained or scored again: the training LoRAs' and the default
oracle's per-item scores are the default run's (results/eval/{T}.jsonl), the sources are the
default zoo's (results/zoo/{d}/final and checkpoints/).

Figures per probe dataset T (metrics.json keys `{T}/{figure}`; `mean/...` over the probe datasets):
  reachability_default / _longer   dnd.diagnostics.reachability of T's default / longer final LoRA
                                   from the fold's default sources (share of its deviation from
                                   the sources' mean inside the span of their deviations)
  checkpoint_spread_default / _longer  mean ΔW distance of T's checkpoints from their mean, over
                                   the mean distance between the fold's source LoRAs
  cosine_to_default, distance_to_default  the longer LoRA's ΔW against the default one (distance
                                   in units of the mean distance between the source LoRAs)
  norm_ratio                       ||ΔW longer|| / ||ΔW default||
  final_loss_default / _longer     the last training step's loss (summary.json)
  train_avg/acc, oracle_default/acc, oracle_longer/acc   accuracies (fractions)
  lead_default/{m}, lead_longer/{m}  the oracle minus the training-LoRA average, per item
  lead_change/{m}                  oracle_longer minus oracle_default (= the change of the lead)
                                   each with `_ci_low`/`_ci_high`: paired 95% bootstrap CIs over
                                   the items (dnd.stats, the default run's resamples per target)
                                   for m in acc (fraction) and gold_logprob (nats)
  headroom_default / _longer       "testable" or why not (dnd.stats.untestable_reason)
  reading_lead_change              dnd.stats.relation of the longer-trained oracle to the default one (paired CI)
reachability_folds: every fold's default reachability (the range the probe's values sit in).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dnd.config import parse_params, section
from dnd.io import read_jsonl, write_json, write_jsonl, write_text
from dnd.paths import add_declared_option, declared
from dnd.stats import (
    NOT_TESTABLE,
    VERDICTS,
    boot_means,
    bootstrap_indices,
    percentile_ci,
    pooled_ci,
    relation,
    untestable_reason,
)
from dnd.summary import ITEM_METRICS, item_vectors

log = logging.getLogger(__name__)

#: the row label of the longer LoRA's scores (beside dnd.evaluate's fields)
LONGER = "longer"
TESTABLE = "testable"
#: the claim the oracle's lead is tested on: the direction a longer-trained zoo (closer to the
#: authors' schedule, config/paper_numbers.yaml `zoo`) would have to move it
CLAIM = "training the zoo longer raises the oracle's lead"
MEAN = "mean"
#: relative change of reachability below which the report calls it unchanged (no CI: one LoRA each)
REACH_SAME = 0.1


# ============================================================================ settings
def probe_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The probe's settings from --params: the validated `zoo_probe` and `lora` sections, the
    folds (target -> sources, dnd.config.folds), the bootstrap resamples and seed."""
    zp = section("zoo_probe", params.get("zoo_probe"))
    folds = {str(t): [str(d) for d in s] for t, s in (params.get("folds") or {}).items()}
    datasets = list(zp["datasets"]) or list(folds)[:2]
    missing = [d for d in datasets if d not in folds]
    if missing:
        raise ValueError(f"--params: probe datasets {missing} have no fold in 'folds'")
    return {"datasets": datasets, "steps_factor": int(zp["steps_factor"]), "folds": folds,
            "lora": section("lora", params.get("lora")), "bootstrap": int(params.get("bootstrap", 0)),
            "seed": int(params.get("seed", 0))}


# ============================================================================ scoring
def score_longer_lora(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path], lora: Path,
                      cache_dir: Path | None = None, device: Any = "cpu") -> list[dict[str, Any]]:
    """The longer LoRA of `target` scored on its test items as dnd.evaluate scores the zoo."""
    from dnd.evaluate import result_row, score_adapters

    ev = section("evaluation", params.get("evaluation"))
    factor = int(section("zoo_probe", params.get("zoo_probe"))["steps_factor"])
    scored = score_adapters(target, ev, model_dir, tasks, [("source_lora", target, Path(lora))], cache_dir, device)
    return [result_row(target, "source_lora", target, scored[("source_lora", target)], ev["metric"], zoo=LONGER,
                       steps_factor=factor)]


# ============================================================================ weight space
def weight_figures(target: str, sources: Sequence[str], default_final: Mapping[str, Path], longer_final: Path,
                   default_checkpoints: Sequence[Path], longer_checkpoints: Sequence[Path]) -> dict[str, float]:
    """The weight-space figures of one probe dataset (module doc): `default_final` maps the fold's
    datasets (sources and target) to their default final LoRA folders; the checkpoints are
    safetensors files in step order."""
    from dnd.diagnostics import adapter_factors, distance, gram, mean_pair_distance, reachability, spread

    names = [*sources, target]
    g = gram([adapter_factors(default_final[d]) for d in names] + [adapter_factors(longer_final)])
    s_idx, t_idx, l_idx = list(range(len(sources))), len(sources), len(names)
    between = mean_pair_distance(g[: len(sources), : len(sources)])

    def ckpt_spread(files: Sequence[Path]) -> float:
        return spread(gram([adapter_factors(f) for f in files])) / between

    return {
        "reachability_default": reachability(g, s_idx, t_idx),
        "reachability_longer": reachability(g, s_idx, l_idx),
        "checkpoint_spread_default": ckpt_spread(default_checkpoints),
        "checkpoint_spread_longer": ckpt_spread(longer_checkpoints),
        "cosine_to_default": float(g[t_idx, l_idx] / math.sqrt(float(g[t_idx, t_idx] * g[l_idx, l_idx]))),
        "distance_to_default": distance(g, t_idx, l_idx) / between,
        "norm_ratio": math.sqrt(float(g[l_idx, l_idx] / g[t_idx, t_idx])),
    }


def fold_reachability(folds: Mapping[str, Sequence[str]], finals: Mapping[str, Path]) -> dict[str, float]:
    """Every fold's default reachability (target -> reachability of its final LoRA from its
    sources), from one Gram matrix of the default zoo's final LoRAs."""
    from dnd.diagnostics import adapter_factors, gram, reachability

    names = sorted({d for t, s in folds.items() for d in (t, *s)})
    g = gram([adapter_factors(finals[d]) for d in names])
    return {t: reachability(g, [names.index(d) for d in s], names.index(t)) for t, s in folds.items()}


# ============================================================================ the oracle's lead
def _default_rows(rows: list[dict[str, Any]], target: str, sources: Sequence[str]) -> list[dict[str, Any]]:
    """The default run's rows of `target` that the lead needs: its training LoRAs and its oracle."""
    mine = [r for r in rows if r["target"] == target and r["method"] == "source_lora"]
    have = {str(r["adapter"]) for r in mine}
    missing = sorted({*sources, target} - have)
    if missing:
        raise ValueError(f"{target}: the default run's evaluation has no source_lora rows of {missing}")
    return [r for r in mine if str(r["adapter"]) in {*sources, target}]


def lead_figures(target: str, sources: Sequence[str], default_rows: list[dict[str, Any]],
                 longer_row: dict[str, Any], resamples: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The oracle's lead on one probe dataset (module doc): ({figure: value}, {(figure, metric):
    bootstrap means or None}). The items are resampled as dnd.summary resamples this target (the
    same indices), so lead_default equals the default run's oracle_minus_train_avg. The longer
    LoRA must have been scored on the default run's items."""
    import numpy as np

    rows = _default_rows(default_rows, target, sources)
    ids = rows[0]["ids"]
    if list(longer_row["ids"]) != list(ids):
        raise ValueError(f"{target}: the longer LoRA was scored on other items than the default run's "
                         f"({len(longer_row['ids'])} vs {len(ids)} items, or another order)")
    idx = bootstrap_indices(len(ids), resamples, seed, target)
    out: dict[str, Any] = {"n": len(ids)}
    boots: dict[tuple[str, str], Any] = {}
    for m in ITEM_METRICS:
        vec = item_vectors(rows, list(sources), m)
        longer = np.asarray(longer_row["correct" if m == "acc" else m], dtype=np.float64)
        if m == "acc":
            out.update({"train_avg/acc": float(vec["train_avg"].mean()),
                        "oracle_default/acc": float(vec["oracle"].mean()), "oracle_longer/acc": float(longer.mean())})
        diffs = {"lead_default": vec["oracle"] - vec["train_avg"], "lead_longer": longer - vec["train_avg"],
                 "lead_change": longer - vec["oracle"]}
        for name, diff in diffs.items():
            boots[(name, m)] = boot_means(diff, idx)
            out[f"{name}/{m}"] = float(diff.mean())
            out[f"{name}/{m}_ci_low"], out[f"{name}/{m}_ci_high"] = percentile_ci(boots[(name, m)])
    for which in ("default", "longer"):
        lo, hi = out[f"lead_{which}/acc_ci_low"], out[f"lead_{which}/acc_ci_high"]
        out[f"headroom_{which}"] = untestable_reason(oracle_ci=(100 * lo, 100 * hi)) or TESTABLE
    out["reading_lead_change"] = change_reading(out["lead_change/acc_ci_low"], out["lead_change/acc_ci_high"])
    return out, boots


def change_reading(lo: float | None, hi: float | None) -> str:
    """How the longer-trained oracle stands against the default one, from the paired 95% CI [lo, hi]
    (fractions) of oracle_longer minus oracle_default (dnd.stats.relation: ahead, level, not told
    apart). Not a verdict: the verdict words judge claims of the paper, and CLAIM is this probe's own
    question."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "not told apart (no CI)"
    return relation(100 * lo, 100 * hi, "the longer-trained oracle", "the default oracle")


def probe_metrics(settings: dict[str, Any], default_rows: list[dict[str, Any]], longer_rows: list[dict[str, Any]],
                  weights: Mapping[str, Mapping[str, float]], reach_folds: Mapping[str, float],
                  losses: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """metrics.json (module doc): per probe dataset its weight-space figures (`weights`), final
    training losses (`losses[d]` = {default, longer}) and the oracle's lead, then the mean over the
    probe datasets with pooled paired CIs (items resampled within each target, dnd.stats.pooled_ci)."""
    import numpy as np

    datasets, folds = settings["datasets"], settings["folds"]
    from dnd.zoo import longer_schedule

    def steps(lcfg: Mapping[str, Any]) -> int:
        return int(lcfg["phase1_steps"]) + int(lcfg["checkpoint_steps"])

    out: dict[str, Any] = {"datasets": list(datasets), "steps_factor": settings["steps_factor"],
                           "steps_default": steps(settings["lora"]),
                           "steps_longer": steps(longer_schedule(settings["lora"], settings["steps_factor"])),
                           "bootstrap": settings["bootstrap"], "claim": CLAIM,
                           "reachability_folds": {t: float(v) for t, v in reach_folds.items()}}
    all_boots: dict[tuple[str, str], list] = {}
    for t in datasets:
        longer = [r for r in longer_rows if r["target"] == t]
        if len(longer) != 1:
            raise ValueError(f"{t}: expected one row of the longer LoRA, found {len(longer)}")
        figures, boots = lead_figures(t, folds[t], default_rows, longer[0], settings["bootstrap"], settings["seed"])
        figures.update(weights[t])
        figures.update({f"final_loss_{k}": float(losses[t][k]) for k in ("default", "longer")})
        out.update({f"{t}/{k}": v for k, v in figures.items()})
        for key, b in boots.items():
            all_boots.setdefault(key, []).append(b)
    numeric = [k.split("/", 1)[1] for k in out if k.startswith(f"{datasets[0]}/")
               and isinstance(out[k], (int, float)) and not k.endswith(("_ci_low", "_ci_high"))]
    for key in numeric:
        out[f"{MEAN}/{key}"] = float(np.mean([out[f"{t}/{key}"] for t in datasets]))
    for (name, m), bs in all_boots.items():
        out[f"{MEAN}/{name}/{m}_ci_low"], out[f"{MEAN}/{name}/{m}_ci_high"] = pooled_ci(bs)
    out[f"{MEAN}/reading_lead_change"] = change_reading(out[f"{MEAN}/lead_change/acc_ci_low"],
                                                        out[f"{MEAN}/lead_change/acc_ci_high"])
    # JSON has no NaN: undefined figures are null
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


# ============================================================================ report
def _num(x: Any, digits: int = 1, sign: bool = False, scale: float = 1.0) -> str:
    from dnd.reporting.format import number

    return number(None if x is None else scale * float(x), digits, sign)


def _reach(x: Any) -> str:
    """A reachability (a share, often small): three significant digits."""
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3g}"


def _ci(m: Mapping[str, Any], key: str, scale: float = 100.0, digits: int = 1) -> str:
    """`key` with its paired 95% CI, e.g. "+1.2 [-0.4, +2.9]" (points for acc)."""
    return (f"{_num(m.get(key), digits, True, scale)} [{_num(m.get(key + '_ci_low'), digits, True, scale)}, "
            f"{_num(m.get(key + '_ci_high'), digits, True, scale)}]")


def reach_words(before: float | None, after: float | None) -> str:
    """How reachability moved, in words: "unchanged" within ±REACH_SAME of its default value
    (relative), else "higher"/"lower" (one LoRA per setting: no CI)."""
    if before is None or after is None or not before > 0:
        return "not measured"
    if abs(after / before - 1) <= REACH_SAME:
        return "unchanged"
    return "higher" if after > before else "lower"


def render_report(m: Mapping[str, Any]) -> str:
    """report.md from metrics.json: the set-up, a weight-space table, the oracle's lead table and
    the answer to "does reachability or the oracle's lead change?" in plain words."""
    from dnd.benchmarks.datasets import title

    ds, f = m["datasets"], m["steps_factor"]
    rows = [*ds, MEAN]
    label = {**{d: title(d) for d in ds}, MEAN: "Mean"}
    folds = m.get("reachability_folds") or {}
    lines = [
        "# A longer-trained zoo: one probe", "",
        f"*Does training the zoo {f}× longer change reachability or the oracle's lead?* The LoRA of "
        f"{' and '.join(label[d] for d in ds)} was trained again with {f}× the zoo's steps ({m['steps_default']} → "
        f"{m['steps_longer']}; the same checkpoints at the end, the same seed, data, learning rate, batch and "
        "rank; dnd.zoo.longer_schedule); every other LoRA is the default zoo's. With each probe dataset held "
        "out, its longer LoRA is compared with its default one: reachability from the default sources (the "
        "share of its deviation from the sources' mean that lies in the span of the sources' deviations) and "
        "the oracle's lead (its own LoRA minus the training-LoRA average, paired over the default run's "
        f"{m.get(f'{ds[0]}/n', 'n/a')} test items per target, {m['bootstrap']} bootstrap resamples). The "
        "training LoRAs' and the default oracle's scores are the default run's.", "",
        "## Weight space", "",
        "| Dataset | Final loss (default → longer) | Reachability (default → longer) | Checkpoint spread "
        "(default → longer) | Cosine to default | Distance to default | Norm ratio |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for d in rows:
        lines.append(
            f"| {label[d]} | {_num(m.get(f'{d}/final_loss_default'), 3)} → {_num(m.get(f'{d}/final_loss_longer'), 3)} "
            f"| {_reach(m.get(f'{d}/reachability_default'))} → {_reach(m.get(f'{d}/reachability_longer'))} "
            f"| {_num(m.get(f'{d}/checkpoint_spread_default'), 3)} → {_num(m.get(f'{d}/checkpoint_spread_longer'), 3)} "
            f"| {_num(m.get(f'{d}/cosine_to_default'), 2)} | {_num(m.get(f'{d}/distance_to_default'), 2)} "
            f"| {_num(m.get(f'{d}/norm_ratio'), 2)} |")
    if folds:
        lo_t, hi_t = min(folds, key=folds.get), max(folds, key=folds.get)
        lines += ["", f"Distances and spreads are in units of the mean distance between the fold's source LoRAs. "
                      f"For scale: the default zoo's reachability over all {len(folds)} folds ranges from "
                      f"{_reach(folds[lo_t])} ({title(lo_t)}) to {_reach(folds[hi_t])} ({title(hi_t)})."]
    lines += [
        "", "## The oracle's lead", "",
        "| Dataset | Training LoRAs (avg) | Oracle (default) | Oracle (longer) | Lead, default (95% CI) "
        "| Lead, longer (95% CI) | Change of the lead (95% CI) | Reading |",
        "|:--|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for d in rows:
        accs = " | ".join(_num(m.get(f"{d}/{k}/acc"), scale=100)
                          for k in ("train_avg", "oracle_default", "oracle_longer"))
        leads = " | ".join(_ci(m, f"{d}/{k}/acc") for k in ("lead_default", "lead_longer", "lead_change"))
        lines.append(f"| {label[d]} | {accs} | {leads} | {m.get(f'{d}/reading_lead_change')} |")
    lines += ["", f"Accuracy in points; the change of the lead is the longer oracle minus the default one, item by "
                  f"item (the training-LoRA average is the same). The reading is the change's paired CI against "
                  f"±1 point (ahead, level, not told apart); it answers this probe's question, “{CLAIM}?”, and is "
                  f"not a verdict on a claim of the paper. In gold log-probability the change is "
                  f"{_ci(m, f'{MEAN}/lead_change/gold_logprob', 1.0, 3)} nats over the probe datasets."]
    lines += ["", "## Answer", ""] + answer_lines(m)
    lines += ["", "Verdict words (dnd.stats.VERDICTS): " + "; ".join(f"*{w}*: {VERDICTS[w]}" for w in VERDICTS) + "."]
    return "\n".join(lines) + "\n"


def answer_lines(m: Mapping[str, Any]) -> list[str]:
    """The answer to the probe's question, with the numbers, one bullet per figure."""
    from dnd.benchmarks.datasets import title

    ds = m["datasets"]
    reach = [f"{title(d)} {_reach(m.get(f'{d}/reachability_default'))} → {_reach(m.get(f'{d}/reachability_longer'))} "
             f"({reach_words(m.get(f'{d}/reachability_default'), m.get(f'{d}/reachability_longer'))})" for d in ds]
    out = [f"- **Reachability**: {'; '.join(reach)}. One LoRA per setting, so no CI; “unchanged” means within "
           f"±{REACH_SAME:.0%} of the default value."]
    text = m.get(f"{MEAN}/reading_lead_change") or ""
    out.append(f"- **The oracle's lead**: {_ci(m, f'{MEAN}/lead_default/acc')} points with the default LoRAs, "
               f"{_ci(m, f'{MEAN}/lead_longer/acc')} with the longer ones (mean over the probe datasets); its change, "
               f"{_ci(m, f'{MEAN}/lead_change/acc')}: {text}.")
    out.append("- **Headroom** for a DnD claim (the oracle ahead of the training-LoRA average, its CI above 0): "
               + "; ".join(f"{title(d)}: " + headroom_words(m.get(f"{d}/headroom_default"),
                                                             m.get(f"{d}/headroom_longer")) for d in ds) + ".")
    return out


def headroom_words(before: str | None, after: str | None) -> str:
    """Whether a DnD claim is testable on a target with the default and with the longer LoRA."""
    def one(h: str | None) -> str:
        return TESTABLE if h == TESTABLE else f"{NOT_TESTABLE} ({h})"

    if before == after:
        return f"{one(before)} with either LoRA"
    return f"{one(before)} with the default LoRA, {one(after)} with the longer one"


# ============================================================================ CLI
def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}, "zoo_probe": {...}}')
    p.add_argument("--target", required=True, help="the probe dataset (held out)")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "the default run's task files (results/tasks/dnd_<T>.yaml)")
    p.add_argument("--lora", required=True, type=Path, help="the longer LoRA (results/zoo_probe/zoo/<T>/final)")
    p.add_argument("--out", required=True, type=Path, help="results/zoo_probe/eval/<T>.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache (results/zoo_probe/eval_cache/<T>)")


def _run_score(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    unknown = sorted(set(params) - {"evaluation", "zoo_probe"})
    if unknown:
        raise ValueError(f"--params has key(s) {unknown} this command does not read")
    rows = score_longer_lora(args.target, params, args.model, args.tasks, args.lora, args.cache_dir, args.device)
    write_jsonl(args.out, rows)
    log.info("%s: the longer LoRA scores acc=%.4f on %d items", args.target, rows[0]["acc"], rows[0]["n"])


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help='JSON: {"zoo_probe": {...}, "lora": {...}, "folds": {T: [sources]}, "bootstrap": int, '
                        '"seed": int}')
    add_declared_option(p, "--default-eval", "the default run's evaluation of each probe dataset "
                                             "(results/eval/<T>.jsonl)")
    add_declared_option(p, "--probe-eval", "the longer LoRAs' scores (results/zoo_probe/eval/<T>.jsonl)")
    add_declared_option(p, "--zoo", "the default zoo: results/zoo/<d>/final of every dataset of the folds, and "
                                    "<T>/checkpoints and <T>/summary.json of each probe dataset")
    add_declared_option(p, "--probe-zoo", "the longer LoRAs: results/zoo_probe/zoo/<T>/final, checkpoints and "
                                          "summary.json")
    p.add_argument("--metrics", required=True, type=Path, help="results/zoo_probe/metrics.json")
    p.add_argument("--out", required=True, type=Path, help="results/zoo_probe/report.md")


def _lora_run(paths: Sequence[Path], d: str, what: str, option: str, full: bool = True) -> dict[str, Any]:
    """The parts of dataset `d`'s LoRA run (dnd.zoo's layout: {d}/final, {d}/checkpoints,
    {d}/summary.json) among the declared `paths`: its final/ and, when `full`, its checkpoint files
    in step order and its final training loss."""
    out: dict[str, Any] = {"final": declared(paths, Path(d) / "final", f"{what} of {d}", option)}
    if full:
        ckpt_dir = declared(paths, Path(d) / "checkpoints", f"{what} checkpoints of {d}", option)
        out["checkpoints"] = sorted(ckpt_dir.glob("step-*.safetensors"))
        if not out["checkpoints"]:
            raise FileNotFoundError(f"{what} of {d}: no checkpoints (step-*.safetensors) in {ckpt_dir}")
        summary = declared(paths, Path(d) / "summary.json", f"{what} summary of {d}", option)
        out["final_loss"] = float(json.loads(summary.read_text())["final_loss"])
    return out


def _run_report(args: argparse.Namespace) -> None:
    settings = probe_settings(parse_params(args.params))
    folds = settings["folds"]
    default_rows = [r for d in settings["datasets"] for r in
                    read_jsonl(declared(args.default_eval, f"{d}.jsonl", f"evaluation of {d}", "--default-eval"))]
    longer_rows = [r for d in settings["datasets"]
                   for r in read_jsonl(declared(args.probe_eval, f"{d}.jsonl", f"longer LoRA's scores of {d}",
                                                "--probe-eval"))]
    names = sorted({d for t, s in folds.items() for d in (t, *s)})
    zoo = {d: _lora_run(args.zoo, d, "default LoRA", "--zoo", full=d in settings["datasets"]) for d in names}
    probe = {d: _lora_run(args.probe_zoo, d, "longer LoRA", "--probe-zoo") for d in settings["datasets"]}
    weights = {t: weight_figures(t, folds[t], {d: zoo[d]["final"] for d in names}, probe[t]["final"],
                                 zoo[t]["checkpoints"], probe[t]["checkpoints"]) for t in settings["datasets"]}
    losses = {t: {"default": zoo[t]["final_loss"], "longer": probe[t]["final_loss"]} for t in settings["datasets"]}
    metrics = probe_metrics(settings, default_rows, longer_rows, weights,
                            fold_reachability(folds, {d: zoo[d]["final"] for d in names}), losses)
    write_json(args.metrics, metrics)
    write_text(args.out, render_report(metrics))
    log.info("wrote %s and %s", args.metrics, args.out)


COMMANDS = {"zoo-probe-score": (_add_score, _run_score), "zoo-probe-report": (_add_report, _run_report)}
