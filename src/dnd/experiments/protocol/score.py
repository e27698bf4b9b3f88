"""The paper's own protocol, side by side with ours (the `protocol` Snakemake target): a zoo trained
on the paper's bracketed answer format, generators and adapters made as in the default pipeline,
and every method scored three ways on the same items with lm-eval tasks: log-likelihood over the
bracketed answers, and greedy and sampled generation read by the authors' parser (invalid = wrong),
once per test-time template (`protocol.templates`, dnd.formats.paper.TEMPLATES): the zoo and the
adapters are the same, only the task files and the scores are the template's.

Commands:
  protocol-tasks     dnd protocol-tasks --params JSON --template T --data results/data/*/test.jsonl --out FILE...
                     the paper-format test items and the lm-eval task YAMLs (`task_configs`) of template T
  evaluate-protocol  dnd evaluate-protocol --params JSON --template T --target T --model DIR --tasks YAML [...]
                     --zoo DIR [...] --generated DIR [...] --encoded FILE [...] --out FILE [--cache-dir DIR]
                     every method on one target, every protocol, in template T's tasks; cached results
                     are not scored again

The tasks, the methods (PROTOCOL_KINDS) and the output rows: docs/modules.md, section
`src/dnd/experiments/protocol/score.py`; the file formats: docs/contracts.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import dnd.scoring  # noqa: F401  (makes Hugging Face offline before datasets/lm_eval load)
from dnd import evaluate
from dnd.config import parse_params, section
from dnd.evaluate import (
    load_task,
    nearest_training_lora,
    plan_target,
    quiet_lm_eval,
    reference_lora,
    require_file,
    scoring_jobs,
)
from dnd.formats.paper import (
    INVALID,
    PARSED_CHARS,
    TEMPLATES,
    answer_delimiter,
    check_template,
    eval_record,
    parse_answer,
)
from dnd.formats.prompts import portable_path
from dnd.io import atomic_path, read_jsonl, write_json, write_jsonl
from dnd.paths import add_declared_option, declared
from dnd.scoring.cache import ScoreCache, content_context, require_finite, samples_to_scored, seal, unseal
from dnd.scoring.harness import seeded_evaluate
from dnd.scoring.loop import score_or_cache

log = logging.getLogger(__name__)

PROTOCOLS = ("loglik", "greedy", "sampled")
#: generated kinds scored under the protocol (dnd_testcond: conditioned on the test prompts)
PROTOCOL_KINDS = ("dnd", "dnd_testcond", "control_other", "control_random", "control_shuffled")
FILTER = "dnd_paper_parser"
FILTER_NAME = "authors"  # the filter pipeline's name in the task YAMLs (metric key "exact_match,authors")


# ============================================================================ tasks
def task_name(dataset: str, protocol: str, seed: int | None = None) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    return f"dnd_paper_{dataset}_{protocol}" + (f"_{seed}" if protocol == "sampled" else "")


def task_names(dataset: str, seeds: list[int]) -> list[tuple[str, int | None, str]]:
    """(protocol, seed, task name) of every task of a dataset."""
    out = [("loglik", None, task_name(dataset, "loglik")), ("greedy", None, task_name(dataset, "greedy"))]
    out += [("sampled", s, task_name(dataset, "sampled", s)) for s in seeds]
    return out


def task_configs(dataset: str, data_file: str | Path, pcfg: dict[str, Any], template: str) -> dict[str, dict[str, Any]]:
    """{task name: lm-eval task config} of a dataset in test-time `template` (docs/modules.md)."""

    common = {"dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": portable_path(data_file)}}, "test_split": "test",
              "doc_to_text": "{{context}}", "metadata": {"version": 1.0}}
    gen_common = {"max_gen_toks": int(pcfg["max_new_tokens"]), "until": [], "stop_chars": 20}
    out = {}
    for protocol, seed, name in task_names(dataset, list(pcfg["seeds"])):
        if protocol == "loglik":
            out[name] = {"task": name, **common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
                         "doc_to_target": "answer", "target_delimiter": answer_delimiter(template),
                         "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
            continue
        if protocol == "greedy":
            kw = {**gen_common, "do_sample": False}
        else:
            s = pcfg["sampling"]
            kw = {**gen_common, "do_sample": True, "temperature": float(s["temperature"]), "top_p": float(s["top_p"]),
                  "top_k": int(s["top_k"]), "seed": int(seed)}
        out[name] = {"task": name, **common, "output_type": "generate_until", "doc_to_target": "{{gold}}",
                     "generation_kwargs": kw,
                     "filter_list": [{"name": FILTER_NAME,
                                      "filter": [{"function": FILTER}, {"function": "take_first"}]}],
                     "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                      "ignore_case": True}]}
    return out


def write_tasks(datasets: list[str], data: Sequence[Path], out: Sequence[Path], pcfg: dict[str, Any],
                template: str) -> list[Path]:
    """The paper-format test items (the first n_test of each test split) and every task YAML, in
    test-time `template`; `data`: the declared test splits (.../{ds}/test.jsonl), `out`: the
    declared outputs (.../data/{template}/{ds}/test.jsonl, .../tasks/{template}/{name}.yaml);
    dnd.paths.declared finds each one's."""
    import yaml

    check_template(template)
    written = []
    for ds in datasets:
        items = read_jsonl(declared(data, Path(ds) / "test.jsonl", f"test split of {ds}", "--data"))
        n = int(pcfg["n_test"])
        if len(items) < n:
            raise ValueError(f"{ds}: protocol.n_test is {n} but the test split has {len(items)} items")
        data_file = declared(out, Path("data") / template / ds / "test.jsonl", f"protocol test items of {ds}",
                             "--out")
        write_jsonl(data_file, [eval_record(it, template) for it in items[:n]])
        for name, cfg in task_configs(ds, data_file, pcfg, template).items():
            path = declared(out, Path("tasks") / template / f"{name}.yaml", f"lm-eval task {name}", "--out")
            with atomic_path(path) as tmp:
                Path(tmp).write_text(yaml.safe_dump(cfg, sort_keys=False))
            written.append(path)
    return written


