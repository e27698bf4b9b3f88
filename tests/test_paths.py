"""Where a profile's outputs go (dnd.paths.run_dir) and the run directory's owner marker
(results/.profile): no profile writes over another's outputs. How a job finds a dataset's entry
among the files its rule declared (dnd.paths.declared)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnd.paths import (
    DEFAULT_CONFIG,
    PROFILE_MARKER,
    PROFILE_NAME,
    REPO_ROOT,
    SCHEMA_PATH,
    RunDirError,
    check_run_dir,
    claim_run_dir,
    declared,
    default_profile_name,
    run_dir,
)

SMOKE = REPO_ROOT / "config" / "smoke.yaml"
PAPER = REPO_ROOT / "config" / "paper.yaml"


def test_default_profile_runs_at_the_top_level_every_other_under_runs():
    default = default_profile_name()
    assert default == yaml.safe_load(DEFAULT_CONFIG.read_text())["name"]
    assert run_dir(default, [DEFAULT_CONFIG]) == "."
    assert run_dir("smoke", [SMOKE]) == "runs/smoke"
    assert run_dir("paper", [PAPER]) == "runs/paper"
    # config/config.yaml under another name (--config name=x) is another profile
    assert run_dir("x", [DEFAULT_CONFIG]) == "runs/x"
    # a copy of the default profile that keeps its name is not the default profile either
    assert run_dir(default, [SMOKE]) == f"runs/{default}"
    assert run_dir(default, [DEFAULT_CONFIG, SMOKE]) == f"runs/{default}"
    # the profile names of the shipped configs are distinct: no two share a directory
    names = [yaml.safe_load(p.read_text())["name"] for p in (DEFAULT_CONFIG, SMOKE, PAPER)]
    assert len(set(names)) == 3


def test_run_dir_is_relative_to_the_working_directory_and_idempotent(tmp_path):
    # Snakemake started in runs/<name> already (a job it spawns there, or a user who changed
    # into it) stays there instead of nesting runs/<name>/runs/<name>
    assert run_dir("smoke", [SMOKE], cwd=tmp_path / "runs" / "smoke") == "."
    assert run_dir("smoke", [SMOKE], cwd=tmp_path / "runs" / "other") == "runs/smoke"
    assert run_dir("smoke", [SMOKE], cwd=tmp_path) == "runs/smoke"
    # a directory marked as this profile's (a `-d DIR` run claims DIR before its first job; a cluster
    # job starts in DIR without `-d`) is its run directory; another profile's marker is not
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / ".profile").write_text("smoke\n")
    assert run_dir("smoke", [SMOKE], cwd=tmp_path) == "."
    assert run_dir("paper", [PAPER], cwd=tmp_path) == "runs/paper"


def test_default_name_comes_from_config_yaml_or_the_schema(tmp_path):
    named, unnamed = tmp_path / "named.yaml", tmp_path / "unnamed.yaml"
    named.write_text("name: mine\nseed: 1\n")
    unnamed.write_text("seed: 1\n")
    assert default_profile_name(named) == "mine"
    assert default_profile_name(unnamed) == "default"  # the schema's default
    assert default_profile_name(tmp_path / "missing.yaml") is None
    assert run_dir("mine", [named], default_config=named) == "."
    assert run_dir("default", [unnamed], default_config=unnamed) == "."


def test_the_schema_allows_exactly_the_names_run_dir_allows():
    assert yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["name"]["pattern"] == f"^{PROFILE_NAME}$"


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "", "x" * 65, "a b"])
def test_a_profile_name_that_is_no_directory_name_is_refused(name):
    with pytest.raises(RunDirError, match="not a directory name"):
        run_dir(name, [SMOKE])


def test_marker_claims_a_run_directory_for_one_profile(tmp_path):
    check_run_dir(tmp_path, "smoke")  # nothing there yet: any profile may start
    claim_run_dir(tmp_path, "smoke")
    assert (tmp_path / PROFILE_MARKER).read_text() == "smoke\n"
    claim_run_dir(tmp_path, "smoke")  # its own directory: fine, unchanged
    assert (tmp_path / PROFILE_MARKER).read_text() == "smoke\n"
    with pytest.raises(RunDirError) as err:
        check_run_dir(tmp_path, "default-cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "profile 'smoke', not 'default-cpu'" in msg and "runs/default-cpu/" in msg
    with pytest.raises(RunDirError):
        claim_run_dir(tmp_path, "default-cpu")
    assert (tmp_path / PROFILE_MARKER).read_text() == "smoke\n"


def test_committed_results_are_marked_as_the_default_profiles():
    marker = REPO_ROOT / PROFILE_MARKER
    assert marker.read_text() == default_profile_name() + "\n"


def test_declared_finds_each_datasets_entry_by_its_name_and_names_a_missing_one():
    """The paths a rule passes (results/zoo/<ds>/final, the ablations' extra zoo beside it, task
    files, encodings): each dataset's is the one ending in its own name, never a prefix or a
    suffix of another's; none, or two, is one line naming the option and what was passed."""
    zoo = ["results/zoo/arc_easy/final", "results/zoo/arc_challenge/final", "results/ablations/extra/zoo/sciq/final"]
    assert declared(zoo, "arc_easy/final", "final LoRA of arc_easy", "--zoo") == Path(zoo[0])
    assert declared(zoo, Path("sciq") / "final", "final LoRA of sciq", "--zoo") == Path(zoo[2])
    tasks = ["results/tasks/dnd_boolq.yaml", "results/tasks/dnd_boolq_x.yaml"]
    assert declared(tasks, "dnd_boolq.yaml", "lm-eval task dnd_boolq", "--tasks") == Path(tasks[0])
    enc = ["results/encoded/piqa/train.pt", "results/encoded/piqa/cond.pt"]
    assert declared(enc, "piqa/cond.pt", "cond", "--encoded") == Path(enc[1])
    with pytest.raises(FileNotFoundError) as missing:
        declared(zoo, "arc/final", "final LoRA of arc", "--zoo")
    assert str(missing.value) == ("final LoRA of arc: no path ending in arc/final among the --zoo paths ("
                                  + ", ".join(zoo) + ")")
    with pytest.raises(FileNotFoundError, match=r"among the --zoo paths \(none\)$"):
        declared([], "arc/final", "final LoRA of arc", "--zoo")
    with pytest.raises(ValueError, match=r"^final LoRA of sciq: 2 --zoo paths end in sciq/final: "):
        declared([*zoo, "results/zoo/sciq/final"], "sciq/final", "final LoRA of sciq", "--zoo")


def test_shown_path_never_records_a_machine_path(tmp_path, monkeypatch):
    """Inside the working directory: relative; an installed package's file: from site-packages/ on;
    Snakemake's cached copy of a `workflow.source_path` file: that file's own path; elsewhere: the name."""
    from dnd.paths import shown_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    assert shown_path(tmp_path / "config" / "paper_numbers.yaml") == "config/paper_numbers.yaml"
    assert shown_path("/opt/env/lib/python3.11/site-packages/pkg/model/config.json") == \
        "site-packages/pkg/model/config.json"
    cached = (f"/root/.cache/snakemake/snakemake/source-cache/snakemake-runtime-cache/tmpab12/file"
              f"{tmp_path}/workflow/rules/../../config/paper_numbers.yaml")
    assert shown_path(cached) == "config/paper_numbers.yaml"
    assert shown_path("/somewhere/else/paper.yaml") == "paper.yaml"
