# The protocol experiment's helpers and constants (its rules: workflow/rules/protocol.smk), included by
# that file, so common.smk holds what the default run needs.

from dnd.experiments.protocol.score import task_names  # noqa: E402

PROTO = "results/protocol"
PROTOCOL_CONFIG = config["protocol"]
#: the test-time templates: each has its own task files and scores (results/protocol/{tasks,data,eval}/{template}/);
#: the zoo, generators and generated adapters are shared
P_TEMPLATES = PROTOCOL_CONFIG["templates"]
P_DESIGN = PROTOCOL_CONFIG["design"] or DESIGN
P_KINDS = [f"dnd{'' if c == 'pool' else '_testcond'}" for c in PROTOCOL_CONFIG["conditions"]] + CONTROL_KINDS
P_TASKS = [
    name
    for ds in DATASETS
    for _, _, name in task_names(ds, PROTOCOL_CONFIG["seeds"])
]


def protocol_template_config():
    """The protocol section as a per-template job reads it: without the list of templates (its
    template comes as --template), so adding a template does not rerun the others' jobs."""
    return {k: v for k, v in PROTOCOL_CONFIG.items() if k != "templates"}


def protocol_kinds():
    """(kind, number of adapters) of each method the protocol generates."""
    return [(k, PROTOCOL_CONFIG["n_adapters"] if k.startswith("dnd") else N_CONTROLS) for k in P_KINDS]


def protocol_adapters(target):
    return [f"{PROTO}/generated/{target}/{k}_{i}" for k, n in protocol_kinds() for i in range(n)]


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


def protocol_benchmarks(wildcards):
    """The benchmark files of the protocol's jobs (benchmarks/protocol/), which its report reads
    for the job times: every job of the `protocol` target but the report's own."""
    sources = sorted({d for t in TARGETS for d in FOLDS[t]})  # protocol_fold_inputs' tokens
    files = expand("benchmarks/protocol/tasks/{template}.tsv", template=P_TEMPLATES)
    files += ["benchmarks/protocol/summary.tsv"]
    files += expand("benchmarks/protocol/train_lora/{ds}.tsv", ds=DATASETS)  # evaluate_protocol's zoo
    files += expand("benchmarks/protocol/tokenize_zoo/{ds}.tsv", ds=sources)
    files += expand(f"benchmarks/protocol/train_generator/{{target}}_{P_DESIGN}.tsv", target=TARGETS)
    files += [f"benchmarks/protocol/generate/{t}_{k}_{i}.tsv" for t in TARGETS for k, n in protocol_kinds()
              for i in range(n)]
    files += expand("benchmarks/protocol/evaluate/{template}/{target}.tsv", template=P_TEMPLATES, target=TARGETS)
    return files
