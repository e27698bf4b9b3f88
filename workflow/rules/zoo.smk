rule train_lora:
    """One source LoRA per dataset: phase 1 to near convergence, then K checkpoints, one per step."""
    input:
        model=BASE_MODEL,
        train="results/data/{ds}/train.jsonl",
    output:
        checkpoints=directory(f"{ZOO}/{{ds}}/checkpoints"),
        final=directory(f"{ZOO}/{{ds}}/final"),
        log_csv=f"{ZOO}/{{ds}}/train_log.csv",
        summary=f"{ZOO}/{{ds}}/summary.json",
        # wall-clock times live apart from the zoo, so the zoo is byte-identical across machines
        timings="results/timings/train_lora/{ds}.json",
    params:
        device=job_device,
        p=as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": config["seed"]}),
        out_dir=f"{ZOO}/{{ds}}",
    log:
        "logs/train_lora/{ds}.log",
    benchmark:
        "benchmarks/train_lora/{ds}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli train-lora --device {params.device:q} --threads {threads} --params {params.p:q} --model {input.model:q} "
        "--train {input.train:q} --out-dir {params.out_dir:q} --timings {output.timings:q} > {log:q} 2>&1"


rule zoo:
    """Aggregate target: the whole LoRA zoo."""
    input:
        expand(f"{ZOO}/{{ds}}/final", ds=DATASETS),


use rule train_lora as multitask_lora with:
    input:
        model=BASE_MODEL,
        # every source's train split, in fold order (the items are visited in the zoo's seeded epoch order)
        train=lambda wildcards: expand("results/data/{d}/train.jsonl", d=FOLDS[wildcards.target]),
    output:
        checkpoints=directory(f"{MULTITASK}/{{target}}/checkpoints"),
        final=directory(f"{MULTITASK}/{{target}}/final"),
        log_csv=f"{MULTITASK}/{{target}}/train_log.csv",
        summary=f"{MULTITASK}/{{target}}/summary.json",
        timings="results/timings/train_lora/multitask_{target}.json",
    params:
        device=job_device,
        p=as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": config["seed"]}),
        out_dir=f"{MULTITASK}/{{target}}",
    log:
        "logs/multitask_lora/{target}.log",
    benchmark:
        "benchmarks/multitask_lora/{target}.tsv"


rule multitask:
    """Aggregate target: each fold's multi-task LoRA (Text-to-LoRA's baseline): the zoo's trainer,
    settings and total steps on the union of the fold's source train splits; it never sees the target."""
    input:
        expand(f"{MULTITASK}/{{target}}/final", target=TARGETS),
