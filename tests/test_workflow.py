"""The workflow itself: lint, dry-runs of every profile, DVC <-> Snakemake sync, and (marked slow)
the whole smoke DAG end to end (real tiny model, real encoder, real lm-eval), with Snakemake and
through `dvc repro`, compared byte for byte for determinism."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnd.config import OUTSIDE_RUN
from dnd.experiments.ablations.report import FAMILIES as ABLATION_FAMILIES
from smoke_dag import REPO, SMOKE, env as _env


def snakemake(*args, cwd=REPO, check=True, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), *args]
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


def dvc(cwd, *args):
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def test_lint_is_clean():
    res = snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


@pytest.mark.parametrize("path", ["tests", "scripts", "src"])
def test_ruff_is_clean(path):
    """The linter ([tool.ruff] in pyproject.toml, pinned in requirements.txt) finds nothing."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (requirements.txt pins it)")
    res = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", path], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


@pytest.mark.parametrize("profile", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_dry_run_plans_whole_dag(profile, tmp_path):
    res = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config" / profile), "-d", str(tmp_path))
    out = res.stdout + res.stderr
    for rule in ("prepare_data", "train_lora", "train_generator", "generate_target", "evaluate_target", "report"):
        assert rule in out, rule


def test_local_base_model_is_the_base_model_jobs_input(tmp_path, tiny_model_dir):
    """config/paper.yaml offline: base_model.source local names a directory the user provides; the
    dry run declares it as the base_model job's input and reads the paper shapes from it."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["base_model"] = {"source": "local", "path": str(tiny_model_dir)}
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--cores", "1", "--configfile", str(local), "-d", str(tmp_path / "run"))
    jobs = [j for j in _dry_run_jobs(res.stdout) if j["rule"] == ["base_model"]]
    assert len(jobs) == 1 and jobs[0]["input"] == [str(tiny_model_dir)], jobs
    cfg["base_model"]["path"] = str(tmp_path / "missing")
    local.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(local), "-d", str(tmp_path / "run"), check=False)
    assert res.returncode != 0
    assert f"config: base_model.path '{tmp_path}/missing': model directory not found: {tmp_path}/missing" in \
        (res.stdout + res.stderr).splitlines()


def test_own_heldout_target_needs_no_edit_of_sections_it_does_not_run(tmp_path):
    """Holding out another dataset leaves the few-shot and ablation targets (capitals) outside the
    run's held-out targets: `all` plans without touching those sections; asking for `fewshot` or
    `ablations` stops in one line naming the section."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["generator"]["heldout"] = ["sounds"]
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--cores", "1", "--configfile", str(mine), "-d", str(tmp_path / "run"))
    assert "evaluate_target" in res.stdout
    for target, line in (("fewshot", "config: fewshot.targets ['capitals'] are not held-out targets of the run "
                                     "(generator.heldout: ['sounds']): DnD has no scores on them to compare with"),
                         ("ablations", "config: ablations.targets ['capitals'] are not held-out targets of the run "
                                       "(generator.heldout: ['sounds']): DnD has no scores on them to compare with")):
        res = snakemake("-n", "--configfile", str(mine), "-d", str(tmp_path / "run"), target, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and line in [text.strip() for text in out.splitlines()], out[-3000:]


def test_malformed_config_is_one_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"datasets": ["arc_easy", "nope"]}, "base_model": {"source": "tiny"}}))
    res = snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path), check=False)
    assert res.returncode != 0
    assert "unknown dataset name(s) ['nope']" in res.stdout + res.stderr


