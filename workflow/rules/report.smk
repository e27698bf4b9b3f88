from dnd.reporting.figures import FIGURES  # noqa: E402  (the package's list; common.smk put src on sys.path)


rule report:
    """results/report.md and the figures, read from the run's files only."""
    input:
        scores=rules.summarize.output.scores,
        metrics=rules.summarize.output.metrics,
        efficiency="results/efficiency.csv",
        # the backend comparison (eval_speed), unless evaluation.compare_items is 0
        eval_speed=lambda wildcards: (
            rules.eval_speed.output if config["evaluation"]["compare_items"] > 0 else []
        ),
        diagnostics=rules.diagnostics.output,
        data_summary="results/data_summary.csv",
        zoo=expand(f"{ZOO}/{{ds}}/train_log.csv", ds=DATASETS),
        lora_timings=expand("results/timings/train_lora/{ds}.json", ds=DATASETS),
        generators=expand("results/generators/{target}/train_log_{design}.csv", target=TARGETS, design=DESIGN),
        paper=workflow.source_path("../../config/paper_numbers.yaml"),
        paper_config=workflow.source_path("../../config/paper.yaml"),  # DnD's settings beside the paper's
        # the PCA figure's LoRA checkpoints and DnD adapters; the compute tables' and the LoRA jobs'
        # benchmark files (--benchmarks); the LoRA timings are read under --timings-dir
        checkpoints=expand(f"{ZOO}/{{ds}}/checkpoints", ds=DATASETS),
        generated=[f"results/generated/{t}/dnd_{i}" for t in TARGETS for i in range(N_ADAPTERS)],
        benchmarks=report_benchmarks,
    output:
        md=report("results/report.md", caption="../report/report_md.rst", category="Main results"),
        figures=[
            report(
                f"results/figures/{file}",
                caption=f"../report/fig_{name}.rst",
                category="Figures",
                labels={"figure": name},
            )
            for name, file in FIGURES.items()
        ],
    params:
        p=as_json(run_config(config)),  # without the extra experiments' sections
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli report --params {params.p:q} --scores {input.scores:q} --metrics {input.metrics:q} "
        "--efficiency {input.efficiency:q} --eval-speed results/eval_speed.csv "
        "--eval-agreement results/eval_agreement.csv --diagnostics {input.diagnostics:q} "
        "--data-summary {input.data_summary:q} --zoo-logs {input.zoo:q} --zoo-checkpoints {input.checkpoints:q} "
        "--generator-logs {input.generators:q} --generated {input.generated:q} "
        "--benchmarks {input.benchmarks:q} --timings-dir results/timings --paper-numbers {input.paper:q} "
        "--paper-config {input.paper_config:q} --out {output.md:q} "
        "--figures-dir results/figures > {log:q} 2>&1"
