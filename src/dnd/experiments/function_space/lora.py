"""The function_space experiment's labeled LoRA baseline beside Text-to-LoRA's multi-task LoRA: per
held-out target, the source LoRA picked on a small labeled validation split of the target, scored
on the default run's test items like every method (dnd.evaluate's scorer, rows and score cache).
The multi-task LoRA itself (one LoRA trained on the union of the fold's source train splits: the
zoo's trainer, settings and total steps) is the default run's (results/multitask/{T}, scored by
`dnd evaluate-multitask`); the experiment reads its row from there.

  val_picked      adapter = the source  the fold's source LoRA (the default zoo's) with the highest
                                        accuracy on the target's validation items (`val_items`);
                                        ties: the higher mean gold log-probability, then fold order

It sees labeled data that DnD never sees: `function_space.n_val` labeled items of the target.

Commands:
  fs-val-split  dnd fs-val-split --params JSON --target T --train FILE --test FILE --out FILE...
                the validation items of T (`val_items`); --out: .../val.jsonl (the items),
                .../val.lmeval.jsonl (lm-eval rows) and .../dnd_<T>_val.yaml (their lm-eval task)
  fs-val-pick   dnd fs-val-pick --params JSON --target T --model DIR --tasks YAML --zoo DIR...
                --out JSON [--cache-dir DIR]: every source LoRA on the validation items, the winner
  fs-evaluate   dnd fs-evaluate --params JSON --target T --model DIR --tasks YAML --zoo DIR...
                --val-pick JSON --out JSONL [--cache-dir DIR]: val_picked on T's test items, one
                dnd.evaluate row (its `info`: the validation accuracy of every source)
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any, Sequence

import dnd.scoring  # noqa: F401  (makes Hugging Face offline before datasets/lm_eval load)
from dnd.config import command_params, parse_params, section
from dnd.evaluate import (
    InPlaceScorer,
    adapter_job,
    check_same_lora_shape,
    fold_sources,
    open_score_cache,
    quiet_lm_eval,
    read_adapter_config,
    read_ids,
    require_adapter_dir,
    result_row,
    score_jobs,
    task_data_file,
    task_files,
)
from dnd.formats.prompts import lm_eval_task, render_choices, render_context, task_name, to_eval_record
from dnd.io import read_jsonl, write_json, write_jsonl, write_text
from dnd.paths import add_declared_option, declared
from dnd.schedule import derive_seed
from dnd.summary import VAL_PICKED

log = logging.getLogger(__name__)

PICK_RULE = "highest validation accuracy; ties: higher mean gold log-probability, then fold order"


# ============================================================================ validation split
def val_task_name(target: str) -> str:
    return f"{task_name(target)}_val"


def _question(item: dict[str, Any], fmt: str) -> str:
    """An item as it is scored (its rendered context and choices): two items with the same text are
    the same question whatever their ids."""
    return json.dumps([render_context(item, fmt), render_choices(item, fmt)])


def val_items(train: Sequence[dict], test: Sequence[dict], n: int, seed: int, target: str,
              fmt: str = "cloze") -> list[dict]:
    """The target's validation items: `n` items of its train split drawn by
    random.Random(derive_seed(seed, "function_space_val", target)).sample, kept in train-split
    order, from the train items that are no test item (neither by id nor by rendered question and
    choices). One line if there are fewer than `n` such items."""
    test_ids = {str(t["id"]) for t in test}
    test_questions = {_question(t, fmt) for t in test}
    pool = [i for i, it in enumerate(train)
            if str(it["id"]) not in test_ids and _question(it, fmt) not in test_questions]
    if n > len(pool):
        raise ValueError(f"{target}: function_space.n_val = {n} needs {n} train items that are not test items, "
                         f"there are {len(pool)}")
    picked = random.Random(derive_seed(seed, "function_space_val", target)).sample(pool, n)
    return [train[i] for i in sorted(picked)]


def write_val_split(target: str, params: dict[str, Any], train_file: Path, test_file: Path,
                    out: Sequence[Path]) -> list[dict]:
    """Write the declared outputs `out`: val.jsonl, val.lmeval.jsonl and dnd_<target>_val.yaml."""
    import yaml

    fmt = params["prompt"]["format"]
    items = val_items(read_jsonl(train_file), read_jsonl(test_file), int(params["function_space"]["n_val"]),
                      int(params["seed"]), target, fmt)
    what = f"validation split of {target}"
    items_file = declared(out, "val.jsonl", what, "--out")
    rows_file = declared(out, "val.lmeval.jsonl", f"lm-eval rows of the {what}", "--out")
    task_file = declared(out, f"{val_task_name(target)}.yaml", f"lm-eval task of the {what}", "--out")
    write_jsonl(items_file, items)
    write_jsonl(rows_file, [to_eval_record(it, fmt) for it in items])
    write_text(task_file, yaml.safe_dump({**lm_eval_task(target, rows_file), "task": val_task_name(target)},
                                         sort_keys=False))
    log.info("%s: %d validation items of %s", target, len(items), train_file)
    return items


# ============================================================================ scoring
def _finals(zoo: Sequence[Path], sources: Sequence[str]) -> dict[str, Path]:
    return {d: require_adapter_dir(declared(zoo, Path(d) / "final", f"final LoRA of {d}", "--zoo"),
                                   f"final LoRA of {d}") for d in sources}


def _scorer(model_dir: Path, ref_dir: Path, tasks_dir: Path, task: str, limit: int | None, ev: dict[str, Any],
            device: Any = "cpu"):
    return lambda: InPlaceScorer(model_dir, ref_dir, tasks_dir, task, limit=limit, batch_size=int(ev["batch_size"]),
                                 dtype=ev["dtype"], metric=ev["metric"], backend=ev["backend"], device=device)


def pick_source(scores: dict[str, dict[str, float]]) -> str:
    """The source with the best (accuracy, mean gold log-probability), the first in order on a tie
    (PICK_RULE); `scores`: source -> {"acc", "gold_logprob"} in fold order."""
    order = list(scores)
    return max(order, key=lambda d: (scores[d]["acc"], scores[d]["gold_logprob"], -order.index(d)))


def score_val_pick(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                   zoo: Sequence[Path], cache_dir: Path | None = None, device: Any = "cpu") -> dict[str, Any]:
    """Every source LoRA of the fold (`params["sources"]`) on every validation item of `target`
    (evaluation.limit is for test items: not applied), and the one `pick_source` picks."""
    ev = section("evaluation", params.get("evaluation"))
    sources = fold_sources(params, target)
    name = val_task_name(target)
    tasks_dir, (task_yaml,) = task_files(tasks, [name])
    val_file = task_data_file(task_yaml)
    finals = _finals(zoo, sources)
    ref_dir = finals[sources[0]]
    ref_cfg = read_adapter_config(ref_dir)
    for d in finals.values():
        check_same_lora_shape(ref_cfg, read_adapter_config(d), d)
    quiet_lm_eval()
    cache = (open_score_cache(cache_dir, model_dir, task_yaml, val_file, ref_cfg, ev, device=device)
             if cache_dir is not None else None)
    jobs = [adapter_job("source_lora", d, p) for d, p in finals.items()]
    ids = read_ids(val_file)
    scored, _ = score_jobs(f"{target} validation", jobs, _scorer(model_dir, ref_dir, tasks_dir, name, None, ev, device),
                           cache, ids, None)
    scores = {d: {"acc": scored[("source_lora", d)].acc,
                  "gold_logprob": sum(scored[("source_lora", d)].gold_logprob()) / len(ids)} for d in sources}
    picked = pick_source(scores)
    log.info("%s: validation accuracy %s -> %s", target, ", ".join(f"{d}={s['acc']:.3f}" for d, s in scores.items()),
             picked)
    return {"target": target, "n_val": len(ids), "metric": ev["metric"], "ids": ids, "sources": scores,
            "picked": picked, "rule": PICK_RULE}


def evaluate_val_picked(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                        zoo: Sequence[Path], val_pick: Path, cache_dir: Path | None = None,
                        device: Any = "cpu") -> list[dict[str, Any]]:
    """val_picked on the target's test items (the first evaluation.limit, as dnd evaluate), one row."""
    ev = section("evaluation", params.get("evaluation"))
    pick = json.loads(Path(val_pick).read_text())
    if pick.get("target") != target:
        raise ValueError(f"{val_pick} picks a source for {pick.get('target')!r}, not for {target!r}")
    picked = pick["picked"]
    task = task_name(target)
    tasks_dir, (task_yaml,) = task_files(tasks, [task])
    test_file = task_data_file(task_yaml)
    src_dir = _finals(zoo, [picked])[picked]
    ref_cfg = read_adapter_config(src_dir)
    quiet_lm_eval()
    cache = (open_score_cache(cache_dir, model_dir, task_yaml, test_file, ref_cfg, ev, device=device)
             if cache_dir is not None else None)
    limit = None if ev["limit"] is None else int(ev["limit"])
    jobs = [adapter_job("source_lora", picked, src_dir)]
    scored, _ = score_jobs(target, jobs, _scorer(model_dir, src_dir, tasks_dir, task, limit, ev, device), cache,
                           read_ids(test_file), limit)
    val_acc = {d: s["acc"] for d, s in pick["sources"].items()}
    return [result_row(target, VAL_PICKED, picked, scored[("source_lora", picked)], ev["metric"],
                       info={"val_acc": val_acc})]