@pytest.mark.parametrize("edit, line", [
    ({"data": {"bogus": 1}}, "config: data.bogus: additional property not allowed (schema: data)"),
    ({"lora": {"lr": float("nan")}}, "config: lora.lr: nan is not a finite number"),
    ({"lora": {"r": "eight"}}, "config: lora.r: 'eight' is not of type 'integer' (schema: lora.r, type: \"integer\")"),
    ({"data": {"n_test": 25}},
     "config: dataset 'capitals' has 30 items; its splits need 34 (data.n_test 25 + data.n_cond 8 + 1 train item)"),
    ({"encoder": {"path": "no/such/model"}},
     f"config: encoder.path 'no/such/model': model directory not found: {REPO / 'no/such/model'} "
     "(encoder.kind minilm)"),
])
def test_schema_error_is_one_line_naming_the_key(tmp_path, edit, line):
    """Snakemake's own validation error printed the whole schema (2,826 lines): one line naming the
    key; the start-up checks (split sizes, model paths) fail the dry run the same way."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    for section, values in edit.items():
        cfg[section].update(values)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path), check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and line in out.splitlines(), out
    assert len(out.splitlines()) < 10 and "$schema" not in out


def test_dvc_glance_stage_runs_after_every_stage_writing_what_it_reads():
    """`dvc repro` runs the glance after every stage that writes a file under a folder the glance
    reads (each extra experiment's results): run before one of them, its list of existing results
    (a param of the rule) changes afterwards and Snakemake plans the glance again."""
    from dnd.reporting.glance import EXPERIMENTS

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = set(stages["glance"]["deps"])
    folders = {f"results/{e.metrics.split('/')[0]}/" for e in EXPERIMENTS if "/" in e.metrics}
    for name, stage in stages.items():
        outs = _stage_outs(stage)
        if name != "glance" and any(o.startswith(tuple(folders)) for o in outs):
            assert deps & set(outs), f"dvc stage {name!r} writes results the glance reads but is not upstream of it"


def test_dvc_lock_records_only_stages_of_dvc_yaml():
    """A stage renamed or removed in dvc.yaml leaves no entry behind in dvc.lock (DVC keeps such
    entries forever): every recorded stage exists, with the command it was recorded with."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert not set(locked) - set(stages), f"dvc.lock records stages dvc.yaml lacks: {sorted(set(locked) - set(stages))}"
    for name, entry in locked.items():
        assert entry["cmd"] == stages[name]["cmd"], name


def test_dvc_stages_match_snakemake_targets():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    targets = {line.split()[0] for line in snakemake("--list-target-rules").stdout.splitlines() if line.strip()}
    # the extra experiments are outside `all`
    summary = snakemake("-n", "--summary", "all", "protocol", "crossdomain", "ablations", "fewshot", "math",
                        "code", "seeds", "zoo_probe", "function_space").stdout.splitlines()
    planned = [line.split("\t")[0] for line in summary[1:] if "\t" in line]
    for name, stage in stages.items():
        assert stage["cmd"] == f"snakemake --cores all {name}", name
        assert name in targets, f"dvc stage {name} has no Snakemake target rule"
        for out in _stage_outs(stage):
            assert any(p == out or p.startswith(out.rstrip("/") + "/") for p in planned), \
                f"{name}: {out} not produced by the DAG"
    for agg in ("zoo", "generators", "generate", "evaluate", "summary", "report", "protocol", "crossdomain",
                "ablations", *(f"ablations_{f}" for f in ABLATION_FAMILIES), "fewshot", "math", "code", "seeds",
                "zoo_probe", "function_space"):
        assert agg in stages
    # DVC fails on a params key that config/config.yaml does not spell out
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            for key in (k for keys in entry.values() for k in keys) if isinstance(entry, dict) else [entry]:
                node = config
                for part in key.split("."):  # DVC reads a dotted key as a nested one
                    assert isinstance(node, dict) and part in node, \
                        f"dvc stage {name}: param {key} is missing from config/config.yaml"
                    node = node[part]


# the extra experiments are outside `all`
ALL_TARGETS = ("all", "protocol", "crossdomain", "ablations", "fewshot", "math", "code", "seeds", "zoo_probe",
               "function_space", "bench")
# committed results written by scripts outside the DAG (scripts/, `dnd check-profile`)
OFF_DAG_RESULTS = {"results/check_profile_paper.json", "results/mathcode_calibration.json", "results/zoo_probe.json",
                   "results/.profile"}


def _summary(res) -> list[str]:
    """The output files of a `snakemake -n --summary` listing."""
    return [line.split("\t")[0] for line in res.stdout.splitlines()
            if "\t" in line and not line.startswith("output_file\t")]


def _planned_files(dry_run: str) -> set[str]:
    """Every output, log and benchmark file of the jobs in a `snakemake -n` listing."""
    return {f for line in dry_run.splitlines() if (m := re.match(r"^    (?:output|log|benchmark): (.*)$", line))
            for f in m.group(1).split(", ")}


def dry_run_plan(target: str, configfile: str, workdir) -> tuple[list[dict[str, list[str]]], dict[str, int]]:
    """The jobs `snakemake -n TARGET` plans for a profile in `workdir` (`_dry_run_jobs`), and how many per rule."""
    jobs = _dry_run_jobs(snakemake("-n", "--cores", "1", target, "--configfile", configfile, "-d", str(workdir)).stdout)
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["rule"][0]] = counts.get(j["rule"][0], 0) + 1
    return jobs, counts


def _dry_run_jobs(dry_run: str) -> list[dict[str, list[str]]]:
    """The jobs of a `snakemake -n` listing: rule, input and benchmark files of each."""
    jobs: list[dict[str, list[str]]] = []
    for line in dry_run.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append({"rule": [m.group(1)], "input": [], "benchmark": []})
        elif jobs and (m := re.match(r"^    (input|benchmark): (.*)$", line)):
            jobs[-1][m.group(1)] = [f.removesuffix(" (cached)") for f in m.group(2).split(", ")]
    return jobs


