# Beyond weight space, the LoRA side (target `function_space_lora`, outside `all`; issue 30;
# dnd.experiments.function_space.lora): per held-out target of function_space.targets, the source LoRA
# picked on n_val labeled items of the target's train split, scored on the default run's test items
# beside the default run's multi-task LoRA (zoo.smk's multitask_lora, scored by evaluate_multitask);
# and a shared-A zoo (one frozen A for every dataset) with the zoo diagnostics of each fold on it and on
# the default zoo. Everything lives under results/function_space/ (logs/function_space/,
# benchmarks/function_space/); it reuses the default run's data, tasks, base model, zoo, multi-task
# LoRAs and tokens.


include: "helpers/function_space.smk"


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
    """val_picked on the target's test items (dnd evaluate's rows and scorer)."""
    input:
        model=BASE_MODEL,
        task="results/tasks/dnd_{target}.yaml",
        test="results/data/{target}/test.lmeval.jsonl",
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
        "--model {input.model:q} --tasks {input.task:q} --zoo {input.zoo:q} "
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
        # the default run's rows (base, source LoRAs, soup, nearest, DnD, controls, the multi-task LoRA)
        # and val_picked's
        expand("results/eval/{target}.jsonl", target=FS_TARGETS),
        expand("results/eval_multitask/{target}.jsonl", target=FS_TARGETS),
        expand(f"{FS}/eval/{{target}}.jsonl", target=FS_TARGETS),
    output:
        # the LoRA side's own summary; the experiment's scores.csv and metrics.json are fs_report's
        scores=f"{FS}/lora/scores.csv",
        metrics=f"{FS}/lora/metrics.json",
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


# ---------------------------------------------------------------------------- the generators (issue 30 items 2-6)
# Per target of function_space.targets and generator of function_space.generators: the generator (trained on the
# fold's sources, on the default or the shared-A zoo), its adapters on the default run's prompt draws and controls,
# the noise baseline and the ΔW distance checks of every generator (the default run's DnD too, reused), all scored
# with the default run's scorer; one report. The default run's DnD adapters and scores are reused, not redone.


use rule train_generator as fs_train_generator with:
    input:
        unpack(fs_generator_inputs),
    output:
        generator=f"{FS}/generators/{{gen}}/{{target}}/generator.pt",
        log_csv=f"{FS}/generators/{{gen}}/{{target}}/train_log.csv",
        timings=f"{FS}/timings/train_generator/{{gen}}_{{target}}.json",
    wildcard_constraints:
        gen=fs_words(FS_REC),
        target=FS_TARGET,
    params:
        device=job_device,
        p=fs_generator_params,
        sources=lambda wildcards: FOLDS[wildcards.target],
    log:
        "logs/function_space/train_generator/{gen}_{target}.log",
    benchmark:
        "benchmarks/function_space/train_generator_{gen}_{target}.tsv"


rule fs_train_generator_sft:
    """A generator trained through the model (generator.objective sft or both): train_generator's command
    with the sources' labeled train items and the base model."""
    input:
        unpack(fs_generator_inputs),
    output:
        generator=f"{FS}/generators/{{gen}}/{{target}}/generator.pt",
        log_csv=f"{FS}/generators/{{gen}}/{{target}}/train_log.csv",
        timings=f"{FS}/timings/train_generator/{{gen}}_{{target}}.json",
    wildcard_constraints:
        gen=fs_words(FS_SFT),
        target=FS_TARGET,
    params:
        device=job_device,
        p=fs_generator_params,
        sources=lambda wildcards: FOLDS[wildcards.target],
    log:
        "logs/function_space/train_generator/{gen}_{target}.log",
    benchmark:
        "benchmarks/function_space/train_generator_{gen}_{target}.tsv"
    threads: 2
    resources:
        mem_mb=12000,
        runtime=240,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli train-generator --device {params.device:q} --threads {threads} --params {params.p:q} "
        "--target {wildcards.target:q} --sources {params.sources:q} --tokens {input.tokens:q} "
        "--encoded {input.encoded:q} --template-adapter {input.template:q} --train-data {input.train_data:q} "
        "--base-model {input.model:q} --out {output.generator:q} --log {output.log_csv:q} "
        "--timings {output.timings:q} > {log:q} 2>&1"


use rule generate_target as fs_generate with:
    input:
        unpack(lambda wildcards: generation_inputs(wildcards, FS_ADAPTERS,
                                                   lambda w: fs_generator(wildcards.gen, w.target))),
    output:
        adapters=[directory(f"{FS}/generated/{{gen}}/{{target}}/{kind}_{i}") for kind, i in FS_ADAPTERS],
        timings=[f"{FS}/timings/generate/{{gen}}/{{target}}/{kind}_{i}.json" for kind, i in FS_ADAPTERS],
    wildcard_constraints:
        gen=fs_words(list(FS_GENS)),
        target=FS_TARGET,
    params:
        device=job_device,
        plan=lambda wildcards: as_json(fs_generation_plan(wildcards)),
    log:
        "logs/function_space/generate/{gen}_{target}.log",
    benchmark:
        "benchmarks/function_space/generate_{gen}_{target}.tsv"


