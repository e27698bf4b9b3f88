rule summarize:
    """scores.csv with paired-bootstrap CIs and the flat metrics.json for DVC; the training LoRAs
    of each target are the config's folds (FOLDS), passed here so the report uses the same."""
    input:
        rules.evaluate.input,
    output:
        scores=report(
            "results/scores.csv", caption="../report/scores.rst", category="Main results"
        ),
        metrics="results/metrics.json",
    params:
        p=as_json(
            {
                "evaluation": evaluation_settings(("bootstrap",)),
                "seed": config["seed"],
                "folds": FOLDS,
            }
        ),
    log:
        "logs/summarize.log",
    benchmark:
        "benchmarks/summarize.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli summarize --params {params.p:q} --eval {input:q} --scores {output.scores:q} "
        "--metrics {output.metrics:q} > {log:q} 2>&1"


rule summary:
    """Aggregate target: scores.csv and metrics.json."""
    input:
        rules.summarize.output,
