import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# The package is the single source of truth for cross-field checks and the fold layout.
REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO / "src"))
from dnd.config import check_inputs, folds, validate_config  # noqa: E402
from dnd.datasets import dataset_settings  # noqa: E402

validate_config(config)
check_inputs(config)
logger.info(
    "config: "
    + (", ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml")
    + (" + --config overrides" if workflow.config_settings.config else "")
    + "; keys not given take the schema defaults"
)

DATASETS = config["data"]["datasets"]
FOLDS = folds(config)  # held-out target -> its training datasets
TARGETS = list(FOLDS)
N_ADAPTERS = config["generate"]["n_adapters"]
N_CONTROLS = config["generate"]["n_controls"]

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
        "dnd": expand(f"results/generated/{t}/dnd_{{i}}", i=range(N_ADAPTERS)),
        "controls": expand(
            f"results/generated/{t}/control_{{kind}}_{{i}}",
            kind=["other", "random"],
            i=range(N_CONTROLS),
        ),
    }