rule fs_checks:
    """The memorization checks of every generator on a target (dnd.experiments.function_space.checks):
    each DnD adapter's ΔW distance to its nearest training LoRA against the distances between the
    training LoRAs, and the noise baseline (the target's nearest source plus seeded Gaussian noise at
    the adapter's own ΔW distance from it)."""
    input:
        fs_check_inputs,
    output:
        csv=f"{FS}/checks/{{target}}.csv",
        noise=[directory(fs_noise(g, "{target}", i)) for g in FS_CHECKED for i in range(FS_N)],
    wildcard_constraints:
        target=FS_TARGET,
    params:
        plan=lambda wildcards: as_json(fs_check_plan(wildcards.target)),
    log:
        "logs/function_space/checks/{target}.log",
    benchmark:
        "benchmarks/function_space/checks_{target}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-checks --plan-json {params.plan:q} --out {output.csv:q} > {log:q} 2>&1"


rule fs_score:
    """Every adapter of the generators' side on a target's test items (dnd.evaluate.score_adapters: the
    default run's task and scorer): the new generators', their controls, the noise baselines and the
    shared-A zoo's nearest source."""
    input:
        model=BASE_MODEL,
        tasks="results/tasks/dnd_{target}.yaml",
        adapters=fs_score_inputs,
    output:
        f"{FS}/eval_generators/{{target}}.jsonl",
    wildcard_constraints:
        target=FS_TARGET,
    params:
        device=job_device,
        p=as_json({"evaluation": SCORING_EVALUATION}),
        plan=lambda wildcards: as_json(fs_score_plan(wildcards.target)),
        cache=cache_dir_arg(f"{FS}/generators"),
    log:
        "logs/function_space/score/{target}.log",
    benchmark:
        "benchmarks/function_space/score_{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-score --threads {threads} --device {params.device:q} --params {params.p:q} "
        "--plan-json {params.plan:q} --model {input.model:q} --tasks {input.tasks:q} {params.cache:q} "
        "--out {output:q} > {log:q} 2>&1"


rule fs_report:
    """results/function_space/scores.csv (the main table's schema), metrics.json (paired CIs per target
    and pooled), report.md and its figure (dnd.experiments.function_space.report)."""
    input:
        default=expand("results/eval/{target}.jsonl", target=FS_TARGETS)
        + expand("results/eval_multitask/{target}.jsonl", target=FS_TARGETS),
        labeled=expand(f"{FS}/eval/{{target}}.jsonl", target=FS_TARGETS),
        generators=expand(f"{FS}/eval_generators/{{target}}.jsonl", target=FS_TARGETS),
        checks=expand(f"{FS}/checks/{{target}}.csv", target=FS_TARGETS),
        diagnostics=expand(f"{FS}/diagnostics/{{zoo}}/{{target}}.csv", zoo=list(FS_ZOOS), target=FS_TARGETS),
        benchmarks=fs_benchmarks,  # the experiment's job times
    output:
        scores=f"{FS}/scores.csv",
        metrics=f"{FS}/metrics.json",
        md=f"{FS}/report.md",
        figure=f"{FS}/figures/function_space.png",
    params:
        p=lambda wildcards: as_json(
            {
                "bootstrap": config["evaluation"]["bootstrap"],
                "seed": config["seed"],
                "folds": {t: FOLDS.get(t) for t in FS_TARGETS},
                "generators": {g: {"objective": fs_objective(g), "zoo": fs_zoo(g),
                                   "design": FS_GENS[g].get("design", config["generator"]["design"])}
                               for g in FS_GENS},
                "n_adapters": FS_N,
            }
        ),
    log:
        "logs/function_space/report.log",
    benchmark:
        "benchmarks/function_space/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli fs-report --params {params.p:q} --default-eval {input.default:q} "
        "--labeled-eval {input.labeled:q} --generators-eval {input.generators:q} --checks {input.checks:q} "
        "--diagnostics {input.diagnostics:q} --benchmarks {input.benchmarks:q} --scores {output.scores:q} "
        "--metrics {output.metrics:q} --out {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


rule function_space:
    """The function_space experiment (outside `all`): snakemake --cores all function_space. The LoRA side
    (function_space_lora), the generators trained both ways (function_space.generators) with their
    controls and memorization checks, and the report."""
    input:
        checked_experiment("function_space", expand(f"{FS}/report.md", target=FS_TARGETS)),
        rules.function_space_lora.input,
        rules.fs_report.output,
