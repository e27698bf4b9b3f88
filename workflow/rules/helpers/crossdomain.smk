# The cross-domain experiment's helpers and constants (its rules: workflow/rules/crossdomain.smk), included by
# that file, so common.smk holds what the default run needs.

CD = "results/crossdomain"
CROSSDOMAIN_CONFIG = config["crossdomain"]
CD_TARGET = CROSSDOMAIN_CONFIG["target"]
CD_DESIGN = CROSSDOMAIN_CONFIG["design"] or DESIGN
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
