rule compare_backends:
    """One target: base + two LoRAs scored by the dnd-prefix and the plain hf lm-eval backends
    on the same items, timed and compared item by item (dnd.eval_speed)."""
    input:
        tasks=expand("results/tasks/dnd_{ds}.yaml", ds=DATASETS),
        model=BASE_MODEL,
        zoo=lambda wildcards: expand(
            f"{ZOO}/{{ds}}/final", ds=[wildcards.target, FOLDS[wildcards.target][0]]
        ),
    output:
        "results/eval_speed/{target}.json",
    params:
        device=job_device,
        p=lambda wildcards: as_json(
            {
                "evaluation": evaluation_settings(EVAL_SPEED_SETTINGS),
                "sources": FOLDS[wildcards.target],
            }
        ),
    log:
        "logs/eval_speed/{target}.log",
    benchmark:
        "benchmarks/eval_speed/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli eval-speed --device {params.device:q} --threads {threads:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.tasks:q} --zoo {input.zoo:q} --out {output:q} > {log:q} 2>&1"


rule eval_speed:
    """Aggregate target: results/eval_speed.csv (backend,target,adapter,items,seconds) and
    results/eval_agreement.csv (same chosen answer, largest log-likelihood difference)."""
    input:
        expand("results/eval_speed/{target}.json", target=TARGETS),
    output:
        speed=report(
            "results/eval_speed.csv",
            caption="../report/eval_speed.rst",
            category="Evaluation backend",
        ),
        agreement=report(
            "results/eval_agreement.csv",
            caption="../report/eval_agreement.rst",
            category="Evaluation backend",
        ),
    log:
        "logs/eval_speed/summary.log",
    benchmark:
        "benchmarks/eval_speed/summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli eval-speed-summary --in {input:q} --speed {output.speed:q} "
        "--agreement {output.agreement:q} > {log:q} 2>&1"
