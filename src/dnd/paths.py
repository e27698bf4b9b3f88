"""Where the project lives: the repository root, the config schema, and how input paths from a
config are resolved (relative to the repository root). Imports nothing of the package."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def resolve_input_path(p: str | Path) -> Path:
    """Input paths in the config are relative to the repository root."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()