# ============================================================================ CLI
def _add_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"function_space": {...}, "prompt": {...}, "seed": int}')
    p.add_argument("--target", required=True)
    p.add_argument("--train", required=True, type=Path, help="results/data/<T>/train.jsonl")
    p.add_argument("--test", required=True, type=Path, help="results/data/<T>/test.jsonl")
    add_declared_option(p, "--out", "val.jsonl, val.lmeval.jsonl and dnd_<T>_val.yaml")


def _run_split(args: argparse.Namespace) -> None:
    params = command_params(args.params, "function_space", "prompt", "seed")
    write_val_split(args.target, params, args.train, args.test, args.out)


def _add_pick(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}, "sources": [the fold\'s sources]}')
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "the validation task (.../dnd_<T>_val.yaml)")
    add_declared_option(p, "--zoo", "final LoRA folders (.../{ds}/final) of the fold's sources")
    p.add_argument("--out", required=True, type=Path, help="results/function_space/val_pick/<T>.json")
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache directory; omit to score everything")


def _run_pick(args: argparse.Namespace) -> None:
    write_json(args.out, score_val_pick(args.target, parse_params(args.params), args.model, args.tasks, args.zoo,
                                        args.cache_dir, args.device))


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}}')
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "the target's task (results/tasks/dnd_<T>.yaml)")
    add_declared_option(p, "--zoo", "final LoRA folders (.../{ds}/final); the picked source's is scored")
    p.add_argument("--val-pick", required=True, type=Path, help="fs-val-pick's JSON")
    p.add_argument("--out", required=True, type=Path, help="results/function_space/eval/<T>.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache directory; omit to score everything")


def _run_evaluate(args: argparse.Namespace) -> None:
    rows = evaluate_val_picked(args.target, parse_params(args.params), args.model, args.tasks, args.zoo,
                               args.val_pick, args.cache_dir, args.device)
    write_jsonl(args.out, rows)


COMMANDS = {
    "fs-val-split": (_add_split, _run_split),
    "fs-val-pick": (_add_pick, _run_pick),
    "fs-evaluate": (_add_evaluate, _run_evaluate),
}
