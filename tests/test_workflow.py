"""The workflow itself: lint, dry-runs of both profiles, DVC <-> Snakemake sync, and the whole
smoke DAG end to end (real tiny model, real encoder, real lm-eval), twice, for determinism."""

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

from dnd.experiments.ablations.report import FAMILIES as ABLATION_FAMILIES

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1", DVC_NO_ANALYTICS="1")
    return env


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


@pytest.mark.parametrize("profile", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_dry_run_plans_whole_dag(profile, tmp_path):
    res = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config" / profile), "-d", str(tmp_path))
    out = res.stdout + res.stderr
    for rule in ("prepare_data", "train_lora", "train_generator", "generate_adapter", "evaluate_target", "report"):
        assert rule in out, rule


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
     f"config: encoder.path 'no/such/model': model directory not found: {REPO / 'no/such/model'} (encoder.kind minilm)"),
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


def test_dvc_stages_match_snakemake_targets():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    targets = {line.split()[0] for line in snakemake("--list-target-rules").stdout.splitlines() if line.strip()}
    # the extra experiments are outside `all`
    summary = snakemake("-n", "--summary", "all", "protocol", "crossdomain", "ablations", "fewshot", "math",
                        "code").stdout.splitlines()
    planned = [line.split("\t")[0] for line in summary[1:] if "\t" in line]
    for name, stage in stages.items():
        assert stage["cmd"] == f"snakemake --cores all {name}", name
        assert name in targets, f"dvc stage {name} has no Snakemake target rule"
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])]
        for out in outs:
            assert any(p == out or p.startswith(out.rstrip("/") + "/") for p in planned), f"{name}: {out} not produced by the DAG"
    for agg in ("zoo", "generators", "generate", "evaluate", "summary", "report", "protocol", "crossdomain",
                "ablations", *(f"ablations_{f}" for f in ABLATION_FAMILIES), "fewshot", "math", "code"):
        assert agg in stages
    # DVC fails on a params key that config/config.yaml does not spell out
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            for key in (k for keys in entry.values() for k in keys) if isinstance(entry, dict) else [entry]:
                node = config
                for part in key.split("."):  # DVC reads a dotted key as a nested one
                    assert isinstance(node, dict) and part in node, f"dvc stage {name}: param {key} is missing from config/config.yaml"
                    node = node[part]


ALL_TARGETS = ("all", "protocol", "crossdomain", "ablations", "fewshot", "math", "code")  # the extra experiments are outside `all`
# committed results written by scripts outside the DAG (scripts/, `dnd check-profile`)
OFF_DAG_RESULTS = {"results/check_profile_paper.json", "results/mathcode_calibration.json", "results/zoo_probe.json",
                   "results/.profile"}


def _summary(res) -> list[str]:
    """The output files of a `snakemake -n --summary` listing."""
    return [line.split("\t")[0] for line in res.stdout.splitlines() if "\t" in line and not line.startswith("output_file\t")]


def _planned_files(dry_run: str) -> set[str]:
    """Every output, log and benchmark file of the jobs in a `snakemake -n` listing."""
    return {f for line in dry_run.splitlines() if (m := re.match(r"^    (?:output|log|benchmark): (.*)$", line))
            for f in m.group(1).split(", ")}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_default_profile_keeps_the_top_level():
    """The default profile (config/config.yaml, given or not) still writes at the top level:
    every committed result of the DAG is a planned output at its committed path."""
    for args in ((), ("--configfile", str(REPO / "config" / "config.yaml"))):
        res = snakemake("-n", "--summary", *ALL_TARGETS, *args)
        assert f"outputs in {REPO}\n" in res.stdout + res.stderr
        planned = _summary(res)
        tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True).stdout.split()
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


def _run_smoke(checkout: Path) -> Path:
    """The smoke profile started in `checkout` as in a checkout (no -d): it runs in runs/smoke/."""
    snakemake("--cores", "2", "--configfile", str(REPO / "config" / "smoke.yaml"), cwd=checkout, timeout=1200)
    return checkout / "runs" / "smoke"


