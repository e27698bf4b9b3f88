# The released generator (target `release`, outside `all`; dnd.release): the source-basis mixer
# (`generator.design: basis`) trained on ALL the datasets' zoo tokens and encoded train prompts,
# with no held-out target (fold name RELEASE_FOLD), then packed into the compact, git-tracked
# directory release/ (weights as safetensors, float16 basis bodies; manifest.json with the
# config, the base model, the sources and the sha256 of every weight file). It reads the default
# run's tokens, encodings and zoo template and writes nothing of the default run: the full-precision
# checkpoint lives under results/release/ (ignored by git), logs/release/ and benchmarks/release/.
# release/README.md (the model card) is written by hand and is not an output.

from dnd.release import RELEASE_FOLD, check_release_sources  # noqa: E402

RELEASE_WORK = "results/release"
RELEASE_DIR = "release"
RELEASE_DESIGN = "basis"
check_release_sources(DATASETS)


rule release_train_generator:
    """The all-sources basis generator, in full precision (what `release` packs)."""
    input:
        tokens=expand("results/tokens/{d}.pt", d=DATASETS),
        encoded=expand("results/encoded/{d}/train.pt", d=DATASETS),
        template=f"{ZOO}/{DATASETS[0]}/final",
    output:
        generator=f"{RELEASE_WORK}/generator_{RELEASE_DESIGN}.pt",
        log_csv=f"{RELEASE_WORK}/train_log_{RELEASE_DESIGN}.csv",
        timings=f"{RELEASE_WORK}/timings/train_generator.json",
    params:
        device=job_device,
        p=generator_params(RELEASE_DESIGN),
        sources=DATASETS,
        fold=RELEASE_FOLD,
    log:
        "logs/release/train_generator.log",
    benchmark:
        "benchmarks/release/train_generator.tsv"
    threads: 2
    resources:
        mem_mb=12000,
        runtime=60,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli train-generator --device {params.device:q} --threads {threads} --params {params.p:q} "
        "--target {params.fold:q} --sources {params.sources:q} --tokens {input.tokens:q} --encoded {input.encoded:q} "
        "--template-adapter {input.template:q} --out {output.generator:q} --log {output.log_csv:q} "
        "--timings {output.timings:q} > {log:q} 2>&1"


rule release:
    """The compact release directory a fresh clone has: `dnd generate --generator release ...`."""
    input:
        generator=rules.release_train_generator.output.generator,
    output:
        weights=f"{RELEASE_DIR}/generator.safetensors",
        manifest=f"{RELEASE_DIR}/manifest.json",
    params:
        p=as_json({"base_model": config["base_model"], "prompt": config["prompt"]}),
        out=lambda wildcards, output: os.path.dirname(output.weights),
    log:
        "logs/release/pack.log",
    benchmark:
        "benchmarks/release/pack.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=5,
    conda:
        "../envs/dnd.yaml"
    shell:
        "python -m dnd.cli release-pack --params {params.p:q} --generator {input.generator:q} "
        "--out {params.out:q} > {log:q} 2>&1"