# each extra experiment's target: its report rule and the folder of its jobs' benchmark files
EXPERIMENT_REPORTS = {"protocol": ("protocol_report", "benchmarks/protocol/"),
                      "crossdomain": ("crossdomain_report", "benchmarks/crossdomain/"),
                      "fewshot": ("fewshot_report", "benchmarks/fewshot/"),
                      "ablations": ("ablation_report", "benchmarks/ablations/"),
                      "math": ("mathcode_report", "benchmarks/math/"),
                      "code": ("mathcode_report", "benchmarks/code/"),
                      "function_space": ("fs_report", "benchmarks/function_space/")}


@pytest.mark.parametrize("profile", ["config.yaml", "smoke.yaml"])
def test_reports_declare_their_jobs_benchmark_files(profile, tmp_path):
    """Each report reads its jobs' times from the benchmark files it declares (issue 27): exactly
    those of its experiment's jobs in the dry run (the default report: of `all`'s, outside the extra
    experiments' folders), not its own, none of a job the config does not run (fewshot: the
    per-target jobs, whose times its report gives)."""
    res = snakemake("-n", "--cores", "1", "all", *EXPERIMENT_REPORTS, "--configfile",
                    str(REPO / "config" / profile), "-d", str(tmp_path))
    jobs = _dry_run_jobs(res.stdout)
    for target, (rule, folder) in {"all": ("report", "benchmarks/"), **EXPERIMENT_REPORTS}.items():
        report = [j for j in jobs if j["rule"] == [rule] and j["benchmark"][0].startswith(folder)]
        assert len(report) == 1, (target, report)
        declared = [f for f in report[0]["input"] if f.startswith("benchmarks/")]
        planned = {b for j in jobs for b in j["benchmark"] if b.startswith(folder)} - set(report[0]["benchmark"])
        if target == "all":  # the extra experiments' jobs are outside `all`; `glance` reads the report
            planned = {b for b in planned if Path(b).parts[1] not in OUTSIDE_RUN} - {"benchmarks/glance.tsv"}
        if target == "fewshot":  # benchmarks/fewshot/{target}/*.tsv
            planned = {b for b in planned if len(Path(b).relative_to(folder).parts) == 2}
        assert planned and len(declared) == len(set(declared)), target
        assert set(declared) == planned, (target, sorted(set(declared) - planned), sorted(planned - set(declared)))


def _job_outputs(dry_run: str) -> list[tuple[str, list[str]]]:
    """(rule, output files) of each job of a `snakemake -n` listing."""
    jobs: list[tuple[str, list[str]]] = []
    for line in dry_run.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append((m.group(1), []))
        elif jobs and (m := re.match(r"^    output: (.*)$", line)):
            jobs[-1][1].extend(m.group(1).split(", "))
    return jobs


def test_protocol_fans_out_over_its_templates(tmp_path):
    """protocol.templates: the lm-eval tasks and the scoring run once per template, under
    results/protocol/{tasks,data,eval}/{template}/; the zoo, generators and generated adapters
    once for all of them; one summary and one report read every template. With one template,
    only its tasks and scoring are planned, and the shared jobs are the same."""
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    plans = {}
    for templates in (["default", "chatml"], ["chatml"]):
        cfg = tmp_path / f"{'_'.join(templates)}.yaml"
        cfg.write_text(yaml.safe_dump({**smoke, "protocol": {**smoke["protocol"], "templates": templates}}))
        res = snakemake("-n", "--cores", "1", "protocol", "--configfile", str(cfg), "-d", str(tmp_path / "run"))
        plans[tuple(templates)] = _job_outputs(res.stdout)
    both = plans[("default", "chatml")]
    targets = smoke["data"]["datasets"]  # the smoke profile holds every dataset out in turn

    def outputs(plan, rule):
        return sorted(f for r, outs in plan if r == rule for f in outs)

    tasks = outputs(both, "protocol_tasks")
    assert {f.split("/")[3] for f in tasks} == {"default", "chatml"}
    assert sorted(f for f in tasks if "/default/" in f) == sorted(f.replace("/chatml/", "/default/") for f in tasks
                                                                 if "/chatml/" in f)
    assert outputs(both, "evaluate_protocol") == sorted(f"results/protocol/eval/{t}/{d}.jsonl"
                                                        for t in ("default", "chatml") for d in targets)
    assert [r for r, _ in both].count("protocol_summary") == [r for r, _ in both].count("protocol_report") == 1
    one = plans[("chatml",)]
    assert outputs(one, "evaluate_protocol") == [f"results/protocol/eval/chatml/{d}.jsonl" for d in sorted(targets)]
    assert outputs(one, "protocol_tasks") == [f for f in tasks if "/chatml/" in f]
    for rule in ("protocol_train_lora", "protocol_tokenize_zoo", "protocol_train_generator",
                 "protocol_generate_adapter"):
        made = outputs(both, rule)
        assert made and made == outputs(one, rule), rule
        assert not any(t in f.split("/") for f in made for t in ("default", "chatml")), rule


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_default_profile_keeps_the_top_level():
    """The default profile (config/config.yaml, given or not) still writes at the top level:
    every committed result of the DAG is a planned output at its committed path."""
    for args in ((), ("--configfile", str(REPO / "config" / "config.yaml"))):
        res = snakemake("-n", "--summary", *ALL_TARGETS, *args)
        assert f"outputs in {REPO}\n" in res.stdout + res.stderr
        planned = _summary(res)
        tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True,
                                 text=True).stdout.split()
        if not tracked:
            pytest.skip("the project is not a git checkout")
        assert set(tracked) - OFF_DAG_RESULTS <= set(planned)
        assert "resources/models/base" in planned and not any(p.startswith("runs/") for p in planned)


