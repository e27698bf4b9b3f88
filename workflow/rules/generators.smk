rule encode_prompts:
    """Frozen sentence-encoder states of one split's prompts, computed once and cached."""
    input:
        "results/data/{ds}/{split}.jsonl",
    output:
        "results/encoded/{ds}/{split}.pt",
    params:
        device=job_device,
        p=as_json(rule_section("encoder", config["encoder"])),
    log:
        "logs/encode_prompts/{ds}_{split}.log",
    benchmark:
        "benchmarks/encode_prompts/{ds}_{split}.tsv"
    wildcard_constraints:
        split="train|cond",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli encode --device {params.device:q} --threads {threads} --params {params.p:q} --data {input:q} --out {output:q} > {log:q} 2>&1"


rule tokenize_zoo:
    """A dataset's LoRA checkpoints as parameter tokens (K, T, r+2, w+2)."""
    input:
        f"{ZOO}/{{ds}}/checkpoints",
    output:
        "results/tokens/{ds}.pt",
    params:
        # only the token width shapes the tokens: other generator settings must not redo them
        p=as_json({"chunk_width": config["generator"]["chunk_width"]}),
    log:
        "logs/tokenize_zoo/{ds}.log",
    benchmark:
        "benchmarks/tokenize_zoo/{ds}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli tokenize-zoo --threads {threads} --params {params.p:q} --checkpoints {input:q} --out {output:q} > {log:q} 2>&1"


rule train_generator:
    """One DnD generator per held-out target and design (the default and each variant), trained
    on the other datasets' pairs."""
    input:
        unpack(fold_inputs),
    wildcard_constraints:
        design="|".join(DESIGNS),
    output:
        generator="results/generators/{target}/generator_{design}.pt",
        log_csv="results/generators/{target}/train_log_{design}.csv",
        timings="results/timings/train_generator/{target}_{design}.json",
    params:
        device=job_device,
        launch=job_launcher,
        p=lambda wildcards: generator_params(wildcards.design),
        sources=lambda wildcards: FOLDS[wildcards.target],
    log:
        "logs/train_generator/{target}_{design}.log",
    benchmark:
        "benchmarks/train_generator/{target}_{design}.tsv"
    threads: 2
    resources:
        mem_mb=12000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "{params.launch}python -m dnd.cli train-generator --device {params.device:q} --threads {threads} --params {params.p:q} --target {wildcards.target:q} "
        "--sources {params.sources:q} --tokens {input.tokens:q} --encoded {input.encoded:q} "
        "--template-adapter {input.template:q} --out {output.generator:q} --log {output.log_csv:q} "
        "--timings {output.timings:q} > {log:q} 2>&1"


rule generators:
    """Aggregate target: every leave-one-out generator, and every encoded prompt split (the
    cond splits too, which evaluation reads for `nearest`), so that the DVC stage of the same
    name produces all of results/encoded."""
    input:
        [generator_path(t, d) for t in TARGETS for d in DESIGNS],
        expand("results/encoded/{target}/cond.pt", target=TARGETS),
