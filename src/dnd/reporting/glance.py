"""Results at a glance: one table, one row per experiment (and per claim where an experiment tests
several), rendered from the committed results files, never typed by hand.

  dnd glance --results results --out results/glance.md [--readme README.md] [--check]

Each row is the experiment's own headline, read from its metrics file with the function its report
uses for the same number (dnd.reporting.tables.claim_verdict for the default run,
dnd.experiments.protocol.report.claim_verdict, ...crossdomain.report.comparisons and
floor_or_ceiling, ...fewshot.report._ci and _verdict, ...ablations.report._comparisons,
...seeds.report.claim_verdict): no number is computed here in a way its report does not. Columns:
the experiment (linked to its report.md), the comparison, the paper's number for it
(config/paper_numbers.yaml; "-" where the paper states none), ours with its paired 95% CI in the
reports' one CI format (dnd.reporting.format.ci), n (test items x targets), the generator design
that made DnD's numbers in that run (the design its report names from the run's parameters, "not
recorded" where the report names none), the verdict word (dnd.stats.VERDICTS only, via
dnd.stats.verdict / verdict_word; "-" where the row tests no claim of the paper) and the runtime
(results/bench.csv for the default run; "-" elsewhere: the extra experiments' Snakemake
benchmarks are not committed, their reports state their budgets).

An experiment whose metrics file is missing gets a row "not run yet" with its Snakemake command.
`--readme` rewrites the README's block between GLANCE_BEGIN and GLANCE_END; `--check` rewrites
nothing and exits 1 naming the first row that differs when the block is stale.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dnd.reporting.format import ci, md_table, number, pct, signed

log = logging.getLogger(__name__)

GLANCE_BEGIN = "<!-- glance:begin -->"
GLANCE_END = "<!-- glance:end -->"
COLUMNS = ["Experiment", "Comparison", "Paper", "Ours (95% CI)", "n (items × targets)", "Generator", "Verdict",
           "Runtime"]
NOT_RUN = "not run yet"
NOT_RECORDED = "not recorded"
_DESIGN = re.compile(r"design `([A-Za-z0-9_]+)`")
PAPER_FILE = Path("config/paper_numbers.yaml")


@dataclass
class Row:
    experiment: str
    report: Path | None  # the report.md the experiment cell links to (None: not run)
    comparison: str = "-"
    paper: str = "-"
    ours: str = "n/a"
    n: str = "n/a"
    generator: str = NOT_RECORDED
    verdict: str = "-"
    runtime: str = "-"

    def cells(self, base: Path) -> list[str]:
        name = (f"[{self.experiment}]({Path(os.path.relpath(self.report, base)).as_posix()})"
                if self.report is not None else self.experiment)
        return [name, self.comparison, self.paper, self.ours, self.n, self.generator, self.verdict, self.runtime]


# ------------------------------------------------------------------------------------ helpers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable metrics file ({exc})") from exc


def _word(text: str) -> str:
    """The VERDICTS word of a verdict text (dnd.stats.verdict_word); a text without one is a bug."""
    from dnd.stats import verdict_word

    w = verdict_word(text)
    if w is None:
        raise ValueError(f"not a verdict of dnd.stats.VERDICTS: {text!r}")
    return w


def report_design(report: Path) -> str:
    """The generator design a report names first (`design \\`x\\``, written from the run's
    parameters), or NOT_RECORDED when it names none."""
    if not report.is_file():
        return NOT_RECORDED
    m = _DESIGN.search(report.read_text())
    return f"`{m.group(1)}`" if m else NOT_RECORDED


def _n(items: Any, targets: int) -> str:
    """"items × targets"; `items` a count, a text ("300/200" where targets differ) or None (n/a)."""
    shown = number(items, 0) if number(items) != "n/a" else (items if isinstance(items, str) and items else "n/a")
    return f"{shown} × {targets}"


def _items_n(m: dict[str, Any], targets: list[str]) -> str:
    """_n from a metrics file's per-target item counts (`{target}/n`): the one count, or the counts
    joined with "/" where targets differ."""
    items = sorted({m[f"{t}/n"] for t in targets if m.get(f"{t}/n") is not None})
    return _n("/".join(map(str, items)) if len(items) > 1 else (items[0] if items else None), len(targets))


def _csv_n(path: Path) -> Any:
    """The one item count (`n` column) of a scores CSV, or None (no file, no column, several counts)."""
    import csv

    if not path.is_file():
        return None
    ns = {r["n"] for r in csv.DictReader(path.read_text().splitlines()) if r.get("n")}
    return ns.pop() if len(ns) == 1 else None


def _bench_runtime(results: Path) -> str:
    """The default run's job time (results/bench.csv, its `total` row), or "-"."""
    import csv

    p = results / "bench.csv"
    if not p.is_file():
        return "-"
    for r in csv.DictReader(p.read_text().splitlines()):
        if r.get("stage") == "total" and number(r.get("job_s_total")) != "n/a":
            return f"{float(r['job_s_total']) / 60:.0f} min ({r.get('jobs')} jobs)"
    return "-"