def test_smoke_profile_in_a_checkout_writes_only_under_runs_smoke(tmp_path):
    """`snakemake --configfile config/smoke.yaml` where the default run's outputs are (no -d):
    its outputs, logs, benchmarks, exported base model and Snakemake metadata all lie in
    runs/smoke/; the default profile's results/, logs/, benchmarks/, resources/ are untouched."""
    co = tmp_path / "checkout"
    (co / "results").mkdir(parents=True)
    shutil.copy2(REPO / "results" / ".profile", co / "results" / ".profile")  # the committed marker
    (co / "results" / "scores.csv").write_text("the default run's scores\n")
    before = _files(co)
    smoke = str(REPO / "config" / "smoke.yaml")
    res = snakemake("-n", "--cores", "1", *ALL_TARGETS, "--configfile", smoke, cwd=co)
    assert f"outputs in {co / 'runs' / 'smoke'}\n" in res.stdout + res.stderr
    planned = _planned_files(res.stdout)
    for f in ("resources/models/base", "results/report.md", "logs/report.log", "benchmarks/report.tsv",
              "results/protocol/report.md", "results/code/report.md"):
        assert f in planned, f
    # every output, log and benchmark is relative to the run directory (runs/smoke), none leaves it
    assert all(not Path(p).is_absolute() and ".." not in Path(p).parts for p in planned)
    # a real tiny job: the data and the base model export
    snakemake("base_model", "data", "--cores", "1", "--configfile", smoke, cwd=co)
    after = _files(co)
    assert {f: after[f] for f in before} == before
    new = set(after) - set(before)
    # Snakemake opens its own run log before it reads the Snakefile: in the directory it started in
    assert all(f.startswith("runs/smoke/") or f.startswith(".snakemake/log/") for f in new), sorted(new)
    for f in ("resources/models/base/model.safetensors", "results/data/capitals/test.jsonl", "logs/base_model.log",
              "benchmarks/base_model.tsv"):
        assert f"runs/smoke/{f}" in new, f
    assert after["runs/smoke/results/.profile"] == b"smoke\n"
    assert not any((co / d).exists() for d in ("logs", "benchmarks", "resources"))
    # started inside runs/smoke (as a job Snakemake spawns there), the run stays there
    res = snakemake("-n", "base_model", "data", "--configfile", smoke, cwd=co / "runs" / "smoke")
    assert "Nothing to be done" in res.stdout + res.stderr
    assert not (co / "runs" / "smoke" / "runs").exists()


