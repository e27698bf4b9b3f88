"""Summary, figure and report of the paper-protocol experiment (dnd.experiments.protocol.score).

Commands:
  protocol-summary  dnd protocol-summary --params JSON --eval results/protocol/eval/*/*.jsonl
                        --scores results/protocol/scores.csv --metrics results/protocol/metrics.json
  protocol-report   dnd protocol-report --params JSON --metrics ... --paper-numbers FILE
                        --out results/protocol/report.md --figure results/protocol/figures/protocol.png

scores.csv: one row per (template, target, method, adapter, protocol, seed): n, acc, invalid_rate
(`seed` empty for loglik and greedy; `nearest` repeats the chosen training LoRA's rows).

metrics.json: `templates` (the test-time templates, in config order) and under each template t
its own metrics, `{t: {...}}` (`summarize`), each from that template's rows alone: per protocol p
(loglik, greedy, sampled) and method m, averaged over targets (each target weighs the same):
`{p}/{m}/acc`, `{p}/{m}/invalid_rate`, and for sampled the spread over seeds `{p}/{m}/acc_sd_seeds`;
per target the same under `{target}/`. Methods besides the scored ones: train_avg (mean over the
fold's training LoRAs), best_train (the best of them on the target's labels: not zero-shot),
oracle (the target's own LoRA). For each pair of COMPARISONS, e.g. `{p}/dnd_minus_train_avg/acc`:
the difference, a paired bootstrap 95% CI over items (`_ci_low`, `_ci_high`) and its split into
what the invalid-output rate explains and what accuracy among valid answers explains: with v =
valid share and c = accuracy among valid answers, subject - baseline = (v_s - v_b) * c_b
[`validity`] + v_s * (c_s - c_b) [`accuracy_valid`].
`{p}/oracle_minus_train_avg/...` (the same keys) is the headroom: where its CI is not above 0 the
paper's claim on DnD minus the training-LoRA average is "not testable here" under that template
and protocol; the report draws a verdict only where it is above 0.
`{p}/base/empty_share_of_invalid`, `{p}/lora/empty_share_of_invalid`: of the invalid generations
of the base model / of the adapters with a LoRA, the share (%) that are empty.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dnd.io import atomic_path, write_json
from dnd.paths import add_declared_option
from dnd.reporting.format import md_table, number
from dnd.reporting.output import figure_link, read_paper_numbers, write_report
from dnd.stats import paired_boot_means, pooled_ci, relation, untestable_reason, verdict

log = logging.getLogger(__name__)

SCORE_COLUMNS = ["template", "target", "method", "adapter", "protocol", "seed", "n", "acc", "invalid_rate"]
#: (subject, baseline) pairs with a paired bootstrap CI in metrics.json, under every protocol
#: (oracle, train_avg: the headroom, whether the paper's claim is testable under the protocol)
COMPARISONS = (("dnd", "train_avg"), ("dnd_testcond", "train_avg"), ("dnd_testcond", "dnd"), ("dnd", "soup"),
               ("dnd", "nearest"), ("dnd", "control_other"), ("dnd", "control_random"), ("dnd", "control_shuffled"),
               ("oracle", "train_avg"))
PROTOCOL_ORDER = ("loglik", "greedy", "sampled")
PROTOCOL_TITLES = {"loglik": "Log-likelihood", "greedy": "Greedy + parser", "sampled": "Sampled + parser"}
#: What each test-time template (dnd.formats.paper.TEMPLATES) is, against the zoo's training format (ChatML)
TEMPLATE_NOTES = {
    "default": "LLaMA-Factory's `default` (`System: ...`, `Human: ...`, `Assistant:`), as the authors' test script: "
               "trained in ChatML, tested in another template",
    "chatml": "ChatML, the template the zoo trains with: trained and tested in one template",
}
#: Rows of the report's table, in order: (method key, title, zero-shot?)
TABLE_METHODS = (
    ("base", "Base", True), ("train_avg", "Training LoRAs (avg)", True), ("best_train", "Best training LoRA †", False),
    ("soup", "Soup", True), ("nearest", "Nearest", True), ("dnd", "DnD (unlabeled pool)", True),
    ("dnd_testcond", "DnD (test prompts, as the authors)", True), ("control_other", "Control: other prompts", True),
    ("control_random", "Control: random text", True), ("control_shuffled", "Control: shuffled words", True),
    ("oracle", "Oracle ‡", False),
)


# ============================================================================ per-item matrices
def item_matrix(rows: list[dict], target: str, method: str, protocol: str, adapters: list[str] | None = None):
    """(correct, valid): arrays (draws, items) of a method on a target under a protocol; draws =
    adapters x seeds (the rows present)."""
    sel = [r for r in rows if r["target"] == target and r["method"] == method and r["protocol"] == protocol
           and (adapters is None or r["adapter"] in adapters)]
    if not sel:
        return None
    sel.sort(key=lambda r: (str(r["adapter"]), -1 if r["seed"] is None else int(r["seed"])))
    return (np.array([r["correct"] for r in sel], dtype=float), np.array([r["valid"] for r in sel], dtype=float))


def method_items(rows: list[dict], target: str, method: str, protocol: str, sources: list[str]):
    """(correct, valid) per item, averaged over a method's draws; train_avg and best_train come
    from the fold's source LoRAs, oracle from the target's own."""
    if method in ("train_avg", "best_train"):
        per = [item_matrix(rows, target, "source_lora", protocol, [s]) for s in sources]
        per = [p for p in per if p is not None]
        if not per:
            return None
        means = [(c.mean(0), v.mean(0)) for c, v in per]
        if method == "train_avg":
            return np.mean([m[0] for m in means], 0), np.mean([m[1] for m in means], 0)
        return max(means, key=lambda m: m[0].mean())
    if method == "oracle":
        m = item_matrix(rows, target, "source_lora", protocol, [target])
    else:
        m = item_matrix(rows, target, method, protocol)
    return None if m is None else (m[0].mean(0), m[1].mean(0))


# ============================================================================ summary
def scores_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame([{k: r[k] for k in SCORE_COLUMNS} for r in rows], columns=SCORE_COLUMNS)


def _decompose(dnd: tuple, base: tuple) -> dict[str, float]:
    """DnD - train_avg = validity part + accuracy-among-valid part (module doc), in points."""
    (cd, vd), (ct, vt) = dnd, base
    v_d, v_t = float(vd.mean()), float(vt.mean())
    c_d = float(cd.mean()) / v_d if v_d > 0 else 0.0
    c_t = float(ct.mean()) / v_t if v_t > 0 else 0.0
    return {"validity": 100 * (v_d - v_t) * c_t, "accuracy_valid": 100 * v_d * (c_d - c_t)}


def summarize(rows: list[dict], templates: list[str], folds: dict[str, list[str]], resamples: int,
              seed: int) -> dict[str, Any]:
    """metrics.json: `templates` and each template's `metrics`, from its own rows (module doc)."""
    out: dict[str, Any] = {"templates": list(templates)}
    for t in templates:
        out[t] = metrics([r for r in rows if r["template"] == t], folds, resamples, seed)
    return out


