# The seeds experiment's helpers and constants (its rules: workflow/rules/seeds.smk), included by that
# file, so common.smk holds what the default run needs.
#
# A run is a (zoo seed, generator seed) pair. The run whose seeds are both the config's `seed` is the
# default run: its zoo, tokens, generators, adapters and scores are reused where they are. Every
# other zoo seed retrains the zoo under results/seeds/zoo/z{zs}/, every other run its generators,
# adapters and scores under results/seeds/*/z{zs}g{gs}/, on the default run's data, encoded prompts,
# prompt draws and test items.

SEEDS = "results/seeds"
SEEDS_CONFIG = config["seeds"]
SEED_TARGETS = SEEDS_CONFIG["targets"] or TARGETS
SEED_RUNS = [(z, g) for z in SEEDS_CONFIG["zoo"] for g in SEEDS_CONFIG["generator"]]
DEFAULT_RUN = (config["seed"], config["seed"])
SEED_ADAPTERS = generated_kinds(SEEDS_CONFIG["n_adapters"], SEEDS_CONFIG["n_controls"])


def check_seeds():
    """The seeds section against the run, checked only when the `seeds` target is asked for."""
    unknown = [t for t in SEED_TARGETS if t not in TARGETS]
    if unknown:
        raise WorkflowError(f"seeds.targets {unknown} are not held-out targets of the run ({TARGETS})")
    if DEFAULT_RUN in SEED_RUNS and (SEEDS_CONFIG["n_adapters"] > N_ADAPTERS or SEEDS_CONFIG["n_controls"] > N_CONTROLS):
        raise WorkflowError(f"seeds.n_adapters/n_controls ({SEEDS_CONFIG['n_adapters']}/{SEEDS_CONFIG['n_controls']}) "
                            f"exceed the default run's generate.n_adapters/n_controls ({N_ADAPTERS}/{N_CONTROLS}), "
                            "whose adapters are run (seed, seed)")


def seeds_run(zs, gs):
    return f"z{zs}g{gs}"


def seeds_default_zoo(zs):
    return int(zs) == config["seed"]


def seeds_default_run(zs, gs):
    return (int(zs), int(gs)) == DEFAULT_RUN


def seeds_zoo(zs, ds):
    """The final LoRA of dataset ds trained with zoo seed zs."""
    return f"{ZOO}/{ds}/final" if seeds_default_zoo(zs) else f"{SEEDS}/zoo/z{zs}/{ds}/final"


def seeds_tokens(zs, ds):
    return f"results/tokens/{ds}.pt" if seeds_default_zoo(zs) else f"{SEEDS}/tokens/z{zs}/{ds}.pt"


def seeds_generator(zs, gs, target, design):
    if seeds_default_run(zs, gs):
        return generator_path(target, design)
    return f"{SEEDS}/generators/{seeds_run(zs, gs)}/{target}/generator_{design}.pt"


def seeds_generated_root(zs, gs):
    return "results/generated" if seeds_default_run(zs, gs) else f"{SEEDS}/generated/{seeds_run(zs, gs)}"


def seeds_eval(zs, gs, target):
    return f"results/eval/{target}.jsonl" if seeds_default_run(zs, gs) else f"{SEEDS}/eval/{seeds_run(zs, gs)}/{target}.jsonl"


def seeds_fold_inputs(wildcards):
    sources = FOLDS[wildcards.target]
    return {
        "tokens": [seeds_tokens(wildcards.zs, d) for d in sources],
        "encoded": expand("results/encoded/{d}/train.pt", d=sources),
        "template": seeds_zoo(wildcards.zs, sources[0]),
    }


def seeds_generator_of(zs, gs):
    """generator_of for a run: the run's generator of each kind's design (kind_design)."""
    return lambda w: seeds_generator(zs, gs, w.target, kind_design(w.kind))


def seeds_plan(wildcards):
    return generation_plan(wildcards.target, SEED_ADAPTERS, seeds_generator_of(wildcards.zs, wildcards.gs),
                           out=seeds_generated_root(wildcards.zs, wildcards.gs),
                           timings=f"{SEEDS}/timings/generate/{seeds_run(wildcards.zs, wildcards.gs)}")


def seeds_target_adapters(wildcards):
    """evaluate_target's inputs for a run: the run's zoo and adapters, the default run's tasks and encodings."""
    inputs = target_adapters(wildcards)
    inputs["zoo"] = [seeds_zoo(wildcards.zs, ds) for ds in DATASETS]
    root = seeds_generated_root(wildcards.zs, wildcards.gs)
    inputs["generated"] = [f"{root}/{wildcards.target}/{k}_{i}" for k, i in SEED_ADAPTERS]
    return inputs


def seeds_summary_inputs(wildcards):
    """The evaluation file of every run and target (checking the seeds section first: only a run
    that asks for `seeds` reads it)."""
    check_seeds()
    return [e["eval"] for e in seeds_summary_plan()]


def seeds_summary_plan():
    """Each run's evaluation file of each target (the default run's own for run (seed, seed))."""
    return [{"zoo": z, "generator": g, "target": t, "eval": seeds_eval(z, g, t)}
            for z, g in SEED_RUNS for t in SEED_TARGETS]


def seeds_benchmarks(wildcards):
    """The benchmark files of the experiment's own jobs (each rule's own `benchmark:` pattern), which
    its report reads for the job times: every run but the default one (reused, not run here), and
    the summary."""
    runs = [(z, g) for z, g in SEED_RUNS if not seeds_default_run(z, g)]
    zoos = sorted({z for z, _ in runs if not seeds_default_zoo(z)})
    designs = sorted({kind_design(k) for k, _ in SEED_ADAPTERS})
    files = [f for step in (rules.seeds_train_lora, rules.seeds_tokenize_zoo)
             for f in expand(step.benchmark, zs=zoos, ds=DATASETS)]
    for z, g in runs:
        files += expand(rules.seeds_train_generator.benchmark, zs=z, gs=g, target=SEED_TARGETS, design=designs)
        for step in (rules.seeds_generate, rules.seeds_evaluate):
            files += expand(step.benchmark, zs=z, gs=g, target=SEED_TARGETS)
    return files + [rules.seeds_summary.benchmark]
