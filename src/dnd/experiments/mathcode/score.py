"""Scoring of the math and code experiments (`snakemake --cores all math` / `code`).

  dnd evaluate-mathcode --domain math|code --target T --params JSON --model DIR --tasks YAML [...]
                        --zoo DIR [...] --generated DIR [...] --encoded FILE [...] --cond FILE --out FILE
                        [--cache-dir DIR]

scores every method on one target with lm-evaluation-harness, as dnd.evaluate does for the main
table (no oracle), with two tasks per target (dnd.experiments.mathcode.data): `_gen`, greedy
generation scored by lm-eval's gsm8k filters (gsm8k), the last \\boxed{} (math) or pass@1 of the
code run by dnd.benchmarks.code_exec (humaneval); `_loglik`, the reference solution's
log-probability. The tasks, filters and output rows in full: docs/modules.md, section
`src/dnd/experiments/mathcode/score.py`.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import dnd.scoring  # noqa: F401  (makes Hugging Face offline before datasets/lm_eval load)
from dnd import evaluate
from dnd.benchmarks import code_exec
from dnd.benchmarks.code_exec import load_humaneval, require_sandbox
from dnd.config import parse_params, section
from dnd.evaluate import nearest_training_lora, plan_target, quiet_lm_eval, reference_lora, require_file, scoring_jobs
from dnd.experiments.mathcode.data import GEN_TASK, LOGLIK_TASK, register_math_filter, task_name
from dnd.experiments.protocol.score import ResultCache
from dnd.io import write_jsonl
from dnd.scoring.cache import content_context
from dnd.scoring.harness import seeded_evaluate
from dnd.scoring.loop import score_or_cache

log = logging.getLogger(__name__)

# part of the cache keys: bump when this scorer's results can change (extraction, code checks, stops)
MATHCODE_SCORER_VERSION = 1

#: generated kinds scored (dnd required; the controls when present)
KINDS = ("dnd", "control_random", "control_shuffled")
#: the metric of each target's table (lm-eval metric key, or pass@1)
METRIC = {"gsm8k": "exact_match,flexible-extract", "math": "exact_match,boxed", "humaneval": "pass@1"}
SECONDARY = {"gsm8k": "exact_match,strict-match"}
OUTPUT_CHARS = 300


# ============================================================================ per-item results
def _by_filter(samples: list[dict]) -> dict[str, list[dict]]:
    """lm-eval's logged samples of one task, grouped by filter pipeline and sorted by doc_id."""
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(str(s.get("filter", "none")), []).append(s)
    return {k: sorted(v, key=lambda s: s["doc_id"]) for k, v in out.items()}


def generation_result(res: dict, task: str, target: str) -> dict[str, Any]:
    """{ids, outputs, correct (the target's METRIC), extra} of a math generation task, from
    lm-eval's logged samples, checked against lm-eval's aggregate."""
    groups = _by_filter(res["samples"][task])
    first = groups[METRIC[target].split(",")[1]]
    out = {"ids": [str(s["doc"]["id"]) for s in first],
           "outputs": [str(s["resps"][0][0])[:OUTPUT_CHARS] for s in first], "extra": {}}
    for key in (METRIC[target], SECONDARY.get(target)):
        if key is None:
            continue
        m, f = key.split(",")
        correct = [int(round(float(s[m]))) for s in groups[f]]
        agg = res["results"][task][key]
        if abs(sum(correct) / len(correct) - agg) > 1e-9:
            raise RuntimeError(f"{task}: per-item {key} {sum(correct) / len(correct)} != lm-eval's {agg}")
        if [str(x["doc"]["id"]) for x in groups[f]] != out["ids"]:
            raise RuntimeError(f"{task}: filters {f} and {METRIC[target]} logged different items")
        if key == METRIC[target]:
            out["correct"] = correct
        else:
            out["extra"][f] = correct
    return out


#: top-level lines that start the model's own tests or demo after its function: not run
CODE_TAIL = ("\nif __name__", "\nprint(", "\nassert ")


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The program of a chat answer. The answer is split at its ``` fences (a block's language
    line dropped) and the first piece that defines `entry_point` is taken (else the first that
    returns something, else the first fenced block, else the whole answer): a model may open a
    block, or write the function bare and then close one. The piece is cut at the model's own
    top-level tests or demo (CODE_TAIL). The program run is the problem's stub, then this code
    (a full function redefines the stub; a bare body continues it), then the tests
    (dnd.benchmarks.code_exec.build_program). Unlike dnd.benchmarks.code_exec.truncate_completion, a top-level `def`
    is kept: a chat answer writes the whole function, often after its imports, with helpers."""
    pieces = []
    for i, seg in enumerate(text.replace("\r\n", "\n").split("```")):
        first, sep, rest = seg.partition("\n")
        if i and sep and (not first.strip() or first.strip().isidentifier()):
            seg = rest
        pieces.append(seg)
    fenced = pieces[1::2]
    chosen = next((p for p in pieces if entry_point and f"def {entry_point}(" in p), None)
    chosen = chosen if chosen is not None else next((p for p in pieces if "return" in p), None)
    chosen = chosen if chosen is not None else (fenced[0] if fenced else pieces[0])
    cut = len(chosen)
    for tail in CODE_TAIL:
        j = chosen.find(tail)
        if 0 <= j < cut:
            cut = j
    code = chosen[:cut]
    return "" if code.lstrip().startswith(("print(", "assert ", "if __name__")) else code


