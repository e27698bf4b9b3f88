import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# The package is the single source of truth for cross-field checks and the fold layout.
REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO / "src"))
from dnd.config import (  # noqa: E402
    EVAL_SPEED_SETTINGS,
    GENERATION_SETTINGS,
    SCORING_SETTINGS,
    ConfigError,
    check_experiment,
    check_inputs,
    check_schema,
    folds,
    rule_section,
    run_config,
    validate_config,
)
from dnd.benchmarks.datasets import dataset_settings  # noqa: E402
from dnd.schedule import ADAPTER_KINDS, adapter_seed  # noqa: E402
from dnd.summary import CONTROL_KINDS as _CONTROL_KINDS  # noqa: E402
from dnd.paths import RunDirError, check_run_dir, claim_run_dir, resolve_input_path, run_dir  # noqa: E402

# A bad config stops here with one line naming the key, its value and the rule: dnd.config checks
# the schema first (Snakemake's own message would print the whole schema), then Snakemake
# validates with the same file (filling defaults), then the cross-field and input checks.
try:
    check_schema(config)
    validate(config, schema="../schemas/config.schema.yaml")
    validate_config(config)
    check_inputs(config)
except ConfigError as exc:
    raise WorkflowError(f"config: {exc}") from None

# Each profile owns its outputs (dnd.paths.run_dir): the default profile (config/config.yaml)
# writes at the top level, every other profile under runs/<name>/ with the same layout
# (results/, logs/, benchmarks/, resources/models/base, .snakemake/); `-d DIR` runs in DIR
# instead. Every output path in the rules is relative to it; what they read from the
# repository is absolute (REPO, workflow.source_path, dnd.paths.resolve_input_path). A run
# directory's results/.profile, if any, must name this profile (one line otherwise).
try:
    RUN_DIR = run_dir(config["name"], workflow.configfiles, REPO / "config" / "config.yaml", Path.cwd())
except RunDirError as exc:
    raise WorkflowError(f"profile: {exc}") from None
if RUN_DIR != ".":

    workdir: RUN_DIR


RUN_ROOT = Path.cwd()  # this run's directory
try:
    check_run_dir(RUN_ROOT, config["name"])
except RunDirError as exc:
    raise WorkflowError(f"profile: {exc}") from None
logger.info(
    "config: "
    + (", ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml")
    + (" + --config overrides" if workflow.config_settings.config else "")
    + f"; keys not given take the schema defaults; profile {config['name']}, outputs in {RUN_ROOT}"
)


onstart:
    claim_run_dir(RUN_ROOT, config["name"])  # before the first job: results/.profile

DATASETS = config["data"]["datasets"]
FOLDS = folds(config)  # held-out target -> its training datasets
TARGETS = list(FOLDS)
N_ADAPTERS = config["generate"]["n_adapters"]
N_CONTROLS = config["generate"]["n_controls"]
# generated kinds besides dnd: variant designs side by side (dnd_<design>) and the controls
VARIANTS = list(config["generator"]["variants"])
CONTROL_KINDS = list(_CONTROL_KINDS)  # control_other, control_random, control_shuffled

# Every rule runs the package's CLI (`python -m dnd.cli ...`). PYTHONPATH is exported by the
# shell prefix, inside the job, so it also works in `--use-conda` environments (which block an
# inherited PYTHONPATH) and without installing the package. OMP_WAIT_POLICY=PASSIVE stops idle
# OpenMP threads from spinning, which costs several-fold when two jobs share the cores.
shell.prefix(
    f"export PYTHONPATH={shlex.quote(str(REPO / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}} OMP_WAIT_POLICY=PASSIVE; "
)

ZOO = "results/zoo"
MULTITASK = "results/multitask"  # each fold's multi-task LoRA (zoo.smk)
BASE_MODEL = "resources/models/base"
# the default run's wall clock, set-up and HTML report included (scripts/reproduce.sh; read by `bench`)
RUN_WALL = "results/timings/run.json"


