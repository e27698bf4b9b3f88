rule base_model:
    """Export the frozen base LLM once as a plain safetensors directory."""
    input:
        unpack(base_model_inputs),
    output:
        directory(BASE_MODEL),
    params:
        p=as_json({"base_model": config["base_model"], "seed": config["seed"]}),
    log:
        "logs/base_model.log",
    benchmark:
        "benchmarks/base_model.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli prepare-base-model --threads {threads} --params {params.p:q} --out {output:q} "
        "--texts {input.texts:q} > {log:q} 2>&1"
