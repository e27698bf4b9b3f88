# Beyond weight space, the LoRA side (target `function_space_lora`, outside `all`; issue 30;
# dnd.experiments.function_space.lora): per held-out target of function_space.targets, the multi-task
# LoRA (the zoo's trainer on the union of the fold's source train splits) and the source LoRA picked on
# n_val labeled items of the target's train split, scored on the default run's test items; and a
# shared-A zoo (one frozen A for every dataset) with the zoo diagnostics of each fold on it and on the
# default zoo. Everything lives under results/function_space/ (logs/function_space/,
# benchmarks/function_space/); it reuses the default run's data, tasks, base model, zoo and tokens.


include: "helpers/function_space.smk"


use rule train_lora as fs_multitask_lora with:
    input:
        model=BASE_MODEL,
        # every source's train split, in fold order (the items are visited in the zoo's seeded epoch order)
        train=lambda wildcards: expand("results/data/{d}/train.jsonl", d=FOLDS[wildcards.target]),
    output:
        checkpoints=directory(f"{FS}/multitask/{{target}}/checkpoints"),
        final=directory(f"{FS}/multitask/{{target}}/final"),
        log_csv=f"{FS}/multitask/{{target}}/train_log.csv",
        summary=f"{FS}/multitask/{{target}}/summary.json",
        timings=f"{FS}/timings/train_lora/multitask_{{target}}.json",
    wildcard_constraints:
        target=FS_TARGET,
    params:
        p=as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": config["seed"]}),
        out_dir=f"{FS}/multitask/{{target}}",
    log:
        "logs/function_space/train_multitask/{target}.log",
    benchmark:
        "benchmarks/function_space/train_multitask_{target}.tsv"


rule fs_val_split:
    """The target's labeled validation items: n_val of its train split (seeded), none a test item."""
    input:
        train="results/data/{target}/train.jsonl",
        test="results/data/{target}/test.jsonl",
    output:
        multiext(f"{FS}/val/{{target}}/", "val.jsonl", "val.lmeval.jsonl"),
        f"{FS}/val/{{target}}/dnd_{{target}}_val.yaml",
    wildcard_constraints:
        target=FS_TARGET,
    params:
        p=as_json({"function_space": {"n_val": FS_CONFIG["n_val"]}, "prompt": config["prompt"], "seed": config["seed"]}),
    log:
        "logs/function_space/val_split/{target}.log",
    benchmark:
        "benchmarks/function_space/val_split_{target}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-val-split --params {params.p:q} --target {wildcards.target:q} --train {input.train:q} "
        "--test {input.test:q} --out {output:q} > {log:q} 2>&1"


rule fs_val_pick:
    """Every source LoRA of the fold on the target's validation items; the best is `val_picked`."""
    input:
        model=BASE_MODEL,
        task=f"{FS}/val/{{target}}/dnd_{{target}}_val.yaml",
        rows=f"{FS}/val/{{target}}/val.lmeval.jsonl",
        zoo=fs_source_finals,
    output:
        f"{FS}/val_pick/{{target}}.json",
    wildcard_constraints:
        target=FS_TARGET,
    params:
        device=job_device,
        p=lambda wildcards: as_json({"evaluation": SCORING_EVALUATION, "sources": FOLDS[wildcards.target]}),
        cache=cache_dir_arg(f"{FS}/val"),
    log:
        "logs/function_space/val_pick/{target}.log",
    benchmark:
        "benchmarks/function_space/val_pick_{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-val-pick --threads {threads} --device {params.device:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --zoo {input.zoo:q} {params.cache:q} --out {output:q} "
        "> {log:q} 2>&1"


rule fs_evaluate:
    """multitask_lora and val_picked on the target's test items (dnd evaluate's rows and scorer)."""
    input:
        model=BASE_MODEL,
        task="results/tasks/dnd_{target}.yaml",
        test="results/data/{target}/test.lmeval.jsonl",
        multitask=f"{FS}/multitask/{{target}}/final",
        zoo=fs_source_finals,
        val_pick=f"{FS}/val_pick/{{target}}.json",
    output:
        f"{FS}/eval/{{target}}.jsonl",
    wildcard_constraints:
        target=FS_TARGET,
    params:
        device=job_device,
        p=as_json({"evaluation": SCORING_EVALUATION}),
        cache=cache_dir_arg(FS),
    log:
        "logs/function_space/evaluate/{target}.log",
    benchmark:
        "benchmarks/function_space/evaluate_{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-evaluate --threads {threads} --device {params.device:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --multitask {input.multitask:q} --zoo {input.zoo:q} "
        "--val-pick {input.val_pick:q} {params.cache:q} --out {output:q} > {log:q} 2>&1"


