"""Few-shot baselines against DnD (the `fewshot` Snakemake target, outside `all`): LoRA tuning on
the first k labeled train items (`fewshot_ft`) and in-context learning with k demonstrations
(`icl`), on the default run's test items with its scorer, beside the default run's DnD adapters.

Commands:
  fewshot-train  dnd fewshot-train --params JSON --k K --model DIR --train FILE --out-dir DIR
                 [--timings FILE]: one few-shot LoRA (out-dir: train.jsonl = the k items,
                 final/, train_log.csv, summary.json)
  fewshot-score  dnd fewshot-score --params JSON --target T --model DIR --tasks YAML [...] --loras DIR [...]
                 --out FILE [--cache-dir DIR]: every k's LoRA (the --loras path .../k{k}/final) on T's test items
  fewshot-icl    dnd fewshot-icl --params JSON --target T --model DIR --tasks YAML [...] --train FILE
                 --out FILE --context-out FILE --timings FILE: ICL for k = 0 and every icl k
Rows (JSONL) are dnd.evaluate's rows plus `k`. The methods, how each is scored and what its cost
(`seconds`) measures: docs/modules.md, section `src/dnd/experiments/fewshot/tuning.py`. The
summary and report: dnd.experiments.fewshot.report.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import dnd.scoring  # noqa: F401  (makes Hugging Face offline before datasets/lm_eval load)
from dnd.config import command_params, folds, parse_params, section
from dnd.evaluate import SOFTMAX_DTYPE, load_task, require_file, result_row, run_lm_eval, task_data_file, task_files
from dnd.formats.prompts import TARGET_DELIMITER, lm_eval_task, task_name, training_example
from dnd.io import check_safetensors, read_jsonl, write_json, write_jsonl
from dnd.paths import add_declared_option, declared
from dnd.zoo import train_lora

log = logging.getLogger(__name__)

FT, ICL, DND = "fewshot_ft", "icl", "dnd"
METHODS = (FT, ICL, DND)
#: between two demonstrations and between the last one and the test item (lm-eval's default
#: fewshot_delimiter)
DEMO_DELIMITER = "\n\n"


# ============================================================================ settings
def fewshot_targets(cfg: dict[str, Any]) -> list[str]:
    """The targets of the experiment: `fewshot.targets`, or every held-out target of the run."""

    return list(cfg.get("fewshot", {}).get("targets") or folds(cfg))


def first_k(items: list[dict], k: int, where: str) -> list[dict]:
    """The first k items (the paper's selection: no sampling); an error if there are fewer."""
    if k < 1 or k > len(items):
        raise ValueError(f"{where}: k = {k} needs {k} labeled train items, there are {len(items)}")
    return items[:k]


def lora_settings(lcfg: dict[str, Any], k: int, epochs: float) -> dict[str, Any]:
    """The zoo's LoRA settings for k items and `epochs` epochs: batch min(batch_size, k) (a
    batch never holds an item twice), steps ceil(epochs * k / batch), trained as one run whose
    last step is the LoRA (phase1_steps = steps - 1, one checkpoint)."""
    batch = min(int(lcfg["batch_size"]), k)
    steps = math.ceil(epochs * k / batch)
    return {**lcfg, "batch_size": batch, "phase1_steps": steps - 1, "checkpoint_steps": 1}


# ============================================================================ few-shot tuning
def train_fewshot_lora(model_dir: Path, train_file: Path, out_dir: Path, k: int, params: dict[str, Any],
                       timings: Path | None = None, device: Any = "cpu") -> dict[str, Any]:
    """Train the LoRA of the first k items of `train_file` (docs/modules.md) into `out_dir`:
    train.jsonl (the k items), final/, train_log.csv, summary.json (dnd.zoo's layout without the
    one-step checkpoint trajectory, which equals final/)."""

    out_dir = Path(out_dir)
    items = first_k(read_jsonl(train_file), k, str(train_file))
    write_jsonl(out_dir / "train.jsonl", items)
    lcfg = lora_settings(params["lora"], k, float(params["fewshot"]["epochs"]))
    log.info("few-shot LoRA: k=%d, batch %d, %d steps", k, lcfg["batch_size"], lcfg["phase1_steps"] + 1)
    summary = train_lora(model_dir, out_dir / "train.jsonl", out_dir, lcfg, params["prompt"]["format"],
                         params["seed"], timings=timings, device=device)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return summary


def score_fewshot_loras(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                        loras: Sequence[Path], cache_dir: Path | None = None,
                        device: Any = "cpu") -> list[dict[str, Any]]:
    """Every k's few-shot LoRA on the target's test items, scored as dnd.evaluate scores the zoo
    (dnd.evaluate.score_adapters, on `device`); `tasks`, `loras`: the declared task files and LoRA
    folders (.../k{k}/final, dnd.paths.declared)."""
    from dnd.evaluate import score_adapters

    ev = section("evaluation", params.get("evaluation"))
    ks = [int(k) for k in section("fewshot", params.get("fewshot"))["ks"]]
    finals = [(FT, str(k), declared(loras, Path(f"k{k}") / "final", f"few-shot LoRA k={k}", "--loras")) for k in ks]
    scored = score_adapters(target, ev, model_dir, tasks, finals, cache_dir, device)
    return [result_row(target, FT, str(k), scored[(FT, str(k))], ev["metric"], k=k) for k in ks]


# ============================================================================ in-context learning
def demonstration(item: dict[str, Any], fmt: str) -> str:
    """A labeled item as a demonstration: its context, the delimiter and its gold answer, the
    text a LoRA is trained on (dnd.formats.prompts.training_example)."""

    ctx, cont = training_example(item, fmt)
    return ctx + cont


def icl_prefix(demos: list[dict[str, Any]], fmt: str) -> str:
    """The text before every test item: each demonstration followed by DEMO_DELIMITER ("" for none)."""
    return "".join(demonstration(d, fmt) + DEMO_DELIMITER for d in demos)


def icl_records(records: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The task's test rows (dnd.formats.prompts.to_eval_record) with `prefix` before each context."""
    return [{**r, "context": prefix + r["context"]} for r in records]


def icl_task_name(target: str, k: int) -> str:
    return f"{task_name(target)}_icl{k}"


def write_icl_task(directory: Path, target: str, k: int, records: list[dict[str, Any]]) -> str:
    """The k-shot rows and their lm-eval task (the target's task, on those rows) in `directory`;
    returns the task name."""
    import yaml

    name = icl_task_name(target, k)
    data = Path(directory) / f"{name}.jsonl"
    write_jsonl(data, records)
    cfg = {**lm_eval_task(target, data), "task": name}
    (Path(directory) / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def prompt_positions(encode, prefix: str, records: list[dict[str, Any]]) -> int:
    """Positions the longest request needs with `prefix` before every context: the prefix's
    tokens plus the longest context + answer (an upper bound up to the merge at the seam)."""

    item = max(len(encode(r["context"] + TARGET_DELIMITER + c)) for r in records for c in r["choices"])
    return (len(encode(prefix)) if prefix else 0) + item


def score_icl(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
              train_file: Path, device: Any = "cpu") -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, float]]:
    """ICL with k = 0 and every `fewshot.icl_ks` (docs/modules.md). Returns (rows, context
    info: {max_length, positions: {k: positions needed}, skipped: [k that do not fit]},
    {k: lm-eval scoring seconds})."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dnd.scoring.lm_prefix_cache import PrefixCacheLM

    ev = section("evaluation", params.get("evaluation"))
    fcfg = section("fewshot", params.get("fewshot"))
    fmt = section("prompt", params.get("prompt"))["format"]
    _, (task_yaml,) = task_files(tasks, [task_name(target)])
    records = read_jsonl(task_data_file(task_yaml))
    limit = None if ev["limit"] is None else int(ev["limit"])
    scored_records = records if limit is None else records[:limit]
    train = read_jsonl(train_file)
    ks = sorted({0, *(int(k) for k in fcfg["icl_ks"])})
    if max(ks) > 0:
        first_k(train, max(ks), str(train_file))  # every k must have its demonstrations
    require_file(Path(model_dir) / "config.json", "base model")
    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)

    check_safetensors(model_dir, "base model weights")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, ev["dtype"])).eval().to(device)
    lm = PrefixCacheLM(pretrained=model, tokenizer=tok, batch_size=int(ev["batch_size"]),
                       softmax_dtype=SOFTMAX_DTYPE)
    info: dict[str, Any] = {"max_length": int(lm.max_length), "positions": {}, "skipped": []}
    rows, seconds = [], {}
    test_ids = [str(r["id"]) for r in scored_records]
    with tempfile.TemporaryDirectory(prefix="dnd-icl-") as tmp:
        for k in ks:
            prefix = icl_prefix(train[:k], fmt)
            need = prompt_positions(lm.tok_encode, prefix, scored_records)
            info["positions"][str(k)] = need
            if need > lm.max_length:
                log.warning("%s: k=%d needs %d positions, the model holds %d: skipped", target, k, need, lm.max_length)
                info["skipped"].append(k)
                continue
            name = write_icl_task(Path(tmp), target, k, icl_records(scored_records, prefix))
            task_dict = load_task(Path(tmp), name)
            if k == 0:  # untimed warm-up on a few items (first-call costs would flatter every k > 0)
                run_lm_eval(lm, task_dict, name, min(4, len(scored_records)), ev["metric"], "warm-up")
            s = run_lm_eval(lm, task_dict, name, limit, ev["metric"], f"{target} icl k={k}")
            if s.ids != test_ids:
                raise RuntimeError(f"{target} icl k={k}: scored items are not the task's test items")
            log.info("%s icl k=%d: acc=%.4f n=%d (%.1f s, prefix %d positions)", target, k, s.acc, s.n, s.seconds,
                     need)
            rows.append(result_row(target, ICL, str(k), s, ev["metric"], k=k))
            seconds[str(k)] = round(s.seconds, 3)
    return rows, info, seconds


# ============================================================================ CLI
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help='JSON: {"lora": {...}, "prompt": {...}, "seed": int, "fewshot": {"epochs": ...}}')
    p.add_argument("--k", required=True, type=int, help="labeled train items (the first k)")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    p.add_argument("--train", required=True, type=Path, help="results/data/<T>/train.jsonl")
    p.add_argument("--out-dir", required=True, type=Path, help="results/fewshot/lora/<T>/k<k>")
    p.add_argument("--timings", type=Path, default=None, help="JSON of run times (wall_s, loop_s, steps)")


def _run_train(args: argparse.Namespace) -> None:
    params = command_params(args.params, "lora", "prompt", "seed", "fewshot")
    train_fewshot_lora(args.model, args.train, args.out_dir, args.k, params, args.timings, args.device)


def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}, "fewshot": {"ks": [...]}}')
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path)
    add_declared_option(p, "--tasks", "the default run's task files (results/tasks/dnd_<T>.yaml)")
    add_declared_option(p, "--loras", "the few-shot LoRAs (results/fewshot/lora/<T>/k<k>/final)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache (results/fewshot/eval_cache/<T>)")


def _run_score(args: argparse.Namespace) -> None:
    rows = score_fewshot_loras(args.target, parse_params(args.params), args.model, args.tasks, args.loras,
                               args.cache_dir, args.device)
    write_jsonl(args.out, rows)
    log.info("wrote %d rows to %s", len(rows), args.out)


def _add_icl(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help='JSON: {"fewshot": {"icl_ks": [...]}, "evaluation": {...}, "prompt": {...}}')
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path)
    add_declared_option(p, "--tasks", "the default run's task files (results/tasks/dnd_<T>.yaml)")
    p.add_argument("--train", required=True, type=Path, help="results/data/<T>/train.jsonl (the demonstrations)")
    p.add_argument("--out", required=True, type=Path, help="per-item rows (JSONL)")
    p.add_argument("--context-out", required=True, type=Path,
                   help="JSON: the model's context, positions each k needs, the k skipped")
    p.add_argument("--timings", required=True, type=Path, help="JSON: lm-eval scoring seconds per k")


def _run_icl(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    rows, info, seconds = score_icl(args.target, parse_params(args.params), args.model, args.tasks, args.train,
                                    args.device)
    write_jsonl(args.out, rows)
    write_json(args.context_out, info)
    write_json(args.timings, {"scoring_s": seconds, "wall_s": round(time.perf_counter() - t0, 3)})
    log.info("wrote %d rows to %s", len(rows), args.out)


COMMANDS = {"fewshot-train": (_add_train, _run_train), "fewshot-score": (_add_score, _run_score),
            "fewshot-icl": (_add_icl, _run_icl)}
