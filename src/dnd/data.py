"""`dnd prepare-data`: write one dataset's splits, its lm-eval rows and task YAML; and
`dnd data-summary`: the split-size table. The logic lives in dnd.data and dnd.formats.prompts."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path
from typing import Sequence

from .benchmarks.datasets import SPLITS, prepare_dataset
from .config import command_params
from .formats.prompts import lm_eval_task_yaml, task_name, to_eval_record
from .io import read_jsonl, write_jsonl, write_text
from .paths import add_declared_option, declared

log = logging.getLogger(__name__)


def prepare(name: str, data_cfg: dict, prompt_cfg: dict, seed: int, out: Sequence[Path]) -> dict[str, int]:
    """Write the declared outputs `out` (each found with dnd.paths.declared): .../{train,cond,test}.jsonl,
    .../test.lmeval.jsonl and .../dnd_<name>.yaml."""

    def output(rel: str, what: str) -> Path:
        return declared(out, rel, f"{what} of {name}", "--out")

    files = {split: output(f"{split}.jsonl", f"{split} split") for split in SPLITS}
    eval_file = output("test.lmeval.jsonl", "lm-eval rows")
    task_file = output(f"{task_name(name)}.yaml", "lm-eval task")
    splits = prepare_dataset(name, data_cfg, seed)
    fmt = prompt_cfg.get("format", "cloze")
    for split in SPLITS:
        write_jsonl(files[split], splits[split])
    write_jsonl(eval_file, [to_eval_record(it, fmt) for it in splits["test"]])
    write_text(task_file, lm_eval_task_yaml(name, eval_file))
    sizes = {s: len(v) for s, v in splits.items()}
    log.info("%s: %s", name, sizes)
    return sizes


def summary_csv(files: Sequence[Path]) -> str:
    """The dataset,split,n table of the declared split files (.../{dataset}/{split}.jsonl), the
    datasets in the order their files come, each split found with dnd.paths.declared."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "split", "n"])
    for d in dict.fromkeys(Path(f).parent.name for f in files):
        for split in SPLITS:
            path = declared(files, Path(d) / f"{split}.jsonl", f"{split} split of {d}", "--data")
            w.writerow([d, split, len(read_jsonl(path))])
    return buf.getvalue()


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--params", required=True, help='JSON: {"data": {...}, "prompt": {...}, "seed": int}')
    add_declared_option(p, "--out", "results/data/<dataset>/{train,cond,test}.jsonl and test.lmeval.jsonl, "
                                    "results/tasks/dnd_<dataset>.yaml")


def _run_prepare(args: argparse.Namespace) -> None:
    cfg = command_params(args.params, "data", "prompt", "seed")
    prepare(args.dataset, cfg["data"], cfg["prompt"], cfg["seed"], args.out)


def _add_summary(p: argparse.ArgumentParser) -> None:
    add_declared_option(p, "--data", "every dataset's splits (results/data/{dataset}/{train,cond,test}.jsonl)")
    p.add_argument("--out", required=True, type=Path)


def _run_summary(args: argparse.Namespace) -> None:
    write_text(args.out, summary_csv(args.data))


COMMANDS = {"prepare-data": (_add_prepare, _run_prepare), "data-summary": (_add_summary, _run_summary)}