def _paper_gain(paper: dict[str, Any]) -> Any:
    """The paper's average gain on the common-sense targets (config/paper_numbers.yaml), or None."""
    from dnd.reporting.tables import lookup

    return lookup(paper, "common_sense.average_gain")


# ------------------------------------------------------------------------- experiment headlines
def default_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """The default run: DnD minus the training-LoRA average over targets (the main table's Mean
    row, metrics.json) and the verdict of the paper table's "Average gain" row."""
    from dnd.reporting.tables import claim_verdict
    from dnd.summary import MEAN_TARGET

    m = _read_json(results / "metrics.json")
    gain = _paper_gain(paper)
    key = f"{MEAN_TARGET}/dnd_minus_train_avg"
    targets = [k[: -len("/n")] for k in m if k.endswith("/n") and not k.startswith(f"{MEAN_TARGET}/")]
    return [Row("default run", results / "report.md", "DnD − training LoRAs (avg), mean over targets",
                signed(gain) if gain is not None else "-",
                ci(pct(m.get(key)), pct(m.get(f"{key}_ci_low")), pct(m.get(f"{key}_ci_high"))),
                _items_n(m, targets),
                report_design(results / "report.md"),
                _word(claim_verdict(m, MEAN_TARGET, None if gain is None else float(gain))),
                _bench_runtime(results))]


def protocol_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """The paper's protocol: DnD minus the training-LoRA average under sampled generation + the
    authors' parser (the paper's own protocol), first template; its report's claim_verdict."""
    from dnd.experiments.protocol.report import claim_verdict

    folder = results / "protocol"
    mt = _read_json(folder / "metrics.json")
    m = mt[mt["templates"][0]] if "templates" in mt else mt  # a single-template file is flat
    gain = _paper_gain(paper)
    key = "sampled/dnd_minus_train_avg"
    items = _csv_n(folder / "scores.csv")
    return [Row("protocol", folder / "report.md", "DnD − training LoRAs (avg), sampled + parser, mean over targets",
                signed(gain) if gain is not None else "-",
                ci(m.get(f"{key}/acc"), m.get(f"{key}/acc_ci_low"), m.get(f"{key}/acc_ci_high")),
                _n(items, len(m.get("targets") or mt.get("targets") or [])), report_design(folder / "report.md"),
                _word(claim_verdict(m, "sampled", None if gain is None else float(gain))))]


def _domain_row(name: str, folder: Path, target: str, label: str, paper_row: dict[str, Any] | None) -> Row:
    """One target of a cross-domain / math / code run: DnD minus the training-LoRA average and the
    verdict its report's paper_claim draws (dnd.stats.verdict with floor_or_ceiling)."""
    import pandas as pd

    from dnd.experiments.crossdomain.report import comparisons, floor_or_ceiling, method_rows
    from dnd.stats import verdict

    m = _read_json(folder / "metrics.json")
    main = next((c for c in comparisons(m, target) if c["baseline"] == "train_avg"), None)
    row = Row(name, folder / "report.md", f"DnD − training LoRAs (avg), {label}", n=_n(m.get(f"{target}/n"), 1),
              generator=report_design(folder / "report.md"))
    if main is None:
        return row
    row.ours = ci(main["acc"], main["acc_ci_low"], main["acc_ci_high"])
    if paper_row:
        claim = paper_row["dnd"] - paper_row["train_avg"]
        row.paper = signed(claim)
        scores = pd.read_csv(folder / "scores.csv") if (folder / "scores.csv").is_file() else None
        untestable = floor_or_ceiling(method_rows(scores, m, target)) if scores is not None else None
        row.verdict = _word(verdict(main["acc_ci_low"], main["acc_ci_high"], claim, untestable))
    return row


def crossdomain_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    from dnd.experiments.crossdomain.report import paper_numbers
    from dnd.summary import MEAN_TARGET

    folder = results / "crossdomain"
    m = _read_json(folder / "metrics.json")
    targets = sorted({k.split("/", 1)[0] for k in m if "/" in k} - {MEAN_TARGET})
    return [_domain_row("crossdomain", folder, t, t, paper_numbers(paper)) for t in targets]


