# The few-shot experiment's helpers and constants (its rules: workflow/rules/fewshot.smk), included by
# that file, so common.smk holds what the default run needs.

from dnd.experiments.fewshot.tuning import fewshot_targets  # noqa: E402

FEW = "results/fewshot"
FEWSHOT_CONFIG = config["fewshot"]
FEW_TARGETS = fewshot_targets(config)
FEW_KS = sorted(FEWSHOT_CONFIG["ks"])


def fewshot_loras(wildcards):
    return expand(f"{FEW}/lora/{wildcards.target}/k{{k}}/final", k=FEW_KS)


def dnd_generation_timings(wildcards):
    """The default run's generation timings of every target's dnd adapters (DnD's cost)."""
    return [f"results/timings/generate/{t}/dnd_{i}.json" for t in FEW_TARGETS for i in range(N_ADAPTERS)]


def fewshot_benchmarks(wildcards):
    """The benchmark files of every target's jobs (benchmarks/fewshot/{target}/: its k LoRAs, their
    scoring, in-context learning), which the report reads for each target's job times."""
    return [f"benchmarks/fewshot/{t}/{job}.tsv" for t in FEW_TARGETS
            for job in [*(f"train_k{k}" for k in FEW_KS), "score", "icl"]]
