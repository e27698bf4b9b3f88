rule diagnose_fold:
    """Weight-space diagnostics of one fold's generators: fit to the sources, retrieval, prompt
    sensitivity, and the zoo's reachability of the held-out LoRA."""
    input:
        unpack(diagnose_inputs),
    output:
        "results/diagnostics/{target}.csv",
    params:
        device=job_device,
        p=as_json({"seed": config["seed"]}),
        sources=lambda wildcards: FOLDS[wildcards.target],
        variants=["dnd", *(f"dnd_{v}" for v in VARIANTS)],
    log:
        "logs/diagnose_fold/{target}.log",
    benchmark:
        "benchmarks/diagnose_fold/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=20,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli diagnose-fold --device {params.device:q} --threads {threads} --params {params.p:q} --target {wildcards.target:q} "
        "--sources {params.sources:q} --generators {input.generators:q} --variants {params.variants:q} "
        "--tokens {input.tokens:q} --encoded {input.encoded:q} --out {output:q} > {log:q} 2>&1"


rule diagnostics:
    """Every fold's diagnostics with the function-space comparisons of metrics.json."""
    input:
        folds=expand("results/diagnostics/{target}.csv", target=TARGETS),
        metrics=rules.summarize.output.metrics,
    output:
        report("results/diagnostics.csv", caption="../report/diagnostics.rst", category="Generator diagnostics"),
    log:
        "logs/diagnostics.log",
    benchmark:
        "benchmarks/diagnostics.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli diagnostics --folds {input.folds:q} --metrics {input.metrics:q} --out {output:q} > {log:q} 2>&1"
