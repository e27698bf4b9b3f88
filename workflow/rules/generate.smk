# Generation writes one adapter directory per generated adapter (only the adapter files, identical
# on every run) and its timing JSON under results/timings/generate/{target}/ (wall times stay out
# of the hashed adapter directories). The prompt-draw seed of each adapter comes from the package
# (dnd.schedule.adapter_seed), the one place that defines it; the prompts and generator of each
# kind come from common.smk (PROMPTS_FILE, prompts_spec, generator_of).
#
# The default run generates all of a target's adapters in one job (generate_target, `dnd
# generate-batch`): starting Python and loading the generators and the encoder cost about 9 s, an
# adapter well under one. generate_adapter, one adapter per job (`dnd generate`, byte for byte the
# same adapter), is the rule the extra experiments reuse (`use rule generate_adapter as ...`);
# for the default run's paths generate_target takes precedence.


ruleorder: generate_target > generate_adapter


rule generate_target:
    """Every generated adapter of a target (GENERATED: dnd_i, dnd_<design>_i on the same draws,
    the controls) in one process: each generator and the encoder loaded once, each draw encoded
    once; one timing JSON per adapter."""
    input:
        unpack(generation_inputs),
    output:
        adapters=[directory(f"results/generated/{{target}}/{kind}_{i}") for kind, i in GENERATED],
        timings=[f"results/timings/generate/{{target}}/{kind}_{i}.json" for kind, i in GENERATED],
    params:
        device=job_device,
        plan=lambda wildcards: as_json(generation_plan(wildcards.target)),
    log:
        "logs/generate/{target}.log",
    benchmark:
        "benchmarks/generate/{target}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli generate-batch --device {params.device:q} --threads {threads:q} --plan-json {params.plan:q} > {log:q} 2>&1"


rule generate_adapter:
    """Adapter i of kind dnd (the target's generator on an independent draw of its cond
    prompts), dnd_<design> (a variant generator on the same draw) or a control (the default
    generator on another dataset's prompts, random text or the target's shuffled words)."""
    input:
        generator=generator_of,
        prompts=lambda wildcards: PROMPTS_FILE[wildcards.kind](wildcards),
    output:
        adapter=directory("results/generated/{target}/{kind}_{i}"),
        timing="results/timings/generate/{target}/{kind}_{i}.json",
    wildcard_constraints:
        kind="|".join(ADAPTER_KINDS),
    params:
        device=job_device,
        prompts=prompts_spec,
        n=config["generator"]["n_prompts"],
        seed=lambda wildcards: adapter_seed(config["seed"], wildcards.kind, int(wildcards.i)),
    log:
        "logs/generate/{target}_{kind}_{i}.log",
    benchmark:
        "benchmarks/generate/{target}_{kind}_{i}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli generate --device {params.device:q} --threads {threads:q} --generator {input.generator:q} "
        "--prompts {params.prompts:q} --n-prompts {params.n:q} --seed {params.seed:q} "
        "--out {output.adapter:q} --timing {output.timing:q} > {log:q} 2>&1"


rule efficiency:
    """Generation wall time (encode / decode / write) and memory per DnD adapter."""
    input:
        timings=expand(
            "results/timings/generate/{target}/dnd_{i}.json",
            target=TARGETS,
            i=range(N_ADAPTERS),
        ),
    output:
        report(
            "results/efficiency.csv",
            caption="../report/efficiency.rst",
            category="Efficiency",
        ),
    log:
        "logs/efficiency.log",
    benchmark:
        "benchmarks/efficiency.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli efficiency --timings {input.timings:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    """Aggregate target: every generated adapter, variant and control."""
    input:
        rules.efficiency.output,
        [adapter for target in TARGETS for adapter in generated_adapters(target)],
