"""Evaluation with lm-evaluation-harness: DnD against every baseline and control.

Two commands.

  dnd evaluate --params JSON --target T --model DIR --tasks-dir DIR --zoo-dir DIR
               --generated-dir DIR --encoded-dir DIR --out FILE [--cache-dir DIR]
               [--threads N (dnd's global flag)]

scores every method on one held-out target with the same harness, the same items (the first
`evaluation.limit` rows of `results/data/{T}/test.lmeval.jsonl`) and the same prompt (the task
`dnd_{T}` rendered by dnd.prompts):

  method          adapter                   what is scored
  base            "base"                    the base model (LoRA modules disabled)
  source_lora     d, for every dataset d    results/zoo/{d}/final; d == T is the oracle
  soup            "soup"                    element-wise mean of the fold's training LoRAs
                                            (lora_A and lora_B averaged separately)
  nearest         the chosen dataset        the training LoRA whose dataset's mean train-prompt
                                            embedding is closest (cosine) to the mean of T's
                                            cond-prompt embeddings; its source_lora result is
                                            reused (no second forward pass)
  dnd             "0", "1", ...             results/generated/{T}/dnd_{i}/
  control_other   "0", ...                  results/generated/{T}/control_other_{i}/
  control_random  "0", ...                  results/generated/{T}/control_random_{i}/

Speed: the base model is loaded once and wrapped once with LoRA modules (peft, LoraConfig read
from the first training LoRA); each adapter's weights are then copied in place
(`set_peft_model_state_dict`, every LoRA key required, no unexpected key) and scored by one
`HFLM` built on the loaded model, with one task object (lm-eval rebuilds the requests on every
call). This is the harness's own `lm_eval.evaluator.evaluate` loop, i.e. what
`lm_eval.simple_evaluate(model="hf", model_args={"pretrained": base, "peft": adapter})` runs,
minus the model reload; tests/test_evaluation.py checks that both give identical log-likelihoods.
With --cache-dir (the workflow passes results/eval_cache/{T} unless `evaluation.cache` is
false) per-item results are kept by content (`ScoreCache`): a rerun after, say, a generator
change scores only the new adapters and reuses base, source LoRAs and soup.
Every adapter must share the LoRA shape (rank, alpha, target modules, ...) of the first one,
otherwise it is rejected (its scaling would be wrong). An adapter whose log-likelihoods are
NaN/inf is an error naming it, never a score (lm-eval would pick choice 0), and never cached.
A task YAML's test file (dataset_kwargs.data_files.test) may be relative to the repository
root: lm-eval reads a copy of the YAML with the absolute path, whatever the CWD.

--params (JSON object):
  {"evaluation": {limit, batch_size, dtype, metric, ...},   # config section; defaults from the schema
   "datasets":   [every dataset name],                              # source_lora is scored for each
   "sources":    [the fold's training datasets],                    # soup and nearest; default datasets - {T}
   "seed":       int}                                               # unused by evaluate (scoring is deterministic)

Output `--out` (JSONL, written atomically once everything is scored; a killed job leaves nothing
behind and a rerun recomputes): one line per (method, adapter)
  {target, method, adapter, n, acc, correct: [0/1 per item, doc order], ids: [item ids], metric}
and, for `nearest`, `info: {"cosine": {dataset: similarity}}`.

  dnd summarize --params JSON --eval FILE... --scores CSV --metrics JSON

merges per-target files into results/scores.csv (`target,method,adapter,n,acc,ci_low,ci_high`,
95% percentile bootstrap over items) and results/metrics.json (flat headline
figures). Rows with adapter "mean" aggregate a multi-adapter method (dnd, control_other,
control_random) per target: acc = mean over adapters, CI = bootstrap of the per-item mean over
adapters. Within a target all rows share one matrix of resampled item indices (seeded by
`seed` and the target name), so the CIs are paired and do not depend on which other targets or
rows exist.

--params (JSON object):
  {"evaluation": {"bootstrap": int, ...}, "seed": int,
   "folds": {target: [training datasets]}}   # optional; default: every other dataset

`main_table(scores)` computes the comparison table from scores.csv alone (the report calls it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

# Never reach the Hugging Face Hub from an evaluation job (must precede datasets/lm_eval imports).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from .config import section

log = logging.getLogger(__name__)

METHODS = ("base", "source_lora", "soup", "nearest", "dnd", "control_other", "control_random")
GENERATED_KINDS = ("dnd", "control_other", "control_random")
SCORE_COLUMNS = ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high"]
MAIN_COLUMNS = ["target", "base", "train_avg", "best_train", "soup", "nearest", "dnd_mean", "dnd_sd",
                "dnd_ci_low", "dnd_ci_high", "oracle", "gap_closed"]
MEAN_ADAPTER = "mean"  # adapter name of the per-target aggregate row of a multi-adapter method
MEAN_TARGET = "mean"  # row / key name of the average over targets
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# lm-eval's own defaults (lm_eval.defaults), applied before every scoring call as simple_evaluate does
LMEVAL_RANDOM_SEED = 0
LMEVAL_OTHER_SEED = 1234
# LoraConfig fields that must agree between the wrapped model and an adapter loaded into it
LORA_SHAPE_FIELDS = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias",
                     "fan_in_fan_out", "rank_pattern", "alpha_pattern", "layers_to_transform",
                     "layers_pattern", "modules_to_save")


# ============================================================================ input files
def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_adapter_dir(path: Path, what: str) -> Path:
    _require(path, what)
    for name in ADAPTER_FILES:
        _require(path / name, f"{what} ({name})")
    return path


def discover_generated(gen_dir: Path) -> dict[str, list[tuple[str, Path]]]:
    """{kind: [(index, dir), ...]} for results/generated/{T}/{kind}_{i}/, sorted by i."""
    _require(gen_dir, "generated adapters directory")
    pat = re.compile(r"(dnd|control_other|control_random)_(\d+)")
    found: dict[str, list[tuple[int, Path]]] = {k: [] for k in GENERATED_KINDS}
    for p in gen_dir.iterdir():
        m = pat.fullmatch(p.name)
        if m and p.is_dir():
            found[m.group(1)].append((int(m.group(2)), require_adapter_dir(p, f"generated adapter {p.name}")))
    out = {}
    for kind, lst in found.items():
        if not lst:
            raise FileNotFoundError(f"no {kind}_<i>/ adapter directories in {gen_dir}")
        out[kind] = [(str(i), p) for i, p in sorted(lst)]
    return out


def task_config(task_yaml: Path) -> dict[str, Any]:
    """The parsed lm-eval task YAML; it must name its test file (dataset_kwargs.data_files.test)."""
    import yaml

    cfg = yaml.safe_load(_require(task_yaml, "lm-eval task").read_text())
    try:
        test = cfg["dataset_kwargs"]["data_files"]["test"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{task_yaml} has no dataset_kwargs.data_files.test") from exc
    if not isinstance(test, str):
        raise ValueError(f"{task_yaml}: dataset_kwargs.data_files.test must be one path, got {test!r}")
    return cfg


def task_data_file(task_yaml: Path) -> Path:
    """The test file a task YAML reads: dataset_kwargs.data_files.test, relative to the run's
    working directory (where dnd.prompts.portable_path wrote it from, and where lm-eval looks)
    unless it is absolute."""
    data = Path(task_config(task_yaml)["dataset_kwargs"]["data_files"]["test"])
    return _require(data.resolve(), f"test items of task {task_yaml.name}")


@contextlib.contextmanager
def materialized_task(task_yaml: Path) -> Iterator[Path]:
    """A temporary directory holding a copy of `task_yaml` whose test file is the absolute path
    `task_data_file` resolves: lm-eval resolves a relative data_files against the process CWD,
    which need not be the repository root. Point TaskManager's include_path at it."""
    import yaml

    cfg = task_config(task_yaml)
    cfg["dataset_kwargs"]["data_files"]["test"] = str(task_data_file(task_yaml))
    with tempfile.TemporaryDirectory(prefix="dnd-tasks-") as tmp:
        (Path(tmp) / task_yaml.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
        yield Path(tmp)


def read_ids(path: Path) -> list[str]:
    from .io import read_jsonl

    return [str(r["id"]) for r in read_jsonl(path)]


# ======================================================================== LoRA state dicts
def read_lora_config(adapter_dir: Path) -> dict[str, Any]:
    return json.loads((adapter_dir / "adapter_config.json").read_text())


def lora_shape(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: cfg.get(k) for k in LORA_SHAPE_FIELDS}
    tm = out["target_modules"]
    out["target_modules"] = sorted(tm) if isinstance(tm, list) else tm
    for k in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        out[k] = out[k] or None  # {} / [] / None mean the same
    return out


def check_same_lora_shape(ref: dict[str, Any], cfg: dict[str, Any], where: Path) -> None:
    a, b = lora_shape(ref), lora_shape(cfg)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        raise ValueError(f"adapter {where} has a different LoRA shape from the first training LoRA: {diff}")


def load_state_dict(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def average_state_dicts(sds: list[dict]) -> dict:
    """Element-wise mean (fp32) of LoRA state dicts with identical keys and shapes; lora_A and
    lora_B are averaged separately (a 'LoRA soup', not a mean of the B@A products)."""
    import torch

    if not sds:
        raise ValueError("nothing to average")
    keys = set(sds[0])
    for i, sd in enumerate(sds[1:], 1):
        if set(sd) != keys:
            raise ValueError(f"state dict {i} has different keys from state dict 0")
    return {k: torch.stack([sd[k].float() for sd in sds]).mean(0) for k in sds[0]}


# ================================================================ nearest training LoRA
def mean_prompt_embedding(path: Path, chunk: int = 256):
    """Dataset-level embedding: the masked mean of each prompt's token states, averaged over
    prompts (each prompt weighs the same; with mean pooling L = 1 this is the plain mean)."""
    import torch

    obj = torch.load(_require(path, "encoded prompts"), map_location="cpu", weights_only=True)
    states, mask = obj["states"], obj["mask"]
    if states.ndim != 3 or mask.shape != states.shape[:2]:
        raise ValueError(f"{path}: expected states (n, L, D) and mask (n, L), got "
                         f"{tuple(states.shape)} and {tuple(mask.shape)}")
    total = torch.zeros(states.shape[-1], dtype=torch.float64)
    n = 0
    for s in range(0, states.shape[0], chunk):
        st = states[s:s + chunk].double()
        m = mask[s:s + chunk].to(st.dtype).unsqueeze(-1)
        cnt = m.sum(1)
        keep = cnt.squeeze(-1) > 0
        total += ((st * m).sum(1)[keep] / cnt[keep]).sum(0)
        n += int(keep.sum())
    if n == 0:
        raise ValueError(f"{path}: no prompt has an unmasked token")
    return total / n


def nearest_source(target_vec, source_vecs: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """(closest dataset by cosine similarity, {dataset: similarity}); ties go to the first."""
    import torch

    sims = {d: float(torch.nn.functional.cosine_similarity(target_vec.double(), v.double(), dim=0))
            for d, v in source_vecs.items()}
    best = max(sims, key=lambda d: sims[d])  # max keeps the first of equal values
    return best, sims


# ================================================================== in-place scoring
@dataclass
class Scored:
    ids: list[str]
    correct: list[int]
    acc: float
    seconds: float
    loglikelihoods: list[list[float]] = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_non_finite(self) -> int:
        """Items with a NaN/inf log-likelihood (a broken adapter: lm-eval would then pick choice 0)."""
        return sum(1 for ll in self.loglikelihoods if not all(math.isfinite(x) for x in ll))


class NonFiniteScoreError(ValueError):
    """An adapter whose log-likelihoods are NaN/inf: an error, never a score."""


def require_finite(s: Scored, where: str) -> Scored:
    """`s`, unless one of its log-likelihoods is NaN/inf: NonFiniteScoreError naming `where`."""
    if s.n_non_finite:
        raise NonFiniteScoreError(
            f"{where}: non-finite (NaN/inf) log-likelihoods on {s.n_non_finite} of {s.n} items; the adapter's "
            "weights are broken (NaN/inf?), so it has no score"
        )
    return s


class InPlaceScorer:
    """One base model, one set of LoRA modules, one HFLM and one task: adapters are swapped by
    copying their weights into the LoRA modules."""

    def __init__(self, model_dir: Path, lora_config_dir: Path, tasks_dir: Path, task: str, *,
                 limit: int | None, batch_size: int, dtype: str = "float32", metric: str = "acc"):
        import torch
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.task, self.limit, self.metric = task, limit, metric
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        vocab = model.config.vocab_size
        if vocab != len(tok):
            # lm-eval's peft= path would resize the embeddings here; scoring base and adapters
            # on differently sized vocabularies would not be comparable, so refuse.
            raise ValueError(f"model vocab_size {vocab} != tokenizer length {len(tok)} in {model_dir}")
        torch.manual_seed(0)  # LoRA init draws random numbers; every weight is overwritten anyway
        cfg = LoraConfig.from_pretrained(str(lora_config_dir))
        cfg.inference_mode = True
        self.model = get_peft_model(model, cfg)
        self.model.eval()
        self.lora_keys = set(get_peft_model_state_dict(self.model))
        self.lm = HFLM(pretrained=self.model, tokenizer=tok, batch_size=batch_size)
        with materialized_task(tasks_dir / f"{task}.yaml") as include:
            self.task_dict = TaskManager(include_path=str(include), include_defaults=False).load([task])
        if task not in self.task_dict["tasks"]:
            raise ValueError(f"task {task} not found in {tasks_dir}")
        for t in self.task_dict["tasks"].values():  # what simple_evaluate does before evaluate()
            if t.get_config("num_fewshot") is None:
                t.set_config(key="num_fewshot", value=0)
            t.set_fewshot_seed(seed=LMEVAL_OTHER_SEED)

    def load_adapter(self, sd: dict, where: str = "adapter") -> None:
        """Copy a PEFT state dict (keys as on disk) into the LoRA modules; every LoRA key must be
        present and nothing else."""
        from peft import set_peft_model_state_dict

        keys = set(sd)
        if keys != self.lora_keys:
            missing, extra = sorted(self.lora_keys - keys), sorted(keys - self.lora_keys)
            raise ValueError(f"{where}: LoRA keys do not match the model: {len(missing)} missing "
                             f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}")
        res = set_peft_model_state_dict(self.model, sd)
        bad = list(res.unexpected_keys) + [k for k in res.missing_keys if "lora_" in k]
        if bad:
            raise ValueError(f"{where}: peft did not load {bad[:3]}")

    def score(self, sd: dict | None, where: str = "adapter") -> Scored:
        """Score `sd` (None = the base model, LoRA modules disabled)."""
        import contextlib
        import random

        import numpy as np
        import torch
        from lm_eval import evaluator

        t0 = time.perf_counter()
        if sd is not None:
            self.load_adapter(sd, where)
        ctx = self.model.disable_adapter() if sd is None else contextlib.nullcontext()
        random.seed(LMEVAL_RANDOM_SEED)
        np.random.seed(LMEVAL_OTHER_SEED)
        torch.manual_seed(LMEVAL_OTHER_SEED)
        with ctx:  # HFLM runs the model under torch.no_grad itself, as in a fresh lm-eval run
            res = evaluator.evaluate(lm=self.lm, task_dict=self.task_dict, limit=self.limit,
                                     bootstrap_iters=0, log_samples=True)
        return require_finite(samples_to_scored(res, self.task, self.metric, time.perf_counter() - t0), where)


class ScoreCache:
    """Per-item results of scored adapters, addressed by the content of everything that
    determines them, so a rerun (e.g. after a generator change) scores only what changed.

    Key = sha256 over: the adapter's tensors (names, dtypes, shapes, bytes; "base" for the base
    model), the LoRA shape it is loaded with, the base model's files, the task config (without
    the path of its test file: the same key wherever the repository lives, relative or
    absolute path) and the content of its test file, the scoring settings (limit, batch_size,
    dtype, metric), the torch thread count, the versions of torch/transformers/peft/lm-eval
    and the source of this module and dnd.prompts.
    One JSON file per key in `directory`, written atomically; a corrupt or foreign file, or one
    holding a non-finite log-likelihood, is a miss, and a non-finite result is never stored.
    """

    FORMAT = "dnd-score-cache-1"

    def __init__(self, directory: Path, model_dir: Path, task_yaml: Path, test_file: Path,
                 lora_cfg: dict[str, Any], settings: dict[str, Any]):
        import hashlib
        from importlib.metadata import version

        import torch

        from . import prompts

        self.directory = Path(directory)
        h = hashlib.sha256()
        files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
        files += [test_file, Path(__file__), Path(prompts.__file__)]
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        task = task_config(task_yaml)
        del task["dataset_kwargs"]["data_files"]["test"]  # its content is hashed above
        context = {
            "format": self.FORMAT,
            "task": task,
            "lora": lora_shape(lora_cfg),
            "settings": {k: settings[k] for k in ("limit", "batch_size", "dtype", "metric")},
            "threads": torch.get_num_threads(),
            "versions": {m: version(m) for m in ("torch", "transformers", "peft", "lm_eval")},
        }
        h.update(json.dumps(context, sort_keys=True, default=str).encode())
        self.context = h.hexdigest()

    def key(self, sd: dict | None) -> str:
        import hashlib

        import torch

        h = hashlib.sha256(self.context.encode())
        if sd is None:
            h.update(b"base")
        for name in sorted(sd or {}):
            t = sd[name].contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Scored | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            obj = json.loads(path.read_text())
            if obj.get("key") != key:
                return None
            s = Scored(ids=obj["ids"], correct=obj["correct"], acc=obj["acc"], seconds=0.0,
                       loglikelihoods=obj["loglikelihoods"])
            return require_finite(s, str(path))
        except (ValueError, KeyError, TypeError):  # NonFiniteScoreError included
            log.warning("ignoring unreadable or non-finite score cache entry %s", path)
            return None

    def put(self, key: str, s: Scored) -> None:
        """Store `s` under `key`; a non-finite result is refused (NonFiniteScoreError)."""
        from .io import write_json

        require_finite(s, f"score cache entry {key}")
        write_json(self._path(key), {"key": key, "ids": s.ids, "correct": s.correct, "acc": s.acc,
                                     "loglikelihoods": s.loglikelihoods, "seconds": round(s.seconds, 3)})


def samples_to_scored(res: dict, task: str, metric: str, seconds: float = 0.0) -> Scored:
    """Per-item correctness from lm-eval's logged samples, ordered by doc_id; checked against
    the aggregate lm-eval reports."""
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    ids = [str(s["doc"]["id"]) for s in samples]
    correct = [int(round(float(s[metric]))) for s in samples]
    acc = sum(correct) / len(correct)
    agg = res["results"][task][f"{metric},none"]
    if abs(acc - agg) > 1e-9:
        raise RuntimeError(f"per-item {metric} mean {acc} != lm-eval's {agg}")
    ll = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return Scored(ids=ids, correct=correct, acc=acc, seconds=seconds, loglikelihoods=ll)


# ======================================================================== evaluate
def plan_target(target: str, datasets: list[str], sources: list[str], zoo_dir: Path, generated_dir: Path,
                encoded_dir: Path) -> dict[str, Any]:
    """Check every input exists before the model is loaded; return what to score."""
    if target not in datasets:
        raise ValueError(f"target {target!r} is not among datasets {datasets}")
    bad = sorted(set(sources) - set(datasets))
    if bad:
        raise ValueError(f"sources {bad} are not among datasets {datasets}")
    if target in sources:
        raise ValueError(f"the target {target!r} is among its own training datasets")
    if not sources:
        raise ValueError(f"fold {target!r} has no training datasets")
    finals = {d: require_adapter_dir(zoo_dir / d / "final", f"final LoRA of {d}") for d in datasets}
    generated = discover_generated(generated_dir)
    encoded = {d: _require(encoded_dir / d / "train.pt", f"encoded train prompts of {d}") for d in sources}
    cond = _require(encoded_dir / target / "cond.pt", f"encoded cond prompts of {target}")
    return {"finals": finals, "generated": generated, "encoded": encoded, "cond": cond}


def _row(target: str, method: str, adapter: str, s: Scored, metric: str, **extra) -> dict[str, Any]:
    row = {"target": target, "method": method, "adapter": adapter, "n": s.n, "acc": s.acc,
           "correct": s.correct, "ids": s.ids, "metric": metric}
    row.update(extra)
    return row


def _adapter_job(method: str, adapter: str, path: Path) -> tuple[str, str, str, Any]:
    """(method, adapter, where, loader) of an adapter directory; `where` names it in messages."""
    return method, adapter, f"{method}/{adapter} ({path})", lambda: load_state_dict(path)


def evaluate_target(target: str, params: dict[str, Any], model_dir: Path, tasks_dir: Path, zoo_dir: Path,
                    generated_dir: Path, encoded_dir: Path, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Score every method on `target` (see the module doc). With `cache_dir`, adapters whose
    results are in the ScoreCache are not scored again (the model is loaded only if one is
    missing)."""
    from tqdm.auto import tqdm

    from .prompts import task_name

    t_start = time.perf_counter()
    ev = section("evaluation", params.get("evaluation"))
    datasets = list(params.get("datasets") or [])
    if not datasets:
        raise ValueError("--params must list 'datasets'")
    sources = list(params.get("sources") or [d for d in datasets if d != target])
    task = task_name(target)
    task_yaml = _require(tasks_dir / f"{task}.yaml", f"lm-eval task {task}")
    test_file = task_data_file(task_yaml)
    test_ids = read_ids(test_file)
    _require(model_dir / "config.json", "base model")
    plan = plan_target(target, datasets, sources, zoo_dir, generated_dir, encoded_dir)

    # nearest training LoRA (cheap, before the model)
    cond_vec = mean_prompt_embedding(plan["cond"])
    src_vecs = {d: mean_prompt_embedding(p) for d, p in plan["encoded"].items()}
    for d, v in src_vecs.items():
        if v.shape != cond_vec.shape:
            raise ValueError(f"encoded prompts of {d} have dim {tuple(v.shape)}, "
                             f"{target}'s cond prompts {tuple(cond_vec.shape)}")
    nearest, sims = nearest_source(cond_vec, src_vecs)
    log.info("nearest training LoRA for %s: %s (cosine %s)", target, nearest,
             ", ".join(f"{d}={v:.4f}" for d, v in sims.items()))

    # every adapter must have the shape of the LoRA modules the model gets
    ref_dir = plan["finals"][sources[0]]
    ref_cfg = read_lora_config(ref_dir)
    all_dirs = list(plan["finals"].values()) + [p for lst in plan["generated"].values() for _, p in lst]
    for d in all_dirs:
        check_same_lora_shape(ref_cfg, read_lora_config(d), d)

    if log.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
    cache = ScoreCache(cache_dir, model_dir, task_yaml, test_file, ref_cfg, ev) if cache_dir is not None else None
    scorer: InPlaceScorer | None = None
    overhead = time.perf_counter() - t_start

    # (method, adapter, where, loader) in output order; nearest is filled from source_lora
    jobs: list[tuple[str, str, str, Any]] = [("base", "base", f"base ({model_dir})", None)]
    jobs += [_adapter_job("source_lora", d, p) for d, p in plan["finals"].items()]
    jobs.append(("soup", "soup", f"soup (mean of {', '.join(sources)})",
                 lambda: average_state_dicts([load_state_dict(plan["finals"][d]) for d in sources])))
    for kind in GENERATED_KINDS:
        jobs += [_adapter_job(kind, i, p) for i, p in plan["generated"][kind]]

    scored: dict[tuple[str, str], Scored] = {}
    bar = tqdm(jobs, desc=f"evaluate {target}", unit="adapter")
    n_items = n_cached = 0
    for method, adapter, where, loader in bar:
        name = f"{method}/{adapter}"
        sd = None if loader is None else loader()
        key = cache.key(sd) if cache is not None else ""
        s = cache.get(key) if cache is not None else None
        if s is None:
            if scorer is None:
                t = time.perf_counter()
                scorer = InPlaceScorer(model_dir, ref_dir, tasks_dir, task, limit=int(ev["limit"]),
                                       batch_size=int(ev["batch_size"]), dtype=ev["dtype"], metric=ev["metric"])
                overhead += time.perf_counter() - t
            s = scorer.score(sd, where=where)
            if cache is not None:
                cache.put(key, s)
            n_items += s.n
            bar.set_postfix(acc=f"{s.acc:.3f}", q_per_s=f"{s.n / s.seconds:.1f}")
            log.info("%s %-22s acc=%.4f n=%d (%.1f s, %.1f questions/s)", target, name, s.acc, s.n, s.seconds,
                     s.n / s.seconds)
        else:
            n_cached += 1
            log.info("%s %-22s acc=%.4f n=%d (cached)", target, name, s.acc, s.n)
        if s.ids != test_ids[: s.n] or s.n != min(len(test_ids), int(ev["limit"])):
            raise RuntimeError(f"{name}: scored items are not the first {s.n} of the test file")
        scored[(method, adapter)] = s
    total = time.perf_counter() - t_start
    scoring = total - overhead
    log.info("%s: %d adapters (%d from the score cache), %d questions scored in %.1f s (%.1f questions/s "
             "while scoring; %.1f s fixed overhead)", target, len(jobs), n_cached, n_items, total,
             n_items / max(scoring, 1e-9), overhead)

    m = ev["metric"]
    rows = [_row(target, method, adapter, scored[(method, adapter)], m) for method, adapter, _, _ in jobs]
    near = _row(target, "nearest", nearest, scored[("source_lora", nearest)], m, info={"cosine": sims})
    rows.insert(next(i for i, r in enumerate(rows) if r["method"] == "soup") + 1, near)  # METHODS order
    return rows


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {evaluation: {...}, datasets: [...], sources: [...], seed}")
    p.add_argument("--target", required=True, help="held-out dataset")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    p.add_argument("--tasks-dir", required=True, type=Path, help="directory of dnd_{ds}.yaml lm-eval tasks")
    p.add_argument("--zoo-dir", required=True, type=Path, help="results/zoo (uses {ds}/final/)")
    p.add_argument("--generated-dir", required=True, type=Path, help="results/generated/{target}")
    p.add_argument("--encoded-dir", required=True, type=Path, help="results/encoded (train.pt, cond.pt)")
    p.add_argument("--out", required=True, type=Path, help="results/eval/{target}.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="score cache directory (results/eval_cache/{target}); omit to score everything")


def _run_evaluate(args: argparse.Namespace) -> None:
    from .config import parse_params
    from .io import write_jsonl

    params = parse_params(args.params)
    rows = evaluate_target(args.target, params, args.model, args.tasks_dir, args.zoo_dir, args.generated_dir,
                           args.encoded_dir, args.cache_dir)
    write_jsonl(args.out, rows)
    log.info("wrote %d rows to %s", len(rows), args.out)


# ======================================================================== summarize
def load_eval_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read per-target JSONL files and check they can be compared item by item."""
    from .io import read_jsonl

    rows: list[dict[str, Any]] = []
    for p in paths:
        rows.extend(read_jsonl(_require(Path(p), "evaluation file")))
    seen: set[tuple[str, str, str]] = set()
    ids_of: dict[str, list[str]] = {}
    for r in rows:
        key = (r["target"], r["method"], str(r["adapter"]))
        if r["method"] not in METHODS:
            raise ValueError(f"unknown method {r['method']!r} in evaluation rows")
        if key in seen:
            raise ValueError(f"duplicate evaluation row {key}")
        seen.add(key)
        if len(r["correct"]) != r["n"] or len(r["ids"]) != r["n"]:
            raise ValueError(f"row {key}: n does not match correct/ids")
        ref = ids_of.setdefault(r["target"], r["ids"])
        if r["ids"] != ref:
            raise ValueError(f"row {key} scored different items from the other rows of {r['target']}")
    return rows


def bootstrap_indices(n: int, resamples: int, seed: int, target: str):
    """(resamples, n) item indices, seeded by (seed, target): shared by every row of a target."""
    import numpy as np

    rng = np.random.default_rng([int(seed), zlib.crc32(target.encode())])
    return rng.integers(0, n, size=(resamples, n))


def percentile_ci(boot) -> tuple[float, float]:
    import numpy as np

    if boot is None or len(boot) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _boot_means(values, idx):
    """Bootstrap means of per-item `values` for index matrix idx (None when no resamples)."""
    import numpy as np

    if idx is None:
        return None
    return np.asarray(values, dtype=np.float64)[idx].mean(axis=1)


def _training_sets(targets: Iterable[str], rows_by_target: dict[str, list[dict]], folds: dict | None):
    out = {}
    for t in targets:
        have = [str(r["adapter"]) for r in rows_by_target[t] if r["method"] == "source_lora"]
        train = [a for a in have if a != t] if folds is None else [a for a in folds.get(t, []) if a in have]
        if folds is not None and set(folds.get(t, [])) - set(have):
            raise ValueError(f"fold {t}: no source_lora rows for {sorted(set(folds[t]) - set(have))}")
        if folds is not None and t not in folds:
            raise ValueError(f"--params folds has no entry for target {t!r}")
        out[t] = train
    return out


def _item_vectors(rows: list[dict], train: list[str]):
    """Per-item vectors of a target: {name: np.array} for base, soup, nearest, oracle,
    train_avg (mean over training LoRAs) and the mean over adapters of each generated kind."""
    import numpy as np

    target = rows[0]["target"]
    by = {(r["method"], str(r["adapter"])): np.asarray(r["correct"], dtype=np.float64) for r in rows}
    vec = {}
    for method in ("base", "soup", "nearest"):
        got = [v for (m, _), v in by.items() if m == method]
        if got:
            vec[method] = got[0]
    if ("source_lora", target) in by:
        vec["oracle"] = by[("source_lora", target)]
    if train:
        vec["train_avg"] = np.mean([by[("source_lora", d)] for d in train], axis=0)
    for kind in GENERATED_KINDS:
        got = [v for (m, _), v in by.items() if m == kind]
        if got:
            vec[kind] = np.mean(got, axis=0)
    return vec


def scores_frame(rows: list[dict[str, Any]], resamples: int, seed: int):
    """scores.csv as a DataFrame: one row per (target, method, adapter), plus an adapter
    'mean' row per multi-adapter method; 95% percentile bootstrap CIs over items."""
    import numpy as np
    import pandas as pd

    out = []
    targets = list(dict.fromkeys(r["target"] for r in rows))
    for t in targets:
        trows = [r for r in rows if r["target"] == t]
        n = trows[0]["n"]
        idx = bootstrap_indices(n, resamples, seed, t) if resamples > 0 else None
        order = {m: i for i, m in enumerate(METHODS)}
        trows = sorted(trows, key=lambda r: order[r["method"]])  # stable: keeps the adapter order
        for method in METHODS:
            mrows = [r for r in trows if r["method"] == method]
            for r in mrows:
                c = np.asarray(r["correct"], dtype=np.float64)
                lo, hi = percentile_ci(_boot_means(c, idx))
                out.append([t, method, str(r["adapter"]), n, float(c.mean()), lo, hi])
            if method in GENERATED_KINDS and mrows:
                c = np.mean([np.asarray(r["correct"], dtype=np.float64) for r in mrows], axis=0)
                lo, hi = percentile_ci(_boot_means(c, idx))
                out.append([t, method, MEAN_ADAPTER, n, float(c.mean()), lo, hi])
    return pd.DataFrame(out, columns=SCORE_COLUMNS)


def main_table(scores, folds: dict[str, list[str]] | None = None):
    """The main comparison from a scores DataFrame (scores.csv): one row per target, then a
    'mean' row (column means over targets; its gap_closed is computed from those means, its
    CI columns are NaN because a CI of the mean needs the items: see metrics.json).

    train_avg / best_train: mean / max accuracy of the training LoRAs (source_lora rows whose
    adapter is not the target, or the fold's datasets when `folds` is given); oracle: the
    target's own LoRA; dnd_mean / dnd_sd: mean / sample sd over DnD adapters; dnd_ci_*: the CI
    of the adapter 'mean' row; gap_closed = (dnd_mean - train_avg) / (oracle - train_avg),
    NaN when oracle <= train_avg."""
    import numpy as np
    import pandas as pd

    s = scores.copy()
    s["adapter"] = s["adapter"].fillna("").astype(str)
    recs = []
    for t in list(dict.fromkeys(s["target"])):
        st = s[s["target"] == t]

        def acc(method, adapter=None):
            sel = st[st["method"] == method]
            if adapter is not None:
                sel = sel[sel["adapter"] == adapter]
            return float(sel["acc"].iloc[0]) if len(sel) else math.nan

        src = st[st["method"] == "source_lora"]
        train = src[src["adapter"] != t] if folds is None else src[src["adapter"].isin(folds.get(t, []))]
        dnd = st[(st["method"] == "dnd") & (st["adapter"] != MEAN_ADAPTER)]
        dmean = st[(st["method"] == "dnd") & (st["adapter"] == MEAN_ADAPTER)]
        rec = {
            "target": t, "base": acc("base"),
            "train_avg": float(train["acc"].mean()) if len(train) else math.nan,
            "best_train": float(train["acc"].max()) if len(train) else math.nan,
            "soup": acc("soup"), "nearest": acc("nearest"),
            "dnd_mean": float(dnd["acc"].mean()) if len(dnd) else math.nan,
            "dnd_sd": float(dnd["acc"].std(ddof=1)) if len(dnd) > 1 else math.nan,
            "dnd_ci_low": float(dmean["ci_low"].iloc[0]) if len(dmean) else math.nan,
            "dnd_ci_high": float(dmean["ci_high"].iloc[0]) if len(dmean) else math.nan,
            "oracle": acc("source_lora", t),
        }
        rec["gap_closed"] = gap_closed(rec["dnd_mean"], rec["train_avg"], rec["oracle"])
        recs.append(rec)
    table = pd.DataFrame(recs, columns=MAIN_COLUMNS)
    if len(table):
        mean = {c: float(table[c].mean()) for c in MAIN_COLUMNS[1:]}
        mean.update(target=MEAN_TARGET, dnd_ci_low=math.nan, dnd_ci_high=math.nan,
                    gap_closed=gap_closed(mean["dnd_mean"], mean["train_avg"], mean["oracle"]))
        table = pd.concat([table, pd.DataFrame([mean], columns=MAIN_COLUMNS)], ignore_index=True)
    return table.astype({c: np.float64 for c in MAIN_COLUMNS[1:]})


def gap_closed(dnd: float, train_avg: float, oracle: float) -> float:
    """Share of the training-LoRA -> oracle gap that DnD closes (NaN if there is no gap)."""
    denom = oracle - train_avg
    if not (denom > 0) or math.isnan(dnd):
        return math.nan
    return (dnd - train_avg) / denom


def headline_metrics(rows: list[dict[str, Any]], scores, resamples: int, seed: int,
                     folds: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Flat dict '{target}/{figure}' (and 'mean/{figure}' over targets): the main table's
    columns, control means, DnD minus training-LoRA average with its paired bootstrap CI, and
    bootstrap CIs of the over-target means (items resampled within each target)."""
    import numpy as np

    table = main_table(scores, folds)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    by_t = {t: [r for r in rows if r["target"] == t] for t in targets}
    train = _training_sets(targets, by_t, folds)
    out: dict[str, Any] = {}
    boots: dict[str, list] = {"dnd_mean": [], "dnd_minus_train_avg": [], "train_avg": []}
    for t in targets:
        rec = table[table["target"] == t].iloc[0]
        for c in MAIN_COLUMNS[1:]:
            out[f"{t}/{c}"] = rec[c]
        vec = _item_vectors(by_t[t], train[t])
        n = by_t[t][0]["n"]
        out[f"{t}/n"] = n
        out[f"{t}/n_train_loras"] = len(train[t])
        out[f"{t}/n_dnd_adapters"] = sum(1 for r in by_t[t] if r["method"] == "dnd")
        for kind in ("control_other", "control_random"):
            out[f"{t}/{kind}_mean"] = float(vec[kind].mean()) if kind in vec else math.nan
        near = [r for r in by_t[t] if r["method"] == "nearest"]
        out[f"{t}/nearest_adapter"] = str(near[0]["adapter"]) if near else ""
        src = {str(r["adapter"]): r["acc"] for r in by_t[t] if r["method"] == "source_lora"}
        out[f"{t}/best_train_adapter"] = max(train[t], key=lambda d: src[d]) if train[t] else ""
        diff = vec["dnd"] - vec["train_avg"] if "dnd" in vec and "train_avg" in vec else None
        out[f"{t}/dnd_minus_train_avg"] = float(diff.mean()) if diff is not None else math.nan
        idx = bootstrap_indices(n, resamples, seed, t) if resamples > 0 else None
        b_diff = _boot_means(diff, idx) if diff is not None else None
        lo, hi = percentile_ci(b_diff)
        out[f"{t}/dnd_minus_train_avg_ci_low"], out[f"{t}/dnd_minus_train_avg_ci_high"] = lo, hi
        for name, v in (("dnd_mean", vec.get("dnd")), ("dnd_minus_train_avg", diff),
                        ("train_avg", vec.get("train_avg"))):
            boots[name].append(_boot_means(v, idx) if v is not None else None)

    if targets:
        mrec = table[table["target"] == MEAN_TARGET].iloc[0]
        for c in MAIN_COLUMNS[1:]:
            out[f"{MEAN_TARGET}/{c}"] = mrec[c]
        out[f"{MEAN_TARGET}/n_targets"] = len(targets)
        for key in ("control_other_mean", "control_random_mean", "dnd_minus_train_avg"):
            vals = [out[f"{t}/{key}"] for t in targets]
            out[f"{MEAN_TARGET}/{key}"] = float(np.mean(vals))
        for name, key in (("dnd_mean", "dnd"), ("dnd_minus_train_avg", "dnd_minus_train_avg"),
                          ("train_avg", "train_avg")):
            bs = boots[name]
            ok = bs and all(b is not None for b in bs)
            lo, hi = percentile_ci(np.mean(bs, axis=0)) if ok else (math.nan, math.nan)
            out[f"{MEAN_TARGET}/{key}_ci_low"], out[f"{MEAN_TARGET}/{key}_ci_high"] = lo, hi
    # JSON has no NaN: undefined figures are null
    return {k: (None if isinstance(v, float) and math.isnan(v) else
                (float(v) if isinstance(v, (float, np.floating)) else v)) for k, v in out.items()}


def _add_summarize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {evaluation: {bootstrap, ...}, seed, folds?}")
    p.add_argument("--eval", required=True, nargs="+", help="results/eval/{target}.jsonl files")
    p.add_argument("--scores", required=True, type=Path, help="output CSV (results/scores.csv)")
    p.add_argument("--metrics", required=True, type=Path, help="output JSON (results/metrics.json)")


def _run_summarize(args: argparse.Namespace) -> None:
    from .config import parse_params
    from .io import write_json, write_text

    params = parse_params(args.params)
    ev = section("evaluation", params.get("evaluation"))
    seed = int(params.get("seed", 0))
    folds = params.get("folds") or None
    rows = load_eval_rows(args.eval)
    if not rows:
        raise ValueError("no evaluation rows in " + ", ".join(map(str, args.eval)))
    scores = scores_frame(rows, int(ev["bootstrap"]), seed)
    metrics = headline_metrics(rows, scores, int(ev["bootstrap"]), seed, folds)
    write_text(args.scores, scores.to_csv(index=False))
    write_json(args.metrics, metrics, sort_keys=True)
    m = metrics
    log.info("wrote %s (%d rows) and %s; mean over %d targets: base %.3f, train_avg %.3f, dnd %.3f, oracle %.3f",
             args.scores, len(scores), args.metrics, m.get(f"{MEAN_TARGET}/n_targets", 0),
             *(m.get(f"{MEAN_TARGET}/{k}") or math.nan for k in ("base", "train_avg", "dnd_mean", "oracle")))


COMMANDS = {"evaluate": (_add_evaluate, _run_evaluate), "summarize": (_add_summarize, _run_summarize)}
