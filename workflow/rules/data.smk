rule prepare_data:
    """Normalize one benchmark into train/cond/test splits and write its lm-eval task."""
    output:
        splits=multiext("results/data/{ds}/", "train.jsonl", "cond.jsonl", "test.jsonl"),
        lmeval="results/data/{ds}/test.lmeval.jsonl",
        task="results/tasks/dnd_{ds}.yaml",
    params:
        # only this dataset's settings: adding a dataset does not rerun the others
        p=lambda wildcards: as_json(
            {"data": dataset_settings(config["data"], wildcards.ds), "prompt": config["prompt"], "seed": config["seed"]}
        ),
    log:
        "logs/prepare_data/{ds}.log",
    benchmark:
        "benchmarks/prepare_data/{ds}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli prepare-data --dataset {wildcards.ds:q} --params {params.p:q} "
        "--out {output:q} > {log:q} 2>&1"


rule data_summary:
    """Split sizes of every dataset (results/data_summary.csv)."""
    input:
        expand("results/data/{ds}/{split}.jsonl", ds=DATASETS, split=["train", "cond", "test"]),
    output:
        report(
            "results/data_summary.csv",
            caption="../report/data_summary.rst",
            category="Data",
        ),
    log:
        "logs/data_summary.log",
    benchmark:
        "benchmarks/data_summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli data-summary --data {input:q} --out {output:q} > {log:q} 2>&1"


rule data:
    """Aggregate target: all prepared data."""
    input:
        rules.data_summary.output,
        expand("results/tasks/dnd_{ds}.yaml", ds=DATASETS),
