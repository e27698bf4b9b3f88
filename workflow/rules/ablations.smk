# The paper's ablations (outside `all`): target `ablations` for all five families and the report,
# `ablations_<family>` for one. One generator per (family, setting, target) with one setting of
# the default pipeline changed (dnd.experiments.ablations.report), its DnD adapters scored on the default run's test
# items. Everything it makes lives under results/ablations/; it reuses the default run's data,
# zoo tokens, encoded prompts, base model and, for each family's default setting, the default
# run's own adapters and scores.


include: "helpers/ablations.smk"


EXTRA_DS = "|".join(map(re.escape, AB_EXTRA)) if AB_EXTRA else "(?!)"  # (?!) matches nothing


rule ablation_extra_data:
    """An extra source task's train/cond/test splits (ablations.extra_sources, the `sources` curve)."""
    output:
        splits=multiext(f"{ABX}/data/{{ds}}/", "train.jsonl", "cond.jsonl", "test.jsonl"),
        lmeval=f"{ABX}/data/{{ds}}/test.lmeval.jsonl",
        task=f"{ABX}/tasks/dnd_{{ds}}.yaml",
    wildcard_constraints:
        ds=EXTRA_DS,
    params:
        p=lambda wildcards: as_json(
            {
                "data": dataset_settings({**config["data"], "custom": AB_EXTRA}, wildcards.ds),
                "prompt": config["prompt"],
                "seed": config["seed"],
            }
        ),
    log:
        "logs/ablations/extra/prepare_data/{ds}.log",
    benchmark:
        "benchmarks/ablations/sources/extra/prepare_data_{ds}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli prepare-data --dataset {wildcards.ds:q} --params {params.p:q} "
        "--out {output:q} > {log:q} 2>&1"


use rule train_lora as ablation_extra_train_lora with:
    input:
        model=BASE_MODEL,
        train=f"{ABX}/data/{{ds}}/train.jsonl",
    output:
        checkpoints=directory(f"{ABX}/zoo/{{ds}}/checkpoints"),
        final=directory(f"{ABX}/zoo/{{ds}}/final"),
        log_csv=f"{ABX}/zoo/{{ds}}/train_log.csv",
        summary=f"{ABX}/zoo/{{ds}}/summary.json",
        timings=f"{ABX}/timings/train_lora/{{ds}}.json",
    wildcard_constraints:
        ds=EXTRA_DS,
    params:
        p=as_json({"lora": config["lora"], "prompt": config["prompt"], "seed": config["seed"]}),
        out_dir=f"{ABX}/zoo/{{ds}}",
    log:
        "logs/ablations/extra/train_lora/{ds}.log",
    benchmark:
        "benchmarks/ablations/sources/extra/train_lora_{ds}.tsv"


use rule tokenize_zoo as ablation_extra_tokenize_zoo with:
    input:
        f"{ABX}/zoo/{{ds}}/checkpoints",
    output:
        f"{ABX}/tokens/{{ds}}.pt",
    wildcard_constraints:
        ds=EXTRA_DS,
    log:
        "logs/ablations/extra/tokenize_zoo/{ds}.log",
    benchmark:
        "benchmarks/ablations/sources/extra/tokenize_zoo_{ds}.tsv"


use rule encode_prompts as ablation_extra_encode_prompts with:
    input:
        f"{ABX}/data/{{ds}}/{{split}}.jsonl",
    output:
        f"{ABX}/encoded/{{ds}}/{{split}}.pt",
    wildcard_constraints:
        ds=EXTRA_DS,
        split="train",
    log:
        "logs/ablations/extra/encode_prompts/{ds}_{split}.log",
    benchmark:
        "benchmarks/ablations/sources/extra/encode_prompts_{ds}_{split}.tsv"


rule ablation_encode:
    """A split's prompts encoded with an ablation's encoder (another condition form or extractor)."""
    input:
        data="results/data/{ds}/{split}.jsonl",
        model=BASE_MODEL,
    output:
        f"{AB}/encoded/{{variant}}/{{ds}}/{{split}}.pt",
    wildcard_constraints:
        variant="|".join(AB_VARIANTS) if AB_VARIANTS else "none",
    params:
        device=job_device,
        p=lambda wildcards: as_json(ablation_encoder(*wildcards.variant.split("-", 1), None)),
    log:
        "logs/ablations/encode/{variant}_{ds}_{split}.log",
    benchmark:
        "benchmarks/ablations/encode/{variant}_{ds}_{split}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli encode --device {params.device:q} --params {params.p:q} --data {input.data:q} --out {output:q} > {log:q} 2>&1"


use rule train_generator as ablation_train_generator with:
    input:
        unpack(ablation_generator_inputs),
    output:
        generator=f"{AB}/{{family}}/{{setting}}/{{target}}/generator.pt",
        log_csv=f"{AB}/{{family}}/{{setting}}/{{target}}/train_log.csv",
        timings=f"{AB}/timings/train_generator/{{family}}_{{setting}}_{{target}}.json",
    wildcard_constraints:
        target="|".join(AB_TARGETS),
    params:
        p=ablation_generator_params,
        sources=ablation_sources,
    log:
        "logs/ablations/train_generator/{family}_{setting}_{target}.log",
    benchmark:
        "benchmarks/ablations/{family}/train_generator_{setting}_{target}.tsv"


