# The paper's math and code domains (targets `math` and `code`, outside `all`; dnd.experiments.mathcode.data,
# dnd.experiments.mathcode.score, dnd.experiments.mathcode.report). Everything lives under results/{domain}/ (logs/{domain}/,
# benchmarks/{domain}/): its own data, a zoo of prompt -> response LoRAs (prompt.format `chat`),
# their tokens and encoded prompts, one generator per domain trained on all its sources, adapters
# for each target from its unlabeled prompts, and generation-based scores. The default run's base
# model and encoder are reused; its rules are reused through `use rule ... with:`.


include: "helpers/mathcode.smk"


rule math_data:
    """Splits, lm-eval rows and tasks of the math experiment (dnd.experiments.mathcode.data)."""
    output:
        **mc_data_outputs("math"),
    params:
        domain="math",
        p=as_json({"math": config["math"]}),
        data_dir=config["data"]["dir"],
    log:
        "logs/math/data.log",
    benchmark:
        "benchmarks/math/data.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli mathcode-data --domain {params.domain:q} --params {params.p:q} --data-dir {params.data_dir:q} "
        "--out {output:q} > {log:q} 2>&1"


use rule math_data as code_data with:
    output:
        **mc_data_outputs("code"),
    params:
        domain="code",
        p=as_json({"code": config["code"]}),
        data_dir=config["data"]["dir"],
    log:
        "logs/code/data.log",
    benchmark:
        "benchmarks/code/data.tsv"


use rule train_lora as mathcode_train_lora with:
    input:
        model=BASE_MODEL,
        train="results/{domain}/data/{src}/train.jsonl",
    output:
        checkpoints=directory("results/{domain}/zoo/{src}/checkpoints"),
        final=directory("results/{domain}/zoo/{src}/final"),
        log_csv="results/{domain}/zoo/{src}/train_log.csv",
        summary="results/{domain}/zoo/{src}/summary.json",
        timings="results/{domain}/timings/train_lora/{src}.json",
    params:
        p=lambda wildcards: as_json({"lora": mc_lora(wildcards.domain), "prompt": {"format": "chat"}, "seed": config["seed"]}),
        out_dir=lambda wildcards: f"results/{wildcards.domain}/zoo/{wildcards.src}",
    log:
        "logs/{domain}/train_lora/{src}.log",
    benchmark:
        "benchmarks/{domain}/train_lora/{src}.tsv"


use rule tokenize_zoo as mathcode_tokenize_zoo with:
    input:
        "results/{domain}/zoo/{src}/checkpoints",
    output:
        "results/{domain}/tokens/{src}.pt",
    log:
        "logs/{domain}/tokenize_zoo/{src}.log",
    benchmark:
        "benchmarks/{domain}/tokenize_zoo/{src}.tsv"


use rule encode_prompts as mathcode_encode_prompts with:
    input:
        "results/{domain}/data/{name}/{split}.jsonl",
    output:
        "results/{domain}/encoded/{name}/{split}.pt",
    log:
        "logs/{domain}/encode_prompts/{name}_{split}.log",
    benchmark:
        "benchmarks/{domain}/encode_prompts/{name}_{split}.tsv"


use rule train_generator as mathcode_train_generator with:
    input:
        tokens=lambda wildcards: expand("results/{domain}/tokens/{s}.pt", domain=wildcards.domain, s=MC_SOURCES[wildcards.domain]),
        encoded=lambda wildcards: expand(
            "results/{domain}/encoded/{s}/train.pt", domain=wildcards.domain, s=MC_SOURCES[wildcards.domain]
        ),
        template=lambda wildcards: f"results/{wildcards.domain}/zoo/{MC_SOURCES[wildcards.domain][0]}/final",
    output:
        generator="results/{domain}/generators/{target}/generator_{design}.pt",
        log_csv="results/{domain}/generators/{target}/train_log_{design}.csv",
        timings="results/{domain}/timings/train_generator/{target}_{design}.json",
    wildcard_constraints:
        target="math|code",
        design="|".join(DESIGNS),
    params:
        p=lambda wildcards: generator_params(wildcards.design),
        sources=lambda wildcards: MC_SOURCES[wildcards.domain],
    log:
        "logs/{domain}/train_generator/{target}_{design}.log",
    benchmark:
        "benchmarks/{domain}/train_generator/{target}_{design}.tsv"