def mathcode_rows(domain: str) -> Callable[[Path, dict[str, Any]], list[Row]]:
    def rows(results: Path, paper: dict[str, Any]) -> list[Row]:
        """The target the paper states a number for (GSM8K, HumanEval): its report's headline."""
        from dnd.experiments.mathcode.report import PAPER_TASK, TITLES, paper_row

        folder = results / domain
        m = _read_json(folder / "metrics.json")
        targets = [t for t in PAPER_TASK if f"{t}/n" in m]
        return [_domain_row(domain, folder, t, f"{TITLES.get(t, t)} `{m.get(f'{t}/metric', '')}`",
                            paper_row(paper, t)) for t in targets]
    return rows


def fewshot_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """DnD minus few-shot tuning and minus in-context learning at the largest k scored on every
    target, pooled over targets (the report's pooled table and its _verdict: the paper states a
    direction, no size)."""
    from dnd.experiments.fewshot.report import FT, ICL, TITLES, _ci, _verdict

    folder = results / "fewshot"
    m = _read_json(folder / "metrics.json")
    targets = m.get("targets") or []
    out = []
    for method in (FT, ICL):
        full = [int(k[len(f"mean/dnd_minus_{method}_k"): -len("/targets")]) for k, v in m.items()
                if k.startswith(f"mean/dnd_minus_{method}_k") and k.endswith("/targets") and v == len(targets)]
        if not full:
            continue
        key = f"mean/dnd_minus_{method}_k{max(full)}"
        out.append(Row(f"fewshot ({TITLES[method].lower()})", folder / "report.md",
                       f"DnD − {TITLES[method].lower()} at k = {max(full)}, mean over targets",
                       "-", _ci(m, key), _items_n(m, targets),
                       report_design(folder / "report.md"), _word(_verdict(m, key))))
    return out


def _word_counts(words: list[str]) -> str:
    """The one verdict word of several comparisons, or each word with its count ("level (2 of 3), ...")."""
    from dnd.stats import VERDICTS

    found = [w for w in VERDICTS if w in words]
    return found[0] if len(found) == 1 else ", ".join(f"{w} ({words.count(w)} of {len(words)})" for w in found)


def ablations_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """Each family: DnD of the paper's preferred setting minus DnD of each other setting, pooled
    over targets (the comparisons its report's family_verdict reads), with the verdict word of each
    and its count where the settings disagree."""
    from dnd.experiments.ablations.report import FAMILIES, _comparisons, _sources
    from dnd.stats import verdict

    folder = results / "ablations"
    out = []
    for family in FAMILIES:
        p = folder / f"{family}.json"
        if not p.is_file():
            continue
        m = _read_json(p)
        ref = m.get("reference")
        comps = _comparisons(m) if ref is not None else []
        words = [_word(verdict(m[f"{k}_ci_low"], m[f"{k}_ci_high"])) for k, _ in comps]
        label = _sources(str(ref)) if family == "sources" and ref is not None else ref
        word = _word_counts(words)
        what = f"DnD ({label}) − DnD (each other setting), mean over targets" if ref else "no reference setting"
        out.append(Row(f"ablations: {family}", folder / "report.md", what,
                       "-", "; ".join(f"{lbl}: {ci(m[k], m[f'{k}_ci_low'], m[f'{k}_ci_high'])}" for k, lbl in comps)
                       or "n/a", _n(_csv_n(p.with_suffix(".csv")), len(m.get("targets") or [])),
                       report_design(folder / "report.md"),
                       word or "-"))
    return out


def zoo_probe_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """The oracle's lead, longer-trained zoo minus default, over the probe datasets: the probe's own
    question, not a claim of the paper (no verdict word; no DnD generator is involved)."""
    folder = results / "zoo_probe"
    m = _read_json(folder / "metrics.json")
    key = "mean/lead_change/acc"
    return [Row("zoo_probe", folder / "report.md", "oracle's lead over training LoRAs, longer − default zoo", "-",
                ci(pct(m.get(key)), pct(m.get(f"{key}_ci_low")), pct(m.get(f"{key}_ci_high"))),
                _n(m.get("mean/n"), len(m.get("datasets") or [])), "none (no generator)", "-")]


