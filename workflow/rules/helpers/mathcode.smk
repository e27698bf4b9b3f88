# The math and code experiments' helpers and constants (its rules: workflow/rules/mathcode.smk), included by
# that file, so common.smk holds what the default run needs.

import dnd.experiments.mathcode.data as mathcode_data  # noqa: E402

# (dnd.experiments.mathcode.data)
MC_DOMAINS = list(mathcode_data.DOMAINS)
MC_TARGETS = {d: list(mathcode_data.TARGETS[d]) for d in MC_DOMAINS}
MC_SOURCES = {d: mathcode_data.sources(d, config[d]) for d in MC_DOMAINS}


wildcard_constraints:
    domain="|".join(MC_DOMAINS),
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
    """The mathcode-data job's outputs (dnd.experiments.mathcode.data.outputs)."""
    return mathcode_data.outputs(domain, config[domain], f"results/{domain}")


def mc_benchmarks(wildcards):
    """The benchmark files of a domain's jobs (benchmarks/{domain}/), which its report reads for
    the job times: every job of the `math` or `code` target but the report's own."""
    d = wildcards.domain
    b, sources, targets = f"benchmarks/{d}", MC_SOURCES[d], MC_TARGETS[d]
    files = [f"{b}/data.tsv", f"{b}/train_generator/{d}_{mc_design(d)}.tsv", f"{b}/summary.tsv"]
    files += [f"{b}/{job}/{s}.tsv" for job in ("train_lora", "tokenize_zoo") for s in sources]
    files += [f"{b}/encode_prompts/{s}_train.tsv" for s in sources]
    files += [f"{b}/encode_prompts/{t}_cond.tsv" for t in targets]
    files += [f"{b}/generate/{t}_{k}_{i}.tsv" for t in targets for k, n in mc_kinds(d) for i in range(n)]
    files += [f"{b}/evaluate/{t}.tsv" for t in targets]
    return files