use rule generate_adapter as mathcode_generate_adapter with:
    input:
        generator=lambda wildcards: f"results/{wildcards.domain}/generators/{wildcards.domain}/generator_{mc_design(wildcards.domain)}.pt",
        prompts=mc_prompts,
    output:
        adapter=directory("results/{domain}/generated/{target}/{kind}_{i}"),
        timing="results/{domain}/timings/generate/{target}/{kind}_{i}.json",
    wildcard_constraints:
        target="gsm8k|math|humaneval",
        kind="dnd|control_random|control_shuffled",
    log:
        "logs/{domain}/generate/{target}_{kind}_{i}.log",
    benchmark:
        "benchmarks/{domain}/generate/{target}_{kind}_{i}.tsv"


rule mathcode_evaluate:
    """Every method on one target: greedy generation scored by lm-eval's answer extraction (math)
    or dnd.benchmarks.code_exec (code), and the reference solution's log-likelihood (dnd.experiments.mathcode.score)."""
    input:
        tasks=lambda wildcards: [
            f"results/{wildcards.domain}/tasks/dnd_{wildcards.domain}_{wildcards.target}_{k}.yaml"
            for k in ("gen", "loglik")
        ],
        model=BASE_MODEL,
        zoo=lambda wildcards: expand("results/{domain}/zoo/{s}/final", domain=wildcards.domain, s=MC_SOURCES[wildcards.domain]),
        encoded=lambda wildcards: expand(
            "results/{domain}/encoded/{s}/train.pt", domain=wildcards.domain, s=MC_SOURCES[wildcards.domain]
        ),
        cond="results/{domain}/encoded/{target}/cond.pt",
        generated=lambda wildcards: mc_adapters(wildcards.domain, wildcards.target),
    output:
        "results/{domain}/eval/{target}.jsonl",
    wildcard_constraints:
        target="gsm8k|math|humaneval",
    params:
        device=job_device,
        p=lambda wildcards: as_json(
            {
                wildcards.domain: config[wildcards.domain],
                "evaluation": evaluation_settings(GENERATION_SETTINGS),
                "sources": MC_SOURCES[wildcards.domain],
            }
        ),
        cache=cache_dir_arg("results/{domain}"),
    log:
        "logs/{domain}/evaluate/{target}.log",
    benchmark:
        "benchmarks/{domain}/evaluate/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate-mathcode --device {params.device:q} --threads {threads:q} --domain {wildcards.domain:q} "
        "--target {wildcards.target:q} --params {params.p:q} --model {input.model:q} "
        "--tasks {input.tasks:q} --zoo {input.zoo:q} "
        "--generated {input.generated:q} --encoded {input.encoded:q} --cond {input.cond:q} "
        "{params.cache:q} --out {output:q} > {log:q} 2>&1"


rule mathcode_summary:
    """results/{domain}/scores.csv (the main table's schema plus the metric) and metrics.json."""
    input:
        lambda wildcards: expand("results/{domain}/eval/{t}.jsonl", domain=wildcards.domain, t=MC_TARGETS[wildcards.domain]),
    output:
        scores="results/{domain}/scores.csv",
        metrics="results/{domain}/metrics.json",
    params:
        p=lambda wildcards: as_json(
            {"sources": MC_SOURCES[wildcards.domain], "bootstrap": config["evaluation"]["bootstrap"], "seed": config["seed"]}
        ),
    log:
        "logs/{domain}/summary.log",
    benchmark:
        "benchmarks/{domain}/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli mathcode-summary --domain {wildcards.domain:q} --params {params.p:q} --eval {input:q} "
        "--scores {output.scores:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule mathcode_report:
    """results/{domain}/report.md (the paper's numbers beside ours) and its figure."""
    input:
        scores="results/{domain}/scores.csv",
        metrics="results/{domain}/metrics.json",
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
        benchmarks=mc_benchmarks,  # the job times
    output:
        md="results/{domain}/report.md",
        figure="results/{domain}/figures/{domain}.png",
    params:
        p=lambda wildcards: as_json(
            {
                "sources": MC_SOURCES[wildcards.domain],
                "settings": config[wildcards.domain],
                "base_model": config["base_model"],
                "design": mc_design(wildcards.domain),
            }
        ),
    log:
        "logs/{domain}/report.log",
    benchmark:
        "benchmarks/{domain}/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli mathcode-report --domain {wildcards.domain:q} --params {params.p:q} "
        "--scores {input.scores:q} --metrics {input.metrics:q} --paper-numbers {input.paper:q} "
        "--benchmarks {input.benchmarks:q} --out {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


rule math:
    """The math experiment (outside `all`): snakemake --cores all math."""
    input:
        "results/math/report.md",


rule code:
    """The code experiment (outside `all`): snakemake --cores all code."""
    input:
        "results/code/report.md",