use rule train_lora as fs_shared_a_train_lora with:
    input:
        model=BASE_MODEL,
        train="results/data/{ds}/train.jsonl",
    output:
        checkpoints=directory(f"{FS}/zoo_shared_a/{{ds}}/checkpoints"),
        final=directory(f"{FS}/zoo_shared_a/{{ds}}/final"),
        log_csv=f"{FS}/zoo_shared_a/{{ds}}/train_log.csv",
        summary=f"{FS}/zoo_shared_a/{{ds}}/summary.json",
        timings=f"{FS}/timings/train_lora/shared_a_{{ds}}.json",
    params:
        p=as_json({"lora": {**config["lora"], "shared_a": True}, "prompt": config["prompt"], "seed": config["seed"]}),
        out_dir=f"{FS}/zoo_shared_a/{{ds}}",
    log:
        "logs/function_space/train_shared_a/{ds}.log",
    benchmark:
        "benchmarks/function_space/train_shared_a_{ds}.tsv"


use rule tokenize_zoo as fs_shared_a_tokenize_zoo with:
    input:
        f"{FS}/zoo_shared_a/{{ds}}/checkpoints",
    output:
        f"{FS}/tokens_shared_a/{{ds}}.pt",
    log:
        "logs/function_space/tokenize_shared_a/{ds}.log",
    benchmark:
        "benchmarks/function_space/tokenize_shared_a_{ds}.tsv"


rule fs_zoo_diagnostics:
    """The zoo rows of diagnose-fold (reachability of the held-out LoRA, checkpoint spread) on one
    zoo: the default run's or the shared-A zoo."""
    input:
        tokens=lambda wildcards: expand(f"{FS_ZOOS[wildcards.zoo]}/{{d}}.pt",
                                        d=[*FOLDS[wildcards.target], wildcards.target]),
    output:
        f"{FS}/diagnostics/{{zoo}}/{{target}}.csv",
    wildcard_constraints:
        target=FS_TARGET,
        zoo="|".join(FS_ZOOS),
    params:
        device=job_device,
        p=as_json({"seed": config["seed"]}),
        sources=lambda wildcards: FOLDS[wildcards.target],
    log:
        "logs/function_space/diagnostics/{zoo}_{target}.log",
    benchmark:
        "benchmarks/function_space/diagnostics_{zoo}_{target}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli diagnose-fold --threads {threads} --device {params.device:q} --params {params.p:q} --target {wildcards.target:q} "
        "--sources {params.sources:q} --tokens {input.tokens:q} --out {output:q} > {log:q} 2>&1"


use rule summarize as fs_summarize with:
    input:
        # the default run's rows (base, source LoRAs, soup, nearest, DnD, controls) and the labeled baselines'
        expand("results/eval/{target}.jsonl", target=FS_TARGETS),
        expand(f"{FS}/eval/{{target}}.jsonl", target=FS_TARGETS),
    output:
        scores=f"{FS}/scores.csv",
        metrics=f"{FS}/metrics.json",
    params:
        p=as_json(
            {
                "evaluation": evaluation_settings(("bootstrap",)),
                "seed": config["seed"],
                "folds": {t: FOLDS.get(t) for t in FS_TARGETS},  # checked when asked for (check_experiment)
            }
        ),
    log:
        "logs/function_space/summarize.log",
    benchmark:
        "benchmarks/function_space/summarize.tsv"


rule function_space_lora:
    """The LoRA side of the function_space experiment (outside `all`): snakemake --cores all function_space_lora.
    Its scores.csv and metrics.json (the labeled baselines beside the default run's methods, with
    dnd.summary's paired comparisons) need the default run's evaluation of the targets."""
    input:
        checked_experiment("function_space", expand(f"{FS}/eval/{{target}}.jsonl", target=FS_TARGETS)),
        expand(f"{FS}/diagnostics/{{zoo}}/{{target}}.csv", zoo=list(FS_ZOOS), target=FS_TARGETS),
        rules.fs_summarize.output,


rule function_space:
    """The function_space experiment (outside `all`): snakemake --cores all function_space. So far its
    LoRA side (function_space_lora); the generators trained through the model (generator.objective
    sft) and their report join it (issue 30)."""
    input:
        rules.function_space_lora.input,
