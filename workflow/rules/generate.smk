# Every generation job: one adapter directory (only the adapter files, identical on every run)
# and its timing JSON under results/timings/generate/{target}/ (wall times stay out of the
# hashed adapter directories).
GENERATE_SHELL = (
    "python -m dnd.cli generate --threads {threads:q} --generator {input.generator:q} "
    "--prompts {params.prompts:q} --n-prompts {params.n:q} --seed {params.seed:q} "
    "--out {output.adapter:q} --timing {output.timing:q} > {log:q} 2>&1"
)


rule generate_dnd:
    """Adapter i for a held-out target, from an independent draw of its unlabeled cond prompts."""
    input:
        generator="results/generators/{target}/generator.pt",
        prompts="results/data/{target}/cond.jsonl",
    output:
        adapter=directory("results/generated/{target}/dnd_{i}"),
        timing="results/timings/generate/{target}/dnd_{i}.json",
    params:
        prompts=lambda wildcards, input: input.prompts,
        n=config["generator"]["n_prompts"],
        seed=lambda wildcards: config["seed"] * 1000 + int(wildcards.i),
    log:
        "logs/generate/{target}_dnd_{i}.log",
    benchmark:
        "benchmarks/generate/{target}_dnd_{i}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        GENERATE_SHELL


rule generate_control_other:
    """Control: the target's generator conditioned on another dataset's prompts."""
    input:
        generator="results/generators/{target}/generator.pt",
        prompts=lambda wildcards: f"results/data/{other_dataset(wildcards.target)}/cond.jsonl",
    output:
        adapter=directory("results/generated/{target}/control_other_{i}"),
        timing="results/timings/generate/{target}/control_other_{i}.json",
    params:
        prompts=lambda wildcards, input: input.prompts,
        n=config["generator"]["n_prompts"],
        seed=lambda wildcards: config["seed"] * 1000 + 100 + int(wildcards.i),
    log:
        "logs/generate/{target}_control_other_{i}.log",
    benchmark:
        "benchmarks/generate/{target}_control_other_{i}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        GENERATE_SHELL


rule generate_control_random:
    """Control: the target's generator conditioned on random text."""
    input:
        generator="results/generators/{target}/generator.pt",
    output:
        adapter=directory("results/generated/{target}/control_random_{i}"),
        timing="results/timings/generate/{target}/control_random_{i}.json",
    params:
        prompts=f"random:{config['generator']['n_prompts']}",
        n=config["generator"]["n_prompts"],
        seed=lambda wildcards: config["seed"] * 1000 + 200 + int(wildcards.i),
    log:
        "logs/generate/{target}_control_random_{i}.log",
    benchmark:
        "benchmarks/generate/{target}_control_random_{i}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        GENERATE_SHELL


rule efficiency:
    """Generation wall time (encode / decode / write) and memory per DnD adapter."""
    input:
        timings=expand(
            "results/timings/generate/{target}/dnd_{i}.json",
            target=TARGETS,
            i=range(N_ADAPTERS),
        ),
    output:
        report(
            "results/efficiency.csv",
            caption="../report/efficiency.rst",
            category="Efficiency",
        ),
    log:
        "logs/efficiency.log",
    benchmark:
        "benchmarks/efficiency.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli efficiency --timings {input.timings:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    """Aggregate target: every generated adapter and control."""
    input:
        rules.efficiency.output,
        expand(
            "results/generated/{target}/control_{kind}_{i}",
            target=TARGETS,
            kind=["other", "random"],
            i=range(N_CONTROLS),
        ),
