# The function_space experiment's constants and helpers (its rules: workflow/rules/function_space.smk), included
# by that file.

FS = "results/function_space"
FS_CONFIG = config["function_space"]
FS_TARGETS = list(FS_CONFIG["targets"])
FS_TARGET = "|".join(map(re.escape, FS_TARGETS)) if FS_TARGETS else "(?!)"  # (?!) matches nothing
# the zoos the fold diagnostics run on: the default run's and, if trained, the shared-A zoo
FS_ZOOS = {"default": "results/tokens", **({"shared_a": f"{FS}/tokens_shared_a"} if FS_CONFIG["shared_a_zoo"] else {})}


def fs_source_finals(wildcards):
    return expand(f"{ZOO}/{{d}}/final", d=FOLDS[wildcards.target])


# ---------------------------------------------------------------------------- the generators (issue 30 items 2-6)
from dnd.config import function_space_generator  # noqa: E402

# name -> its settings (merged onto `generator` by function_space_generator, checked when asked for)
FS_GENS = dict(FS_CONFIG.get("generators") or {})
FS_N = FS_CONFIG["n_adapters"]
FS_NC = FS_CONFIG["n_controls"]
# each new generator's adapters: dnd_i on the default run's prompt draws i < FS_N, and the controls
FS_ADAPTERS = [("dnd", i) for i in range(FS_N)] + [(k, i) for k in CONTROL_KINDS for i in range(FS_NC)]
# every generator the checks run on: the default run's DnD (reused, not retrained) and the new ones
FS_CHECKED = ["dnd", *FS_GENS]


def fs_objective(gen):
    return {**config["generator"], **FS_GENS[gen]}.get("objective", "reconstruction")


def fs_zoo(gen):
    """The zoo a generator trains on (and its noise baseline starts from): default or shared_a."""
    return "default" if gen == "dnd" else FS_GENS[gen].get("zoo", "default")


FS_SFT = [g for g in FS_GENS if fs_objective(g) != "reconstruction"]  # train-generator --train-data/--base-model
FS_REC = [g for g in FS_GENS if g not in FS_SFT]
FS_SHARED_A_GENS = [g for g in FS_GENS if fs_zoo(g) == "shared_a"]


def fs_words(names):
    return "|".join(map(re.escape, names)) if names else "(?!)"


def fs_final(zoo, d):
    return f"{ZOO}/{d}/final" if zoo == "default" else f"{FS}/zoo_shared_a/{d}/final"


def fs_tokens(zoo, d):
    return f"results/tokens/{d}.pt" if zoo == "default" else f"{FS}/tokens_shared_a/{d}.pt"


def fs_generator(gen, target):
    return f"{FS}/generators/{gen}/{target}/generator.pt"


def fs_generated(gen, target, kind, i):
    """A generated adapter of the experiment: the default run's DnD's (reused) or a new generator's."""
    if gen == "dnd":
        return f"results/generated/{target}/{kind}_{i}"
    return f"{FS}/generated/{gen}/{target}/{kind}_{i}"


def fs_noise(gen, target, i):
    return f"{FS}/noise/{target}/{gen}_{i}"


def fs_generator_inputs(wildcards):
    sources, zoo = FOLDS[wildcards.target], fs_zoo(wildcards.gen)
    out = {
        "tokens": [fs_tokens(zoo, d) for d in sources],
        "encoded": expand("results/encoded/{d}/train.pt", d=sources),
        "template": fs_final(zoo, sources[0]),
    }
    if wildcards.gen in FS_SFT:
        out.update(train_data=expand("results/data/{d}/train.jsonl", d=sources), model=BASE_MODEL)
    return out


def fs_generator_params(wildcards):
    """train-generator's --params: the generator's settings (function_space_generator) as
    generator_params passes a variant's; sft/both also read the prompt template."""
    try:
        settings, _ = function_space_generator(config, wildcards.gen)
    except ConfigError as exc:
        raise WorkflowError(f"config: {exc}") from None
    p = json.loads(generator_params(overrides=settings))
    if wildcards.gen in FS_SFT:
        p["prompt"] = config["prompt"]
    return as_json(p)


def fs_generation_plan(wildcards):
    return generation_plan(wildcards.target, FS_ADAPTERS, lambda w: fs_generator(wildcards.gen, w.target),
                           out=f"{FS}/generated/{wildcards.gen}", timings=f"{FS}/timings/generate/{wildcards.gen}")


def fs_check_plan(target):
    """fs-checks' plan: per generator its zoo's final source LoRAs, its first FS_N DnD adapters and
    the noise adapters matched to them."""
    return {
        "target": target,
        "seed": config["seed"],
        "eval": f"results/eval/{target}.jsonl",  # the default run's nearest source of the target
        "generators": {
            g: {
                "zoo": fs_zoo(g),
                "sources": {d: fs_final(fs_zoo(g), d) for d in FOLDS[target]},
                "adapters": [fs_generated(g, target, "dnd", i) for i in range(FS_N)],
                "noise": [fs_noise(g, target, i) for i in range(FS_N)],
            }
            for g in FS_CHECKED
        },
    }


def fs_check_inputs(wildcards):
    plan = fs_check_plan(wildcards.target)
    files = {plan["eval"]}
    for g in plan["generators"].values():
        files.update(g["sources"].values())
        files.update(g["adapters"])
    return sorted(files)


def fs_score_plan(target):
    """fs-score's plan: (method, adapter, folder) of every adapter the experiment scores on a target:
    each new generator's (method <gen>, adapters 0..; its controls <gen>_<control kind>), each
    generator's noise baseline (<gen>_noise), and, with a shared-A generator, the shared-A zoo's LoRA
    of the target's nearest source (shared_a_nearest, the nearest source picked by the default run)."""
    rows = [[g if kind == "dnd" else f"{g}_{kind}", str(i), fs_generated(g, target, kind, i)]
            for g in FS_GENS for kind, i in FS_ADAPTERS]
    rows += [[f"{g}_noise", str(i), fs_noise(g, target, i)] for g in FS_CHECKED for i in range(FS_N)]
    return {
        "target": target,
        "adapters": rows,
        "eval": f"results/eval/{target}.jsonl",
        "shared_a_sources": {d: fs_final("shared_a", d) for d in FOLDS[target]} if FS_SHARED_A_GENS else {},
    }


def fs_score_inputs(wildcards):
    plan = fs_score_plan(wildcards.target)
    return sorted({plan["eval"], *(a[2] for a in plan["adapters"]), *plan["shared_a_sources"].values()})


def fs_benchmarks(wildcards):
    """The benchmark files of the function_space experiment's jobs (benchmarks/function_space/), which
    its report reads for the job times: every job of the `function_space` target but the report's own."""
    b = "benchmarks/function_space"
    files = [f"{b}/summarize.tsv"]
    for t in FS_TARGETS:
        files += [f"{b}/{job}_{t}.tsv" for job in ("val_split", "val_pick", "evaluate", "checks", "score")]
        files += [f"{b}/diagnostics_{z}_{t}.tsv" for z in FS_ZOOS]
        files += [f"{b}/train_generator_{g}_{t}.tsv" for g in FS_GENS]
        files += [f"{b}/generate_{g}_{t}.tsv" for g in FS_GENS]
    if FS_CONFIG["shared_a_zoo"]:  # the shared-A zoo of every fold's datasets
        fold_ds = sorted({d for t in FS_TARGETS for d in [*FOLDS[t], t]})
        files += [f"{b}/{job}_shared_a_{d}.tsv" for job in ("train", "tokenize") for d in fold_ds]
    return files