def code_result(res: dict, task: str, problems: dict[str, dict], timeout_s: float, memory_mb: int,
                workers: int = 2, sandbox: str = "bubblewrap") -> dict[str, Any]:
    """{ids, outputs, correct (passed), extra: {status}, sandbox} of the HumanEval generation task:
    the code of each answer (`extract_code`) run after its problem's stub against the problem's
    tests by dnd.benchmarks.code_exec.check_many (never here), `workers` checks at a time, in `sandbox`
    (config `code.sandbox`: bubblewrap, or the explicit opt-out unsafe-python-guard)."""

    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    completions = [extract_code(str(s["resps"][0][0]), problems[str(s["doc"]["task_id"])]["entry_point"])
                   for s in samples]
    items = [(problems[str(s["doc"]["task_id"])], "\n" + c) for s, c in zip(samples, completions)]
    results = code_exec.check_many(items, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb, sandbox=sandbox)
    status = [str(r.status) for r in results]
    return {"ids": [str(s["doc"]["id"]) for s in samples], "outputs": [c[:OUTPUT_CHARS] for c in completions],
            "correct": [int(st == "passed") for st in status], "extra": {"status": status}, "sandbox": sandbox}


def loglik_result(res: dict, task: str) -> list[float]:
    """log P(reference | context) per item, doc order (NaN/inf: an error)."""

    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    out = []
    for s in samples:
        r = s["filtered_resps"]
        r = r[0] if isinstance(r, list) and r and isinstance(r[0], (list, tuple)) else r
        v = float(r[0])
        if not math.isfinite(v):
            raise ValueError(f"{task}: non-finite log-likelihood on item {s['doc'].get('id')}")
        out.append(round(v, 6))
    return out


# ============================================================================ scorer
class GenerationScorer:
    """dnd.evaluate.InPlaceScorer's loaded model (adapters merged into it); each adapter is scored on the
    target's generation task (dnd-generate) and its reference log-likelihood task (dnd-prefix)."""

    def __init__(self, domain: str, target: str, model_dir: Path, lora_config_dir: Path, tasks_dir: Path,
                 cfg: dict[str, Any], batch_size: int, dtype: str, device: Any = "cpu"):
        from dnd.evaluate import SOFTMAX_DTYPE, InPlaceScorer, load_task
        from dnd.scoring import lm_generate

        register_math_filter()
        self.domain, self.target, self.cfg = domain, target, cfg
        self.gen_task, self.ll_task = task_name(domain, target, GEN_TASK), task_name(domain, target, LOGLIK_TASK)
        self.inner = InPlaceScorer(model_dir, lora_config_dir, tasks_dir, self.ll_task, limit=None,
                                   batch_size=batch_size, dtype=dtype, metric="acc", device=device)
        self.gen_lm = lm_generate.SharedPrefillLM(pretrained=self.inner.model, tokenizer=self.inner.lm.tokenizer,
                                                  batch_size=batch_size, softmax_dtype=SOFTMAX_DTYPE)
        self.gen_dict = load_task(tasks_dir, self.gen_task)
        self.problems: dict[str, dict] = {}
        if domain == "code":
            self.problems = {p["task_id"]: p for p in load_humaneval()}

    def _evaluate(self, lm, task_dict):
        return seeded_evaluate(lm, task_dict)

    def score(self, sd: dict | None, where: str) -> dict[str, Any]:
        """{ids, correct, outputs, extra, gold_logprob, seconds} of one adapter (None: the base model)."""
        self.inner.activate(sd, where)
        t0 = time.perf_counter()
        gen = self._evaluate(self.gen_lm, self.gen_dict)
        ll = self._evaluate(self.inner.lm, self.inner.task_dict)
        if self.domain == "code":
            import torch

            out = code_result(gen, self.gen_task, self.problems, float(self.cfg["timeout_s"]),
                              int(self.cfg["memory_mb"]), workers=max(1, torch.get_num_threads()),
                              sandbox=str(self.cfg["sandbox"]))
        else:
            out = generation_result(gen, self.gen_task, self.target)
        out["gold_logprob"] = loglik_result(ll, self.ll_task)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("%s: %s %.3f, mean gold log-prob %.2f (%.1f s)", where, METRIC[self.target],
                 sum(out["correct"]) / len(out["correct"]), sum(out["gold_logprob"]) / len(out["gold_logprob"]),
                 out["seconds"])
        return out


