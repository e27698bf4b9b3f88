import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# The package is the single source of truth for cross-field checks and the fold layout.
REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO / "src"))
from dnd.config import ConfigError, check_inputs, check_schema, folds, rule_section, run_config, validate_config  # noqa: E402
from dnd.benchmarks.datasets import dataset_settings  # noqa: E402
from dnd.schedule import ADAPTER_KINDS, adapter_seed  # noqa: E402
from dnd.experiments.ablations.report import FAMILIES as AB_FAMILY_NAMES, encoding_variant, setting_overrides  # noqa: E402
from dnd.experiments.ablations.report import is_default as ablation_is_default  # noqa: E402
from dnd.experiments.mathcode.data import sources as mathcode_sources  # noqa: E402
from dnd.paths import RunDirError, check_run_dir, claim_run_dir, run_dir  # noqa: E402

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
CONTROL_KINDS = ["control_other", "control_random", "control_shuffled"]

# Every rule runs the package's CLI (`python -m dnd.cli ...`). PYTHONPATH is exported by the
# shell prefix, inside the job, so it also works in `--use-conda` environments (which block an
# inherited PYTHONPATH) and without installing the package. OMP_WAIT_POLICY=PASSIVE stops idle
# OpenMP threads from spinning, which costs several-fold when two jobs share the cores.
shell.prefix(
    f"export PYTHONPATH={shlex.quote(str(REPO / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}} OMP_WAIT_POLICY=PASSIVE; "
)

ZOO = "results/zoo"
BASE_MODEL = "resources/models/base"


# Names are identifiers (schema), and escaped anyway: a wildcard must match exactly a name.
wildcard_constraints:
    ds="|".join(map(re.escape, DATASETS)),
    target="|".join(map(re.escape, TARGETS)),
    i=r"\d+",


def as_json(obj):
    """Config sections travel to the CLI as one JSON argument (tracked by Snakemake params)."""
    return json.dumps(obj, sort_keys=True)


# The evaluation settings a score depends on, as `dnd evaluate` reads them: `cache` only decides
# whether to reuse results and compare_* are eval_speed's, neither is a reason to rerun.
SCORING_EVALUATION = {
    k: v for k, v in config["evaluation"].items() if k not in ("cache", "compare_items", "compare_float32_items")
}


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
    tokenizer_datasets, else of every dataset); real models need nothing."""
    if config["base_model"]["source"] == "tiny":
        names = config["base_model"]["tiny"].get("tokenizer_datasets") or DATASETS
        return expand("results/data/{ds}/train.jsonl", ds=names)
    return []


DESIGN = config["generator"]["design"]  # the design of method dnd
DESIGNS = [DESIGN, *VARIANTS]  # every design trained: generators are stored by design, so which one
# is the default (method dnd) is a label: switching it retrains nothing


def generator_path(target, design=None):
    """The generator of `design` for a fold (default: the default design, method dnd)."""
    return f"results/generators/{target}/generator_{design or DESIGN}.pt"


def generated_adapters(target):
    """Every generated adapter directory of a target: dnd and each variant (N_ADAPTERS draws),
    each control (N_CONTROLS)."""
    kinds = [("dnd", N_ADAPTERS)] + [(f"dnd_{v}", N_ADAPTERS) for v in VARIANTS]
    kinds += [(k, N_CONTROLS) for k in CONTROL_KINDS]
    return [f"results/generated/{target}/{kind}_{i}" for kind, n in kinds for i in range(n)]


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


def generator_params(design):
    """The train-generator params of `design`: the generator section with its design set to it;
    `variants` says which other generators exist, not how one is trained, so it is left out."""
    gen = {k: v for k, v in rule_section("generator", config["generator"]).items() if k != "variants"}
    gen["design"] = design
    return as_json(
        {"generator": gen, "encoder": rule_section("encoder", config["encoder"]), "lora": config["lora"],
         "seed": config["seed"]}
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


def generator_of(wildcards):
    """dnd_<design> adapters come from that design's generator, every other kind from the default one."""
    design = wildcards.kind[len("dnd_"):] if wildcards.kind.startswith("dnd_") else None
    return generator_path(wildcards.target, design)


# ------------------------------------------------------------- the protocol experiment
from dnd.experiments.protocol.score import task_names  # noqa: E402

PROTO = "results/protocol"
PCFG = config["protocol"]
P_DESIGN = PCFG["design"] or DESIGN
P_KINDS = [f"dnd{'' if c == 'pool' else '_testcond'}" for c in PCFG["conditions"]] + CONTROL_KINDS
P_TASKS = [
    name
    for ds in DATASETS
    for _, _, name in task_names(ds, PCFG["seeds"])
]


