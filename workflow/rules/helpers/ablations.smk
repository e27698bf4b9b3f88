# The ablations' helpers and constants (its rules: workflow/rules/ablations.smk), included by
# that file, so common.smk holds what the default run needs.

from dnd.experiments.ablations.report import FAMILIES as AB_FAMILY_NAMES, encoding_variant, setting_overrides  # noqa: E402
from dnd.experiments.ablations.report import family_settings  # noqa: E402
from dnd.experiments.ablations.report import is_default as ablation_is_default  # noqa: E402

# (the settings of each family: dnd.experiments.ablations.report; `sources`: each count below all
# the other datasets also in ablations.source_orders - 1 more seeded orders, "3o1", "3o2", ...)
AB = "results/ablations"
ABLATION_CONFIG = config["ablations"]
AB_TARGETS = list(ABLATION_CONFIG["targets"])
AB_FAMILIES = {
    f: family_settings(f, ABLATION_CONFIG[f], len(DATASETS), ABLATION_CONFIG.get("source_orders", 1))
    for f in AB_FAMILY_NAMES
    if ABLATION_CONFIG.get(f)
}
AB_CELLS = [
    (f, s, t)
    for f, settings in AB_FAMILIES.items()
    for s in settings
    for t in AB_TARGETS
    if not ablation_is_default(f, s, len(DATASETS))
]
AB_VARIANTS = sorted({v for f, s, _ in AB_CELLS if (v := encoding_variant(f, s))})
# extra source tasks of the `sources` curve (ablations.extra_sources): their data, LoRAs, tokens
# and encodings live under results/ablations/extra/, apart from the default run's
AB_EXTRA = dict(ABLATION_CONFIG.get("extra_sources") or {})
ABX = f"{AB}/extra"


wildcard_constraints:
    family="|".join(AB_FAMILY_NAMES),
    setting=r"[A-Za-z0-9_]+",
    split="train|cond",


def ablation_overrides(family, setting, target):
    return setting_overrides(family, setting, target, DATASETS, config["seed"], BASE_MODEL, list(AB_EXTRA))


def ablation_zoo(ds):
    """A source's LoRA zoo folder: the default run's, or the extra tasks' (results/ablations/extra)."""
    return f"{ABX}/zoo/{ds}" if ds in AB_EXTRA else f"{ZOO}/{ds}"


def ablation_scored(sources):
    """The datasets whose LoRAs a cell scores: every dataset of the run, then its extra sources."""
    return DATASETS + [d for d in sources if d in AB_EXTRA]


def ablation_encoder(family, setting, target):
    over = ablation_overrides(family, setting, target)["encoder"]
    return rule_section("encoder", {**config["encoder"], **over})


def ablation_encoded(family, setting, target, ds, split):
    v = encoding_variant(family, setting)
    if ds in AB_EXTRA:
        if v:
            raise ValueError(f"extra source task {ds} is encoded with the default encoder only (family {family})")
        return f"{ABX}/encoded/{ds}/{split}.pt"
    return f"{AB}/encoded/{v}/{ds}/{split}.pt" if v else f"results/encoded/{ds}/{split}.pt"


def ablation_sources(wildcards):
    return ablation_overrides(wildcards.family, wildcards.setting, wildcards.target)["sources"]


def ablation_generator_inputs(wildcards):
    w = wildcards
    sources = ablation_sources(w)
    return {
        "tokens": [f"{ABX}/tokens/{d}.pt" if d in AB_EXTRA else f"results/tokens/{d}.pt" for d in sources],
        "encoded": [ablation_encoded(w.family, w.setting, w.target, d, "train") for d in sources],
        "template": f"{ablation_zoo(sources[0])}/final",
    }


def ablation_generator_params(wildcards):
    w = wildcards
    over = ablation_overrides(w.family, w.setting, w.target)
    return generator_params(overrides=over["generator"], encoder=ablation_encoder(w.family, w.setting, w.target))


def ablation_adapters(family, setting, target):
    return [f"{AB}/{family}/{setting}/{target}/generated/dnd_{i}" for i in range(ABLATION_CONFIG["n_adapters"])]


def ablation_eval(family, setting, target):
    """A cell's evaluation rows; None for a family's default setting (the default run's rows)."""
    if ablation_is_default(family, setting, len(DATASETS)):
        return None
    return f"{AB}/{family}/{setting}/{target}/eval.jsonl"


def ablation_evals(wildcards):
    """The evaluation files a family's summary reads (its non-default cells)."""
    return [e for s in AB_FAMILIES[wildcards.family] for t in AB_TARGETS if (e := ablation_eval(wildcards.family, s, t))]


def ablation_summary_params(family):
    cells = [
        [s, t, ablation_eval(family, s, t), ablation_overrides(family, s, t)["sources"]]
        for s in AB_FAMILIES[family]
        for t in AB_TARGETS
    ]
    return as_json(
        {
            "family": family,
            "cells": cells,
            "n_adapters": ABLATION_CONFIG["n_adapters"],
            "extra_sources": list(AB_EXTRA),
            "bootstrap": config["evaluation"]["bootstrap"],
            "seed": config["seed"],
        }
    )


def ablation_benchmarks(wildcards):
    """The benchmark files of the ablations' jobs (benchmarks/ablations/), which the report reads
    for each family's job times: every job of the `ablations` target but the report's own (each
    non-default cell's generator, adapters and scoring, each family's summary, the encodings of
    another encoder, the extra source tasks' data, LoRA, tokens and encoding)."""
    b = "benchmarks/ablations"
    files = [f"{b}/{f}/summary.tsv" for f in AB_FAMILIES]
    encodings, extra = set(), set()
    for f, s, t in AB_CELLS:
        files += [f"{b}/{f}/train_generator_{s}_{t}.tsv", f"{b}/{f}/evaluate_{s}_{t}.tsv"]
        files += [f"{b}/{f}/generate_{s}_{t}_{i}.tsv" for i in range(ABLATION_CONFIG["n_adapters"])]
        sources = ablation_overrides(f, s, t)["sources"]
        extra.update(d for d in sources if d in AB_EXTRA)
        if v := encoding_variant(f, s):  # ablation_encoded: the generator's sources' train prompts
            encodings.update(f"{b}/encode/{v}_{d}_train.tsv" for d in sources if d not in AB_EXTRA)
    files += sorted(encodings)
    files += [f"{b}/sources/extra/{job}_{d}.tsv" for d in sorted(extra)
              for job in ("prepare_data", "train_lora", "tokenize_zoo")]
    files += [f"{b}/sources/extra/encode_prompts_{d}_train.tsv" for d in sorted(extra)]
    return files