def open_cache(directory: Path, domain: str, target: str, model_dir: Path, tasks_dir: Path,
               lora_cfg: dict[str, Any], settings: dict[str, Any], device: Any = "cpu"):
    """Per-adapter results kept by content (dnd.experiments.protocol.score.ResultCache): keys cover the base model's
    files, both tasks' test file and configs, the LoRA shape, the settings, versions
    (dnd.scoring.cache.content_context), dnd.scoring.SCORER_VERSION and MATHCODE_SCORER_VERSION."""

    yamls = {kind: tasks_dir / f"{task_name(domain, target, kind)}.yaml" for kind in (GEN_TASK, LOGLIK_TASK)}
    tasks = {kind: (evaluate.task_config(y), evaluate.task_data_file(y)) for kind, y in yamls.items()}
    files, context = content_context(model_dir, tasks, evaluate.lora_shape(lora_cfg), settings, device, mathcode=domain,
                                     mathcode_scorer_version=MATHCODE_SCORER_VERSION)
    return ResultCache(directory, files, context)


def evaluate_mathcode(domain: str, target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                      zoo: Sequence[Path], generated: Sequence[Path], encoded: Sequence[Path], cond: Path,
                      cache_dir: Path | None = None, device: Any = "cpu") -> list[dict[str, Any]]:
    """Every method on `target` (docs/modules.md); the declared inputs as in dnd.evaluate.plan_target."""

    cfg = section(domain, params.get(domain))
    ev = section("evaluation", params.get("evaluation"))
    sources = list(params.get("sources") or [])
    if not sources:
        raise ValueError("--params must list 'sources'")
    tasks_dir, _ = evaluate.task_files(tasks, [task_name(domain, target, kind) for kind in (GEN_TASK, LOGLIK_TASK)])
    require_file(model_dir / "config.json", "base model")
    plan = plan_target(target, sources, sources, zoo, generated, encoded, cond=cond, kinds=KINDS)
    nearest, sims = nearest_training_lora(plan, target)
    ref_dir, ref_cfg = reference_lora(plan, sources)
    quiet_lm_eval()
    settings = {"batch_size": int(ev["batch_size"]), "dtype": ev["dtype"],
                **{k: cfg[k] for k in ("max_new_tokens", "timeout_s", "memory_mb", "sandbox") if k in cfg}}
    if domain == "code":
        require_sandbox(str(cfg["sandbox"]))  # refuse before loading a model, not after generating
    cache = (open_cache(cache_dir, domain, target, model_dir, tasks_dir, ref_cfg, settings, device)
             if cache_dir else None)
    jobs = scoring_jobs(plan, sources, model_dir)
    listed, _ = score_or_cache(f"{domain} {target}", jobs,
                               lambda: GenerationScorer(domain, target, model_dir, ref_dir, tasks_dir, cfg,
                                                        settings["batch_size"], settings["dtype"], device),
                               cache, score=lambda scorer, sd, where: [scorer.score(sd, where)])
    results = {k: v[0] for k, v in listed.items()}  # the cache keeps a list (protocol.score.ResultCache)
    rows = []
    for method, adapter, _, _ in jobs:
        rows.append(_row(target, method, adapter, results[(method, adapter)]))
        if (method, adapter) == ("soup", "soup"):  # nearest right after the soup, as in dnd.evaluate
            rows.append(_row(target, "nearest", nearest, results[("source_lora", nearest)], info={"cosine": sims}))
    return rows


def _row(target: str, method: str, adapter: str, r: dict[str, Any], **extra) -> dict[str, Any]:
    n = len(r["correct"])
    row = {"target": target, "method": method, "adapter": adapter, "n": n, "acc": sum(r["correct"]) / n,
           "metric": METRIC[target], "ids": r["ids"], "correct": r["correct"], "gold_logprob": r["gold_logprob"],
           "outputs": r["outputs"], "extra": r.get("extra", {}), **extra}
    if "sandbox" in r:  # code: which sandbox ran the programs (dnd.benchmarks.code_exec.SANDBOXES)
        row["sandbox"] = r["sandbox"]
    return row


# ============================================================================ CLI
def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, choices=("math", "code"))
    p.add_argument("--target", required=True)
    p.add_argument("--params", required=True,
                   help='JSON: {"<domain>": {...}, "evaluation": {batch_size, dtype}, "sources": [...]}')
    p.add_argument("--model", required=True, type=Path)
    evaluate.add_declared_inputs(p)  # --tasks, --zoo, --generated, --encoded
    p.add_argument("--cond", required=True, type=Path, help="the target's encoded cond prompts (nearest)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", required=True, type=Path)


def _run(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    unknown = sorted(set(params) - {args.domain, "evaluation", "sources"})
    if unknown:
        raise ValueError(f"--params has key(s) {unknown} this command does not read")
    rows = evaluate_mathcode(args.domain, args.target, params, args.model, args.tasks, args.zoo,
                             args.generated, args.encoded, args.cond, args.cache_dir, args.device)
    write_jsonl(args.out, rows)


COMMANDS = {"evaluate-mathcode": (_add, _run)}