use rule generate_adapter as ablation_generate_adapter with:
    input:
        generator=f"{AB}/{{family}}/{{setting}}/{{target}}/generator.pt",
        prompts="results/data/{target}/cond.jsonl",
    output:
        adapter=directory(f"{AB}/{{family}}/{{setting}}/{{target}}/generated/dnd_{{i}}"),
        timing=f"{AB}/timings/generate/{{family}}_{{setting}}_{{target}}_dnd_{{i}}.json",
    wildcard_constraints:
        target="|".join(AB_TARGETS),
    params:
        prompts=lambda wildcards, input: input.prompts,
        n=config["generator"]["n_prompts"],
        seed=lambda wildcards: adapter_seed(config["seed"], "dnd", int(wildcards.i)),
    log:
        "logs/ablations/generate/{family}_{setting}_{target}_{i}.log",
    benchmark:
        "benchmarks/ablations/{family}/generate_{setting}_{target}_{i}.tsv"


rule ablation_evaluate:
    """One (family, setting, target): its DnD adapters, the base model and the training LoRAs
    (shared with the other settings through the per-item cache) on the target's test items."""
    input:
        model=BASE_MODEL,
        tasks="results/tasks/dnd_{target}.yaml",
        zoo=lambda wildcards: [f"{ablation_zoo(d)}/final" for d in ablation_scored(ablation_sources(wildcards))],
        encoded=lambda wildcards: [
            ablation_encoded(wildcards.family, wildcards.setting, wildcards.target, d, "train")
            if d in AB_EXTRA
            else f"results/encoded/{d}/train.pt"
            for d in ablation_scored(ablation_sources(wildcards))
        ],
        cond="results/encoded/{target}/cond.pt",
        generated=lambda wildcards: ablation_adapters(wildcards.family, wildcards.setting, wildcards.target),
    output:
        f"{AB}/{{family}}/{{setting}}/{{target}}/eval.jsonl",
    wildcard_constraints:
        target="|".join(AB_TARGETS),
    params:
        device=job_device,
        p=lambda wildcards: as_json(
            {
                "evaluation": SCORING_EVALUATION,
                "datasets": ablation_scored(ablation_sources(wildcards)),
                "sources": ablation_sources(wildcards),
                "seed": config["seed"],
            }
        ),
        cache=cache_dir_arg(AB),
    log:
        "logs/ablations/evaluate/{family}_{setting}_{target}.log",
    benchmark:
        "benchmarks/ablations/{family}/evaluate_{setting}_{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli evaluate --device {params.device:q} --threads {threads:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.tasks:q} --zoo {input.zoo:q} --generated {input.generated:q} "
        "--encoded {input.encoded:q} --cond {input.cond:q} {params.cache:q} --out {output:q} "
        "> {log:q} 2>&1"


rule ablation_summary:
    """results/ablations/{family}.csv (DnD, training-LoRA average, base per setting and target)
    and {family}.json (DnD minus the training-LoRA average with paired CIs)."""
    input:
        checked_experiment("ablations", ablation_evals),
        default=expand("results/eval/{target}.jsonl", target=AB_TARGETS),
    output:
        csv=f"{AB}/{{family}}.csv",
        metrics=f"{AB}/{{family}}.json",
    params:
        p=lambda wildcards: ablation_summary_params(wildcards.family),
    log:
        "logs/ablations/summary_{family}.log",
    benchmark:
        "benchmarks/ablations/{family}/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli ablation-summary --params {params.p:q} --default-eval {input.default:q} "
        "--out {output.csv:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule ablation_report:
    """results/ablations/report.md (section "Ablations") and its figure."""
    input:
        metrics=expand(f"{AB}/{{family}}.json", family=list(AB_FAMILIES)),
        benchmarks=ablation_benchmarks,  # each family's job times
    output:
        md=report(f"{AB}/report.md", caption="../report/ablations_report.rst", category="Ablations"),
        figure=report(f"{AB}/figures/ablations.png", caption="../report/fig_ablations.rst", category="Ablations"),
    params:
        p=as_json({"n_adapters": ABLATION_CONFIG["n_adapters"], "design": DESIGN}),
    log:
        "logs/ablations/report.log",
    benchmark:
        "benchmarks/ablations/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli ablation-report --params {params.p:q} --metrics {input.metrics:q} "
        "--benchmarks {input.benchmarks:q} --out {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


rule ablations:
    """The ablations (outside `all`): snakemake --cores all ablations (every family and the report)."""
    input:
        rules.ablation_report.output,
        expand(f"{AB}/{{family}}.csv", family=list(AB_FAMILIES)),


# One target per family, each within its own budget (docs/experiments/ablations.md): snakemake --cores all ablations_<family>
for _family in AB_FAMILY_NAMES:

    rule:
        name:
            f"ablations_{_family}"
        input:
            multiext(f"{AB}/{_family}", ".csv", ".json") if _family in AB_FAMILIES else [],
