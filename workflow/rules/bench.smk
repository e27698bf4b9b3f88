# The stage benchmark (outside `all`): `snakemake --cores all bench` after a run, on an idle
# machine. It reads the Snakemake benchmark file of every job of the default run
# (report_benchmarks, common.smk) and, where scripts/reproduce.sh wrote it, the run's wall-clock
# time, and writes one row per stage with the ratio to the committed figures (dnd.bench).


rule bench:
    """results/bench.csv: jobs, summed/median/slowest seconds and peak memory per stage, the
    run's wall clock, and the ratio to the previous committed figures."""
    input:
        rules.report.output,
        report_benchmarks,
        wall=lambda wildcards: [RUN_WALL] if Path(RUN_WALL).is_file() else [],
    output:
        "results/bench.csv",
    params:
        # the committed figures exist for the default profile only (runs/ is not committed)
        # (the default profile runs at the top level, where the baseline's relative path holds)
        previous=(
            ["--previous-git", "HEAD:results/bench.csv", "--baseline", "docs/bench_baseline_874f29f.csv"]
            if RUN_DIR == "."
            else []
        ),
        wall=lambda wildcards, input: ["--wall", input.wall[0]] if input.wall else [],
    log:
        "logs/bench.log",
    benchmark:
        "benchmarks/bench.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli bench --benchmarks benchmarks {params.wall:q} {params.previous:q} --out {output:q} "
        "> {log:q} 2>&1"