# Names are identifiers (schema), and escaped anyway: a wildcard must match exactly a name.
wildcard_constraints:
    ds="|".join(map(re.escape, DATASETS)),
    target="|".join(map(re.escape, TARGETS)),
    i=r"\d+",


def as_json(obj):
    """Config sections travel to the CLI as one JSON argument (tracked by Snakemake params)."""
    return json.dumps(obj, sort_keys=True)


def checked_experiment(name, files):
    """An input function giving `files` (a list or an input function) once the config section of
    experiment `name` passes its check (dnd.config.check_experiment): only a run that asks for the
    experiment reads its section, so a run that holds out its own dataset edits nothing else."""

    def inputs(wildcards):
        try:
            check_experiment(config, name)
        except ConfigError as exc:
            raise WorkflowError(f"config: {exc}") from None
        return files(wildcards) if callable(files) else files

    return inputs


# The device of a job that holds a GPU: cuda, so that a GPU job on a node without CUDA stops in one line
# instead of running on the CPU. DND_GPU_DEVICE=auto lets it fall back to the CPU, for a test cluster
# whose GPUs are counts only (scripts/local_slurm.sh, tests/test_slurm.py).
GPU_JOB_DEVICE = os.environ.get("DND_GPU_DEVICE", "cuda")
if not re.fullmatch(r"auto|cuda(:\d+)?", GPU_JOB_DEVICE):
    raise WorkflowError(f"DND_GPU_DEVICE={GPU_JOB_DEVICE!r}: the device of a GPU job must be cuda, cuda:N or auto")


def job_device(wildcards, resources):
    """The `--device` of a job (dnd.device): GPU_JOB_DEVICE when the job holds a GPU (`resources.gpu`,
    which a cluster profile sets per rule), else cpu, so the default run is on the CPU on any machine."""
    return GPU_JOB_DEVICE if int(getattr(resources, "gpu", 0) or 0) > 0 else "cpu"


def job_launcher(wildcards, resources):
    """What starts a data-parallel command (dnd.parallel.launch_prefix): nothing for a job with at
    most one GPU (`python -m dnd.cli ...` as always), `accelerate launch` with one process per GPU for
    a job that a cluster profile gives `gpu: N` > 1 (train_generator and the rules made from it)."""
    from dnd.parallel import launch_prefix

    return launch_prefix(int(getattr(resources, "gpu", 0) or 0))


def evaluation_settings(keys):
    """The part of the `evaluation` section a kind of job reads (dnd.config: SCORING_SETTINGS,
    EVAL_SPEED_SETTINGS, GENERATION_SETTINGS): its rule params, so that only these rerun it."""
    return {k: config["evaluation"][k] for k in keys}


# what a log-likelihood score depends on (evaluate, crossdomain, ablations, fewshot)
SCORING_EVALUATION = evaluation_settings(SCORING_SETTINGS)


def cache_dir_arg(root, target=None):
    """The `--cache-dir` option of a scoring rule, as a params function: a list (`:q` quotes each
    word) naming {root}/eval_cache/{target}, `root` formatted with the job's wildcards (`target`:
    the wildcard's unless given); empty when evaluation.cache is off."""

    def arg(wildcards):
        if not config["evaluation"]["cache"]:
            return []
        return ["--cache-dir", f"{root.format(**dict(wildcards.items()))}/eval_cache/{target or wildcards.target}"]

    return arg


def other_dataset(target):
    """Control condition: the next dataset in config order that is not the target."""
    i = DATASETS.index(target)
    return DATASETS[(i + 1) % len(DATASETS)]


def base_model_inputs(wildcards):
    """The tiny test model trains its tokenizer on prepared text (of base_model.tiny.
    tokenizer_datasets, else of every dataset); a local model is its directory; the others need nothing."""
    bm, names = config["base_model"], []
    if bm["source"] == "tiny":
        names = bm["tiny"].get("tokenizer_datasets") or DATASETS
    return {"texts": expand("results/data/{ds}/train.jsonl", ds=names),
            # resolved as the start-up check resolves it (against the repository), wherever the run directory is
            "model": [str(resolve_input_path(bm["path"]))] if bm["source"] == "local" else []}