# ============================================================================ the parser filter
def _register_filter() -> None:
    """Register `dnd_paper_parser` (dnd.formats.paper.parse_answer on each output, by the doc's
    answer kind) in lm-eval's filter registry, once."""
    from lm_eval.api.filter import Filter
    from lm_eval.api.registry import FILTER_REGISTRY, register_filter

    if FILTER in FILTER_REGISTRY:
        return

    @register_filter(FILTER)
    class PaperParserFilter(Filter):
        """The authors' answer parser as an lm-eval filter: each output -> its label, "" (valid,
        unreadable) or dnd.formats.paper.INVALID."""

        def apply(self, resps, docs):
            return [[parse_answer(r, doc["kind"]) for r in rs] for rs, doc in zip(resps, docs)]


# ============================================================================ scoring
def load_tasks(tasks_dir: Path, names: list[str]) -> dict:
    """lm-eval's task dict of several tasks of `tasks_dir` (dnd.evaluate.load_task for each)."""

    tasks: dict = {}
    for name in names:
        tasks.update(load_task(tasks_dir, name)["tasks"])
    return {"tasks": tasks, "groups": {}, "group_map": {}}


def _sorted_samples(res: dict, task: str) -> list[dict]:
    return sorted(res["samples"][task], key=lambda s: s["doc_id"])


def generation_result(res: dict, task: str) -> dict[str, Any]:
    """Per item: correct, valid and the first 20 characters of the output, from lm-eval's
    logged samples of a generation task; checked against lm-eval's own exact_match."""

    samples = _sorted_samples(res, task)
    parsed = [s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
              for s in samples]
    gold = [str(s["target"]) for s in samples]
    correct = [int(p != INVALID and p.lower() == g.lower()) for p, g in zip(parsed, gold)]
    agg = res["results"][task][f"exact_match,{FILTER_NAME}"]
    acc = sum(correct) / len(correct)
    if abs(acc - agg) > 1e-9:
        raise RuntimeError(f"{task}: per-item accuracy {acc} != lm-eval's exact_match {agg}")
    valid = [int(p != INVALID) for p in parsed]
    return {"ids": [str(s["doc"]["id"]) for s in samples], "correct": correct, "valid": valid,
            "outputs": [str(s["resps"][0][0])[:PARSED_CHARS] for s in samples]}


