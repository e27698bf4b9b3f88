"""Evaluation with lm-evaluation-harness: DnD against every baseline and control.

  dnd evaluate --params JSON --target T --model DIR --tasks YAML [...] --zoo DIR [...]
               --generated DIR [...] --encoded FILE [...] --out FILE [--cache-dir DIR]
               [--threads N (dnd's global flag)]

scores every method on one held-out target with the same harness, the same items (every row of
`results/data/{T}/test.lmeval.jsonl`, or the first `evaluation.limit`) and the same prompt (the task
`dnd_{T}` rendered by dnd.formats.prompts):

  method          adapter                   what is scored
  base            "base"                    the base model (its pristine weights)
  source_lora     d, for every dataset d    results/zoo/{d}/final; d == T is the oracle (a target
                                            outside `datasets`, a new domain, has none)
  soup            "soup"                    element-wise mean of the fold's training LoRAs
                                            (lora_A and lora_B averaged separately)
  nearest         the chosen dataset        the training LoRA whose dataset's mean train-prompt
                                            embedding is closest (cosine) to the mean of T's
                                            cond-prompt embeddings; its source_lora result is
                                            reused (no second forward pass)
  dnd             "0", "1", ...             results/generated/{T}/dnd_{i}/ (the default generator)
  dnd_<design>    "0", ...                  results/generated/{T}/dnd_<design>_{i}/ (a variant
                                            generator design, same prompt draws; optional)
  control_other   "0", ...                  results/generated/{T}/control_other_{i}/ (optional,
  control_random  "0", ...                  results/generated/{T}/control_random_{i}/  as is
  control_shuffled "0", ...                 results/generated/{T}/control_shuffled_{i}/ every control)

Speed: the base model is loaded once, a plain Hugging Face model without LoRA modules (no peft
wrapper at scoring time: its LoRA layers cost ~20% of every forward pass). Each adapter is merged
into the targeted Linear weights for the duration of its scoring (`InPlaceScorer.activate`):
W = W0 + scaling * B @ A, computed in float32 from a kept copy of the pristine weight W0 and
rounded once to the model's dtype; the base model is the pristine weights copied back (never a
subtraction, so a score does not depend on the adapters scored before it). The LoRA keys an
adapter must have (every one, nothing else, with its shape) and each module's scaling are
peft's own for the LoraConfig of the first training LoRA. Each adapter is scored by one lm-eval
model built on the loaded model, with one task object (lm-eval rebuilds the requests on every
call), through the harness's own `lm_eval.evaluator.evaluate` loop. The model is
`evaluation.backend`: `dnd-prefix` (dnd.scoring.lm_backend: each item's context is computed once
for all its choices) or lm-eval's plain `hf` (HFLM); the log-softmax is float32 for both.
tests/test_evaluate.py checks that either gives the log-likelihoods of
`lm_eval.simple_evaluate(model="hf", model_args={"pretrained": base, "peft": adapter})` (float32);
in bfloat16 a merged weight is rounded where peft would round the LoRA branch's output, which
moves a summed log-likelihood by ~0.2 nats on average (results/eval_agreement.csv).
dnd.eval_speed measures both on the real model.
With --cache-dir (the workflow passes results/eval_cache/{T} unless `evaluation.cache` is
false) per-item results are kept by content (`open_score_cache`, dnd.scoring.cache): a rerun
after, say, a generator change scores only the new adapters and reuses base, source LoRAs and soup.
A cached entry is used only after checking it (its content hash, and its per-item results
recomputed from its log-likelihoods under `evaluation.metric`); an edited entry is scored again.
Every adapter must share the LoRA shape (rank, alpha, target modules, ...) of the first one,
otherwise it is rejected (its scaling would be wrong). An adapter whose log-likelihoods are
NaN/inf is an error naming it, never a score (lm-eval would pick choice 0), and never cached.
A task YAML's test file (dataset_kwargs.data_files.test) may be relative to the repository
root: lm-eval reads a copy of the YAML with the absolute path, whatever the CWD.

--params (JSON object):
  {"evaluation": {limit, backend, batch_size, dtype, metric, ...},  # config section; schema defaults
   "datasets":   [every dataset name],                     # source_lora is scored for each
   "sources":    [the fold's training datasets],           # soup and nearest; default datasets - {T}
   "seed":       int}                                      # unused (scoring is deterministic)

Output `--out` (JSONL, written atomically once everything is scored; a killed job leaves nothing
behind and a rerun recomputes): one line per (method, adapter)
  {target, method, adapter, n, acc, metric,
   ids: [item ids], correct: [0/1 per item, doc order],
   gold_logprob: [log P(gold answer | context), summed over its tokens, per item],
   gold_logprob_norm: [the same per character of the answer, as acc_norm normalizes],
   margin: [gold log-likelihood minus the best wrong answer's, per item]}
and, for `nearest`, `info: {"cosine": {dataset: similarity}}`.

  dnd evaluate-multitask --params JSON --target T --model DIR --tasks YAML [...] --multitask DIR
                         --out FILE [--cache-dir DIR]

scores the fold's multi-task LoRA (results/multitask/{T}/final: the zoo's trainer on the union of
the fold's source train splits, Text-to-LoRA's baseline) on the same items with the same task,
scorer and score cache (`score_adapters`), one row: method `multitask_lora`, adapter
`multitask`, `info: {"sources": [the fold's training datasets]}` (--params: {"evaluation": {...},
"sources": [...]}). It never sees the target's data; it is a separate job and file
(results/eval_multitask/{T}.jsonl) so the experiments that read results/eval/{T}.jsonl keep
their inputs.

The per-target files are merged by `dnd summarize` (dnd.summary).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import dnd.scoring  # noqa: F401  (makes Hugging Face offline before datasets/lm_eval load)

from .config import SCORING_SETTINGS, parse_params, section
from .formats.prompts import task_name
from .io import check_safetensors, load_safetensors, read_jsonl, write_jsonl
from .paths import add_declared_option, declared
from .schedule import GENERATED_KINDS
from .scoring.cache import ScoreCache, Scored, content_context, require_finite, samples_to_scored
from .scoring.harness import LMEVAL_OTHER_SEED, LMEVAL_RANDOM_SEED, seeded_evaluate  # noqa: F401 (re-exported)
from .scoring.loop import score_or_cache
from .summary import MULTITASK

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# the adapter name of the multi-task LoRA's row (`evaluate_multitask`; its method: dnd.summary.MULTITASK)
MULTITASK_ADAPTER = "multitask"
BACKENDS = ("dnd-prefix", "hf")  # dnd.scoring.lm_backend's packed scorer; lm-eval's plain HFLM
BACKEND = BACKENDS[0]
# log-softmax in float32 whatever the model dtype (HFLM's softmax_dtype; its default is the
# model's dtype, which in bfloat16 rounds every token log-probability to ~3 digits)
SOFTMAX_DTYPE = "float32"
# LoraConfig fields that must agree between the wrapped model and an adapter loaded into it
LORA_SHAPE_FIELDS = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias",
                     "fan_in_fan_out", "rank_pattern", "alpha_pattern", "layers_to_transform",
                     "layers_pattern", "modules_to_save")


# ============================================================================ input files
def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def task_files(tasks: Sequence[Path], names: Sequence[str]) -> tuple[Path, list[Path]]:
    """(their folder, the YAMLs) of lm-eval tasks `names` among the declared task files `tasks`
    (--tasks); lm-eval reads a task from its folder, so they must share one."""
    yamls = [require_file(declared(tasks, f"{n}.yaml", f"lm-eval task {n}", "--tasks"), f"lm-eval task {n}")
             for n in names]
    folders = sorted({str(y.parent) for y in yamls})
    if len(folders) > 1:
        raise ValueError(f"the lm-eval tasks {list(names)} are in several folders: {', '.join(folders)}")
    return yamls[0].parent, yamls


def require_adapter_dir(path: Path, what: str) -> Path:
    require_file(path, what)
    for name in ADAPTER_FILES:
        require_file(path / name, f"{what} ({name})")
    return path


def discover_generated(adapters: Sequence[Path], kinds: tuple[str, ...] = GENERATED_KINDS
                       ) -> dict[str, list[tuple[str, Path]]]:
    """{kind: [(index, dir), ...]} of the declared adapter directories `adapters`
    (results/generated/{T}/{kind}_{i}, --generated), sorted by i, for every kind of `kinds` that
    has adapters; dnd is required, the variants and controls are not; other names are ignored."""
    pat = re.compile(rf"({'|'.join(kinds)})_(\d+)")
    found: dict[str, list[tuple[int, Path]]] = {k: [] for k in kinds}
    for p in map(Path, adapters):
        m = pat.fullmatch(p.name)
        if m:
            found[m.group(1)].append((int(m.group(2)), require_adapter_dir(p, f"generated adapter {p.name}")))
    if not found["dnd"]:
        raise FileNotFoundError(f"no dnd_<i> adapter directory among the --generated paths "
                                f"({', '.join(map(str, adapters)) or 'none'})")
    return {kind: [(str(i), p) for i, p in sorted(lst)] for kind, lst in found.items() if lst}


def task_config(task_yaml: Path) -> dict[str, Any]:
    """The parsed lm-eval task YAML; it must name its test file (dataset_kwargs.data_files.test)."""
    import yaml

    cfg = yaml.safe_load(require_file(task_yaml, "lm-eval task").read_text())
    try:
        test = cfg["dataset_kwargs"]["data_files"]["test"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{task_yaml} has no dataset_kwargs.data_files.test") from exc
    if not isinstance(test, str):
        raise ValueError(f"{task_yaml}: dataset_kwargs.data_files.test must be one path, got {test!r}")
    return cfg


def task_data_file(task_yaml: Path) -> Path:
    """The test file a task YAML reads: dataset_kwargs.data_files.test, relative to the run's
    working directory (where dnd.formats.prompts.portable_path wrote it from, and where lm-eval looks)
    unless it is absolute."""
    data = Path(task_config(task_yaml)["dataset_kwargs"]["data_files"]["test"])
    return require_file(data.resolve(), f"test items of task {task_yaml.name}")


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

    return [str(r["id"]) for r in read_jsonl(path)]


# ======================================================================== LoRA state dicts
def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """An adapter directory's adapter_config.json, every field as written (`lora_shape` picks
    the ones that must agree between adapters)."""
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

    return load_safetensors(Path(adapter_dir) / "adapter_model.safetensors", "LoRA adapter weights")


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

    from .method.encoder import load_encoded

    obj = load_encoded(path)
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
def lm_class(backend: str):
    """The lm-eval model class registered under `backend` ("dnd-prefix": dnd.scoring.lm_backend; "hf")."""
    from lm_eval.api.registry import get_model

    from .scoring import lm_backend  # noqa: F401  (registers dnd-prefix)

    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; expected one of {BACKENDS}")
    return get_model(backend)


def load_task(tasks_dir: Path, task: str) -> dict:
    """lm-eval's task dict of `task` from `tasks_dir`, set up as simple_evaluate sets it up."""
    from lm_eval.tasks import TaskManager

    with materialized_task(tasks_dir / f"{task}.yaml") as include:
        task_dict = TaskManager(include_path=str(include), include_defaults=False).load([task])
    if task not in task_dict["tasks"]:
        raise ValueError(f"task {task} not found in {tasks_dir}")
    for t in task_dict["tasks"].values():  # what simple_evaluate does before evaluate()
        if t.get_config("num_fewshot") is None:
            t.set_config(key="num_fewshot", value=0)
        t.set_fewshot_seed(seed=LMEVAL_OTHER_SEED)
    return task_dict


