"""Configuration: one JSON schema (workflow/schemas/config.schema.yaml), defaults filled in,
clear errors. Snakemake validates with the same file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that does not satisfy the schema or names something unknown."""


def _validator():
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate in place (filling defaults) and check cross-field rules; return cfg."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(_validator()(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise ConfigError(f"invalid config at '{where}': {e.message}")
    from .data import check_dataset_names

    check_dataset_names(cfg["data"]["datasets"], cfg["data"].get("custom", {}))
    gen = cfg.get("generator", {})
    for key in ("heldout", "sources"):
        unknown = sorted(set(gen.get(key, [])) - set(cfg["data"]["datasets"]))
        if unknown:
            raise ConfigError(f"generator.{key} names datasets not in data.datasets: {unknown}")
    if cfg["base_model"]["source"] == "hf" and not cfg["base_model"].get("name_or_path"):
        raise ConfigError("base_model.source is 'hf' but base_model.name_or_path is empty")
    return cfg


def check_inputs(cfg: dict[str, Any]) -> None:
    """Inputs the run reads must exist: fail at start-up with one message, not hours later."""
    from .data import REGISTRY

    data = cfg["data"]
    custom = data.get("custom", {})
    builtin = [d for d in data["datasets"] if d in REGISTRY and d not in custom]
    if builtin and data.get("source", "local") == "local":
        root = resolve_input_path(data.get("dir", "../shared/data"))
        if not root.is_dir():
            raise ConfigError(
                f"data directory not found: {root} (data.dir = {data.get('dir')!r}; point it at the benchmark "
                "files, or set data.source: hub to download them)"
            )
    for name in data["datasets"]:
        if name in custom and not resolve_input_path(custom[name]["path"]).exists():
            raise ConfigError(f"custom dataset '{name}': file not found: {resolve_input_path(custom[name]['path'])}")


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


def resolve_input_path(p: str | Path) -> Path:
    """Input paths in the config are relative to the repository root."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


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
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
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