def seeds_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """DnD minus the training-LoRA average over targets with the two-level (seeds, items) CI and
    its report's claim_verdict."""
    from dnd.experiments.seeds.report import _pts, claim_verdict
    from dnd.summary import MEAN_TARGET

    folder = results / "seeds"
    m = _read_json(folder / "metrics.json")
    gain = _paper_gain(paper)
    key = f"{MEAN_TARGET}/dnd_minus_train_avg/acc"
    return [Row("seeds", folder / "report.md", "DnD − training LoRAs (avg) over training seeds, mean over targets",
                signed(gain) if gain is not None else "-",
                ci(_pts(m, key), _pts(m, f"{key}_ci_low"), _pts(m, f"{key}_ci_high")),
                _items_n(m, m.get("targets") or []), report_design(folder / "report.md"),
                _word(claim_verdict(m, None if gain is None else float(gain))))]


def function_space_rows(results: Path, paper: dict[str, Any]) -> list[Row]:
    """Each subject of the experiment (the default run's DnD, every new generator, the multi-task
    LoRA) minus the nearest source over targets, with the verdicts its metrics store
    (`mean/{subject}_minus_nearest/verdict`: dnd.stats.verdict, not testable where no adapter trained
    on the targets' labels beats nearest) and the generator families it trains."""
    from dnd.summary import MEAN_TARGET, MULTITASK

    folder = results / "function_space"
    m = _read_json(folder / "metrics.json")
    generators = m.get("generators") or {}
    parts, words = [], []
    for s in ("dnd", *generators, MULTITASK):
        key = f"{MEAN_TARGET}/{s}_minus_nearest/acc"
        if m.get(key) is None:
            continue
        parts.append(f"{s}: {ci(pct(m[key]), pct(m.get(f'{key}_ci_low')), pct(m.get(f'{key}_ci_high')))}")
        words.append(_word(m.get(f"{MEAN_TARGET}/{s}_minus_nearest/verdict") or "not told apart: no CI"))
    designs = sorted({"hyperconv", *(str(g.get("design", "hyperconv")) for g in generators.values())})
    return [Row("function_space", folder / "report.md", "each generator (and the multi-task LoRA) − nearest source, "
                "mean over targets", "-", "; ".join(parts) or "n/a", _items_n(m, list(m.get("targets") or [])),
                ", ".join(f"`{d}`" for d in designs), _word_counts(words) if words else "-")]


@dataclass(frozen=True)
class Experiment:
    name: str
    metrics: str  # its metrics file (or glob), relative to the results folder
    target: str  # its Snakemake target
    rows: Callable[[Path, dict[str, Any]], list[Row]]


EXPERIMENTS = (
    Experiment("default run", "metrics.json", "all", default_rows),
    Experiment("protocol", "protocol/metrics.json", "protocol", protocol_rows),
    Experiment("crossdomain", "crossdomain/metrics.json", "crossdomain", crossdomain_rows),
    Experiment("fewshot", "fewshot/metrics.json", "fewshot", fewshot_rows),
    Experiment("ablations", "ablations/*.json", "ablations", ablations_rows),
    Experiment("math", "math/metrics.json", "math", mathcode_rows("math")),
    Experiment("code", "code/metrics.json", "code", mathcode_rows("code")),
    Experiment("zoo_probe", "zoo_probe/metrics.json", "zoo_probe", zoo_probe_rows),
    Experiment("seeds", "seeds/metrics.json", "seeds", seeds_rows),
    Experiment("function_space", "function_space/metrics.json", "function_space", function_space_rows),
)


def metrics_files(results: Path | str) -> list[Path]:
    """Every experiment's metrics file that exists under `results` (the glance's inputs)."""
    results = Path(results)
    return [p for e in EXPERIMENTS for p in sorted(results.glob(e.metrics))]


def input_files(results: Path | str = "results", exclude: tuple[str, ...] = ()) -> list[str]:
    """Every file the glance reads that exists under `results` now (the Snakemake rule's inputs):
    each experiment's metrics file(s), and beside it the report.md (the generator design) and the
    scores.csv (the floor/ceiling check) where they exist; `exclude` (as strings) left out.
    results/bench.csv is read but not listed: it is `bench`'s output, outside `all`."""
    files = []
    for p in metrics_files(results):
        beside = (p.parent / "report.md", p.parent / "scores.csv", p.with_suffix(".csv"))
        files += [p, *(q for q in beside if q.is_file())]
    out = list(dict.fromkeys(p.as_posix() for p in files))
    return [f for f in out if f not in exclude]


