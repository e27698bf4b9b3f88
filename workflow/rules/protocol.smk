# The paper's own protocol side by side (target `protocol`, outside `all`; dnd.experiments.protocol.score).
# Everything it makes lives under results/protocol/ (logs/protocol/, benchmarks/protocol/), so it
# never touches the default run's artifacts; it reuses the default run's data splits, encoded
# prompts and base model. Its zoo is trained on the paper's bracketed answer format (ChatML); its
# generators and adapters are made by the default run's rules (`use rule ... with:`), on its own
# paths. Only the lm-eval tasks and the scoring fan out over the test-time templates
# (protocol.templates, wildcard {template}); the zoo, generators and adapters are shared.


include: "helpers/protocol.smk"


rule protocol_tasks:
    """The first protocol.n_test test items of each dataset in the paper's format under one
    test-time template, and the lm-eval tasks that score them (log-likelihood, greedy, one per
    sampling seed)."""
    input:
        data=expand("results/data/{ds}/test.jsonl", ds=DATASETS),
    output:
        tasks=[f"{PROTO}/tasks/{{template}}/{name}.yaml" for name in P_TASKS],
        data=[f"{PROTO}/data/{{template}}/{ds}/test.jsonl" for ds in DATASETS],
    wildcard_constraints:
        template="|".join(P_TEMPLATES),
    params:
        p=as_json({"protocol": protocol_template_config(), "datasets": DATASETS}),
    log:
        "logs/protocol/tasks/{template}.log",
    benchmark:
        "benchmarks/protocol/tasks/{template}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli protocol-tasks --params {params.p:q} --template {wildcards.template:q} "
        "--data {input.data:q} --out {output:q} "
        "> {log:q} 2>&1"


use rule train_lora as protocol_train_lora with:
    output:
        checkpoints=directory(f"{PROTO}/zoo/{{ds}}/checkpoints"),
        final=directory(f"{PROTO}/zoo/{{ds}}/final"),
        log_csv=f"{PROTO}/zoo/{{ds}}/train_log.csv",
        summary=f"{PROTO}/zoo/{{ds}}/summary.json",
        timings=f"{PROTO}/timings/train_lora/{{ds}}.json",
    params:
        p=as_json({"lora": config["lora"], "prompt": {"format": "paper"}, "seed": config["seed"]}),
        out_dir=f"{PROTO}/zoo/{{ds}}",
    log:
        "logs/protocol/train_lora/{ds}.log",
    benchmark:
        "benchmarks/protocol/train_lora/{ds}.tsv"


use rule tokenize_zoo as protocol_tokenize_zoo with:
    input:
        f"{PROTO}/zoo/{{ds}}/checkpoints",
    output:
        f"{PROTO}/tokens/{{ds}}.pt",
    log:
        "logs/protocol/tokenize_zoo/{ds}.log",
    benchmark:
        "benchmarks/protocol/tokenize_zoo/{ds}.tsv"


use rule train_generator as protocol_train_generator with:
    input:
        unpack(protocol_fold_inputs),
    output:
        generator=f"{PROTO}/generators/{{target}}/generator_{{design}}.pt",
        log_csv=f"{PROTO}/generators/{{target}}/train_log_{{design}}.csv",
        timings=f"{PROTO}/timings/train_generator/{{target}}_{{design}}.json",
    log:
        "logs/protocol/train_generator/{target}_{design}.log",
    benchmark:
        "benchmarks/protocol/train_generator/{target}_{design}.tsv"


use rule generate_adapter as protocol_generate_adapter with:
    input:
        generator=f"{PROTO}/generators/{{target}}/generator_{P_DESIGN}.pt",
        prompts=protocol_prompts,
    output:
        adapter=directory(f"{PROTO}/generated/{{target}}/{{kind}}_{{i}}"),
        timing=f"{PROTO}/timings/generate/{{target}}/{{kind}}_{{i}}.json",
    wildcard_constraints:
        kind="|".join(P_KINDS),
    params:
        prompts=prompts_spec,
        n=config["generator"]["n_prompts"],
        # dnd_testcond draws with dnd's seeds (the same draw indices, from another split)
        seed=lambda wildcards: adapter_seed(
            config["seed"], "dnd" if wildcards.kind == "dnd_testcond" else wildcards.kind, int(wildcards.i)
        ),
    log:
        "logs/protocol/generate/{target}_{kind}_{i}.log",
    benchmark:
        "benchmarks/protocol/generate/{target}_{kind}_{i}.tsv"


