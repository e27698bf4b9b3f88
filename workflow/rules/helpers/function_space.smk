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
