# The paper's cross-domain test (target `crossdomain`, outside `all`): a generator trained on
# every dataset of the default run, conditioned on the unlabeled prompts of a new domain
# (crossdomain.target, the paper's science set), scored against the main table's baselines.
# Everything it makes lives under results/crossdomain/; it reuses the default run's zoo, tokens,
# encoded prompts and base model (nothing is trained twice but the generator).


include: "helpers/crossdomain.smk"


rule crossdomain_data:
    """The new domain's cond (unlabeled, conditions generation) and test (scored) splits and its
    lm-eval task."""
    output:
        splits=multiext(f"{CD}/data/{CD_TARGET}/", "train.jsonl", "cond.jsonl", "test.jsonl"),
        lmeval=f"{CD}/data/{CD_TARGET}/test.lmeval.jsonl",
        task=f"{CD}/tasks/dnd_{CD_TARGET}.yaml",
    params:
        p=as_json(
            {
                "data": {
                    **dataset_settings(config["data"], CD_TARGET),
                    "n_cond": CROSSDOMAIN_CONFIG["n_cond"],
                    "n_test": CROSSDOMAIN_CONFIG["n_test"],
                },
                "prompt": config["prompt"],
                "seed": config["seed"],
            }
        ),
        target=CD_TARGET,
    log:
        "logs/crossdomain/data.log",
    benchmark:
        "benchmarks/crossdomain/data.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli prepare-data --dataset {params.target:q} --params {params.p:q} "
        "--out {output:q} > {log:q} 2>&1"


use rule encode_prompts as crossdomain_encode_prompts with:
    input:
        f"{CD}/data/{CD_TARGET}/cond.jsonl",
    output:
        f"{CD}/encoded/{CD_TARGET}/cond.pt",
    log:
        "logs/crossdomain/encode_prompts.log",
    benchmark:
        "benchmarks/crossdomain/encode_prompts.tsv"


use rule train_generator as crossdomain_train_generator with:
    input:
        tokens=expand("results/tokens/{d}.pt", d=DATASETS),
        encoded=expand("results/encoded/{d}/train.pt", d=DATASETS),
        template=f"{ZOO}/{DATASETS[0]}/final",
    output:
        generator=f"{CD}/generators/{{target}}/generator_{{design}}.pt",
        log_csv=f"{CD}/generators/{{target}}/train_log_{{design}}.csv",
        timings=f"{CD}/timings/train_generator/{{target}}_{{design}}.json",
    wildcard_constraints:
        target=CD_TARGET,
        design="|".join(DESIGNS),
    params:
        p=lambda wildcards: generator_params(wildcards.design),
        sources=DATASETS,
    log:
        "logs/crossdomain/train_generator/{target}_{design}.log",
    benchmark:
        "benchmarks/crossdomain/train_generator/{target}_{design}.tsv"


use rule generate_adapter as crossdomain_generate_adapter with:
    input:
        generator=f"{CD}/generators/{{target}}/generator_{CD_DESIGN}.pt",
        prompts=crossdomain_prompts,
    output:
        adapter=directory(f"{CD}/generated/{{target}}/{{kind}}_{{i}}"),
        timing=f"{CD}/timings/generate/{{target}}/{{kind}}_{{i}}.json",
    wildcard_constraints:
        target=CD_TARGET,
        kind="|".join(CD_KINDS),
    log:
        "logs/crossdomain/generate/{target}_{kind}_{i}.log",
    benchmark:
        "benchmarks/crossdomain/generate/{target}_{kind}_{i}.tsv"


rule crossdomain_evaluate:
    """lm-eval on the new domain's test items: base, every training LoRA, soup, nearest, DnD,
    controls (no oracle: the new domain has no LoRA)."""
    input:
        task=rules.crossdomain_data.output.task,
        model=BASE_MODEL,
        zoo=expand(f"{ZOO}/{{ds}}/final", ds=DATASETS),
        encoded=expand("results/encoded/{ds}/train.pt", ds=DATASETS),
        cond=rules.crossdomain_encode_prompts.output,
        generated=crossdomain_adapters(CD_TARGET),
    output:
        f"{CD}/eval/{CD_TARGET}.jsonl",
    params:
        device=job_device,
        p=as_json(
            {
                "evaluation": SCORING_EVALUATION,
                "datasets": DATASETS,
                "sources": DATASETS,
                "seed": config["seed"],
            }
        ),
        target=CD_TARGET,
        cache=cache_dir_arg(CD, CD_TARGET),
    log:
        "logs/crossdomain/evaluate.log",
    benchmark:
        "benchmarks/crossdomain/evaluate.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate --device {params.device:q} --threads {threads:q} --params {params.p:q} --target {params.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --zoo {input.zoo:q} "
        "--generated {input.generated:q} --encoded {input.encoded:q} --cond {input.cond:q} "
        "{params.cache:q} --out {output:q} > {log:q} 2>&1"


use rule summarize as crossdomain_summarize with:
    input:
        rules.crossdomain_evaluate.output,
    output:
        scores=f"{CD}/scores.csv",
        metrics=f"{CD}/metrics.json",
    params:
        p=as_json(
            {
                "evaluation": evaluation_settings(("bootstrap",)),
                "seed": config["seed"],
                "folds": {CD_TARGET: DATASETS},
            }
        ),
    log:
        "logs/crossdomain/summarize.log",
    benchmark:
        "benchmarks/crossdomain/summarize.tsv"


rule crossdomain_report:
    """results/crossdomain/report.md (section "Cross-domain") and its figure."""
    input:
        scores=rules.crossdomain_summarize.output.scores,
        metrics=rules.crossdomain_summarize.output.metrics,
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
        benchmarks=crossdomain_benchmarks,  # the job times
    output:
        md=report(f"{CD}/report.md", caption="../report/crossdomain_report.rst", category="Cross-domain"),
        figure=report(f"{CD}/figures/crossdomain.png", caption="../report/fig_crossdomain.rst", category="Cross-domain"),
    params:
        p=as_json(
            {"target": CD_TARGET, "sources": DATASETS, "design": CD_DESIGN, "n_cond": CROSSDOMAIN_CONFIG["n_cond"]}
        ),
    log:
        "logs/crossdomain/report.log",
    benchmark:
        "benchmarks/crossdomain/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli crossdomain-report --params {params.p:q} --scores {input.scores:q} "
        "--metrics {input.metrics:q} --paper-numbers {input.paper:q} --benchmarks {input.benchmarks:q} "
        "--out {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


rule crossdomain:
    """The cross-domain experiment (outside `all`): snakemake --cores all crossdomain."""
    input:
        rules.crossdomain_report.output,
