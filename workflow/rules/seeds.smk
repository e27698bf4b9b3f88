# The main comparison over training seeds (target `seeds`, outside `all`): the zoo retrained with
# each zoo seed, the generators with each generator seed, their adapters scored on the default
# run's test items, and every pair compared with a two-level bootstrap (seeds, then items). The
# default run is run (seed, seed) and is reused; everything else lives under results/seeds/.


include: "helpers/seeds.smk"


use rule train_lora as seeds_train_lora with:
    output:
        checkpoints=directory(f"{SEEDS}/zoo/z{{zs}}/{{ds}}/checkpoints"),
        final=directory(f"{SEEDS}/zoo/z{{zs}}/{{ds}}/final"),
        log_csv=f"{SEEDS}/zoo/z{{zs}}/{{ds}}/train_log.csv",
        summary=f"{SEEDS}/zoo/z{{zs}}/{{ds}}/summary.json",
        timings=f"{SEEDS}/timings/train_lora/z{{zs}}/{{ds}}.json",
    wildcard_constraints:
        zs=r"\d+",
    params:
        p=lambda wildcards: as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": int(wildcards.zs)}),
        out_dir=f"{SEEDS}/zoo/z{{zs}}/{{ds}}",
    log:
        "logs/seeds/train_lora/z{zs}/{ds}.log",
    benchmark:
        "benchmarks/seeds/train_lora/z{zs}_{ds}.tsv"


use rule tokenize_zoo as seeds_tokenize_zoo with:
    input:
        f"{SEEDS}/zoo/z{{zs}}/{{ds}}/checkpoints",
    output:
        f"{SEEDS}/tokens/z{{zs}}/{{ds}}.pt",
    wildcard_constraints:
        zs=r"\d+",
    log:
        "logs/seeds/tokenize_zoo/z{zs}/{ds}.log",
    benchmark:
        "benchmarks/seeds/tokenize_zoo/z{zs}_{ds}.tsv"


use rule train_generator as seeds_train_generator with:
    input:
        unpack(seeds_fold_inputs),
    output:
        generator=f"{SEEDS}/generators/z{{zs}}g{{gs}}/{{target}}/generator_{{design}}.pt",
        log_csv=f"{SEEDS}/generators/z{{zs}}g{{gs}}/{{target}}/train_log_{{design}}.csv",
        timings=f"{SEEDS}/timings/train_generator/z{{zs}}g{{gs}}/{{target}}_{{design}}.json",
    wildcard_constraints:
        zs=r"\d+",
        gs=r"\d+",
        design="|".join(DESIGNS),
    params:
        p=lambda wildcards: generator_params(wildcards.design, seed=int(wildcards.gs)),
        sources=lambda wildcards: FOLDS[wildcards.target],
    log:
        "logs/seeds/train_generator/z{zs}g{gs}/{target}_{design}.log",
    benchmark:
        "benchmarks/seeds/train_generator/z{zs}g{gs}_{target}_{design}.tsv"


use rule generate_target as seeds_generate with:
    input:
        unpack(lambda wildcards: generation_inputs(wildcards, SEED_ADAPTERS,
                                                   seeds_generator_of(wildcards.zs, wildcards.gs))),
    output:
        adapters=[directory(f"{SEEDS}/generated/z{{zs}}g{{gs}}/{{target}}/{kind}_{i}") for kind, i in SEED_ADAPTERS],
        timings=[f"{SEEDS}/timings/generate/z{{zs}}g{{gs}}/{{target}}/{kind}_{i}.json" for kind, i in SEED_ADAPTERS],
    wildcard_constraints:
        zs=r"\d+",
        gs=r"\d+",
    params:
        plan=lambda wildcards: as_json(seeds_plan(wildcards)),
    log:
        "logs/seeds/generate/z{zs}g{gs}/{target}.log",
    benchmark:
        "benchmarks/seeds/generate/z{zs}g{gs}_{target}.tsv"


use rule evaluate_target as seeds_evaluate with:
    input:
        unpack(seeds_target_adapters),
    output:
        f"{SEEDS}/eval/z{{zs}}g{{gs}}/{{target}}.jsonl",
    wildcard_constraints:
        zs=r"\d+",
        gs=r"\d+",
    log:
        "logs/seeds/evaluate/z{zs}g{gs}/{target}.log",
    benchmark:
        "benchmarks/seeds/evaluate/z{zs}g{gs}_{target}.tsv"


rule seeds_summary:
    """results/seeds/scores.csv (accuracy per run, target and method) and metrics.json (every pair
    per target and pooled: two-level CIs, the default run's items-only CIs, seed and item spreads)."""
    input:
        seeds_summary_inputs,
    output:
        scores=f"{SEEDS}/scores.csv",
        metrics=f"{SEEDS}/metrics.json",
    params:
        p=as_json(
            {
                "plan": seeds_summary_plan(),
                "folds": {t: FOLDS.get(t) for t in SEED_TARGETS},  # checked when asked for (check_seeds)
                "n_adapters": SEEDS_CONFIG["n_adapters"],
                "n_controls": SEEDS_CONFIG["n_controls"],
                "bootstrap": config["evaluation"]["bootstrap"],
                "seed": config["seed"],
            }
        ),
    log:
        "logs/seeds/summary.log",
    benchmark:
        "benchmarks/seeds/summary.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli seeds-summary --params {params.p:q} --scores {output.scores:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule seeds_report:
    """results/seeds/report.md and its figure."""
    input:
        metrics=rules.seeds_summary.output.metrics,
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
        benchmarks=seeds_benchmarks,  # the job times
    output:
        md=report(f"{SEEDS}/report.md", caption="../report/seeds_report.rst", category="Seeds"),
        figure=report(f"{SEEDS}/figures/seeds.png", caption="../report/fig_seeds.rst", category="Seeds"),
    params:
        p=as_json({k: SEEDS_CONFIG[k] for k in ("n_adapters", "n_controls")}
                  | {"bootstrap": config["evaluation"]["bootstrap"], "design": DESIGN}),
    log:
        "logs/seeds/report.log",
    benchmark:
        "benchmarks/seeds/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli seeds-report --params {params.p:q} --metrics {input.metrics:q} "
        "--paper-numbers {input.paper:q} --benchmarks {input.benchmarks:q} --out {output.md:q} "
        "--figure {output.figure:q} > {log:q} 2>&1"


rule seeds:
    """The seeds experiment (outside `all`): snakemake --cores all seeds."""
    input:
        rules.seeds_report.output,