DESIGN = config["generator"]["design"]  # the design of method dnd
DESIGNS = [DESIGN, *VARIANTS]  # every design trained: generators are stored by design, so which one
# is the default (method dnd) is a label: switching it retrains nothing


def generator_path(target, design=None):
    """The generator of `design` for a fold (default: the default design, method dnd)."""
    return f"results/generators/{target}/generator_{design or DESIGN}.pt"


def generated_kinds(n_adapters, n_controls):
    """Every generated adapter of a target as (kind, i): dnd and each variant (n_adapters draws),
    each control (n_controls); draw by draw, so the designs of one draw (dnd_i, dnd_<design>_i) are
    generated one after the other and share its encoding (dnd generate-batch)."""
    counts = [("dnd", n_adapters)] + [(f"dnd_{v}", n_adapters) for v in VARIANTS]
    counts += [(k, n_controls) for k in CONTROL_KINDS]
    return [(kind, i) for i in range(max(n_adapters, n_controls)) for kind, n in counts if i < n]


GENERATED = generated_kinds(N_ADAPTERS, N_CONTROLS)


def generated_adapters(target):
    """Every generated adapter directory of a target (GENERATED)."""
    return [f"results/generated/{target}/{kind}_{i}" for kind, i in GENERATED]


def fold_inputs(wildcards):
    sources = FOLDS[wildcards.target]
    return {
        "tokens": expand("results/tokens/{d}.pt", d=sources),
        "encoded": expand("results/encoded/{d}/train.pt", d=sources),
        "template": f"{ZOO}/{sources[0]}/final",
    }


def target_adapters(wildcards):
    t = wildcards.target
    return {
        "tasks": expand("results/tasks/dnd_{ds}.yaml", ds=DATASETS),
        "model": BASE_MODEL,
        "zoo": expand(f"{ZOO}/{{ds}}/final", ds=DATASETS),
        "encoded": expand("results/encoded/{ds}/train.pt", ds=DATASETS)
        + [f"results/encoded/{t}/cond.pt"],
        "generated": generated_adapters(t),
    }


def generator_params(design=None, overrides=None, encoder=None, seed=None):
    """The train-generator params: the generator section with `overrides` (an ablation's) applied
    and, if given, its design set to `design`; the encoder section (default: config's); the seed
    (default: config's). `variants` says which other generators exist, not how one is trained, so
    it is left out."""
    gen = {k: v for k, v in config["generator"].items() if k != "variants"}
    gen = rule_section("generator", {**gen, **(overrides or {})})
    if design is not None:
        gen["design"] = design
    return as_json(
        {"generator": gen, "encoder": encoder or rule_section("encoder", config["encoder"]), "lora": config["lora"],
         "seed": config["seed"] if seed is None else seed}
    )


def diagnose_inputs(wildcards):
    t = wildcards.target
    fold = [*FOLDS[t], t]
    return {
        "generators": [generator_path(t, d) for d in DESIGNS],
        "tokens": expand("results/tokens/{d}.pt", d=fold),
        "encoded": expand("results/encoded/{d}/cond.pt", d=fold),
    }


# The prompts of each adapter kind: the target's unlabeled cond prompts (dnd and every
# dnd_<design>, the same draws), another dataset's (control_other), random text
# (control_random) or the target's cond prompts with their words shuffled (control_shuffled).
def _cond(dataset):
    return f"results/data/{dataset}/cond.jsonl"


PROMPTS_FILE = {
    **{kind: (lambda wildcards: _cond(wildcards.target)) for kind in ADAPTER_KINDS if kind.startswith("dnd")},
    "control_other": lambda wildcards: _cond(other_dataset(wildcards.target)),
    "control_random": lambda wildcards: [],
    "control_shuffled": lambda wildcards: _cond(wildcards.target),
}
assert set(PROMPTS_FILE) == set(ADAPTER_KINDS)


