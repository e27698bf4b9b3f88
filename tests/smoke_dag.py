"""The smoke DAG run end to end, twice, for the slow tests (tests/test_workflow.py): the smoke
profile with Snakemake, started as in a checkout (so in a/runs/smoke/), and `dvc repro` in a git copy
of the project (b). Both start in the background as soon as a test session that needs them begins
(conftest.py's `smoke_dirs`): they are independent of every other test, and their many short jobs
leave the cores idle in between, so they run beside the fast tests instead of after them. A test
waits for the run it reads (`SmokeRun.result`); a run that failed errors every test that needs it
with its name and its log's tail (the whole log is under the fixture's directory)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"
#: the fixture that reads each smoke run: a session whose tests use it starts that run at once
SMOKE_FIXTURES = {"smoke_run": "snakemake", "smoke_dvc": "dvc"}


def env() -> dict[str, str]:
    """The environment of every Snakemake and DVC process the tests start: the test's own Python
    first on PATH, offline, no progress bars, no analytics."""
    out = dict(os.environ)
    out["PATH"] = str(Path(sys.executable).parent) + os.pathsep + out.get("PATH", "")
    out.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1", DVC_NO_ANALYTICS="1")
    return out


def tail(log: Path, n: int = 6000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def step_failed(step: str, detail: str) -> None:
    pytest.fail(f"smoke fixture: step {step!r} failed\n{detail}", pytrace=False)


@dataclass
class SmokeRun:
    """One background command with its output in `log`, in its own process group (stopped as one)."""
    step: str
    cmd: list[str]
    cwd: Path
    log: Path
    timeout: float
    proc: subprocess.Popen | None = None
    started: float = 0.0

    def start(self) -> None:
        if self.proc is not None:
            return
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=env(), stdout=fh, stderr=subprocess.STDOUT,
                                         text=True, start_new_session=True)
        self.started = time.monotonic()

    def result(self) -> None:
        """Waits for the command (started now if it was not); fails the calling test if it failed."""
        self.start()
        try:
            self.proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            step_failed(self.step, f"timed out after {self.timeout:.0f} s; {self.log} ends:\n{tail(self.log)}")
        if self.proc.returncode != 0:
            step_failed(self.step, f"exit status {self.proc.returncode}; {self.log} ends:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class SmokeDirs:
    root: Path  # the fixture's directory: the logs, the grown config
    a: Path  # where Snakemake is started (as in a checkout); the run lies in a/runs/smoke
    b: Path  # the git copy of the project that `dvc repro` runs in
    runs: dict[str, SmokeRun] = field(default_factory=dict)

    @classmethod
    def make(cls, root: Path) -> SmokeDirs:
        dirs = cls(root, root / "a", root / "b")
        dirs.a.mkdir()
        dirs.b.mkdir()
        smoke_repo(dirs.b)
        dirs.runs = {
            "snakemake": SmokeRun("snakemake --configfile config/smoke.yaml (run in a checkout)",
                                  [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                                   "--cores", "2", "--configfile", str(SMOKE)],
                                  dirs.a, root / "snakemake_smoke.log", timeout=1800),
            "dvc": SmokeRun("dvc repro (git copy, smoke config)", [str(Path(sys.executable).parent / "dvc"), "repro"],
                            dirs.b, root / "dvc_repro.log", timeout=2400),
        }
        return dirs

    def stop(self) -> None:
        for run in self.runs.values():
            run.stop()


def smoke_repo(dest: Path) -> None:
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

    (dest / "config" / "config.yaml").write_text(yaml.safe_dump(load_config(SMOKE)))
    for cmd in (["init", "-q"], ["config", "user.name", "test"], ["config", "user.email", "test@example.com"],
                ["add", "-A"], ["commit", "-q", "-m", "smoke"]):  # fmt: skip
        subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)
