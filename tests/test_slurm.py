"""The SLURM profile (workflow/profiles/slurm): every job of the paper profile's DAG, the rules made
with `use rule` included, gets the memory check-profile estimates and a GPU only where its program
uses one (dry-run, fast); and (marked slow) a slice of the smoke DAG run through a real one-node
SLURM cluster (scripts/local_slurm.sh) gives the same bytes as a local run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from dnd.check_profile import SLURM_PROFILE, workflow_rules
from dnd.config import OUTSIDE_RUN
from dnd.experiments.ablations.report import FAMILIES as ABLATION_FAMILIES
from test_workflow import _env, snakemake

PAPER = REPO / "config" / "paper.yaml"
SMOKE = REPO / "config" / "smoke.yaml"
CHECK = REPO / "results" / "check_profile_paper.json"  # `dnd check-profile --config config/paper.yaml`
SCRIPT = REPO / "scripts" / "local_slurm.sh"


def _job_resources(dry_run: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of each job of a `snakemake -n` listing that has outputs (aggregate targets
    such as `all` have none and run nowhere)."""
    jobs: list[tuple[str, dict[str, str]]] = []
    outputs: list[bool] = []
    for line in dry_run.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append((m[1], {}))
            outputs.append(False)
        elif jobs and line.startswith("    output: "):
            outputs[-1] = True
        elif jobs and (m := re.match(r"^    resources: (.*)$", line)):
            jobs[-1][1].update(kv.split("=", 1) for kv in m[1].split(", "))
    return [job for job, has_outputs in zip(jobs, outputs) if has_outputs]


@pytest.fixture(scope="module")
def paper_slurm_jobs(tmp_path_factory) -> list[tuple[str, dict[str, str]]]:
    """Every job of the paper profile's DAG and extra experiments planned with the SLURM profile (the
    executor plugin must be installed for Snakemake to accept `executor: slurm`)."""
    res = snakemake("--workflow-profile", str(SLURM_PROFILE.parent), "-n", "--configfile", str(PAPER),
                    "-d", str(tmp_path_factory.mktemp("paper_slurm")), "all", "eval_speed", *OUTSIDE_RUN)
    return _job_resources(res.stdout)


def test_every_slurm_job_gets_its_estimate_and_a_gpu_only_if_it_uses_one(paper_slurm_jobs):
    estimates = {r["rule"]: r for r in json.loads(CHECK.read_text())["slurm"]["rules"]}
    rules = {rule for rule, _ in paper_slurm_jobs}
    # the rules made with `use rule` are planned, and check-profile's table has every planned rule
    assert {"protocol_train_lora", "mathcode_train_generator", "crossdomain_encode_prompts", "seeds_evaluate",
            "ablation_generate_adapter"} <= rules
    assert rules <= set(estimates), f"rules missing from {CHECK.name}: {rules - set(estimates)}"
    for rule, res in paper_slurm_jobs:
        row = estimates[rule]
        assert int(res["mem_mb"]) == row["mem_mb"] and int(res["runtime"]) == row["runtime_min"], rule
        if row["estimate_mb"] is not None:
            assert int(res["mem_mb"]) >= row["estimate_mb"], f"{rule}: mem_mb {res['mem_mb']} < {row['estimate_mb']}"
        gpus = int(res.get("gpu", 0))
        assert gpus == (1 if row["uses_gpu"] else 0), f"{rule}: {gpus} GPUs"
        assert res["slurm_partition"] == ("gpu" if gpus else "cpu"), rule
    used = {rule for rule, res in paper_slurm_jobs if int(res.get("gpu", 0))}
    assert {"train_lora", "protocol_train_lora", "mathcode_train_lora", "seeds_train_lora", "fewshot_train",
            "encode_prompts", "train_generator", "generate_target", "evaluate_target", "evaluate_protocol"} <= used
    assert not used & {"prepare_data", "base_model", "tokenize_zoo", "summarize", "report"}
    # each rule made from an estimated one is named in the profile (set-resources do not pass to it)
    sets = yaml.safe_load(SLURM_PROFILE.read_text())["set-resources"]
    for row in estimates.values():
        if row["estimate_of"]:
            assert row["rule"] in sets, f"{row['rule']} ({row['estimate_of']}'s program) is not in set-resources"


def test_committed_check_profile_matches_the_profile():
    """results/check_profile_paper.json is check-profile's output for the profile as it is now."""
    prof = yaml.safe_load(SLURM_PROFILE.read_text())
    rows = {r["rule"]: r for r in json.loads(CHECK.read_text())["slurm"]["rules"]}
    for rule, res in prof["set-resources"].items():
        row = rows[rule]
        assert res.get("mem_mb", row["mem_mb"]) == row["mem_mb"], rule  # a key the profile leaves out: the rule's
        assert res.get("runtime", row["runtime_min"]) == row["runtime_min"], rule
        assert int(res.get("gpu", 0)) == row["gpus"] and res.get("slurm_partition", "cpu") == row["partition"], rule


