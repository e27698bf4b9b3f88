rule evaluate_target:
    """lm-eval on one target's test items: base, every source LoRA, soup, nearest, DnD, controls."""
    input:
        unpack(target_adapters),
    output:
        "results/eval/{target}.jsonl",
    params:
        device=job_device,
        p=lambda wildcards: as_json(
            {
                "evaluation": SCORING_EVALUATION,  # what a score depends on (dnd.config.SCORING_SETTINGS)
                "datasets": DATASETS,
                "sources": FOLDS[wildcards.target],
                "seed": config["seed"],
            }
        ),
        # a list, so that `:q` quotes each word (and an empty list gives no argument)
        cache=cache_dir_arg("results"),
    log:
        "logs/evaluate/{target}.log",
    benchmark:
        "benchmarks/evaluate/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate --device {params.device:q} --threads {threads:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.tasks:q} --zoo {input.zoo:q} "
        "--generated {input.generated:q} --encoded {input.encoded:q} "
        "{params.cache:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_multitask:
    """The fold's multi-task LoRA on the target's test items (evaluate_target's task, items, scorer and
    score cache); its own file, so the experiments that read results/eval/{target}.jsonl keep their inputs."""
    input:
        model=BASE_MODEL,
        tasks="results/tasks/dnd_{target}.yaml",
        multitask=f"{MULTITASK}/{{target}}/final",
    output:
        "results/eval_multitask/{target}.jsonl",
    params:
        device=job_device,
        p=lambda wildcards: as_json({"evaluation": SCORING_EVALUATION, "sources": FOLDS[wildcards.target]}),
        cache=cache_dir_arg("results"),
    log:
        "logs/evaluate_multitask/{target}.log",
    benchmark:
        "benchmarks/evaluate_multitask/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate-multitask --device {params.device:q} --threads {threads:q} --params {params.p:q} "
        "--target {wildcards.target:q} --model {input.model:q} --tasks {input.tasks:q} --multitask {input.multitask:q} "
        "{params.cache:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    """Aggregate target: every target's per-item scores (every method, and the multi-task LoRA's)."""
    input:
        expand("results/eval/{target}.jsonl", target=TARGETS),
        expand("results/eval_multitask/{target}.jsonl", target=TARGETS),