def test_a_run_refuses_another_profiles_directory(tmp_path):
    """results/.profile names the profile whose outputs a run directory holds: a run of another
    profile there (-d, or --config name=...) stops before planning anything, in one line."""
    smoke = str(REPO / "config" / "smoke.yaml")
    cases = [
        ((REPO / "results" / ".profile").read_text().strip(), ()),  # smoke run in the default's directory
        ("smoke", ("--config", "name=other")),  # another name in smoke's directory
    ]
    for owner, extra in cases:
        d = tmp_path / owner
        (d / "results").mkdir(parents=True)
        (d / "results" / ".profile").write_text(owner + "\n")
        res = snakemake("-n", "-d", str(d), "--configfile", smoke, *extra, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0
        name = "other" if extra else "smoke"
        lines = [line for line in out.splitlines() if "holds the outputs of profile" in line]
        assert len(lines) == 1 and f"profile {owner!r}, not {name!r}" in lines[0] and f"runs/{name}/" in lines[0], out
        assert lines[0].startswith("profile: ") and len(out.splitlines()) < 10, out
        assert (d / "results" / ".profile").read_text() == owner + "\n"
        assert not (d / "results" / "data").exists()


def _planned_jobs(dry_run: str) -> list[tuple[str, str]]:
    """(rule, dataset or target wildcard) of each job in a `snakemake -n` listing."""
    jobs, rule = [], None
    for line in dry_run.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.append((rule, ""))
        m = re.search(r"wildcards: .*?(?:ds|target)=([^,\s]+)", line)
        if m and rule:
            jobs[-1] = (rule, m.group(1))
    return jobs


def _stage_outs(stage: dict) -> list[str]:
    """The paths a DVC stage writes: its outs, metrics and plots."""
    return [next(iter(o)) if isinstance(o, dict) else o
            for kind in ("outs", "metrics", "plots") for o in stage.get(kind, []) or []]


def _dvc_outs(dvc_yaml: dict) -> list[str]:
    return [o for st in dvc_yaml["stages"].values() for o in _stage_outs(st)]


# ------------------------------------------------------------------ the smoke DAG end to end (slow)
# One smoke run feeds every slow test below (tests/smoke_dag.py, started in the background by
# conftest.py's `smoke_dirs` when the session begins): the smoke profile with Snakemake and, beside
# it, `dvc repro` in a git copy of the project; each test then asserts one property of those runs.
# The tests run in file order: the last one changes the DVC copy (`dvc exp run`).


@pytest.fixture(scope="module")
def smoke_run(smoke_dirs) -> Path:
    """The smoke profile run with Snakemake in a (no -d), once done: its run directory, a/runs/smoke."""
    smoke_dirs.runs["snakemake"].result()
    return smoke_dirs.a / "runs" / "smoke"


@pytest.fixture(scope="module")
def smoke_dvc(smoke_dirs) -> Path:
    """The DVC copy once `dvc repro` is done: b."""
    smoke_dirs.runs["dvc"].result()
    return smoke_dirs.b


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_smoke_run_writes_only_under_runs_smoke(smoke_dirs, smoke_run):
    """The smoke profile wrote nothing outside runs/smoke/ but Snakemake's own run log."""
    a = smoke_dirs.a
    assert {p.name for p in a.iterdir()} == {"runs", ".snakemake"} and os.listdir(a / ".snakemake") == ["log"]
    assert (smoke_run / "results" / ".profile").read_text() == "smoke\n"


@pytest.mark.slow
def test_smoke_scores_cover_every_method_on_the_same_items(smoke_run):
    scores = _csv(smoke_run / "results" / "scores.csv")
    assert scores and list(scores[0]) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high",
                                          "gold_logprob"]
    methods = {r["method"] for r in scores}
    assert {"base", "source_lora", "soup", "nearest", "dnd", "control_other", "control_random"} <= methods
    for t in {r["target"] for r in scores}:
        assert len({r["n"] for r in scores if r["target"] == t}) == 1, t  # same items for every method


@pytest.mark.slow
def test_smoke_outputs_are_complete(smoke_run):
    results = smoke_run / "results"
    for name in ("report.md", "metrics.json", "efficiency.csv", "data_summary.csv", "eval_speed.csv",
                 "eval_agreement.csv"):
        assert (results / name).stat().st_size > 0, name
    assert "## Evaluation backend" in (results / "report.md").read_text()
    assert len(list((results / "figures").glob("*.png"))) >= 7


@pytest.mark.slow
def test_smoke_eval_backends_agree(smoke_run):
    """float32 smoke model: both backends give the same answers and log-likelihoods to rounding."""
    agree = _csv(smoke_run / "results" / "eval_agreement.csv")
    assert agree and all(float(r["same_choice"]) == 1.0 and float(r["max_abs_ll_diff"]) < 1e-3 for r in agree), agree


@pytest.mark.slow
def test_smoke_rerun_plans_nothing(smoke_dirs, smoke_run):
    res = snakemake("-n", "--cores", "1", "--configfile", str(SMOKE), cwd=smoke_dirs.a)
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:]


@pytest.mark.slow
def test_smoke_growth_plans_only_the_new_datasets_jobs(smoke_dirs, smoke_run):
    """Incremental by dataset: adding one plans only its own per-dataset jobs (and the folds,
    generators and evaluations that now include it), never another dataset's data or LoRA."""
    grown = yaml.safe_load(SMOKE.read_text())
    grown["data"]["custom"]["capitals2"] = dict(grown["data"]["custom"]["capitals"])
    grown["data"]["datasets"].append("capitals2")
    (smoke_dirs.root / "grown.yaml").write_text(yaml.safe_dump(grown))
    res = snakemake("-n", "--cores", "1", "--configfile", str(smoke_dirs.root / "grown.yaml"), cwd=smoke_dirs.a)
    planned = _planned_jobs(res.stdout)
    for rule in ("prepare_data", "train_lora", "tokenize_zoo", "encode_prompts"):
        assert {w for r, w in planned if r == rule} == {"capitals2"}, (rule, planned)
    assert "base_model" not in {r for r, _ in planned}