def protocol_adapters(target):
    n = {k: (PCFG["n_adapters"] if k.startswith("dnd") else N_CONTROLS) for k in P_KINDS}
    return [f"{PROTO}/generated/{target}/{k}_{i}" for k in P_KINDS for i in range(n[k])]


def protocol_fold_inputs(wildcards):
    sources = FOLDS[wildcards.target]
    return {
        "tokens": expand(f"{PROTO}/tokens/{{d}}.pt", d=sources),
        "encoded": expand("results/encoded/{d}/train.pt", d=sources),
        "template": f"{PROTO}/zoo/{sources[0]}/final",
    }


def protocol_prompts(wildcards):
    """dnd_testcond: the target's test split (the authors' conditioning); every other kind as
    in the default run."""
    if wildcards.kind == "dnd_testcond":
        return f"results/data/{wildcards.target}/test.jsonl"
    return PROMPTS_FILE[wildcards.kind](wildcards)


# ------------------------------------------------------------- the cross-domain experiment
CD = "results/crossdomain"
CCFG = config["crossdomain"]
CD_TARGET = CCFG["target"]
CD_DESIGN = CCFG["design"] or DESIGN
CD_KINDS = ["dnd", *CONTROL_KINDS]


def crossdomain_adapters(target):
    return [f"{CD}/generated/{target}/{k}_{i}" for k in CD_KINDS
            for i in range(N_ADAPTERS if k == "dnd" else N_CONTROLS)]


def crossdomain_prompts(wildcards):
    """dnd and control_shuffled: the new domain's unlabeled prompts; control_other: the first
    training dataset's; control_random: none."""
    if wildcards.kind == "control_other":
        return _cond(DATASETS[0])
    if wildcards.kind == "control_random":
        return []
    return f"{CD}/data/{wildcards.target}/cond.jsonl"


# ----------------------------------------------------------------------------- ablations
# (workflow/rules/ablations.smk; the settings of each family: dnd.experiments.ablations.report)
AB = "results/ablations"
ACFG = config["ablations"]
AB_TARGETS = list(ACFG["targets"])
AB_FAMILIES = {f: [str(s) for s in ACFG[f]] for f in AB_FAMILY_NAMES if ACFG.get(f)}
AB_CELLS = [
    (f, s, t)
    for f, settings in AB_FAMILIES.items()
    for s in settings
    for t in AB_TARGETS
    if not ablation_is_default(f, s, len(DATASETS))
]
AB_VARIANTS = sorted({v for f, s, _ in AB_CELLS if (v := encoding_variant(f, s))})
# extra source tasks of the `sources` curve (ablations.extra_sources): their data, LoRAs, tokens
# and encodings live under results/ablations/extra/, apart from the default run's
AB_EXTRA = dict(ACFG.get("extra_sources") or {})
ABX = f"{AB}/extra"


wildcard_constraints:
    family="|".join(AB_FAMILY_NAMES),
    setting=r"[A-Za-z0-9_]+",
    split="train|cond",


def ablation_overrides(family, setting, target):
    return setting_overrides(family, setting, target, DATASETS, config["seed"], BASE_MODEL, list(AB_EXTRA))


def ablation_zoo(ds):
    """A source's LoRA zoo folder: the default run's, or the extra tasks' (results/ablations/extra)."""
    return f"{ABX}/zoo/{ds}" if ds in AB_EXTRA else f"{ZOO}/{ds}"


def ablation_scored(sources):
    """The datasets whose LoRAs a cell scores: every dataset of the run, then its extra sources."""
    return DATASETS + [d for d in sources if d in AB_EXTRA]


def ablation_encoder(family, setting, target):
    over = ablation_overrides(family, setting, target)["encoder"]
    return rule_section("encoder", {**config["encoder"], **over})


def ablation_encoded(family, setting, target, ds, split):
    v = encoding_variant(family, setting)
    if ds in AB_EXTRA:
        if v:
            raise ValueError(f"extra source task {ds} is encoded with the default encoder only (family {family})")
        return f"{ABX}/encoded/{ds}/{split}.pt"
    return f"{AB}/encoded/{v}/{ds}/{split}.pt" if v else f"results/encoded/{ds}/{split}.pt"


def ablation_sources(wildcards):
    return ablation_overrides(wildcards.family, wildcards.setting, wildcards.target)["sources"]


def ablation_generator_inputs(wildcards):
    w = wildcards
    sources = ablation_sources(w)
    return {
        "tokens": [f"{ABX}/tokens/{d}.pt" if d in AB_EXTRA else f"results/tokens/{d}.pt" for d in sources],
        "encoded": [ablation_encoded(w.family, w.setting, w.target, d, "train") for d in sources],
        "template": f"{ablation_zoo(sources[0])}/final",
    }


