"""Where the project lives: the repository root, the config schema, how input paths from a
config are resolved (relative to the repository root), and where a profile's outputs go.
Imports nothing of the package."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
RUNS_DIR = "runs"  # a non-default profile's outputs: runs/<name>/, laid out like the top level
PROFILE_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"  # it names the directory runs/<name>
PROFILE_MARKER = "results/.profile"  # the name of the profile whose outputs a run directory holds


def resolve_input_path(p: str | Path) -> Path:
    """Input paths in the config are relative to the repository root."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def shown_path(path: str | Path) -> str:
    """A path as an artifact or a report may record it, never a machine's own: from
    `site-packages/` on for a file of an installed package (wherever the environment lives),
    else relative to the working directory when inside it, else the bare name. A file a rule names
    with `workflow.source_path` may come as Snakemake's cached copy
    (.../snakemake-runtime-cache/<tmp>/file/<its absolute path>): it is shown as that path."""
    parts = Path(path).parts
    if "snakemake-runtime-cache" in parts:
        rest = parts[parts.index("snakemake-runtime-cache") + 1:]
        if "file" in rest:
            path = Path("/", *rest[rest.index("file") + 1:])
    p = Path(path).resolve()
    if "site-packages" in p.parts:
        return Path(*p.parts[p.parts.index("site-packages"):]).as_posix()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


class RunDirError(ValueError):
    """A run would write into another profile's outputs."""


def default_profile_name(default_config: Path = DEFAULT_CONFIG) -> str | None:
    """The `name` of config/config.yaml (the schema's default when it names none); None without the file."""
    import yaml

    if not default_config.is_file():
        return None
    name = (yaml.safe_load(default_config.read_text()) or {}).get("name")
    if name is None:
        name = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["name"]["default"]
    return str(name)


def run_dir(name: str, configfiles: list[str | Path], default_config: Path = DEFAULT_CONFIG,
            cwd: str | Path | None = None) -> str:
    """Where a profile's outputs (results/, logs/, benchmarks/, resources/models/base, .snakemake/)
    live, relative to the directory Snakemake starts in (`cwd`): "." for the default profile, i.e.
    the config read from config/config.yaml alone and still under that file's name (the committed
    results, what `dvc repro` runs); runs/<name> for every other profile, so no profile writes
    over another's; "." again when Snakemake starts in runs/<name> already (a job Snakemake spawns
    there, or a user who changed into it) or in a directory whose results/.profile names this profile
    (a cluster job of a `-d DIR` run: the executor starts it in DIR without `-d`). `configfiles` are
    the files the config was read from."""
    if not re.fullmatch(PROFILE_NAME, name):
        raise RunDirError(f"profile name {name!r} is not a directory name (letters, digits, '.', '_', '-'; not "
                          "starting with '.')")
    files = [Path(f).resolve() for f in configfiles]
    if files == [default_config.resolve()] and name == default_profile_name(default_config):
        return "."
    if cwd is not None and Path(cwd).resolve().parts[-2:] == (RUNS_DIR, name):
        return "."
    marker = Path(cwd) / PROFILE_MARKER if cwd is not None else None
    if marker is not None and marker.is_file() and marker.read_text().strip() == name:
        return "."
    return f"{RUNS_DIR}/{name}"


def check_run_dir(root: Path, name: str) -> None:
    """Refuse to run profile `name` in a run directory whose marker names another profile."""
    marker = Path(root) / PROFILE_MARKER
    if marker.is_file():
        owner = marker.read_text().strip()
        if owner != name:
            raise RunDirError(
                f"{marker.resolve()} says this directory holds the outputs of profile {owner!r}, not {name!r}: "
                f"run {name!r} in its own directory ({RUNS_DIR}/{name}/, the default without -d), or delete that "
                f"file to let {name!r} replace them"
            )


def claim_run_dir(root: Path, name: str) -> None:
    """Mark a run directory as profile `name`'s (before its first job runs); refuses another's."""
    check_run_dir(root, name)
    marker = Path(root) / PROFILE_MARKER
    if not marker.is_file():
        from .io import write_text  # atomic; function-local: this module imports nothing of the package at load

        write_text(marker, name + "\n")


def declared(paths: Iterable[str | Path], rel: str | Path, what: str, option: str) -> Path:
    """The one path of `paths` (the files or folders a rule declared and passed with `option`)
    whose last components are `rel`: a dataset's entry is found by the declared path's own name
    structure ("beta/final" among results/zoo/*/final, "dnd_beta.yaml" among the task files,
    "beta/train.pt" among the encodings), never in a folder rebuilt from it. One line when none or
    several end so."""
    want = Path(rel).parts
    paths = [Path(p) for p in paths]
    found = [p for p in paths if p.parts[len(p.parts) - len(want):] == want]
    if not found:
        names = ", ".join(map(str, paths)) or "none"
        raise FileNotFoundError(f"{what}: no path ending in {Path(rel)} among the {option} paths ({names})")
    if len(found) > 1:
        raise ValueError(f"{what}: {len(found)} {option} paths end in {Path(rel)}: {', '.join(map(str, found))}")
    return found[0]


def add_declared_option(parser, flag: str, help: str, required: bool = True) -> None:
    """A command's option that takes declared paths (found with `declared`): several words, or the
    flag repeated; an optional one defaults to none."""
    parser.add_argument(flag, required=required, type=Path, nargs="+", action="extend",
                        default=None if required else [], help=help)