@pytest.mark.slow
def test_smoke_html_report_renders(smoke_dirs, smoke_run):
    """A relative --report path is relative to the run directory (scripts/reproduce.sh's
    `--report results/report.html` lands in the profile's own results/), and a headless Chromium
    (tests/headless_browser.py) shows the glance table and the figures in it."""
    snakemake("--configfile", str(SMOKE), "--report", "results/report.html", cwd=smoke_dirs.a)
    html = smoke_run / "results" / "report.html"
    assert html.stat().st_size > 10_000
    # rendered by a headless browser (its JavaScript run): the "Main results" view links the glance
    # table and the report byte for byte, the "Figures" view names every figure of the report
    from dnd.reporting.figures import FIGURES
    from headless_browser import chromium, data_links, render

    if chromium() is None:
        pytest.skip("no chromium to render the HTML report (scripts/setup_env.sh installs it as root with apt-get)")
    main_view = render(html, ["Main results"])
    assert "results/glance.md" in main_view["Main results"] and "results/report.md" in main_view["Main results"]
    shown = data_links(main_view["dom"])
    assert shown["glance.md"] == (smoke_run / "results" / "glance.md").read_bytes()
    assert shown["glance.md"].startswith(b"| Experiment") and shown["report.md"]
    figures = render(html, ["Figures"])["Figures"].split()
    assert set(FIGURES) <= set(figures), sorted(set(FIGURES) - set(figures))


@pytest.mark.slow
def test_smoke_dvc_repro_leaves_every_stage_up_to_date(smoke_dvc):
    """Every stage's outputs come from its own Snakemake target, not from a later stage."""
    assert "Data and pipelines are up to date" in dvc(smoke_dvc, "status").stdout


@pytest.mark.slow
def test_smoke_dvc_and_snakemake_outputs_are_byte_identical(smoke_run, smoke_dvc):
    """Bit-reproducible: every file DVC hashes is byte-identical between the two runs, made in
    different directories (no machine path, no wall-clock time inside any of them); the extra
    experiments ran only under DVC."""
    ra, b = smoke_run, smoke_dvc
    assert (ra / "results" / "scores.csv").read_text() == (b / "results" / "scores.csv").read_text()
    for out in _dvc_outs(yaml.safe_load((REPO / "dvc.yaml").read_text())):
        if out.startswith(("results/protocol", "results/crossdomain", "results/ablations", "results/fewshot",
                           "results/math", "results/code", "results/seeds", "results/zoo_probe",
                           "results/function_space", "results/glance.md")):
            continue  # results/glance.md: its rows show the extra experiments that ran (here under DVC only)
        is_dir = (ra / out).is_dir()
        files = sorted(p.relative_to(ra) for p in (ra / out).rglob("*") if p.is_file()) if is_dir else [Path(out)]
        assert files, out
        for f in files:
            if f.name == ".snakemake_timestamp":
                continue
            assert (ra / f).read_bytes() == (b / f).read_bytes(), f"{f} differs between two runs of the same config"


@pytest.mark.slow
def test_smoke_protocol_experiment(smoke_dvc):
    """The protocol experiment (a DVC stage, outside Snakemake's `all`) ran under dvc repro."""
    pscores = _csv(smoke_dvc / "results" / "protocol" / "scores.csv")
    assert {r["protocol"] for r in pscores} == {"loglik", "greedy", "sampled"}
    assert {"dnd", "dnd_testcond", "source_lora", "control_random"} <= {r["method"] for r in pscores}
    assert {r["template"] for r in pscores} == {"default", "chatml"}  # protocol.templates (the schema default)
    text = (smoke_dvc / "results" / "protocol" / "report.md").read_text()
    assert "## Protocol" in text and "### Template `default`" in text and "### Template `chatml`" in text


@pytest.mark.slow
def test_smoke_crossdomain_experiment(smoke_dvc):
    """Every method but the oracle on the new domain."""
    cscores = _csv(smoke_dvc / "results" / "crossdomain" / "scores.csv")
    assert {r["target"] for r in cscores} == {"colors"}
    assert {"base", "source_lora", "soup", "nearest", "dnd", "control_other"} <= {r["method"] for r in cscores}
    assert {r["adapter"] for r in cscores if r["method"] == "source_lora"} == {"capitals", "sounds", "opposites"}
    assert "## Cross-domain" in (smoke_dvc / "results" / "crossdomain" / "report.md").read_text()


@pytest.mark.slow
def test_smoke_ablations_experiment(smoke_dvc):
    """Every family: its default setting from the default run, the others scored."""
    ablations = smoke_dvc / "results" / "ablations"
    for family in ("condition", "sources"):
        assert {r["method"] for r in _csv(ablations / f"{family}.csv")} == {"dnd", "train_avg", "base"}, family
    assert {r["setting"] for r in _csv(ablations / "condition.csv")} == {"prompt", "answer"}
    assert "## Ablations" in (ablations / "report.md").read_text()