def glance_rows(results: Path | str, paper: dict[str, Any]) -> list[Row]:
    results = Path(results)
    out: list[Row] = []
    for e in EXPERIMENTS:
        rows = e.rows(results, paper) if any(results.glob(e.metrics)) else []
        out += rows or [Row(e.name, None, ours=f"{NOT_RUN}: `snakemake --cores all {e.target}`", n="-",
                            generator="-")]
    return out


def render(results: Path | str, paper: dict[str, Any], base: Path | str) -> str:
    """The glance table (Markdown, with its legend), links relative to the folder `base` of the
    file it goes into."""
    import pandas as pd

    rows = glance_rows(results, paper)
    df = pd.DataFrame([r.cells(Path(base)) for r in rows], columns=COLUMNS)
    return "\n".join([
        md_table(df), "",
        "Generated by `python -m dnd.cli glance` from the committed results files (`results/glance.md`; "
        "do not edit by hand). *Ours*: the experiment's headline difference in points with its paired 95% CI, "
        "as its report gives it; *Paper*: the paper's number for the same difference (config/paper_numbers.yaml; "
        "- where it states none); *Verdict*: the README's verdict words (`dnd.stats.verdict`), - where the row "
        "tests no claim of the paper; *Generator*: the design its report names (`hyperconv`: the paper's "
        "decoder; `basis`: the source-basis mixer, ours); *Runtime*: job time from `results/bench.csv` "
        "(the extra experiments' reports state their own budgets).",
    ]) + "\n"


# --------------------------------------------------------------------------------- README block
def replace_block(text: str, block: str, where: str = "README") -> str:
    """`text` with the part between GLANCE_BEGIN and GLANCE_END replaced by `block`."""
    i, j = text.find(GLANCE_BEGIN), text.find(GLANCE_END)
    if i < 0 or j < i:
        raise ValueError(f"{where}: no {GLANCE_BEGIN} ... {GLANCE_END} block")
    return text[: i + len(GLANCE_BEGIN)] + "\n" + block + text[j:]


def current_block(text: str, where: str = "README") -> str:
    i, j = text.find(GLANCE_BEGIN), text.find(GLANCE_END)
    if i < 0 or j < i:
        raise ValueError(f"{where}: no {GLANCE_BEGIN} ... {GLANCE_END} block")
    return text[i + len(GLANCE_BEGIN): j].lstrip("\n")


def first_difference(old: str, new: str) -> str | None:
    """None when the blocks are equal, else the first line of `new` that differs (or is missing)."""
    if old.strip() == new.strip():
        return None
    a, b = old.strip().splitlines(), new.strip().splitlines()
    for x, y in zip(a, b):
        if x.rstrip() != y.rstrip():
            return " ".join(y.split())
    return " ".join((b[len(a)] if len(b) > len(a) else a[len(b)]).split())


# ------------------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=Path("results"), help="the results folder")
    p.add_argument("--paper-numbers", type=Path, default=PAPER_FILE)
    p.add_argument("--out", type=Path, default=None, help="write the table here (results/glance.md)")
    p.add_argument("--readme", type=Path, default=None,
                   help=f"rewrite this file's block between {GLANCE_BEGIN} and {GLANCE_END}")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 naming the first differing row when the README block is stale")


def run(args: argparse.Namespace) -> None:
    from dnd.io import write_text
    from dnd.reporting.output import read_paper_numbers

    if not args.results.is_dir():
        raise ValueError(f"--results {args.results}: no such folder")
    paper = read_paper_numbers(args.paper_numbers)
    if args.check:
        if args.readme is None:
            raise ValueError("--check needs --readme")
        text = args.readme.read_text()
        diff = first_difference(current_block(text, str(args.readme)),
                                render(args.results, paper, args.readme.parent))
        if diff is not None:
            cells = [c.strip() for c in diff.strip("|").split("|")] if diff.startswith("|") else [diff]
            log.error("%s: the glance block is stale; first row that differs: %s (rerun `python -m dnd.cli "
                      "glance --results %s --readme %s`)", args.readme, " | ".join(cells[:2])[:200], args.results,
                      args.readme)
            raise SystemExit(1)
        log.info("%s: the glance block is up to date", args.readme)
        return
    if args.out is not None:
        write_text(args.out, render(args.results, paper, args.out.parent))
        log.info("wrote %s", args.out)
    if args.readme is not None:
        text = args.readme.read_text()
        write_text(args.readme, replace_block(text, render(args.results, paper, args.readme.parent),
                                              str(args.readme)))
        log.info("rewrote the glance block of %s", args.readme)


COMMANDS = {"glance": (add_arguments, run)}
