# The cross-domain experiment's helpers and constants (its rules: workflow/rules/crossdomain.smk), included by
# that file, so common.smk holds what the default run needs.

CD = "results/crossdomain"
CROSSDOMAIN_CONFIG = config["crossdomain"]
CD_TARGET = CROSSDOMAIN_CONFIG["target"]
CD_DESIGN = CROSSDOMAIN_CONFIG["design"] or DESIGN
CD_KINDS = ["dnd", *CONTROL_KINDS]


def crossdomain_kinds():
    """(kind, number of adapters) of each method the experiment generates."""
    return [(k, N_ADAPTERS if k == "dnd" else N_CONTROLS) for k in CD_KINDS]


def crossdomain_adapters(target):
    return [f"{CD}/generated/{target}/{k}_{i}" for k, n in crossdomain_kinds() for i in range(n)]


def crossdomain_prompts(wildcards):
    """dnd and control_shuffled: the new domain's unlabeled prompts; control_other: the first
    training dataset's; control_random: none."""
    if wildcards.kind == "control_other":
        return _cond(DATASETS[0])
    if wildcards.kind == "control_random":
        return []
    return f"{CD}/data/{wildcards.target}/cond.jsonl"


def crossdomain_benchmarks(wildcards):
    """The benchmark files of the experiment's jobs (benchmarks/crossdomain/), which its report
    reads for the job times: every job of the `crossdomain` target but the report's own."""
    files = [f"benchmarks/crossdomain/{job}.tsv" for job in ("data", "encode_prompts", "evaluate", "summarize")]
    files.append(f"benchmarks/crossdomain/train_generator/{CD_TARGET}_{CD_DESIGN}.tsv")
    files += [f"benchmarks/crossdomain/generate/{CD_TARGET}_{k}_{i}.tsv" for k, n in crossdomain_kinds()
              for i in range(n)]
    return files