class ProtocolScorer:
    """dnd.evaluate.InPlaceScorer's loaded model (adapters merged into it), scored on every task of a
    target at once by the `dnd-generate` backend."""

    def __init__(self, model_dir: Path, lora_config_dir: Path, tasks_dir: Path, target: str, seeds: list[int],
                 batch_size: int, dtype: str, device: Any = "cpu"):
        from dnd.evaluate import InPlaceScorer
        from dnd.scoring import lm_generate

        _register_filter()
        self.tasks = task_names(target, seeds)
        self.inner = InPlaceScorer(model_dir, lora_config_dir, tasks_dir, None, limit=None, batch_size=batch_size,
                                   dtype=dtype, metric="acc", lm_cls=lm_generate.SharedPrefillLM, device=device)
        self.lm = self.inner.lm
        self.task_dict = load_tasks(tasks_dir, [name for _, _, name in self.tasks])

    def score(self, sd: dict | None, where: str) -> list[dict[str, Any]]:
        """One result per task: {protocol, seed, ids, correct, valid, ...} (sd None = base model)."""

        self.inner.activate(sd, where)
        t0 = time.perf_counter()
        res = seeded_evaluate(self.lm, self.task_dict)
        seconds = time.perf_counter() - t0
        out = []
        for protocol, seed, name in self.tasks:
            if protocol == "loglik":
                s = require_finite(samples_to_scored(res, name, "acc"), where)
                r = {"ids": s.ids, "correct": s.correct, "valid": [1] * s.n,
                     "gold_logprob": [round(float(v), 6) for v in s.gold_logprob()]}
            else:
                r = generation_result(res, name)
            out.append({"protocol": protocol, "seed": seed, **r})
        log.info("%s: %s in %.1f s", where, ", ".join(
            f"{r['protocol']}{'' if r['seed'] is None else r['seed']}={sum(r['correct']) / len(r['correct']):.3f}"
            for r in out), seconds)
        return out


PROTOCOL_SCORER_VERSION = 1  # part of the cache keys: bump when this scorer's results can change


class ResultCache:
    """Per-adapter protocol results kept by content: dnd.scoring.cache.ScoreCache's keys (the
    adapter's tensors and a context), one JSON file per key, sealed with its content hash
    (dnd.scoring.cache.seal). These results (generations, parsed answers, executed code) keep no
    log-likelihoods to recompute them from, so the hash is their check: an edited, corrupt,
    foreign or unhashed (older) entry is a miss with a warning naming it, and is scored again."""

    def __init__(self, directory: Path, files: list[Path], context: dict[str, Any]):
        self.keys = ScoreCache(directory, files, {"protocol": True, **context})
        self.directory = Path(directory)

    def key(self, sd: dict | None) -> str:
        return self.keys.key(sd)

    def get(self, key: str) -> list[dict[str, Any]] | None:
        path = self.directory / f"{key}.json"
        if not path.exists():
            return None
        try:
            results = unseal(json.loads(path.read_text()), key)["results"]
            if not isinstance(results, list) or not results or any(
                    len(r["correct"]) != len(r["ids"]) for r in results):
                raise ValueError("no results, or items and correct values that disagree")
            return results
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("protocol cache entry %s not trusted (%s): discarded, the adapter is scored again", path, exc)
            return None

    def put(self, key: str, results: list[dict[str, Any]], source: Any = None) -> None:
        write_json(self.directory / f"{key}.json", seal({"key": key, "results": results, "source": source}))


def open_cache(directory: Path, model_dir: Path, tasks_dir: Path, names: list[str], lora_cfg: dict[str, Any],
               settings: dict[str, Any], device: Any = "cpu") -> ResultCache:
    """Keys cover the base model's files, every task's test file and config, the LoRA shape, the
    scoring settings, versions (dnd.scoring.cache.content_context), dnd.scoring.SCORER_VERSION and
    this scorer's PROTOCOL_SCORER_VERSION (bump it when the parser or the protocols change)."""

    tasks = {n: (evaluate.task_config(tasks_dir / f"{n}.yaml"), evaluate.task_data_file(tasks_dir / f"{n}.yaml"))
             for n in names}
    files, context = content_context(model_dir, tasks, evaluate.lora_shape(lora_cfg), settings, device,
                                     protocol_scorer_version=PROTOCOL_SCORER_VERSION)
    return ResultCache(directory, files, context)