@pytest.mark.slow
def test_smoke_fewshot_experiment(smoke_dvc):
    """On the smoke config's fewshot targets and k."""
    few = _csv(smoke_dvc / "results" / "fewshot.csv")
    assert few and list(few[0]) == ["target", "method", "k", "n", "acc", "seconds"]
    assert {(r["method"], r["k"]) for r in few if r["target"] == "capitals"} == {
        ("dnd", "0"), ("fewshot_ft", "1"), ("fewshot_ft", "4"), ("icl", "0"), ("icl", "2"), ("icl", "8")}
    assert "## The paper's direction against ours" in (smoke_dvc / "results" / "fewshot" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("domain, targets, metrics", [
    ("math", {"gsm8k", "math"}, {"exact_match,flexible-extract", "exact_match,boxed"}),
    ("code", {"humaneval"}, {"pass@1"}),
], ids=["math", "code"])
def test_smoke_mathcode_experiment(smoke_dvc, domain, targets, metrics):
    """Hand-written items in the authors' format (tests/data/smoke/math_code; HumanEval's tests run
    by dnd.benchmarks.code_exec): every method on every target, the metric named."""
    rows = _csv(smoke_dvc / "results" / domain / "scores.csv")
    assert rows and list(rows[0]) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob",
                                      "metric"]
    assert {r["target"] for r in rows} == targets and {r["metric"] for r in rows} == metrics
    assert {"base", "source_lora", "soup", "nearest", "dnd"} <= {r["method"] for r in rows}
    assert f"## {domain.capitalize()}" in (smoke_dvc / "results" / domain / "report.md").read_text()


@pytest.mark.slow
def test_smoke_seeds_experiment(smoke_dvc):
    """The seeds experiment ran under dvc repro: every (zoo, generator) seed run scored on the
    default run's items, run (0, 0) being the default run's own scores."""
    m = json.loads((smoke_dvc / "results" / "seeds" / "metrics.json").read_text())
    assert m["runs"] == ["z0g0", "z0g1", "z1g0", "z1g1"] and m["targets"] == ["capitals"]
    default = json.loads((smoke_dvc / "results" / "metrics.json").read_text())
    key = "capitals/dnd_minus_train_avg/acc"
    # z0g0 is the default run itself (smoke: seeds.n_adapters = generate.n_adapters = 2)
    assert m[key + "_by_run"][0] == pytest.approx(default["capitals/dnd_minus_train_avg"], abs=1e-12)
    zoo1 = smoke_dvc / "results" / "seeds" / "zoo" / "z1" / "capitals" / "final"
    assert (zoo1 / "adapter_model.safetensors").read_bytes() != \
        (smoke_dvc / "results" / "zoo" / "capitals" / "final" / "adapter_model.safetensors").read_bytes()
    assert "95% CI, seeds and items" in (smoke_dvc / "results" / "seeds" / "report.md").read_text()


@pytest.mark.slow
def test_smoke_zoo_probe_experiment(smoke_dvc):
    """The longer-zoo probe ran under dvc repro: its LoRAs trained 3x the zoo's steps, the default
    lead equal to the default run's oracle_minus_train_avg (its scores, the same resamples)."""
    m = json.loads((smoke_dvc / "results" / "zoo_probe" / "metrics.json").read_text())
    default = json.loads((smoke_dvc / "results" / "metrics.json").read_text())
    assert m["datasets"] == ["capitals", "sounds"] and (m["steps_default"], m["steps_longer"]) == (8, 24)
    for t in m["datasets"]:
        assert m[f"{t}/lead_default/acc"] == pytest.approx(default[f"{t}/oracle_minus_train_avg/acc"], abs=1e-12)
        summary = json.loads((smoke_dvc / "results" / "zoo_probe" / "zoo" / t / "summary.json").read_text())
        assert summary["steps"] == 24 and summary["checkpoints"] == 4
    assert "## Answer" in (smoke_dvc / "results" / "zoo_probe" / "report.md").read_text()


