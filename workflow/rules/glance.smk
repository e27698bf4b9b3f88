# Results at a glance (part of `all`): one row per experiment, from the results files
# (dnd.reporting.glance). results/glance.md goes into the HTML report (`snakemake --report`);
# the README's block is the same table, rewritten by `python -m dnd.cli glance --readme README.md`
# (a maintainer's step: a rule never writes the README).
from dnd.reporting.glance import input_files as _glance_inputs  # noqa: E402


rule glance:
    """results/glance.md: the default run's headline (its metrics.json and report.md, declared
    inputs) and each extra experiment's headline. The extra experiments are outside `all`, and their
    results files are NOT inputs: a declared input makes Snakemake schedule the rule that produces
    it, so `all` would run every extra experiment whose intermediate files are absent or outdated
    (a dry run of `glance` with them as inputs planned 607 jobs, the protocol, ablation, math and
    code pipelines among them). Instead, the extra results files that EXIST WHEN THE DAG IS BUILT
    (dnd.reporting.glance.input_files) are a param: when that list changes (an experiment's first
    results) the params trigger reruns this rule; after an experiment is run again, run
    `snakemake --cores all glance --forcerun glance`. A missing experiment is a row "not run yet"."""
    input:
        metrics=rules.summarize.output.metrics,
        md=rules.report.output.md,
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
    output:
        report("results/glance.md", caption="../report/glance.rst", category="Main results"),
    params:
        # the extra experiments' results files that exist now (see the docstring: not inputs)
        extra=lambda wildcards: _glance_inputs(
            "results", exclude=("results/metrics.json", "results/report.md", "results/scores.csv")
        ),
    log:
        "logs/glance.log",
    benchmark:
        "benchmarks/glance.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli glance --results results --paper-numbers {input.paper:q} --out {output:q} > {log:q} 2>&1"
