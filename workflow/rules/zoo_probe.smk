# One probe of a longer-trained zoo (target `zoo_probe`, outside `all`; dnd.experiments.zoo_probe.probe):
# the LoRA of each zoo_probe.datasets entry trained again with zoo_probe.steps_factor times the zoo's
# steps (dnd.zoo.longer_schedule), scored on the default run's test items, and compared with the
# default LoRA: reachability from the default sources and the oracle's lead over the training-LoRA
# average. Everything it makes lives under results/zoo_probe/ (logs/zoo_probe/, benchmarks/zoo_probe/);
# it reads the default run's zoo, tasks, base model and per-item scores and trains nothing of it again.

from dnd.config import zoo_probe_datasets  # noqa: E402
from dnd.zoo import longer_schedule  # noqa: E402

PROBE = "results/zoo_probe"
PROBE_CONFIG = config["zoo_probe"]
PROBE_DATASETS = zoo_probe_datasets(config)
PROBE_PARTS = ("final", "checkpoints", "summary.json")  # of a LoRA run that the report reads


use rule train_lora as zoo_probe_train_lora with:
    output:
        checkpoints=directory(f"{PROBE}/zoo/{{ds}}/checkpoints"),
        final=directory(f"{PROBE}/zoo/{{ds}}/final"),
        log_csv=f"{PROBE}/zoo/{{ds}}/train_log.csv",
        summary=f"{PROBE}/zoo/{{ds}}/summary.json",
        timings=f"{PROBE}/timings/train_lora/{{ds}}.json",
    wildcard_constraints:
        ds="|".join(map(re.escape, PROBE_DATASETS)),
    params:
        # the zoo's settings with the longer schedule, derived in one place (dnd.zoo.longer_schedule)
        p=as_json(
            {
                "lora": longer_schedule(config["lora"], PROBE_CONFIG["steps_factor"]),
                "prompt": config["prompt"],
                "seed": config["seed"],
            }
        ),
        out_dir=f"{PROBE}/zoo/{{ds}}",
    log:
        "logs/zoo_probe/train_lora/{ds}.log",
    benchmark:
        "benchmarks/zoo_probe/train_lora/{ds}.tsv"


rule zoo_probe_score:
    """The longer LoRA of a probe dataset on its test items, with the default run's task and scorer."""
    input:
        model=BASE_MODEL,
        task="results/tasks/dnd_{target}.yaml",
        test="results/data/{target}/test.lmeval.jsonl",
        lora=f"{PROBE}/zoo/{{target}}/final",
    output:
        f"{PROBE}/eval/{{target}}.jsonl",
    params:
        p=as_json({"evaluation": SCORING_EVALUATION, "zoo_probe": {"steps_factor": PROBE_CONFIG["steps_factor"]}}),
        cache=cache_dir_arg(PROBE),
        device=job_device,
    log:
        "logs/zoo_probe/score/{target}.log",
    benchmark:
        "benchmarks/zoo_probe/score/{target}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=0,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli zoo-probe-score --threads {threads} --device {params.device:q} --params {params.p:q} --target {wildcards.target:q} "
        "--model {input.model:q} --tasks {input.task:q} --lora {input.lora:q} {params.cache:q} "
        "--out {output:q} > {log:q} 2>&1"


rule zoo_probe_report:
    """results/zoo_probe/metrics.json and report.md: reachability and the oracle's lead, default against longer."""
    input:
        default_eval=checked_experiment("zoo_probe", expand("results/eval/{target}.jsonl", target=PROBE_DATASETS)),
        probe_eval=expand(f"{PROBE}/eval/{{target}}.jsonl", target=PROBE_DATASETS),
        # every fold's final LoRA (each fold's reachability); the probe datasets' whole runs
        zoo=expand(f"{ZOO}/{{ds}}/final", ds=DATASETS)
        + expand(f"{ZOO}/{{ds}}/{{part}}", ds=PROBE_DATASETS, part=PROBE_PARTS[1:]),
        probe_zoo=expand(f"{PROBE}/zoo/{{ds}}/{{part}}", ds=PROBE_DATASETS, part=PROBE_PARTS),
    output:
        metrics=f"{PROBE}/metrics.json",
        md=report(f"{PROBE}/report.md", caption="../report/zoo_probe_report.rst", category="Zoo probe"),
    params:
        p=as_json(
            {
                "zoo_probe": {"datasets": PROBE_DATASETS, "steps_factor": PROBE_CONFIG["steps_factor"]},
                "lora": config["lora"],
                "folds": FOLDS,
                "bootstrap": config["evaluation"]["bootstrap"],
                "seed": config["seed"],
            }
        ),
    log:
        "logs/zoo_probe/report.log",
    benchmark:
        "benchmarks/zoo_probe/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli zoo-probe-report --params {params.p:q} --default-eval {input.default_eval:q} "
        "--probe-eval {input.probe_eval:q} --zoo {input.zoo:q} --probe-zoo {input.probe_zoo:q} "
        "--metrics {output.metrics:q} --out {output.md:q} > {log:q} 2>&1"


rule zoo_probe:
    """The longer-trained zoo probe (outside `all`): snakemake --cores all zoo_probe."""
    input:
        rules.zoo_probe_report.output,