def run_lm_eval(lm, task_dict: dict, task: str, limit: int | None, metric: str, where: str) -> Scored:
    """lm-eval's own evaluation loop on a built model, seeded as simple_evaluate seeds it; the
    per-item result (NaN/inf log-likelihoods are an error naming `where`)."""
    t0 = time.perf_counter()
    res = seeded_evaluate(lm, task_dict, limit)
    return require_finite(samples_to_scored(res, task, metric, time.perf_counter() - t0), where)


@dataclass
class LoraSlot:
    """One Linear an adapter modifies: its module in the plain model, a copy of its original
    weight, the PEFT keys of its lora_A / lora_B and their shapes, and peft's scaling."""

    name: str
    module: Any
    pristine: Any
    scaling: float
    key_a: str
    key_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]


def lora_slots(model, lora_config_dir: Path) -> list[LoraSlot]:
    """The LoRA slots of `model` under the LoraConfig of `lora_config_dir`, as peft defines them:
    the model is wrapped once by `get_peft_model` (keys, shapes, per-module scaling, rank and
    alpha patterns included) and unwrapped again (`unload`: the original Linear modules are put
    back, untouched). Only plain LoRA on Linear layers can be merged: DoRA, LoRA biases,
    fan_in_fan_out and modules_to_save are refused."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from peft.tuners.lora import Linear as LoraLinear

    cfg = LoraConfig.from_pretrained(str(lora_config_dir))
    bad = {k: v for k, v in (("use_dora", cfg.use_dora), ("fan_in_fan_out", cfg.fan_in_fan_out),
                             ("modules_to_save", cfg.modules_to_save),
                             ("lora_bias", getattr(cfg, "lora_bias", False))) if v}
    if cfg.bias != "none":
        bad["bias"] = cfg.bias
    if bad:
        raise ValueError(f"{lora_config_dir}: the scorer merges plain LoRA into Linear weights; unsupported {bad}")
    cfg.inference_mode = True
    torch.manual_seed(0)  # LoRA init draws random numbers; no weight of it is used
    pm = get_peft_model(model, cfg)
    keys = set(get_peft_model_state_dict(pm))
    prefix = "base_model.model."
    found = []
    for name, mod in pm.base_model.model.named_modules():
        if not hasattr(mod, "lora_A"):
            continue
        if not isinstance(mod, LoraLinear) or not isinstance(mod.get_base_layer(), torch.nn.Linear):
            raise ValueError(f"{lora_config_dir}: LoRA on {name} ({type(mod).__name__}) cannot be merged")
        a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        found.append((name, float(mod.scaling["default"]), tuple(a.shape), tuple(b.shape)))
    model = pm.unload()
    slots = []
    for name, scaling, shape_a, shape_b in found:
        module = model.get_submodule(name)
        slots.append(LoraSlot(name, module, module.weight.detach().clone(), scaling,
                              f"{prefix}{name}.lora_A.weight", f"{prefix}{name}.lora_B.weight", shape_a, shape_b))
    expected = {k for s in slots for k in (s.key_a, s.key_b)}
    if expected != keys or not slots:
        raise ValueError(f"{lora_config_dir}: peft's LoRA keys are not lora_A/lora_B of Linear layers: "
                         f"{sorted(keys ^ expected)[:3]}")
    return slots


class InPlaceScorer:
    """One base model, one HFLM and one task; each adapter is merged into the base weights for
    the duration of its scoring. The loaded model every scorer composes: another lm-eval model
    class over the same model (`lm_cls`, e.g. dnd.scoring.lm_generate's) replaces the backend's,
    and `task=None` loads no task (the caller loads its own).

    The model is a plain Hugging Face causal LM (no peft wrapper: LoRA modules cost ~20% of
    every forward pass). `activate(sd)` writes W0 + scaling * B @ A, computed in float32 from
    the pristine base weight W0 and rounded once to the model's dtype, into every targeted
    Linear; `activate(None)` copies the pristine weights back (a copy of the targeted modules'
    original weights is kept: never a subtraction, so a score does not depend on which
    adapters came before it). The LoRA keys an adapter must have, and each module's scaling,
    are peft's own: the model is wrapped once by `get_peft_model` with the reference LoraConfig
    to read them, then unwrapped."""

    def __init__(self, model_dir: Path, lora_config_dir: Path, tasks_dir: Path, task: str | None, *,
                 limit: int | None, batch_size: int, dtype: str = "float32", metric: str = "acc",
                 backend: str = BACKEND, lm_cls: Any = None, device: Any = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.task, self.limit, self.metric = task, limit, metric
        self.device = torch.device(device)  # the model, its pristine weights and every batch (HFLM follows the model)

        check_safetensors(model_dir, "base model weights")
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        vocab = model.config.vocab_size
        if vocab < len(tok):
            # lm-eval's peft= path would resize the embeddings here; scoring base and adapters
            # on differently sized vocabularies would not be comparable, so refuse. A padded
            # embedding (vocab > len(tok), Qwen2.5) is kept: its extra rows are never an input and
            # the backends read the logits of the tokenizer's tokens only.
            raise ValueError(f"model vocab_size {vocab} < tokenizer length {len(tok)} in {model_dir}: "
                             "the tokenizer makes ids the embedding does not have")
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.slots = lora_slots(self.model, lora_config_dir)
        self.lora_keys = {k for s in self.slots for k in (s.key_a, s.key_b)}
        self.merged: str | None = None  # `where` of the adapter merged into the weights, None: base
        self._merge_buffers: dict[tuple[int, ...], Any] = {}  # load_adapter's float32 work buffers
        self.lm = (lm_cls or lm_class(backend))(pretrained=self.model, tokenizer=tok, batch_size=batch_size,
                                                softmax_dtype=SOFTMAX_DTYPE)
        self.task_dict = load_task(tasks_dir, task) if task is not None else None

    def check_keys(self, sd: dict, where: str = "adapter") -> None:
        """Every LoRA key of the model's LoRA config is in `sd`, with its shape, and nothing else."""
        keys = set(sd)
        if keys != self.lora_keys:
            missing, extra = sorted(self.lora_keys - keys), sorted(keys - self.lora_keys)
            raise ValueError(f"{where}: LoRA keys do not match the model: {len(missing)} missing "
                             f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}")
        for s in self.slots:
            for key, shape in ((s.key_a, s.shape_a), (s.key_b, s.shape_b)):
                if tuple(sd[key].shape) != shape:
                    raise ValueError(f"{where}: {key} has shape {tuple(sd[key].shape)}, the model needs {shape}")

    def load_adapter(self, sd: dict, where: str = "adapter") -> None:
        """Merge a PEFT state dict (keys as on disk) into the base weights: every LoRA key must
        be present and nothing else; the weights of any adapter merged before are replaced."""
        import torch

        self.check_keys(sd, where)
        self.merged = where
        with torch.no_grad():
            for s in self.slots:
                a, b = sd[s.key_a].to(self.device, torch.float32), sd[s.key_b].to(self.device, torch.float32)
                # W0 + scaling * (B @ A) in float32, in one reused buffer per weight shape instead of
                # three fresh float32 tensors per module (the merge was ~20% of a 30-item WinoGrande
                # scoring); the same operations in the same order as the out-of-place formula, so
                # the same bits. copy_ rounds once to the model's dtype.
                buf = self._merge_buffer(tuple(s.module.weight.shape))
                torch.matmul(b, a, out=buf)
                s.module.weight.copy_(buf.mul_(s.scaling).add_(s.pristine))

    def _merge_buffer(self, shape: tuple[int, ...]):
        """The float32 work buffer of `shape` (one per weight shape, made on first use)."""
        import torch

        buf = self._merge_buffers.get(shape)
        if buf is None:
            buf = self._merge_buffers[shape] = torch.empty(shape, dtype=torch.float32, device=self.device)
        return buf

    def load_base(self) -> None:
        """The base model: the pristine weights copied back (nothing to do if no adapter is merged)."""
        import torch

        if self.merged is None:
            return
        with torch.no_grad():
            for s in self.slots:
                s.module.weight.copy_(s.pristine)
        self.merged = None

    def activate(self, sd: dict | None, where: str = "adapter") -> None:
        """Make `sd` the model's adapter (None: the base model)."""
        if sd is None:
            self.load_base()
        else:
            self.load_adapter(sd, where)

    def score(self, sd: dict | None, where: str = "adapter") -> Scored:
        """Score `sd` (None = the base model)."""
        self.activate(sd, where)
        # HFLM runs the model under torch.no_grad itself, as in a fresh lm-eval run
        return run_lm_eval(self.lm, self.task_dict, self.task, self.limit, self.metric, where)


def open_score_cache(directory: Path, model_dir: Path, task_yaml: Path, test_file: Path,
                     lora_cfg: dict[str, Any], settings: dict[str, Any],
                     recipe: dict[str, Any] | None = None, device: Any = "cpu") -> ScoreCache:
    """The ScoreCache of one target. Besides the adapter's tensors its keys cover: the base
    model's files, the content of the test file, the task config (without the path of its test
    file: the same key wherever the repository lives, relative or absolute path), the LoRA
    shape the adapters are loaded with, the scoring settings (limit, batch_size, dtype, metric),
    the torch thread count, the device where it is not the CPU, the versions of
    torch/transformers/peft/lm-eval and dnd.scoring.SCORER_VERSION (dnd.scoring.cache.content_context);
    never the code's files. Its
    entries are checked before use against `settings["metric"]` (dnd.scoring.cache.ScoreCache.get).
    `recipe` is stored with the entries for `dnd verify-cache`."""

    files, context = content_context(
        model_dir, {"task": (task_config(task_yaml), test_file)}, lora_shape(lora_cfg),
        {k: settings[k] for k in SCORING_SETTINGS}, device=device,
        softmax_dtype=SOFTMAX_DTYPE)
    return ScoreCache(directory, files, context, metric=settings["metric"], recipe=recipe)


# ======================================================================== evaluate
def plan_target(target: str, datasets: list[str], sources: list[str], zoo: Sequence[Path],
                generated: Sequence[Path], encoded: Sequence[Path], cond: Path | None = None,
                kinds: tuple[str, ...] = GENERATED_KINDS) -> dict[str, Any]:
    """Check every input exists before the model is loaded; return what to score. `datasets`
    are the datasets whose LoRAs are scored; a target outside them (a new domain) has no oracle.
    The declared inputs, each dataset's found by its name (dnd.paths.declared): `zoo` the final
    LoRA folders (.../{d}/final), `generated` the adapter folders (.../{kind}_{i}), `encoded` the
    encoded prompts (.../{d}/train.pt, and .../{target}/cond.pt unless `cond` is given); `kinds`:
    the generated kinds to look for."""
    bad = sorted(set(sources) - set(datasets))
    if bad:
        raise ValueError(f"sources {bad} are not among datasets {datasets}")
    if target in sources:
        raise ValueError(f"the target {target!r} is among its own training datasets")
    if not sources:
        raise ValueError(f"fold {target!r} has no training datasets")
    finals = {d: require_adapter_dir(declared(zoo, Path(d) / "final", f"final LoRA of {d}", "--zoo"),
                                     f"final LoRA of {d}") for d in datasets}
    adapters = discover_generated(generated, kinds)
    trains = {d: require_file(declared(encoded, Path(d) / "train.pt", f"encoded train prompts of {d}", "--encoded"),
                              f"encoded train prompts of {d}") for d in sources}
    what = f"encoded cond prompts of {target}"
    cond = require_file(Path(cond) if cond else declared(encoded, Path(target) / "cond.pt", what, "--encoded"), what)
    return {"finals": finals, "generated": adapters, "encoded": trains, "cond": cond}


def reference_lora(plan: dict[str, Any], sources: list[str]) -> tuple[Path, dict[str, Any]]:
    """(directory, adapter config) of the first training LoRA, after checking that every adapter
    of `plan` has its LoRA shape (the shape of the LoRA slots the model gets)."""
    ref_dir = plan["finals"][sources[0]]
    ref_cfg = read_adapter_config(ref_dir)
    for d in list(plan["finals"].values()) + [p for lst in plan["generated"].values() for _, p in lst]:
        check_same_lora_shape(ref_cfg, read_adapter_config(d), d)
    return ref_dir, ref_cfg


def quiet_lm_eval() -> None:
    """lm-eval logs warnings only, unless dnd runs with --debug."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)


def result_row(target: str, method: str, adapter: str, s: Scored, metric: str, **extra) -> dict[str, Any]:
    return {"target": target, "method": method, "adapter": adapter, "n": s.n, "acc": s.acc,
            "correct": s.correct, "ids": s.ids, "metric": metric,
            "gold_logprob": _rounded(s.gold_logprob()), "gold_logprob_norm": _rounded(s.gold_logprob_norm()),
            "margin": _rounded(s.margin()), **extra}


def _rounded(values: list[float]) -> list[float]:
    """Per-item figures as written: 6 decimals (far below the scorer's own precision)."""
    return [round(float(v), 6) for v in values]


class AdapterLoader:
    """Loads an adapter: the state dict of one adapter directory, or the mean of several (a soup).
    `dirs` is its source, stored with its score cache entry (`dnd verify-cache` loads it again)."""

    def __init__(self, dirs: Sequence[Path | str]):
        self.dirs = [Path(d) for d in dirs]

    def __call__(self) -> dict:
        if len(self.dirs) == 1:
            return load_state_dict(self.dirs[0])
        return average_state_dicts([load_state_dict(d) for d in self.dirs])

    def source(self) -> list[str]:
        return [str(d) for d in self.dirs]


def adapter_job(method: str, adapter: str, path: Path) -> tuple[str, str, str, Any]:
    """(method, adapter, where, loader) of an adapter directory; `where` names it in messages."""
    return method, adapter, f"{method}/{adapter} ({path})", AdapterLoader([path])


def nearest_training_lora(plan: dict[str, Any], target: str) -> tuple[str, dict[str, float]]:
    """(nearest training dataset, {dataset: cosine}) from the encoded prompts (no model needed)."""
    cond_vec = mean_prompt_embedding(plan["cond"])
    src_vecs = {d: mean_prompt_embedding(p) for d, p in plan["encoded"].items()}
    for d, v in src_vecs.items():
        if v.shape != cond_vec.shape:
            raise ValueError(f"encoded prompts of {d} have dim {tuple(v.shape)}, "
                             f"{target}'s cond prompts {tuple(cond_vec.shape)}")
    nearest, sims = nearest_source(cond_vec, src_vecs)
    log.info("nearest training LoRA for %s: %s (cosine %s)", target, nearest,
             ", ".join(f"{d}={v:.4f}" for d, v in sims.items()))
    return nearest, sims


def scoring_jobs(plan: dict[str, Any], sources: list[str], model_dir: Path) -> list[tuple[str, str, str, Any]]:
    """(method, adapter, where, loader) in output order; nearest is filled from source_lora."""
    jobs: list[tuple[str, str, str, Any]] = [("base", "base", f"base ({model_dir})", None)]
    jobs += [adapter_job("source_lora", d, p) for d, p in plan["finals"].items()]
    jobs.append(("soup", "soup", f"soup (mean of {', '.join(sources)})",
                 AdapterLoader([plan["finals"][d] for d in sources])))
    for kind, adapters in plan["generated"].items():
        jobs += [adapter_job(kind, i, p) for i, p in adapters]
    return jobs


def score_jobs(target: str, jobs: list[tuple[str, str, str, Any]], new_scorer, cache: ScoreCache | None,
                test_ids: list[str], limit: int | None) -> tuple[dict[tuple[str, str], Scored], dict[str, float]]:
    """Score every job (from the cache when it has the result; `new_scorer()` loads the model the
    first time one is missing: dnd.scoring.loop.score_or_cache). Returns ({(method, adapter):
    Scored}, counters for the log)."""

    def describe(s: Scored) -> str:
        rate = f" ({s.seconds:.1f} s, {s.n / s.seconds:.1f} questions/s)" if s.seconds else ""
        return f"acc={s.acc:.4f} n={s.n}{rate}"

    scored, counts = score_or_cache(f"evaluate {target}", jobs, new_scorer, cache, describe=describe)
    for (method, adapter), s in scored.items():
        if s.ids != test_ids[: s.n] or s.n != (len(test_ids) if limit is None else min(len(test_ids), limit)):
            raise RuntimeError(f"{method}/{adapter}: scored items are not the first {s.n} of the test file")
    stats = {"items": sum(scored[k].n for k in counts["fresh"]), "cached": counts["cached"],
             "load_s": counts["load_s"]}
    return scored, stats


def score_adapters(target: str, ev: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                   adapters: Sequence[tuple[str, str, Path]], cache_dir: Path | None = None,
                   device: Any = "cpu") -> dict[tuple[str, str], Scored]:
    """Score adapter folders, each (method, adapter, folder), on `target`'s test items exactly as
    `evaluate_target` scores the zoo: the default run's task (found in the declared `tasks`), the
    same scorer (InPlaceScorer, `ev` = the validated `evaluation` section) and, with `cache_dir`,
    a score cache whose entries `dnd verify-cache` can check. Every adapter must have the first
    one's LoRA shape. For the experiments that score new LoRAs beside the default run's scores
    (few-shot tuning, the longer-trained zoo probe). Returns {(method, adapter): Scored}."""
    if not adapters:
        raise ValueError(f"{target}: no adapters to score")
    task = task_name(target)
    tasks_dir, (task_yaml,) = task_files(tasks, [task])
    test_file = task_data_file(task_yaml)
    require_file(Path(model_dir) / "config.json", "base model")
    dirs = [(m, a, require_adapter_dir(Path(p), f"{m}/{a}")) for m, a, p in adapters]
    ref_dir = dirs[0][2]
    ref_cfg = read_adapter_config(ref_dir)
    for _, _, d in dirs:
        check_same_lora_shape(ref_cfg, read_adapter_config(d), d)
    quiet_lm_eval()
    recipe = {"scorer": "evaluate", "model": str(model_dir), "tasks_dir": str(tasks_dir), "task": task,
              "lora_config_dir": str(ref_dir), "evaluation": {k: ev[k] for k in SCORING_SETTINGS}}
    cache = (open_score_cache(cache_dir, model_dir, task_yaml, test_file, ref_cfg, ev, recipe, device)
             if cache_dir is not None else None)
    limit = None if ev["limit"] is None else int(ev["limit"])
    scored, _ = score_jobs(
        target, [adapter_job(m, a, d) for m, a, d in dirs],
        lambda: InPlaceScorer(model_dir, ref_dir, tasks_dir, task, limit=limit, batch_size=int(ev["batch_size"]),
                              dtype=ev["dtype"], metric=ev["metric"], backend=ev["backend"], device=device),
        cache, read_ids(test_file), limit)
    return scored


def evaluate_target(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                    zoo: Sequence[Path], generated: Sequence[Path], encoded: Sequence[Path],
                    cache_dir: Path | None = None,
                    cond: Path | None = None, device: Any = "cpu") -> list[dict[str, Any]]:
    """Score every method on `target` (see the module doc). With `cache_dir`, adapters whose
    results are in the score cache are not scored again (the model is loaded only if one is
    missing)."""

    t_start = time.perf_counter()
    ev = section("evaluation", params.get("evaluation"))
    datasets = list(params.get("datasets") or [])
    if not datasets:
        raise ValueError("--params must list 'datasets'")
    sources = list(params.get("sources") or [d for d in datasets if d != target])
    task = task_name(target)
    tasks_dir, (task_yaml,) = task_files(tasks, [task])
    test_file = task_data_file(task_yaml)
    test_ids = read_ids(test_file)
    require_file(model_dir / "config.json", "base model")
    plan = plan_target(target, datasets, sources, zoo, generated, encoded, cond)
    nearest, sims = nearest_training_lora(plan, target)

    ref_dir, ref_cfg = reference_lora(plan, sources)
    quiet_lm_eval()
    recipe = {"scorer": "evaluate", "model": str(model_dir), "tasks_dir": str(tasks_dir), "task": task,
              "lora_config_dir": str(ref_dir), "evaluation": {k: ev[k] for k in SCORING_SETTINGS}}
    cache = (open_score_cache(cache_dir, model_dir, task_yaml, test_file, ref_cfg, ev, recipe, device)
             if cache_dir is not None else None)
    overhead = time.perf_counter() - t_start
    jobs = scoring_jobs(plan, sources, model_dir)
    limit = None if ev["limit"] is None else int(ev["limit"])
    scored, stats = score_jobs(
        target, jobs, lambda: InPlaceScorer(model_dir, ref_dir, tasks_dir, task, limit=limit,
                                            batch_size=int(ev["batch_size"]), dtype=ev["dtype"], metric=ev["metric"],
                                            backend=ev["backend"], device=device),
        cache, test_ids, limit)
    total = time.perf_counter() - t_start
    overhead += stats["load_s"]
    log.info("%s: %d adapters (%d from the score cache), %d questions scored in %.1f s (%.1f questions/s "
             "while scoring; %.1f s fixed overhead)", target, len(jobs), stats["cached"], stats["items"], total,
             stats["items"] / max(total - overhead, 1e-9), overhead)

    m = ev["metric"]
    rows = [result_row(target, method, adapter, scored[(method, adapter)], m) for method, adapter, _, _ in jobs]
    near = result_row(target, "nearest", nearest, scored[("source_lora", nearest)], m, info={"cosine": sims})
    rows.insert(next(i for i, r in enumerate(rows) if r["method"] == "soup") + 1, near)  # METHODS order
    return rows


def fold_sources(params: dict[str, Any], target: str) -> list[str]:
    """`params["sources"]`: the fold's training datasets, which must be listed and must not hold the
    target (a LoRA trained on the target would not be zero-shot)."""
    sources = list(params.get("sources") or [])
    if not sources:
        raise ValueError("--params must list the fold's 'sources'")
    if target in sources:
        raise ValueError(f"the target {target!r} is among its fold's training datasets {sources}")
    return sources


def evaluate_multitask(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path], multitask: Path,
                       cache_dir: Path | None = None, device: Any = "cpu") -> list[dict[str, Any]]:
    """The fold's multi-task LoRA on `target`'s test items, scored as `evaluate_target` scores the
    zoo (`score_adapters`): one row, method MULTITASK, adapter MULTITASK_ADAPTER."""
    ev = section("evaluation", params.get("evaluation"))
    sources = fold_sources(params, target)  # the datasets the multi-task LoRA was trained on
    mt_dir = require_adapter_dir(Path(multitask), f"multi-task LoRA of {target}")
    scored = score_adapters(target, ev, model_dir, tasks, [(MULTITASK, MULTITASK_ADAPTER, mt_dir)],
                            cache_dir, device)
    return [result_row(target, MULTITASK, MULTITASK_ADAPTER, scored[(MULTITASK, MULTITASK_ADAPTER)],
                       ev["metric"], info={"sources": sources})]


def add_declared_inputs(p: argparse.ArgumentParser) -> None:
    """--tasks, --zoo, --generated, --encoded: the files a scoring rule declared, each a list
    (several words, or repeated); a dataset's entry is found by its name (dnd.paths.declared)."""
    add_declared_option(p, "--tasks", "lm-eval task files (.../dnd_{ds}.yaml)")
    add_declared_option(p, "--zoo", "final LoRA folders (.../{ds}/final), each scored dataset's")
    add_declared_option(p, "--generated", "generated adapter folders (results/generated/{target}/{kind}_{i})")
    add_declared_option(p, "--encoded",
                        "encoded prompts (.../{ds}/train.pt of every source; .../{target}/cond.pt unless --cond)")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {evaluation: {...}, datasets: [...], sources: [...], seed}")
    p.add_argument("--target", required=True, help="held-out dataset")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_inputs(p)
    p.add_argument("--out", required=True, type=Path, help="results/eval/{target}.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="score cache directory (results/eval_cache/{target}); omit to score everything")
    p.add_argument("--cond", type=Path, default=None,
                   help="the target's encoded cond prompts (default: the --encoded path .../<target>/cond.pt)")


def _run_evaluate(args: argparse.Namespace) -> None:
    params = parse_params(args.params)
    rows = evaluate_target(args.target, params, args.model, args.tasks, args.zoo, args.generated, args.encoded,
                           args.cache_dir, args.cond, args.device)
    write_jsonl(args.out, rows)
    log.info("wrote %d rows to %s", len(rows), args.out)


def _add_evaluate_multitask(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}, "sources": [the fold\'s sources]}')
    p.add_argument("--target", required=True, help="held-out dataset")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "the target's lm-eval task (results/tasks/dnd_<T>.yaml)")
    p.add_argument("--multitask", required=True, type=Path,
                   help="the fold's multi-task LoRA (results/multitask/<T>/final)")
    p.add_argument("--out", required=True, type=Path, help="results/eval_multitask/<T>.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache directory; omit to score everything")


def _run_evaluate_multitask(args: argparse.Namespace) -> None:
    rows = evaluate_multitask(args.target, parse_params(args.params), args.model, args.tasks, args.multitask,
                              args.cache_dir, args.device)
    write_jsonl(args.out, rows)
    log.info("wrote %d row to %s", len(rows), args.out)


COMMANDS = {"evaluate": (_add_evaluate, _run_evaluate),
            "evaluate-multitask": (_add_evaluate_multitask, _run_evaluate_multitask)}
