"""Data of the math and code experiments (`snakemake --cores all math` / `code`): generation
items, their chat format, deterministic hash splits and the lm-eval tasks that score them.

Commands:
  mathcode-data  dnd mathcode-data --domain math|code --params JSON --data-dir DIR --out FILE...
                 writes the declared files (`outputs`) under results/<domain>: data/{name}/{train,cond,test}.jsonl,
                 data/{target}/test.lmeval.jsonl, tasks/dnd_<domain>_{target}_{gen,loglik}.yaml and
                 data/splits.csv

The item schema, the `chat` format (and why a HumanEval stub is asked for in a chat turn) and
each domain's sources and targets: docs/modules.md, section
`src/dnd/experiments/mathcode/data.py`; the design, and why it is not leave-one-out: docs/experiments/mathcode.md,
"Design and scoring".
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

from dnd.formats.chat import (  # noqa: F401
    CODE_INSTRUCTION,
    DOMAINS,
    FORMAT,
    IM_END,
    IM_START,
    SYSTEM,
    chatml,
    eval_context,
    training_example,
)
from dnd.io import atomic_path, write_csv, write_jsonl
from dnd.paths import add_declared_option, declared, resolve_input_path

log = logging.getLogger(__name__)

# generation stops at the end of the assistant's turn; code also after a closed code block followed
# by prose ("```\n\n") and where the model starts its own tests or demo (dnd.experiments.mathcode.score.CODE_TAIL):
# the program is the function (dnd.experiments.mathcode.score.extract_code), the rest would not be run
STOP = {
    "math": [IM_END, IM_START],
    "code": [IM_END, IM_START, "```\n\n", "\nif __name__", "\nprint(", "\nassert "],
}
TARGETS = {"math": ("gsm8k", "math"), "code": ("humaneval",)}
GEN_TASK, LOGLIK_TASK = "gen", "loglik"


# ============================================================================ splits
def hash_unit(tag: str, text: str) -> float:
    """A number in [0, 1) fixed by (tag, text): sha256, the same on every machine and run."""
    return int(hashlib.sha256(f"{tag}|{text}".encode()).hexdigest()[:15], 16) / 16 ** 15


def _by_hash(items: list[dict], tag: str) -> list[dict]:
    return sorted(items, key=lambda it: (hash_unit(tag, it["prompt"]), it["id"]))


def shard_of(u: float, n_shards: int, share: float) -> int | None:
    """The shard of hash value `u` (None: u < share, the target's share)."""
    if u < share:
        return None
    return min(n_shards - 1, int((u - share) / (1 - share) * n_shards))


def math_answer(response: str, kind: str) -> str:
    """The gold final answer of a reference solution as lm-eval extracts it: GSM8K the number
    after '#### ', MATH the last \\boxed{} (lm-eval's hendrycks_math utilities)."""
    if kind == "gsm8k":
        return response.split("####")[-1].strip()
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    boxed = last_boxed_only_string(response)
    return remove_boxed(boxed) if boxed else ""


def prepare_math(cfg: dict[str, Any], data_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """{name: {split: items}} of the math experiment (docs/modules.md). Sources have a train
    split (first n_train by hash); targets cond (n_cond) and test (n_test), disjoint."""
    from dnd.benchmarks.datasets import load_generation_set

    n_train, n_cond, n_test, S = int(cfg["n_train"]), int(cfg["n_cond"]), int(cfg["n_test"]), int(cfg["shards"])
    out: dict[str, dict[str, list[dict]]] = {}
    math_items = load_generation_set("math", data_dir)
    for it in math_items:
        it["answer"] = math_answer(it["response"], "math")
    share = float(cfg["target_share"])
    target_pool = _by_hash([it for it in math_items if shard_of(hash_unit("math", it["prompt"]), S, share) is None],
                           "math")
    shards = {k: [it for it in math_items if shard_of(hash_unit("math", it["prompt"]), S, share) == k]
              for k in range(S)}
    gsm = load_generation_set("gsm8k", data_dir)
    for it in gsm:
        it["answer"] = math_answer(it["response"], "gsm8k")
    for name, pool in (("gsm8k", _by_hash(gsm, "gsm8k")), ("math", target_pool)):
        if len(pool) < n_test + n_cond:
            raise ValueError(f"{name}: n_test + n_cond = {n_test + n_cond} exceed its {len(pool)} items")
        out[name] = {"train": [], "test": pool[:n_test], "cond": pool[n_test:n_test + n_cond]}
    held = {it["prompt"].strip() for t in out.values() for s in t.values() for it in s}
    sources = {"math_iio": load_generation_set("math_iio", data_dir),
               "mu_math": load_generation_set("mu_math", data_dir),
               **{f"math_s{k}": items for k, items in shards.items()}}
    for name, items in sources.items():
        items = [it for it in items if it["prompt"].strip() not in held]
        out[name] = {"train": _by_hash(items, name)[:n_train], "cond": [], "test": []}
    return out


def prepare_code(cfg: dict[str, Any], data_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """{name: {split: items}} of the code experiment (docs/modules.md)."""
    from dnd.benchmarks.datasets import load_generation_set

    n_train, n_cond, n_test, S = int(cfg["n_train"]), int(cfg["n_cond"]), int(cfg["n_test"]), int(cfg["shards"])
    alpaca = load_generation_set("codealpaca", data_dir)
    out: dict[str, dict[str, list[dict]]] = {}
    for k in range(S):
        items = [it for it in alpaca if shard_of(hash_unit("code", it["prompt"]), S, share=0.0) == k]
        out[f"code_s{k}"] = {"train": _by_hash(items, f"code_s{k}")[:n_train], "cond": [], "test": []}
    he = _by_hash(load_generation_set("humaneval", data_dir), "humaneval")
    if n_cond >= len(he):
        raise ValueError(f"humaneval: n_cond {n_cond} leaves no test item of {len(he)}")
    cond, rest = he[:n_cond], he[n_cond:]
    test = sorted(rest[: n_test or len(rest)], key=lambda it: int(it["task_id"].split("/")[-1]))
    out["humaneval"] = {"train": [], "cond": cond, "test": test}
    return out


# ============================================================================ tasks
def task_name(domain: str, target: str, kind: str) -> str:
    return f"dnd_{domain}_{target}_{kind}"


def eval_record(item: dict[str, Any], domain: str) -> dict[str, Any]:
    """The row lm-eval reads: the context, the reference (scored by log-likelihood) and the
    gold answer in the form its metric compares."""
    reference = item["response"].rstrip() + IM_END
    if domain == "code" and item.get("task_id"):  # the whole function, as a code answer is written
        reference = item["prompt"] + item["response"].rstrip() + IM_END
    rec = {"id": item["id"], "context": eval_context(item, domain), "reference": reference}
    if domain == "math":
        rec["response"] = item["response"]
        rec["answer"] = item["answer"]
        rec["answer_norm"] = normalize_math_answer(item["answer"])
    else:
        rec["task_id"] = item["task_id"]
    return rec


def normalize_math_answer(text: str) -> str:
    """lm-eval's hendrycks_math `strip_string` (its is_equiv compares these; the raw text when
    it raises, as is_equiv falls back)."""
    from lm_eval.tasks.hendrycks_math.utils import strip_string

    try:
        return strip_string(text)
    except Exception:  # noqa: BLE001 - is_equiv's own fallback
        return text


def _lm_eval_gsm8k() -> dict[str, Any]:
    """lm-eval's own gsm8k task config (its filters and exact_match settings are used verbatim)."""
    import yaml
    from lm_eval import tasks

    path = Path(tasks.__file__).parent / "gsm8k" / "gsm8k.yaml"
    return yaml.safe_load(path.read_text())


def task_configs(domain: str, target: str, data_file: str | Path, max_new_tokens: int) -> dict[str, dict]:
    """{name: lm-eval task config}: the greedy generation task (GSM8K: lm-eval's gsm8k filters
    `strict-match` and `flexible-extract` with its exact_match settings; MATH: filter
    `dnd_math_boxed`, the last \\boxed{} normalized as lm-eval's hendrycks_math; HumanEval:
    `bypass`, the completions are run by dnd.benchmarks.code_exec) and the log-likelihood task of the
    reference solution."""
    from dnd.formats.prompts import portable_path

    common = {"dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": portable_path(data_file)}}, "test_split": "test",
              "doc_to_text": "{{context}}", "metadata": {"version": 1.0}}
    gen = {"task": task_name(domain, target, GEN_TASK), **common, "output_type": "generate_until",
           "generation_kwargs": {"until": list(STOP[domain]), "do_sample": False, "max_gen_toks": int(max_new_tokens)}}
    if domain == "code":
        gen.update(doc_to_target="{{task_id}}", metric_list=[{"metric": "bypass"}])
    elif target == "gsm8k":
        ref = _lm_eval_gsm8k()
        gen.update(doc_to_target="{{response}}", filter_list=ref["filter_list"], metric_list=ref["metric_list"])
    else:
        gen.update(doc_to_target="{{answer_norm}}",
                   filter_list=[{"name": MATH_FILTER_NAME,
                                 "filter": [{"function": MATH_FILTER}, {"function": "take_first"}]}],
                   metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}])
    # metric `acc` (is the reference the greedy continuation): lm-eval's `perplexity` aggregation is
    # exp(-mean log-likelihood), which overflows for a long reference under a poor model
    loglik = {"task": task_name(domain, target, LOGLIK_TASK), **common, "output_type": "loglikelihood",
              "doc_to_target": "{{reference}}", "target_delimiter": "",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    return {gen["task"]: gen, loglik["task"]: loglik}


MATH_FILTER = "dnd_math_boxed"
MATH_FILTER_NAME = "boxed"


def extract_math_answer(output: str) -> str:
    """The answer of a MATH output as lm-eval's hendrycks_math reads one: the content of the last
    \\boxed{} (or \\fbox{}); without one, hendrycks_math's own rule (the text between the first
    and the last `$`, else the whole output); normalized by `normalize_math_answer`."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    boxed = last_boxed_only_string(output)
    if boxed:
        try:
            return normalize_math_answer(remove_boxed(boxed))
        except AssertionError:  # "\boxed{" without its closing brace at the end
            pass
    dollars = [i for i, c in enumerate(output) if c == "$"]
    answer = output[dollars[0] + 1: dollars[-1]] if len(dollars) > 1 else output
    return normalize_math_answer(answer)


def register_math_filter() -> None:
    """Register `dnd_math_boxed` (extract_math_answer on each output) in lm-eval's filters, once."""
    from lm_eval.api.filter import Filter
    from lm_eval.api.registry import FILTER_REGISTRY, register_filter

    if MATH_FILTER in FILTER_REGISTRY:
        return

    @register_filter(MATH_FILTER)
    class MathBoxedFilter(Filter):
        def apply(self, resps, docs):
            return [[extract_math_answer(r) for r in rs] for rs in resps]


def outputs(domain: str, cfg: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """What `write_domain` writes under `root` (results/<domain>), the mathcode-data rule's
    outputs: every split, each target's lm-eval rows and tasks, data/splits.csv."""
    names = [*sources(domain, cfg), *TARGETS[domain]]
    return {
        "splits": [f"{root}/data/{n}/{s}.jsonl" for n in names for s in ("train", "cond", "test")],
        "lmeval": [f"{root}/data/{t}/test.lmeval.jsonl" for t in TARGETS[domain]],
        "tasks": [f"{root}/tasks/{task_name(domain, t, k)}.yaml"
                  for t in TARGETS[domain] for k in (GEN_TASK, LOGLIK_TASK)],
        "summary": f"{root}/data/splits.csv",
    }


def output_paths(domain: str, cfg: dict[str, Any], root: str | Path) -> list[Path]:
    """`outputs` as one list: what `write_domain` takes."""
    o = outputs(domain, cfg, root)
    return [Path(p) for p in [*o["splits"], *o["lmeval"], *o["tasks"], o["summary"]]]


def write_domain(domain: str, cfg: dict[str, Any], data_dir: Path, out: Sequence[Path]) -> dict[str, dict[str, int]]:
    """Write every split, each target's lm-eval rows and tasks, and data/splits.csv: the declared
    outputs `out` (`outputs`), each found with dnd.paths.declared."""
    import yaml

    def output(rel: Path, what: str) -> Path:
        return declared(out, rel, what, "--out")

    splits = (prepare_math if domain == "math" else prepare_code)(cfg, data_dir)
    sizes = {}
    for name, parts in splits.items():
        for split, items in parts.items():
            write_jsonl(output(Path("data") / name / f"{split}.jsonl", f"{split} split of {name}"), items)
        sizes[name] = {s: len(v) for s, v in parts.items()}
    for target in TARGETS[domain]:
        data_file = output(Path("data") / target / "test.lmeval.jsonl", f"lm-eval rows of {target}")
        write_jsonl(data_file, [eval_record(it, domain) for it in splits[target]["test"]])
        for name, tcfg in task_configs(domain, target, data_file, cfg["max_new_tokens"]).items():
            with atomic_path(output(Path("tasks") / f"{name}.yaml", f"lm-eval task {name}")) as tmp:
                Path(tmp).write_text(yaml.safe_dump(tcfg, sort_keys=False))
    write_csv(output(Path("data") / "splits.csv", "split sizes"), ["dataset", "role", "train", "cond", "test"],
              [[n, "target" if n in TARGETS[domain] else "source", s["train"], s["cond"], s["test"]]
               for n, s in sizes.items()])
    log.info("%s: %s", domain, sizes)
    return sizes


def sources(domain: str, cfg: dict[str, Any]) -> list[str]:
    """The source datasets (one LoRA each) of a domain."""
    shards = [f"{domain}_s{k}" for k in range(int(cfg["shards"]))]
    return ["math_iio", "mu_math", *shards] if domain == "math" else shards


# ============================================================================ CLI
def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, choices=DOMAINS)
    p.add_argument("--params", required=True, help='JSON: {"math": {...}} or {"code": {...}} (config section)')
    p.add_argument("--data-dir", required=True, type=Path, help="the shared data directory (data.dir)")
    add_declared_option(p, "--out", "what it writes under results/<domain> (`outputs`)")


def _run(args: argparse.Namespace) -> None:
    from dnd.config import command_params

    cfg = command_params(args.params, args.domain)[args.domain]
    write_domain(args.domain, cfg, resolve_input_path(cfg["data_dir"] or str(args.data_dir)), args.out)


COMMANDS = {"mathcode-data": (_add, _run)}