def ablation_generator_params(wildcards):
    over = ablation_overrides(wildcards.family, wildcards.setting, wildcards.target)
    gen = {k: v for k, v in config["generator"].items() if k != "variants"}
    gen.update(over["generator"])
    return as_json(
        {
            "generator": rule_section("generator", gen),
            "encoder": ablation_encoder(wildcards.family, wildcards.setting, wildcards.target),
            "lora": config["lora"],
            "seed": config["seed"],
        }
    )


def ablation_adapters(family, setting, target):
    return [f"{AB}/{family}/{setting}/{target}/generated/dnd_{i}" for i in range(ACFG["n_adapters"])]


def ablation_eval(family, setting, target):
    """A cell's evaluation rows; None for a family's default setting (the default run's rows)."""
    if ablation_is_default(family, setting, len(DATASETS)):
        return None
    return f"{AB}/{family}/{setting}/{target}/eval.jsonl"


def ablation_evals(wildcards):
    """The evaluation files a family's summary reads (its non-default cells)."""
    return [e for s in AB_FAMILIES[wildcards.family] for t in AB_TARGETS if (e := ablation_eval(wildcards.family, s, t))]


def ablation_summary_params(family):
    cells = [
        [s, t, ablation_eval(family, s, t), ablation_overrides(family, s, t)["sources"]]
        for s in AB_FAMILIES[family]
        for t in AB_TARGETS
    ]
    return as_json(
        {
            "family": family,
            "cells": cells,
            "n_adapters": ACFG["n_adapters"],
            "extra_sources": list(AB_EXTRA),
            "bootstrap": config["evaluation"]["bootstrap"],
            "seed": config["seed"],
        }
    )
# ------------------------------------------------------------- the few-shot experiment
from dnd.experiments.fewshot.tuning import fewshot_targets  # noqa: E402

FEW = "results/fewshot"
FCFG = config["fewshot"]
FEW_TARGETS = fewshot_targets(config)
FEW_KS = sorted(FCFG["ks"])
# the default run's scoring settings, as evaluate_target reads them (the cache flag and
# eval_speed's keys are no reason to rerun)
FEW_EVALUATION = {k: config["evaluation"][k] for k in ("limit", "backend", "batch_size", "dtype", "metric")}


def fewshot_loras(wildcards):
    return expand(f"{FEW}/lora/{wildcards.target}/k{{k}}/final", k=FEW_KS)


def dnd_generation_timings(wildcards):
    """The default run's generation timings of every target's dnd adapters (DnD's cost)."""
    return [f"results/timings/generate/{t}/dnd_{i}.json" for t in FEW_TARGETS for i in range(N_ADAPTERS)]


# ------------------------------------------------------------- the math and code experiments
# (workflow/rules/mathcode.smk; dnd.experiments.mathcode.data)
MC_DOMAINS = ["math", "code"]
MC_TARGETS = {"math": ["gsm8k", "math"], "code": ["humaneval"]}
MC_SOURCES = {d: mathcode_sources(d, config[d]) for d in MC_DOMAINS}
MC_NAMES = {d: MC_SOURCES[d] + MC_TARGETS[d] for d in MC_DOMAINS}


wildcard_constraints:
    domain="math|code",
    src="|".join(sorted({s for d in MC_DOMAINS for s in MC_SOURCES[d]})),


def mc_lora(domain):
    """The zoo's lora section with the experiment's overrides (max_length, steps, batch size)."""
    return {**config["lora"], **config[domain]["lora"]}


def mc_design(domain):
    return config[domain]["design"] or DESIGN


def mc_kinds(domain):
    return [("dnd", config[domain]["n_adapters"])] + [(k, 1) for k in config[domain]["controls"]]


def mc_adapters(domain, target):
    return [f"results/{domain}/generated/{target}/{k}_{i}" for k, n in mc_kinds(domain) for i in range(n)]


def mc_prompts(wildcards):
    """dnd and control_shuffled: the target's unlabeled cond prompts; control_random: none."""
    if wildcards.kind == "control_random":
        return []
    return f"results/{wildcards.domain}/data/{wildcards.target}/cond.jsonl"


def mc_data_outputs(domain):
    names = MC_NAMES[domain]
    return {
        "splits": [f"results/{domain}/data/{n}/{s}.jsonl" for n in names for s in ("train", "cond", "test")],
        "lmeval": [f"results/{domain}/data/{t}/test.lmeval.jsonl" for t in MC_TARGETS[domain]],
        "tasks": [
            f"results/{domain}/tasks/dnd_{domain}_{t}_{k}.yaml" for t in MC_TARGETS[domain] for k in ("gen", "loglik")
        ],
        "summary": f"results/{domain}/data/splits.csv",
    }
