# Few-shot tuning and in-context learning against DnD (target `fewshot`, outside `all`; dnd.experiments.fewshot.tuning).
# Everything it makes lives under results/fewshot/ (logs/fewshot/, benchmarks/fewshot/{target}/) and
# results/fewshot.csv; it reads the default run's prepared data, lm-eval tasks, base model, per-item
# scores (results/eval) and generation timings, and trains nothing of the default run again.


include: "helpers/fewshot.smk"


rule fewshot_train:
    """A LoRA on the first k labeled train items of a target (the zoo's trainer and settings)."""
    input:
        model=BASE_MODEL,
        train="results/data/{target}/train.jsonl",
    output:
        final=directory(f"{FEW}/lora/{{target}}/k{{k}}/final"),
        train_items=f"{FEW}/lora/{{target}}/k{{k}}/train.jsonl",
        log_csv=f"{FEW}/lora/{{target}}/k{{k}}/train_log.csv",
        summary=f"{FEW}/lora/{{target}}/k{{k}}/summary.json",
        timings=f"{FEW}/timings/train/{{target}}_k{{k}}.json",
    wildcard_constraints:
        k=r"\d+",
    params:
        device=job_device,
        p=as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": config["seed"],
                   "fewshot": {"epochs": FEWSHOT_CONFIG["epochs"]}}),
        out_dir=f"{FEW}/lora/{{target}}/k{{k}}",
    log:
        "logs/fewshot/train/{target}_k{k}.log",
    benchmark:
        "benchmarks/fewshot/{target}/train_k{k}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fewshot-train --device {params.device:q} --threads {threads} --params {params.p:q} --k {wildcards.k} "
        "--model {input.model:q} --train {input.train:q} --out-dir {params.out_dir:q} --timings {output.timings:q} "
        "> {log:q} 2>&1"


rule fewshot_score:
    """Every k's few-shot LoRA on the target's test items, with the default run's task and scorer."""
    input:
        model=BASE_MODEL,
        task="results/tasks/dnd_{target}.yaml",
        test="results/data/{target}/test.lmeval.jsonl",
        loras=fewshot_loras,
    output:
        f"{FEW}/eval/{{target}}/fewshot_ft.jsonl",
    params:
        device=job_device,
        p=as_json({"evaluation": SCORING_EVALUATION, "fewshot": {"ks": FEW_KS}}),
        cache=cache_dir_arg(FEW),
    log:
        "logs/fewshot/score/{target}.log",
    benchmark:
        "benchmarks/fewshot/{target}/score.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fewshot-score --device {params.device:q} --threads {threads} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --loras {input.loras:q} {params.cache:q} "
        "--out {output:q} > {log:q} 2>&1"


rule fewshot_icl:
    """In-context learning with k = 0 and every fewshot.icl_ks demonstrations (the first k train items)."""
    input:
        model=BASE_MODEL,
        task="results/tasks/dnd_{target}.yaml",
        test="results/data/{target}/test.lmeval.jsonl",
        train="results/data/{target}/train.jsonl",
    output:
        rows=f"{FEW}/eval/{{target}}/icl.jsonl",
        context=f"{FEW}/eval/{{target}}/icl_context.json",
        timings=f"{FEW}/timings/icl/{{target}}.json",
    params:
        device=job_device,
        p=as_json({"evaluation": SCORING_EVALUATION, "fewshot": {"icl_ks": sorted(FEWSHOT_CONFIG["icl_ks"])},
                   "prompt": config["prompt"]}),
    log:
        "logs/fewshot/icl/{target}.log",
    benchmark:
        "benchmarks/fewshot/{target}/icl.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fewshot-icl --device {params.device:q} --threads {threads} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --train {input.train:q} --out {output.rows:q} "
        "--context-out {output.context:q} --timings {output.timings:q} > {log:q} 2>&1"


rule fewshot_summary:
    """results/fewshot.csv (accuracy and cost of every method and k) and metrics.json (paired CIs)."""
    input:
        ft=expand(f"{FEW}/eval/{{target}}/fewshot_ft.jsonl", target=FEW_TARGETS),
        icl=expand(f"{FEW}/eval/{{target}}/icl.jsonl", target=FEW_TARGETS),
        context=expand(f"{FEW}/eval/{{target}}/icl_context.json", target=FEW_TARGETS),
        dnd=expand("results/eval/{target}.jsonl", target=FEW_TARGETS),
        train_timings=expand(f"{FEW}/timings/train/{{target}}_k{{k}}.json", target=FEW_TARGETS, k=FEW_KS),
        icl_timings=expand(f"{FEW}/timings/icl/{{target}}.json", target=FEW_TARGETS),
        generation_timings=checked_experiment("fewshot", dnd_generation_timings),
    output:
        csv=report("results/fewshot.csv", caption="../report/fewshot_csv.rst", category="Few-shot"),
        metrics=f"{FEW}/metrics.json",
    params:
        p=as_json({"targets": FEW_TARGETS, "bootstrap": config["evaluation"]["bootstrap"], "seed": config["seed"]}),
    log:
        "logs/fewshot/summary.log",
    benchmark:
        "benchmarks/fewshot/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fewshot-summary --params {params.p:q} "
        "--fewshot-eval {input.ft:q} {input.icl:q} {input.context:q} --dnd-eval {input.dnd:q} "
        "--timings {input.train_timings:q} {input.icl_timings:q} --generate-timings {input.generation_timings:q} "
        "--csv {output.csv:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule fewshot_report:
    """results/fewshot/report.md and its figure."""
    input:
        csv=rules.fewshot_summary.output.csv,
        metrics=rules.fewshot_summary.output.metrics,
        # DnD's one-off cost, named in the report
        generator_timings=expand(f"results/timings/train_generator/{{target}}_{DESIGN}.json",
                                 target=FEW_TARGETS),
        # DnD's range of generation times
        generation_timings=checked_experiment("fewshot", dnd_generation_timings),
        # each target's job times
        benchmarks=fewshot_benchmarks,
    output:
        md=report(f"{FEW}/report.md", caption="../report/fewshot_report.rst", category="Few-shot"),
        figure=report(f"{FEW}/figures/fewshot.png", caption="../report/fig_fewshot.rst", category="Few-shot"),
    params:
        # what the report names (not the whole config: editing another experiment reruns nothing here)
        p=as_json({k: config[k] for k in ("fewshot", "lora", "evaluation", "generate", "generator")}),
    log:
        "logs/fewshot/report.log",
    benchmark:
        "benchmarks/fewshot/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fewshot-report --params {params.p:q} --csv {input.csv:q} --metrics {input.metrics:q} "
        "--generate-timings {input.generation_timings:q} --generator-timings {input.generator_timings:q} "
        "--benchmarks {input.benchmarks:q} --out {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


rule fewshot:
    """The few-shot experiment (outside `all`): snakemake --cores all fewshot."""
    input:
        rules.fewshot_report.output,
