rule generate_dnd:
    """Adapter i for a held-out target, from an independent draw of its unlabeled cond prompts."""
    input:
        generator="results/generators/{target}/generator.pt",
        prompts="results/data/{target}/cond.jsonl",
    output:
        directory("results/generated/{target}/dnd_{i}"),
    params:
        n=config["generate"]["n_prompts"],
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
        "python -m dnd.cli generate --threads {threads} --generator {input.generator} --prompts {input.prompts} "
        "--n-prompts {params.n} --seed {params.seed} --out {output} > {log} 2>&1"


rule generate_control_other:
    """Control: the target's generator conditioned on another dataset's prompts."""
    input:
        generator="results/generators/{target}/generator.pt",
        prompts=lambda wildcards: f"results/data/{other_dataset(wildcards.target)}/cond.jsonl",
    output:
        directory("results/generated/{target}/control_other_{i}"),
    params:
        n=config["generate"]["n_prompts"],
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
        "python -m dnd.cli generate --threads {threads} --generator {input.generator} --prompts {input.prompts} "
        "--n-prompts {params.n} --seed {params.seed} --out {output} > {log} 2>&1"


rule generate_control_random:
    """Control: the target's generator conditioned on random text."""
    input:
        generator="results/generators/{target}/generator.pt",
    output:
        directory("results/generated/{target}/control_random_{i}"),
    params:
        n=config["generate"]["n_prompts"],
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
        "python -m dnd.cli generate --threads {threads} --generator {input.generator} --prompts random:{params.n} "
        "--n-prompts {params.n} --seed {params.seed} --out {output} > {log} 2>&1"


rule efficiency:
    """Generation wall time (encode / decode / write) and memory per adapter."""
    input:
        expand(
            "results/generated/{target}/dnd_{i}",
            target=TARGETS,
            i=range(N_ADAPTERS),
        ),
    output:
        report(
            "results/efficiency.csv",
            caption="../report/efficiency.rst",
            category="Efficiency",
        ),
    params:
        timings=expand(
            "results/generated/{target}/dnd_{i}/timing.json",
            target=TARGETS,
            i=range(N_ADAPTERS),
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
        "python -m dnd.cli efficiency --timings {params.timings} --out {output} > {log} 2>&1"


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