def _smoke_repo(dest: Path) -> None:
    """The working tree (tracked and not-ignored files, no results) as a fresh git repository
    whose config/config.yaml is the smoke config: what `dvc repro` runs on."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True
    )
    if listed.returncode != 0:
        pytest.skip("the project is not a git checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / name
        if src.is_file() and not name.startswith("results/") and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    # DVC reads its params from config/config.yaml and needs every section there: write the
    # smoke config with the schema's defaults filled in
    from dnd.config import load_config

    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(load_config(REPO / "config" / "smoke.yaml")))
    for cmd in (["init", "-q"], ["config", "user.name", "test"], ["config", "user.email", "test@example.com"],
                ["add", "-A"], ["commit", "-q", "-m", "smoke"]):  # fmt: skip
        subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)


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


def _dvc_outs(dvc_yaml: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for st in dvc_yaml["stages"].values() for kind in ("outs", "metrics", "plots") for o in st.get(kind, [])]


@pytest.mark.slow
def test_smoke_dag_end_to_end_deterministic_and_through_dvc(tmp_path):
    """The smoke DAG twice: once with Snakemake (started as in a checkout, so in runs/smoke/),
    once with `dvc repro` in a git copy of the project; then a DVC experiment that changes a
    generator setting reruns only the stages (and Snakemake jobs) downstream of it."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    # the DVC copy (b) runs beside the Snakemake run (a): the two DAGs are independent until
    # their outputs are compared, and their many short jobs leave the cores idle in between
    b.mkdir()
    _smoke_repo(b)
    repro = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=b, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ra = _run_smoke(a)  # the smoke profile's run directory
    except BaseException:
        repro.kill()
        raise
    # the smoke profile wrote nothing outside runs/smoke/ but Snakemake's own run log
    assert {p.name for p in a.iterdir()} == {"runs", ".snakemake"} and os.listdir(a / ".snakemake") == ["log"]
    assert (ra / "results" / ".profile").read_text() == "smoke\n"
    scores = list(csv.DictReader(open(ra / "results" / "scores.csv")))
    assert scores and list(scores[0]) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob"]
    methods = {r["method"] for r in scores}
    assert {"base", "source_lora", "soup", "nearest", "dnd", "control_other", "control_random"} <= methods
    for t in {r["target"] for r in scores}:
        assert len({r["n"] for r in scores if r["target"] == t}) == 1  # same items for every method
    for name in ("report.md", "metrics.json", "efficiency.csv", "data_summary.csv", "eval_speed.csv",
                 "eval_agreement.csv"):
        assert (ra / "results" / name).stat().st_size > 0
    agree = list(csv.DictReader(open(ra / "results" / "eval_agreement.csv")))
    # float32 smoke model: both backends give the same answers and log-likelihoods to rounding
    assert agree and all(float(r["same_choice"]) == 1.0 and float(r["max_abs_ll_diff"]) < 1e-3 for r in agree)
    assert "## Evaluation backend" in (ra / "results" / "report.md").read_text()
    assert len(list((ra / "results" / "figures").glob("*.png"))) >= 7
    # nothing to do on a second invocation
    res = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config" / "smoke.yaml"), cwd=a)
    assert "Nothing to be done" in res.stdout + res.stderr
    # incremental by dataset: adding one plans only its own per-dataset jobs (and the folds,
    # generators and evaluations that now include it), never another dataset's data or LoRA
    grown = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    grown["data"]["custom"]["capitals2"] = dict(grown["data"]["custom"]["capitals"])
    grown["data"]["datasets"].append("capitals2")
    (a / "grown.yaml").write_text(yaml.safe_dump(grown))
    planned = _planned_jobs(snakemake("-n", "--cores", "1", "--configfile", str(a / "grown.yaml"), cwd=a).stdout)
    for rule in ("prepare_data", "train_lora", "tokenize_zoo", "encode_prompts"):
        assert {w for r, w in planned if r == rule} == {"capitals2"}, (rule, planned)
    assert "base_model" not in {r for r, _ in planned}
    # the HTML report renders; a relative --report path is relative to the run directory
    # (scripts/reproduce.sh's `--report results/report.html` lands in the profile's own results/)
    snakemake("--configfile", str(REPO / "config" / "smoke.yaml"), "--report", "results/report.html", cwd=a)
    assert (ra / "results" / "report.html").stat().st_size > 10_000

    # the same DAG through DVC in a git copy: same config + seed -> identical scores
    try:
        out, _ = repro.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        repro.kill()
        raise
    assert repro.returncode == 0, f"dvc repro failed:\n{out[-6000:]}"
    # every stage's outputs come from its own Snakemake target, not from a later stage
    assert "Data and pipelines are up to date" in dvc(b, "status").stdout
    assert (ra / "results" / "scores.csv").read_text() == (b / "results" / "scores.csv").read_text()
    # the protocol experiment (a DVC stage, outside Snakemake's `all`) ran under dvc repro
    pscores = list(csv.DictReader(open(b / "results" / "protocol" / "scores.csv")))
    assert {r["protocol"] for r in pscores} == {"loglik", "greedy", "sampled"}
    assert {"dnd", "dnd_testcond", "source_lora", "control_random"} <= {r["method"] for r in pscores}
    assert "## Protocol" in (b / "results" / "protocol" / "report.md").read_text()
    # so did the cross-domain experiment: every method but the oracle on the new domain
    cscores = list(csv.DictReader(open(b / "results" / "crossdomain" / "scores.csv")))
    assert {r["target"] for r in cscores} == {"colors"}
    assert {"base", "source_lora", "soup", "nearest", "dnd", "control_other"} <= {r["method"] for r in cscores}
    assert {r["adapter"] for r in cscores if r["method"] == "source_lora"} == {"capitals", "sounds", "opposites"}
    assert "## Cross-domain" in (b / "results" / "crossdomain" / "report.md").read_text()
    # and the ablations: every family, its default setting from the default run, the others scored
    for family in ("condition", "sources"):
        arows = list(csv.DictReader(open(b / "results" / "ablations" / f"{family}.csv")))
        assert {r["method"] for r in arows} == {"dnd", "train_avg", "base"}
    assert {r["setting"] for r in csv.DictReader(open(b / "results" / "ablations" / "condition.csv"))} == {
        "prompt", "answer"}
    assert "## Ablations" in (b / "results" / "ablations" / "report.md").read_text()
    # so did the few-shot experiment, on the smoke config's fewshot targets and k
    few = list(csv.DictReader(open(b / "results" / "fewshot.csv")))
    assert few and list(few[0]) == ["target", "method", "k", "n", "acc", "seconds"]
    assert {(r["method"], r["k"]) for r in few if r["target"] == "capitals"} == {
        ("dnd", "0"), ("fewshot_ft", "1"), ("fewshot_ft", "4"), ("icl", "0"), ("icl", "2"), ("icl", "8")}
    assert "## The paper's direction against ours" in (b / "results" / "fewshot" / "report.md").read_text()
    # and the math and code experiments (hand-written items in the authors' format, tests/data/smoke/math_code;
    # HumanEval's tests run by dnd.benchmarks.code_exec): every method on every target, the metric named
    for domain, targets, metric in (("math", {"gsm8k", "math"}, {"exact_match,flexible-extract", "exact_match,boxed"}),
                                    ("code", {"humaneval"}, {"pass@1"})):
        mrows = list(csv.DictReader(open(b / "results" / domain / "scores.csv")))
        assert list(mrows[0]) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob",
                                  "metric"]
        assert {r["target"] for r in mrows} == targets and {r["metric"] for r in mrows} == metric
        assert {"base", "source_lora", "soup", "nearest", "dnd"} <= {r["method"] for r in mrows}
        assert f"## {domain.capitalize()}" in (b / "results" / domain / "report.md").read_text()
    # bit-reproducible: every file DVC hashes is byte-identical between the two runs, made in
    # different directories (no machine path, no wall-clock time inside any of them); the
    # extra experiments ran only in b
    for out in _dvc_outs(yaml.safe_load((REPO / "dvc.yaml").read_text())):
        if out.startswith(("results/protocol", "results/crossdomain", "results/ablations", "results/fewshot",
                           "results/math", "results/code")):
            continue
        files = sorted(p.relative_to(ra) for p in (ra / out).rglob("*") if p.is_file()) if (ra / out).is_dir() else [Path(out)]
        assert files, out
        for f in files:
            if f.name == ".snakemake_timestamp":
                continue
            assert (ra / f).read_bytes() == (b / f).read_bytes(), f"{f} differs between two runs of the same config"
    linked = next((b / "results" / "generators").rglob("generator_*.pt"))
    assert os.stat(linked).st_nlink == 2  # in the DVC cache as a hardlink: nothing copied
    # DVC linking its cached outputs (.dvcignore) must not make Snakemake think they are new
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=b, env=_env(),
                         capture_output=True, text=True)  # fmt: skip
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads(dvc(b, "metrics", "show", "--json").stdout)
    assert "dnd_mean" in json.dumps(metrics)

    # a generator setting changes: only generators -> generate -> evaluate -> report rerun
    res = dvc(b, "exp", "run", "-S", "config/config.yaml:generator.steps=4", "report")
    out = res.stdout + res.stderr
    for stage in ("data", "base_model", "zoo"):
        assert f"Stage '{stage}' didn't change, skipping" in out, stage
    for stage in ("eval_speed", "protocol", "crossdomain", "ablations", *(f"ablations_{f}" for f in ABLATION_FAMILIES),
                  "fewshot", "math", "code"):  # not upstream
        assert f"Running stage '{stage}'" not in out, stage
    for stage in ("generators", "generate", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out, stage
    assert "rule train_generator:" in out
    for rule in ("prepare_data", "train_lora", "tokenize_zoo", "encode_prompts"):
        assert f"rule {rule}:" not in out, f"{rule} reran after a generator change"
    shutil.rmtree(b)


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

    res = snakemake("-n", "-p", "--cores", "1", "--configfile", str(REPO / "config" / "smoke.yaml"), "-d", str(tmp_path))
    out = res.stdout + res.stderr
    smoke = load_config(REPO / "config" / "smoke.yaml")
    assert smoke["generator"]["output_offset"] == "none" and smoke["encoder"]["dtype"] == "float32"
    assert '\\"output_offset\\": \\"none\\"' in out or '"output_offset": "none"' in out
    assert '"output_offset": "mean"' not in out and '\\"output_offset\\": \\"mean\\"' not in out
    assert "config: " + str(REPO / "config" / "smoke.yaml") in out