def metrics(rows: list[dict], folds: dict[str, list[str]], resamples: int, seed: int) -> dict[str, Any]:
    """The metrics of one template's rows (module doc)."""
    targets = [t for t in folds if any(r["target"] == t for r in rows)]
    methods = [m for m, _, _ in TABLE_METHODS]
    out: dict[str, Any] = {"targets": targets}
    for p in PROTOCOL_ORDER:
        for m in methods:
            per_t = [method_items(rows, t, m, p, folds[t]) for t in targets]
            if any(x is None for x in per_t) or not per_t:
                continue
            out[f"{p}/{m}/acc"] = float(np.mean([100 * c.mean() for c, _ in per_t]))
            out[f"{p}/{m}/invalid_rate"] = float(np.mean([100 * (1 - v.mean()) for _, v in per_t]))
            for t, (c, v) in zip(targets, per_t):
                out[f"{t}/{p}/{m}/acc"] = float(100 * c.mean())
                out[f"{t}/{p}/{m}/invalid_rate"] = float(100 * (1 - v.mean()))
            if p == "sampled":
                seeds = sorted({r["seed"] for r in rows if r["protocol"] == p})
                per_seed = []
                for s in seeds:
                    sub = [r for r in rows if r["seed"] == s or r["protocol"] != p]
                    xs = [method_items(sub, t, m, p, folds[t]) for t in targets]
                    per_seed.append(np.mean([100 * c.mean() for c, _ in xs]))
                out[f"{p}/{m}/acc_sd_seeds"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
        for subject, base in COMPARISONS:
            pairs = [(method_items(rows, t, subject, p, folds[t]), method_items(rows, t, base, p, folds[t]))
                     for t in targets]
            if not pairs or any(a is None or b is None for a, b in pairs):
                continue
            boots = []
            for t, (a, b) in zip(targets, pairs):
                diff = 100 * (a[0] - b[0])
                boots.append(paired_boot_means(diff, resamples, seed, t))
            key = f"{p}/{subject}_minus_{base}"
            out[f"{key}/acc"] = float(np.mean([100 * (a[0] - b[0]).mean() for a, b in pairs]))
            lo, hi = pooled_ci(boots)
            out[f"{key}/acc_ci_low"], out[f"{key}/acc_ci_high"] = float(lo), float(hi)
            parts = [_decompose(a, b) for a, b in pairs]
            for part in ("validity", "accuracy_valid"):
                out[f"{key}/{part}"] = float(np.mean([x[part] for x in parts]))
    out.update(empty_shares(rows))
    return out


def empty_shares(rows: list[dict]) -> dict[str, float]:
    """Of the invalid generations, the share (%) that are empty or whitespace: the model ended its
    turn before answering. Separately for the base model and for every adapter with a LoRA."""
    out = {}
    for p in PROTOCOL_ORDER:
        for who, keep in (("base", lambda m: m == "base"), ("lora", lambda m: m != "base")):
            invalid = empty = 0
            for r in rows:
                if r["protocol"] != p or not keep(r["method"]) or "outputs" not in r:
                    continue
                for text, valid in zip(r["outputs"], r["valid"]):
                    if not valid:
                        invalid += 1
                        empty += not str(text).strip()
            if invalid:
                out[f"{p}/{who}/empty_share_of_invalid"] = 100 * empty / invalid
    return out


# ============================================================================ report
def protocol_table(m: dict[str, Any]):
    import pandas as pd

    recs = []
    for key, title_, _ in TABLE_METHODS:
        if not any(f"{p}/{key}/acc" in m for p in PROTOCOL_ORDER):
            continue
        rec = {"Method": title_}
        for p in PROTOCOL_ORDER:
            acc, inv = m.get(f"{p}/{key}/acc"), m.get(f"{p}/{key}/invalid_rate")
            sd = m.get(f"{p}/{key}/acc_sd_seeds")
            rec[f"{PROTOCOL_TITLES[p]}: acc"] = number(acc) + (f" ± {sd:.1f}" if sd is not None else "")
            if p != "loglik":
                rec[f"{PROTOCOL_TITLES[p]}: invalid %"] = number(inv)
        recs.append(rec)
    return pd.DataFrame(recs)


def claim_verdict(m: dict[str, Any], p: str, gain: float | None) -> str:
    """dnd.stats.verdict on the paper's claim, DnD minus the training-LoRA average = `gain` points
    (None: above 0), under protocol `p` of one template's metrics `m`: "not testable here" when
    every method compared (base, training LoRAs, DnD, oracle) is at 0% or at 100%, or the oracle's
    paired CI over the training-LoRA average (`{p}/oracle_minus_train_avg`, the headroom) is not
    above 0; a verdict on DnD is drawn only where the oracle beats the training-LoRA average."""
    key, head = f"{p}/dnd_minus_train_avg", f"{p}/oracle_minus_train_avg"
    accs = [m[f"{p}/{k}/acc"] / 100 for k in ("base", "train_avg", "dnd", "oracle") if f"{p}/{k}/acc" in m]
    oracle_ci = (m[f"{head}/acc_ci_low"], m[f"{head}/acc_ci_high"]) if f"{head}/acc" in m else (None, None)
    return verdict(m[f"{key}/acc_ci_low"], m[f"{key}/acc_ci_high"], gain, untestable_reason(accs, oracle_ci))


def _ci_text(m: dict[str, Any], key: str) -> str:
    """`{key}/acc` with its paired 95% CI, e.g. "+3.1 [+0.4, +5.9]"; "n/a" when absent."""
    if f"{key}/acc" not in m:
        return "n/a"
    return f"{m[f'{key}/acc']:+.1f} [{m[f'{key}/acc_ci_low']:+.1f}, {m[f'{key}/acc_ci_high']:+.1f}]"


def headroom_line(m: dict[str, Any], p: str) -> str:
    """The headroom under protocol `p` of one template: the oracle (the target's own LoRA) minus the
    training-LoRA average with its paired 95% CI, in words, and whether DnD's verdict is drawn."""
    head = f"{p}/oracle_minus_train_avg"
    if f"{head}/acc" not in m:
        return "no oracle or training-LoRA rows: no headroom measured, DnD's claim is not testable here"
    lo, hi = m[f"{head}/acc_ci_low"], m[f"{head}/acc_ci_high"]
    has_room = untestable_reason(None, (lo, hi)) is None
    return (f"the oracle minus the training-LoRA average {m[f'{head}/acc']:+.1f} points (95% CI [{lo:+.1f}, "
            f"{hi:+.1f}]): {relation(lo, hi, 'the oracle', 'the training-LoRA average')}; "
            + ("DnD's verdict is drawn" if has_room else "no headroom, DnD's claim is not testable here"))


def conclusion(m: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    """Plain words on one template, every number read from its metrics `m`: per protocol, DnD
    against the training-LoRA average (dnd.stats.relation), the headroom (`headroom_line`) and the
    verdict on the paper's claim (`claim_verdict`)."""
    gain = (paper or {}).get("common_sense", {}).get("average_gain")
    lines = []
    for p in PROTOCOL_ORDER:
        key = f"{p}/dnd_minus_train_avg"
        if f"{key}/acc" not in m:
            continue
        d, lo, hi = m[f"{key}/acc"], m[f"{key}/acc_ci_low"], m[f"{key}/acc_ci_high"]
        inv_d, inv_t = m.get(f"{p}/dnd/invalid_rate"), m.get(f"{p}/train_avg/invalid_rate")
        s = (f"- **{PROTOCOL_TITLES[p]}**: {relation(lo, hi, 'DnD', 'the training-LoRA average')}: {d:+.1f} points "
             f"(95% CI [{lo:+.1f}, {hi:+.1f}])")
        if p != "loglik":
            s += (f"; invalid outputs {number(inv_d)}% for DnD against {number(inv_t)}% for the training LoRAs, and "
                  f"of the difference {m[f'{key}/validity']:+.1f} points come from the invalid-output rate, "
                  f"{m[f'{key}/accuracy_valid']:+.1f} from accuracy among valid answers")
        claim = f"{float(gain):+.1f} points" if gain is not None else "above 0"
        lines += [s + ".", f"  - Headroom: {headroom_line(m, p)}.",
                  f"  - Verdict on the paper's claim, DnD minus the training-LoRA average {claim}: "
                  f"**{claim_verdict(m, p, None if gain is None else float(gain))}**."]
    for p in PROTOCOL_ORDER:
        lora, base = m.get(f"{p}/lora/empty_share_of_invalid"), m.get(f"{p}/base/empty_share_of_invalid")
        if lora is not None:
            lines.append(f"- Invalid outputs, {PROTOCOL_TITLES[p].lower()}: {lora:.0f}% of those of the adapters with "
                         "a LoRA are empty (the model ends its turn before answering)"
                         + (f", {base:.0f}% of the base model's." if base is not None else "."))
    for p in PROTOCOL_ORDER:
        key = f"{p}/dnd_testcond_minus_dnd"
        if f"{key}/acc" in m:
            lines.append(f"- Conditioning on the test prompts (the authors' code) instead of the unlabeled pool, "
                         f"{PROTOCOL_TITLES[p].lower()}: {m[f'{key}/acc']:+.1f} points (95% CI "
                         f"[{m[f'{key}/acc_ci_low']:+.1f}, {m[f'{key}/acc_ci_high']:+.1f}]; "
                         f"{number(m[f'{p}/dnd_testcond/acc'])} vs {number(m[f'{p}/dnd/acc'])}).")
    for p in PROTOCOL_ORDER:
        parts = [f"{name} {_ci_text(m, f'{p}/dnd_minus_{b}')}"
                 for b, name in (("soup", "soup"), ("nearest", "nearest"), ("control_other", "other prompts"),
                                 ("control_random", "random text"), ("control_shuffled", "shuffled words"))
                 if f"{p}/dnd_minus_{b}/acc" in m]
        if parts:
            lines.append(f"- DnD minus the other baselines and controls, {PROTOCOL_TITLES[p].lower()} (points, "
                         f"95% CI): {'; '.join(parts)}.")
    return lines


def verdict_table(mt: dict[str, Any], paper: dict[str, Any]):
    """One row per template and protocol: the headroom (oracle minus the training-LoRA average),
    DnD minus the training-LoRA average (points, paired 95% CI) and the verdict on the paper's
    claim (`claim_verdict`: "not testable here" where the oracle has no headroom)."""
    import pandas as pd

    gain = (paper or {}).get("common_sense", {}).get("average_gain")
    recs = []
    for t in mt["templates"]:
        m = mt[t]
        for p in PROTOCOL_ORDER:
            if f"{p}/dnd_minus_train_avg/acc" not in m:
                continue
            recs.append({"Template": f"`{t}`", "Scoring": PROTOCOL_TITLES[p],
                         "Oracle − training LoRAs (headroom)": _ci_text(m, f"{p}/oracle_minus_train_avg"),
                         "DnD − training LoRAs": _ci_text(m, f"{p}/dnd_minus_train_avg"),
                         "Verdict": claim_verdict(m, p, None if gain is None else float(gain))})
    return pd.DataFrame(recs)


def per_target_table(m: dict[str, Any]):
    """Accuracy / invalid outputs (%) of the training LoRAs (avg) and DnD per target and protocol."""
    import pandas as pd

    from dnd.benchmarks.datasets import title

    recs = []
    for t in m.get("targets", []):
        rec = {"Target": title(t)}
        for p in PROTOCOL_ORDER:
            for key, name in (("train_avg", "train avg"), ("dnd", "DnD")):
                acc, inv = m.get(f"{t}/{p}/{key}/acc"), m.get(f"{t}/{p}/{key}/invalid_rate")
                rec[f"{PROTOCOL_TITLES[p]}: {name}"] = number(acc) + ("" if p == "loglik" else f" / {number(inv)}")
        recs.append(rec)
    return pd.DataFrame(recs)


def paper_rows(paper: dict[str, Any], targets: list[str]):
    import pandas as pd

    from dnd.benchmarks.datasets import title

    per = (paper or {}).get("common_sense", {}).get("per_dataset", {}) or {}
    recs = [{"Target": title(t), "Paper: training LoRAs": number(v.get("train_avg")),
             "Paper: DnD": number(v.get("dnd"))}
            for t, v in per.items() if t in targets]
    return pd.DataFrame(recs)


def protocol_figure(mt: dict[str, Any], out: Path) -> None:
    """Accuracy and invalid outputs per method and protocol, one row of panels per template."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from dnd.reporting.figures import DATASET_COLORS, apply_style, legend_below, save_png

    apply_style()
    palette = {PROTOCOL_TITLES[p]: DATASET_COLORS[i % len(DATASET_COLORS)] for i, p in enumerate(PROTOCOL_ORDER)}
    templates = mt["templates"]
    fig, axes = plt.subplots(len(templates), 2, figsize=(13, 5.5 * len(templates)), sharey=True, squeeze=False)
    for row, t in zip(axes, templates):
        m = mt[t]
        df = pd.DataFrame([{"method": title_, "protocol": PROTOCOL_TITLES[p], "accuracy (%)": m[f"{p}/{key}/acc"],
                            "invalid outputs (%)": m[f"{p}/{key}/invalid_rate"]}
                           for key, title_, _ in TABLE_METHODS for p in PROTOCOL_ORDER if f"{p}/{key}/acc" in m])
        for ax, col in zip(row, ("accuracy (%)", "invalid outputs (%)")):
            sns.barplot(data=df, y="method", x=col, hue="protocol", ax=ax, orient="h", palette=palette)
            ax.set_ylabel("")
            ax.set_title(f"template `{t}`: {col}")
            handles, labels = ax.get_legend_handles_labels()
            ax.get_legend().remove()
    fig.suptitle("The paper's protocol: accuracy and invalid outputs per method (mean over targets), per test-time "
                 "template")
    fig.tight_layout()
    legend_below(fig, handles, labels)  # one legend, under the panels
    save_png(fig, out)


def protocol_markdown(mt: dict[str, Any], params: dict[str, Any], paper: dict[str, Any], figure_rel: str,
                      timing: tuple[float, float, int] | None = None) -> str:
    """The report: the set-up, the headroom and verdict of every template and protocol, then each
    template's table and reading (`mt`: metrics.json, `summarize`)."""
    from dnd.benchmarks.datasets import title

    templates = list(mt["templates"])
    pc = params.get("protocol", {})
    s = pc.get("sampling", {})
    n_items = pc.get("n_test")
    targets = mt[templates[0]].get("targets", []) if templates else []
    md_lines = ["# The paper's protocol, side by side", "",
                "## Protocol", "",
                f"Every method scored three ways on the same first {n_items} test items of each target "
                f"({', '.join(title(t) for t in targets)}), with a zoo trained on the paper's answer "
                "format (bracketed letters or [True]/[False] after a system message, ChatML), generators and adapters "
                f"made as in the default run (design `{pc.get('design') or lookup_design(params)}`): *log-likelihood* "
                "over the bracketed answers (every answer valid), *greedy* generation and the authors' *sampling* "
                f"(temperature {s.get('temperature')}, top-p {s.get('top_p')}, top-k {s.get('top_k')}; seeds "
                f"{pc.get('seeds')}, mean ± sd over seeds), generations parsed by a reimplementation of the authors' "
                "parser (first 20 characters; anything it rejects is invalid and wrong). Each test-time template "
                "scores the same zoo and adapters on the same items: "
                + "; ".join(f"`{t}`: {TEMPLATE_NOTES.get(t, t)}" for t in templates)
                + ". Accuracy and invalid outputs in %, mean over targets.", "",
                "**Headroom and verdicts.** The paper's claim, DnD above the training-LoRA average, can only show "
                "where the oracle (the target's own LoRA) beats the training-LoRA average: a verdict is drawn only "
                "where the oracle's paired 95% CI over the training-LoRA average lies above 0; elsewhere it is "
                "*not testable here* (points, paired 95% CI over items):", "",
                md_table(verdict_table(mt, paper)), ""]
    for t in templates:
        m = mt[t]
        md_lines += [f"### Template `{t}`", "", f"{TEMPLATE_NOTES.get(t, t)}.", "",
                     md_table(protocol_table(m)), "",
                     "† chosen with the target's test labels (not zero-shot). ‡ the target's own LoRA.", "",
                     "**Where the difference comes from.**", "", *conclusion(m, paper), "",
                     "Per target: accuracy / invalid outputs (%) of the training LoRAs (avg) and of DnD (unlabeled "
                     "pool):", "", md_table(per_target_table(m)), ""]
    gain = (paper or {}).get("common_sense", {}).get("average_gain")
    if gain is not None:
        md_lines += [f"The paper reports +{gain} points over the training-LoRA average (Qwen2.5-0.5B, sampled "
                     "answers, their parser).", ""]
    md_lines += [f"Budget: {n_items} test items per target, scored once per template ({len(templates)}); every method "
                 f"is sampled with every seed ({len(pc.get('seeds') or [])}), each prompt computed once for its greedy "
                 "answer and all samples (dnd.scoring.lm_generate); the zoo, generators and adapters are made once for "
                 "every template; "
                 + (f"the protocol's {timing[2]} jobs (its own zoo included) took {timing[0]:.0f} min of wall time in "
                    f"total and {timing[1]:.0f} min of CPU time (Snakemake benchmarks; on 2 cores, wall time is "
                    "inflated when other work shares them)." if timing
                    else "no benchmark files were found for its jobs."),
                 ""]
    pr = paper_rows(paper, targets)
    if not pr.empty:
        md_lines += ["The paper's numbers (Qwen2.5-0.5B, sampled + parser) for the targets it states:", "",
                     md_table(pr), ""]
    md_lines += [f"![Protocol]({figure_rel})", ""]
    return "\n".join(md_lines)


def lookup_design(params: dict[str, Any]) -> str:
    return (params.get("generator") or {}).get("design", "n/a")


# ============================================================================ CLI
def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help='JSON: {"templates": [...], "folds": {target: [sources]}, "bootstrap": int, "seed": int}')
    p.add_argument("--eval", nargs="+", required=True, type=Path)
    p.add_argument("--scores", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)


def template_rows(rows: list[dict], templates: list[str]) -> dict[str, list[dict]]:
    """{template: its rows} for every template of `templates`; a row without a template (an
    evaluation file from before protocol.templates) or of another template is a one-line error."""
    from dnd.summary import IncompleteInputError

    if not templates:
        raise ValueError("--params must list 'templates' (protocol.templates)")
    untagged = sorted({r["target"] for r in rows if "template" not in r})
    if untagged:
        raise IncompleteInputError(f"evaluation rows without a template (targets {untagged}): written before "
                                   "protocol.templates; rerun evaluate-protocol")
    other = sorted({r["template"] for r in rows} - set(templates))
    if other:
        raise IncompleteInputError(f"rows of template(s) {other}, which are not among the templates {templates}")
    return {t: [r for r in rows if r["template"] == t] for t in templates}


def _run_summary(args: argparse.Namespace) -> None:
    from dnd.config import parse_params
    from dnd.summary import eval_cell, read_eval_files, require_complete

    params = parse_params(args.params)
    templates = list(params.get("templates") or [])
    rows = read_eval_files(args.eval)
    # per template: every fold's target with every method under every protocol (and seed), and per
    # protocol the same items
    for t, trows in template_rows(rows, templates).items():
        require_complete(trows, params["folds"], sources=params["folds"],
                         cell=lambda r: (*eval_cell(r), r["protocol"], r["seed"]),
                         group=lambda r: (r["target"], r["protocol"]),
                         axes=lambda r: (eval_cell(r), (r["protocol"], r["seed"])), where=f"template {t}")
    df = scores_frame(rows)
    with atomic_path(args.scores) as tmp:
        df.to_csv(tmp, index=False)
    m = summarize(rows, templates, params["folds"], int(params.get("bootstrap", 2000)), int(params.get("seed", 0)))
    write_json(args.metrics, m)
    log.info("wrote %s (%d rows) and %s", args.scores, len(df), args.metrics)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="JSON: the run's config")
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--paper-numbers", type=Path, default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figure", required=True, type=Path)
    add_declared_option(p, "--benchmarks", "the protocol's jobs' benchmark files (benchmarks/protocol/...: job times)",
                        required=False)


def _run_report(args: argparse.Namespace) -> None:
    from dnd.config import parse_params
    from dnd.reporting.tables import benchmark_minutes

    params = parse_params(args.params)
    m = json.loads(args.metrics.read_text())
    if not m.get("templates") or any(t not in m for t in m["templates"]):
        raise ValueError(f"{args.metrics} has no metrics per template (written before protocol.templates): "
                         "rerun protocol-summary")
    paper = read_paper_numbers(args.paper_numbers)  # no file: no paper rows (it used to crash)
    protocol_figure(m, args.figure)
    write_report(args.out, protocol_markdown(m, params, paper, figure_link(args.figure, args.out),
                                             benchmark_minutes(args.benchmarks)), args.figure)


COMMANDS = {"protocol-summary": (_add_summary, _run_summary), "protocol-report": (_add_report, _run_report)}