@pytest.mark.slow
def test_smoke_function_space_experiment(smoke_dvc):
    """The function_space experiment ran under dvc repro: every generator trained, its adapters,
    controls and noise baselines scored beside the default run's methods and the labeled baselines;
    the checks and one report whose verdicts are in the vocabulary."""
    import pandas as pd

    from dnd.summary import CONTROL_KINDS, SCORE_COLUMNS
    from test_verdict_words import check

    fs = smoke_dvc / "results" / "function_space"
    scores = pd.read_csv(fs / "scores.csv", keep_default_na=False)
    gens = ["hyperconv_sft", "t2l_reconstruction", "t2l_sft", "hyperconv_reconstruction_shared_a"]
    want = {*gens, *(f"{g}_{k}" for g in gens for k in (*CONTROL_KINDS, "noise")), "dnd_noise", "shared_a_nearest",
            "dnd", "nearest", "multitask_lora", "val_picked"}
    assert want <= set(scores.method) and list(scores.columns) == SCORE_COLUMNS
    assert len(set(scores.n)) == 1
    m = json.loads((fs / "metrics.json").read_text())
    for g in gens:
        for b in ("nearest", "multitask_lora", f"{g}_noise", f"{g}_control_random"):
            assert m[f"mean/{g}_minus_{b}/acc"] is not None
    rows = list(csv.DictReader((fs / "checks" / "capitals.csv").open()))
    assert {r["generator"] for r in rows} == {"dnd", *gens}
    for r in rows:  # the noise baseline sits at its adapter's distance from the nearest source
        assert float(r["noise_dist"]) == pytest.approx(float(r["dist_nearest_prompt"]), rel=1e-3, abs=1e-6)
    report = (fs / "report.md").read_text()
    check(report)
    assert "Against the nearest source" in report
    assert (fs / "figures" / "function_space.png").stat().st_size > 0


@pytest.mark.slow
def test_smoke_dvc_caches_outputs_as_hardlinks(smoke_dvc):
    """In the DVC cache as a hardlink: nothing copied."""
    linked = next((smoke_dvc / "results" / "generators").rglob("generator_*.pt"))
    assert os.stat(linked).st_nlink == 2


@pytest.mark.slow
def test_smoke_snakemake_sees_nothing_to_do_after_dvc_repro(smoke_dvc):
    """DVC linking its cached outputs (.dvcignore) must not make Snakemake think they are new."""
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=smoke_dvc, env=_env(),
                         capture_output=True, text=True)  # fmt: skip
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_smoke_dvc_metrics_show(smoke_dvc):
    metrics = json.loads(dvc(smoke_dvc, "metrics", "show", "--json").stdout)
    assert "dnd_mean" in json.dumps(metrics)


@pytest.mark.slow
def test_smoke_dvc_experiment_reruns_only_what_is_downstream(smoke_dvc):
    """A generator setting changes: only generators -> generate -> evaluate -> report rerun. Last
    of the smoke tests: the experiment changes the DVC copy's outputs."""
    res = dvc(smoke_dvc, "exp", "run", "-S", "config/config.yaml:generator.steps=4", "report")
    out = res.stdout + res.stderr
    for stage in ("data", "base_model", "zoo"):
        assert f"Stage '{stage}' didn't change, skipping" in out, stage
    for stage in ("eval_speed", "protocol", "crossdomain", "ablations", *(f"ablations_{f}" for f in ABLATION_FAMILIES),
                  "fewshot", "math", "code", "seeds", "zoo_probe", "function_space"):  # not upstream
        assert f"Running stage '{stage}'" not in out, stage
    for stage in ("generators", "generate", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out, stage
    assert "rule train_generator:" in out
    for rule in ("prepare_data", "train_lora", "tokenize_zoo", "encode_prompts"):
        assert f"rule {rule}:" not in out, f"{rule} reran after a generator change"
    shutil.rmtree(smoke_dvc)


def test_missing_data_dir_stops_at_start(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["data"]["dir"] = str(tmp_path / "no-such-dir")
    bad = tmp_path / "cfg.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path), check=False)
    assert res.returncode != 0
    assert "data directory not found" in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["evil`touch pwned`", "it's"])
def test_shell_metacharacters_in_a_dataset_name_never_run(name, tmp_path):
    """A dataset name is never executed: the schema refuses it before any job is planned."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["data"]["custom"][name] = dict(cfg["data"]["custom"]["capitals"])
    cfg["data"]["datasets"].append(name)
    bad = tmp_path / "cfg.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("--cores", "1", "--configfile", str(bad), "-d", str(tmp_path), check=False)
    assert res.returncode != 0
    assert "does not match" in res.stdout + res.stderr
    assert not list(tmp_path.rglob("pwned")) and not (REPO / "pwned").exists()


def test_configfile_profile_is_not_layered_over_the_default(tmp_path):
    """--configfile smoke.yaml takes the schema defaults for what it leaves out, not
    config/config.yaml's deviations (output_offset mean, bf16 encoder), like load_config."""
    from dnd.config import load_config

    res = snakemake("-n", "-p", "--cores", "1", "--configfile", str(REPO / "config" / "smoke.yaml"),
                    "-d", str(tmp_path))
    out = res.stdout + res.stderr
    smoke = load_config(REPO / "config" / "smoke.yaml")
    assert smoke["generator"]["output_offset"] == "none" and smoke["encoder"]["dtype"] == "float32"
    assert '\\"output_offset\\": \\"none\\"' in out or '"output_offset": "none"' in out
    assert '"output_offset": "mean"' not in out and '\\"output_offset\\": \\"mean\\"' not in out
    assert "config: " + str(REPO / "config" / "smoke.yaml") in out