def test_rule_parser_sees_every_rule_snakemake_has(tmp_path):
    """check-profile reads the rule files itself: it finds every rule Snakemake lists but the aggregate
    targets outside workflow/rules/*.smk's `rule NAME:` lines (`all` in the Snakefile, the ablation
    families' targets made in a loop), and the GPU rules are those that pass the job's device to their
    command (dnd.device), what is made from them included: the LLM and generator stages, not the data,
    tokenization, summary and report rules."""
    res = snakemake("--list-rules", "--configfile", str(SMOKE), "-d", str(tmp_path))
    listed = {m[1] for line in res.stdout.splitlines() if (m := re.match(r"^(\w+)(?: \(|$)", line))}
    parsed = workflow_rules()
    assert listed - set(parsed) == {"all", *(f"ablations_{f}" for f in ABLATION_FAMILIES)}
    assert set(parsed) <= listed
    gpu = {name for name, r in parsed.items() if r["device"] and r["job"]}
    assert {"train_lora", "seeds_train_lora", "fewshot_train", "encode_prompts", "train_generator", "generate_target",
            "evaluate_target", "evaluate_protocol", "mathcode_evaluate", "compare_backends"} <= gpu
    assert not gpu & {"prepare_data", "base_model", "tokenize_zoo", "summarize", "report", "protocol_tasks"}
    for name, r in parsed.items():  # exactly the rules whose command takes the device
        cmd = r["command"]
        if r["job"] and cmd in ("train-lora", "encode", "train-generator", "generate", "generate-batch", "evaluate"):
            assert name in gpu, name


# ----------------------------------------------------------------------------- a real cluster

SLICE = ["results/zoo/capitals/final", "results/encoded/capitals/train.pt"]  # data, base model, LoRA, encoding
WALL_CLOCK = ("benchmarks/", "logs/", "results/timings/", ".snakemake/")  # run times, nothing else differs


def _installed() -> str | None:
    """Why the daemons cannot be had, or None (installs Debian's slurm-wlm and munge when missing)."""
    if all(shutil.which(x) or Path(f"/usr/sbin/{x}").exists() for x in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurmctld/slurmd/munged are not installed and cannot be (needs root and apt-get)"
    res = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"],
                         capture_output=True, text=True, timeout=900)
    return None if res.returncode == 0 else f"apt-get install slurm-wlm munge failed: {res.stderr.strip()[-300:]}"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith(WALL_CLOCK)}


@pytest.mark.slow
def test_smoke_slice_through_a_local_slurm_cluster_matches_a_local_run(tmp_path):
    """Data preparation, the base model, one LoRA and one encoding of the smoke profile, run by
    `snakemake --executor slurm` with the repository's SLURM profile on a one-node cluster started
    here, then locally: the same files, byte for byte (wall-clock logs and timings apart). The LoRA job
    ran on the "gpu" partition with the profile's GPU, CPUs and memory, and so did the encoding; the
    node's GPUs are counts only, so the GPU jobs take DND_GPU_DEVICE=auto (the CPU here) instead of
    stopping on a missing CUDA device."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster's daemons run as root")
    if why := _installed():
        pytest.skip(why)
    env = {**_env(), "DND_SLURM_DIR": str(tmp_path / "cluster"), "PYTHONPATH": str(REPO / "src"),
           "DND_GPU_DEVICE": "auto"}
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    if start.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start: {(start.stdout + start.stderr).strip()[-400:]}")
    env["SLURM_CONF"] = str(tmp_path / "cluster" / "slurm.conf")
    try:
        cluster, local = tmp_path / "slurm", tmp_path / "local"
        sm = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--configfile", str(SMOKE)]
        runs = [
            [*sm, "--workflow-profile", str(SLURM_PROFILE.parent), "--slurm-status-command", "squeue",
             "--slurm-init-seconds-before-status-checks", "5", "-d", str(cluster), *SLICE],
            [*sm, "--cores", "2", "-d", str(local), *SLICE],
        ]
        for cmd in runs:
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"{' '.join(cmd[3:])} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        # what SLURM ran: rule (sbatch --comment), partition, CPUs, memory of every job
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-O", "Comment:|,Partition:|,NumCPUs:|,MinMemory:|,"
                                "tres-per-job:"], env=env, capture_output=True, text=True, check=True).stdout.split()
        jobs = {re.sub(r"_wildcards_.*", "", k).removeprefix("rule_"): (p, int(c), m, g)
                for k, p, c, m, g in (line.split("|") for line in queue)}
        assert jobs["train_lora"] == ("gpu", 8, "32000M", "gres:gpu:1")
        assert jobs["encode_prompts"] == ("gpu", 4, "16000M", "gres:gpu:1")
        assert jobs["base_model"] == ("cpu", 2, "16000M", "N/A") and jobs["prepare_data"][3] == "N/A"
        assert set(jobs) == {"prepare_data", "base_model", "train_lora", "encode_prompts"}
        a, b = _files(cluster), _files(local)
        assert a.keys() == b.keys() and "results/zoo/capitals/final/adapter_model.safetensors" in a
        assert [f for f in a if a[f] != b[f]] == []
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
