"""Stage benchmark: where a run's time goes, per stage, against the previous committed figures.

Command:
  bench   dnd bench --benchmarks benchmarks [--wall results/timings/run.json]
              [--previous results/bench.csv] --out results/bench.csv

Snakemake times every job of a run (the `benchmark:` file of each rule). This command reads
those files and writes one row per stage (= benchmarks/ subfolder; the extra experiments' are
left out): the number of jobs, their summed, median and slowest seconds, the largest resident
memory, and the ratio of the summed seconds to the same stage's figure in `--previous` (the
committed bench.csv before this run, `--previous-git HEAD:results/bench.csv`; before any is
committed, `--baseline`: the figures of the 874f29f run as issue 28 quotes them; a row's `source`
column, where the previous file has one, names where its figure came from). With `--wall` (written by
scripts/reproduce.sh) a `run` row gives the wall-clock time of the whole reproduction, set-up
and HTML report included. The figures are as good as the machine was idle during the run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from .config import OUTSIDE_RUN
from .io import write_csv
from .reporting.tables import read_stage_benchmarks

log = logging.getLogger(__name__)

COLUMNS = ("stage", "jobs", "job_s_total", "job_s_median", "job_s_max", "max_rss_mb",
           "previous_job_s_total", "ratio_to_previous", "previous_source")


def committed_text(spec: str) -> str | None:
    """The text of `REV:PATH` in the git repository around the working directory (None, with
    a warning, where there is no git, no such revision or no such file)."""
    try:
        done = subprocess.run(["git", "show", spec], capture_output=True, text=True, check=False)
    except OSError as exc:
        log.warning("no previous figures: git is not available (%s)", exc)
        return None
    if done.returncode != 0:
        log.warning("no previous figures: git show %s: %s", spec, done.stderr.strip().splitlines()[:1])
        return None
    return done.stdout


def read_previous(text: str | None, where: str) -> dict[str, tuple[float, str]]:
    """stage -> (summed job seconds, where the figure comes from) of an earlier bench CSV."""
    if not text:
        return {}
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "stage" not in rows[0]:
        raise ValueError(f"{where}: not a bench CSV (no 'stage' column)")
    out = {}
    for r in rows:
        value = r.get("job_s_total", "")
        if value not in ("", "nan"):
            out[r["stage"]] = (float(value), r.get("source") or where)
    return out


def bench_rows(benchmarks: Path, previous: dict[str, tuple[float, str]],
               wall: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per stage of the default run (benchmarks/ subfolder or file stem, the extra
    experiments' folders left out, as in the report's compute table), slowest first, then
    `total` and, with `wall`, `run` (the reproduction's wall-clock seconds)."""
    files = sorted(benchmarks.rglob("*.tsv")) if benchmarks.is_dir() else []
    b = read_stage_benchmarks(files, exclude=OUTSIDE_RUN, root=benchmarks)
    if b is None:
        raise ValueError(f"no Snakemake benchmark files under {benchmarks}: run the workflow first")
    agg = b.groupby("stage", sort=True).agg(jobs=("s", "size"), total=("s", "sum"), med=("s", "median"),
                                             slowest=("s", "max"), rss=("max_rss", "max"))
    rows = [{"stage": stage, "jobs": int(a.jobs), "job_s_total": round(float(a.total), 1),
             "job_s_median": round(float(a.med), 2), "job_s_max": round(float(a.slowest), 1),
             "max_rss_mb": round(float(a.rss), 0)}
            for stage, a in agg.sort_values("total", ascending=False).iterrows()]
    rows.append({"stage": "total", "jobs": int(agg.jobs.sum()), "job_s_total": round(float(agg.total.sum()), 1),
                 "max_rss_mb": round(float(agg.rss.max()), 0)})
    if wall is not None:
        rows.append({"stage": "run", "job_s_total": round(float(wall["seconds"]), 1)})
    for r in rows:
        prev = previous.get(r["stage"])
        r["previous_job_s_total"] = "" if prev is None else prev[0]
        r["ratio_to_previous"] = "" if prev is None or not prev[0] else round(r["job_s_total"] / prev[0], 3)
        r["previous_source"] = "" if prev is None else prev[1]
    return rows


def current_wall(path: Path | None, benchmarks: Path) -> dict[str, Any] | None:
    """The run's wall-clock JSON, unless it is missing or older than a job benchmark (it then
    times an earlier run than the jobs: left out, with a warning)."""
    if path is None or not path.is_file():
        return None
    newest = max((p.stat().st_mtime for p in benchmarks.rglob("*.tsv") if p.stem != "bench"), default=0.0)
    if path.stat().st_mtime < newest:
        log.warning("%s is older than the newest job benchmark: it times an earlier run; no `run` row", path)
        return None
    return json.loads(path.read_text())


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmarks", type=Path, default=Path("benchmarks"), help="Snakemake benchmark folder")
    p.add_argument("--wall", type=Path, default=None, help="the run's wall-clock JSON (scripts/reproduce.sh)")
    prev = p.add_mutually_exclusive_group()
    prev.add_argument("--previous", type=Path, default=None, help="an earlier bench CSV to compare with")
    prev.add_argument("--previous-git", default=None, metavar="REV:PATH",
                      help="the committed figures to compare with, e.g. HEAD:results/bench.csv")
    p.add_argument("--baseline", type=Path, default=None,
                   help="figures to compare with where --previous-git finds none (an earlier run's, with a "
                        "`source` column: docs/bench_baseline_874f29f.csv)")
    p.add_argument("--out", type=Path, required=True)


def _run(args: argparse.Namespace) -> None:
    wall = current_wall(args.wall, args.benchmarks)
    if args.previous is not None:
        previous = read_previous(args.previous.read_text(), str(args.previous))
    elif args.previous_git:
        previous = read_previous(committed_text(args.previous_git), args.previous_git)
    else:
        previous = {}
    if not previous and args.baseline is not None:
        previous = read_previous(args.baseline.read_text(), str(args.baseline))
    rows = bench_rows(args.benchmarks, previous, wall)
    write_csv(args.out, COLUMNS, rows)


COMMANDS = {"bench": (_add, _run)}