rule evaluate_protocol:
    """Every method on one target under the three protocols, in one test-time template
    (dnd.experiments.protocol.score)."""
    input:
        tasks=rules.protocol_tasks.output.tasks,
        model=BASE_MODEL,
        zoo=expand(f"{PROTO}/zoo/{{ds}}/final", ds=DATASETS),
        encoded=lambda wildcards: expand("results/encoded/{ds}/train.pt", ds=FOLDS[wildcards.target])
        + [f"results/encoded/{wildcards.target}/cond.pt"],
        generated=lambda wildcards: protocol_adapters(wildcards.target),
    output:
        f"{PROTO}/eval/{{template}}/{{target}}.jsonl",
    wildcard_constraints:
        template="|".join(P_TEMPLATES),
    params:
        device=job_device,
        p=lambda wildcards: as_json(
            {
                "protocol": protocol_template_config(),
                "evaluation": evaluation_settings(GENERATION_SETTINGS),
                "datasets": DATASETS,
                "sources": FOLDS[wildcards.target],
            }
        ),
        cache=cache_dir_arg(PROTO),  # shared by the templates: the template is part of every key
    log:
        "logs/protocol/evaluate/{template}/{target}.log",
    benchmark:
        "benchmarks/protocol/evaluate/{template}/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate-protocol --threads {threads:q} --device {params.device:q} --params {params.p:q} "
        "--template {wildcards.template:q} --target {wildcards.target:q} --model {input.model:q} "
        "--tasks {input.tasks:q} --zoo {input.zoo:q} --generated {input.generated:q} --encoded {input.encoded:q} {params.cache:q} --out {output:q} "
        "> {log:q} 2>&1"


rule protocol_summary:
    """results/protocol/scores.csv (every template, adapter, protocol and seed) and metrics.json
    (per template)."""
    input:
        expand(f"{PROTO}/eval/{{template}}/{{target}}.jsonl", template=P_TEMPLATES, target=TARGETS),
    output:
        scores=report(f"{PROTO}/scores.csv", caption="../report/protocol_scores.rst", category="Protocol"),
        metrics=f"{PROTO}/metrics.json",
    params:
        p=as_json(
            {
                "templates": P_TEMPLATES,
                "folds": FOLDS,
                "bootstrap": config["evaluation"]["bootstrap"],
                "seed": config["seed"],
            }
        ),
    log:
        "logs/protocol/summary.log",
    benchmark:
        "benchmarks/protocol/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli protocol-summary --params {params.p:q} --eval {input:q} --scores {output.scores:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule protocol_report:
    """results/protocol/report.md (section "Protocol": the templates side by side, DnD's verdicts
    where the oracle has headroom) and its figure."""
    input:
        metrics=rules.protocol_summary.output.metrics,
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
        benchmarks=protocol_benchmarks,  # the job times
    output:
        md=report(f"{PROTO}/report.md", caption="../report/protocol_report.rst", category="Protocol"),
        figure=report(f"{PROTO}/figures/protocol.png", caption="../report/fig_protocol.rst", category="Protocol"),
    params:
        p=as_json({"protocol": PROTOCOL_CONFIG, "generator": {"design": config["generator"]["design"]}}),
    log:
        "logs/protocol/report.log",
    benchmark:
        "benchmarks/protocol/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli protocol-report --params {params.p:q} --metrics {input.metrics:q} "
        "--paper-numbers {input.paper:q} --benchmarks {input.benchmarks:q} --out {output.md:q} "
        "--figure {output.figure:q} > {log:q} 2>&1"


rule protocol:
    """The paper-protocol experiment (outside `all`): snakemake --cores all protocol."""
    input:
        rules.protocol_report.output,