def prompts_spec(wildcards, input):
    """The `dnd generate --prompts` argument of an adapter kind."""
    if wildcards.kind == "control_random":
        return f"random:{config['generator']['n_prompts']}"
    if wildcards.kind == "control_shuffled":
        return f"shuffled:{input.prompts}"
    return input.prompts


def kind_design(kind):
    """The generator design an adapter kind comes from: dnd_<design> from that design's, every
    other kind (dnd, the controls) from the default one."""
    return kind[len("dnd_"):] if kind.startswith("dnd_") else DESIGN


def generator_of(wildcards):
    """The generator of an adapter kind (kind_design)."""
    return generator_path(wildcards.target, kind_design(wildcards.kind))


def generation_plan(target, adapters=None, generator=None, out="results/generated", timings="results/timings/generate"):
    """The `dnd generate-batch` plan of a target: each (kind, i) of `adapters` (default GENERATED)
    with the arguments one `dnd generate` would get (`generator`(w), default generator_of;
    PROMPTS_FILE, prompts_spec, adapter_seed), writing {out}/{target}/{kind}_{i} and its timing
    {timings}/{target}/{kind}_{i}.json. The seeds experiment passes its own generators and folders."""
    plan = []
    for kind, i in GENERATED if adapters is None else adapters:
        w = SimpleNamespace(target=target, kind=kind, i=str(i))
        plan.append({
            "generator": (generator or generator_of)(w),
            "prompts": prompts_spec(w, SimpleNamespace(prompts=PROMPTS_FILE[kind](w))),
            "n_prompts": config["generator"]["n_prompts"],
            "seed": adapter_seed(config["seed"], kind, i),
            "out": f"{out}/{target}/{kind}_{i}",
            "timing": f"{timings}/{target}/{kind}_{i}.json",
        })
    return plan


def generation_inputs(wildcards, adapters=None, generator=None):
    """generate_target's inputs: the generators and prompt files its plan reads (generation_plan's
    `adapters` and `generator`)."""
    kinds = GENERATED if adapters is None else adapters
    files = [PROMPTS_FILE[kind](SimpleNamespace(target=wildcards.target, kind=kind)) for kind, _ in kinds]
    return {
        "generators": sorted({job["generator"] for job in generation_plan(wildcards.target, adapters, generator)}),
        "prompts": sorted({f for f in files if f}),
    }


def report_benchmarks(wildcards):
    """The default run's benchmark files, which the report's compute tables and LoRA job times read
    (`--benchmarks`), one per job of `all` but the report's own."""
    encoded_cond = sorted({d for t in TARGETS for d in [*FOLDS[t], t]})  # diagnose_inputs, target_adapters
    files = ["benchmarks/base_model.tsv", "benchmarks/data_summary.tsv", "benchmarks/efficiency.tsv",
             "benchmarks/summarize.tsv", "benchmarks/diagnostics.tsv"]
    files += expand("benchmarks/{rule}/{ds}.tsv", rule=["prepare_data", "train_lora", "tokenize_zoo"], ds=DATASETS)
    files += expand("benchmarks/encode_prompts/{ds}_train.tsv", ds=DATASETS)
    files += expand("benchmarks/encode_prompts/{ds}_cond.tsv", ds=encoded_cond)
    files += [f"benchmarks/train_generator/{t}_{d}.tsv" for t in TARGETS for d in DESIGNS]
    files += expand("benchmarks/generate/{target}.tsv", target=TARGETS)
    files += expand("benchmarks/{rule}/{target}.tsv", rule=["multitask_lora", "evaluate", "evaluate_multitask",
                                                         "diagnose_fold"], target=TARGETS)
    if config["evaluation"]["compare_items"] > 0:
        files += expand("benchmarks/eval_speed/{target}.tsv", target=TARGETS) + ["benchmarks/eval_speed/summary.tsv"]
    return files