def evaluate_protocol(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                      zoo: Sequence[Path], generated: Sequence[Path], encoded: Sequence[Path],
                      cache_dir: Path | None = None, *, template: str, device: Any = "cpu") -> list[dict[str, Any]]:
    """Every method on `target` under every protocol (docs/modules.md), in test-time `template`
    (`tasks`: that template's task files, written by `write_tasks`); the other declared inputs as
    in dnd.evaluate.plan_target. Each row names its template."""

    pcfg = section("protocol", params.get("protocol"))
    ev = section("evaluation", params.get("evaluation"))
    datasets = list(params.get("datasets") or [])
    if not datasets:
        raise ValueError("--params must list 'datasets'")
    sources = list(params.get("sources") or [d for d in datasets if d != target])
    seeds = [int(s) for s in pcfg["seeds"]]
    check_template(template)
    names = [n for _, _, n in task_names(target, seeds)]
    tasks_dir, _ = evaluate.task_files(tasks, names)
    written = evaluate.task_config(tasks_dir / f"{task_name(target, 'loglik')}.yaml").get("target_delimiter")
    if written != answer_delimiter(template):  # the rows would name a template their scores are not of
        raise ValueError(f"--tasks {tasks_dir} were written for another template than --template {template} "
                         f"(answer delimiter {written!r}, expected {answer_delimiter(template)!r})")
    require_file(model_dir / "config.json", "base model")
    if target not in datasets:
        raise ValueError(f"target {target!r} / sources {sources} do not fit datasets {datasets}")
    plan = plan_target(target, datasets, sources, zoo, generated, encoded, kinds=PROTOCOL_KINDS)
    nearest, sims = nearest_training_lora(plan, target)
    ref_dir, ref_cfg = reference_lora(plan, sources)
    quiet_lm_eval()

    # the template is in the cache key through its task files (configs and test files are hashed:
    # they differ between templates), not as a setting, so `default`'s keys stay the committed run's
    settings = {"batch_size": int(ev["batch_size"]), "dtype": ev["dtype"],
                **{k: pcfg[k] for k in ("max_new_tokens", "sampling", "seeds")}}
    cache = open_cache(cache_dir, model_dir, tasks_dir, names, ref_cfg, settings, device) if cache_dir else None
    jobs = scoring_jobs(plan, sources, model_dir)

    results, _ = score_or_cache(f"protocol {target}", jobs,
                                lambda: ProtocolScorer(model_dir, ref_dir, tasks_dir, target, seeds,
                                                       settings["batch_size"], settings["dtype"], device), cache)
    rows: list[dict[str, Any]] = []
    for method, adapter, _, _ in jobs:
        rows += [_row(template, target, method, adapter, r) for r in results[(method, adapter)]]
        if (method, adapter) == ("soup", "soup"):  # nearest right after the soup, as in dnd.evaluate
            rows += [_row(template, target, "nearest", nearest, r, info={"cosine": sims})
                     for r in results[("source_lora", nearest)]]
    return rows


def _row(template: str, target: str, method: str, adapter: str, r: dict[str, Any], **extra) -> dict[str, Any]:
    n = len(r["correct"])
    return {"template": template, "target": target, "method": method, "adapter": adapter, "protocol": r["protocol"],
            "seed": r["seed"], "n": n, "acc": sum(r["correct"]) / n, "invalid_rate": 1 - sum(r["valid"]) / n, **r,
            **extra}


# ============================================================================ CLI
def _add_template(p: argparse.ArgumentParser) -> None:
    p.add_argument("--template", required=True, choices=TEMPLATES,
                   help="the test-time template (one of protocol.templates; dnd.formats.paper)")


def _add_tasks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"protocol": {...}, "datasets": [...]}')
    _add_template(p)
    add_declared_option(p, "--data", "the test splits (results/data/{ds}/test.jsonl)")
    add_declared_option(p, "--out", "results/protocol/data/{template}/{ds}/test.jsonl and "
                                    "tasks/{template}/{name}.yaml of every dataset")


def _run_tasks(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    paths = write_tasks(list(params["datasets"]), args.data, args.out,
                        section("protocol", params.get("protocol")), args.template)
    log.info("wrote %d task files", len(paths))


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True,
                   help='JSON: {"protocol": {...}, "evaluation": {...}, "datasets": [...], "sources": [...]}')
    _add_template(p)
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path)
    evaluate.add_declared_inputs(p)  # --tasks, --zoo, --generated, --encoded
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache-dir", type=Path, default=None)


def _run_evaluate(args: argparse.Namespace) -> None:
    rows = evaluate_protocol(args.target, parse_params(args.params), args.model, args.tasks, args.zoo,
                             args.generated, args.encoded, args.cache_dir, template=args.template,
                             device=args.device)
    write_jsonl(args.out, rows)
    log.info("wrote %d rows to %s", len(rows), args.out)


COMMANDS = {"protocol-tasks": (_add_tasks, _run_tasks), "evaluate-protocol": (_add_evaluate, _run_evaluate)}
