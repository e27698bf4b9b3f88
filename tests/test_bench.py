"""dnd.bench: per-stage figures from Snakemake benchmark files, against earlier figures."""

import csv
import json
import subprocess
import sys

import pytest

from dnd.bench import bench_rows, committed_text, current_wall, read_previous

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, seconds, rss=100.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{seconds}\n")


def _tree(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "train_lora" / "arc.tsv", 10.0, rss=900)
    _bench(b / "train_lora" / "piqa.tsv", 30.0, rss=1200)
    _bench(b / "generate" / "arc.tsv", 2.5)
    _bench(b / "report.tsv", 4.0)
    _bench(b / "protocol" / "train_lora" / "x.tsv", 999.0)  # an extra experiment: not the default run
    _bench(b / "bench.tsv", 1.0)  # the benchmark's own job
    return b


def test_stages_sum_their_jobs_and_leave_out_other_experiments(tmp_path):
    rows = {r["stage"]: r for r in bench_rows(_tree(tmp_path), {})}
    assert set(rows) == {"train_lora", "generate", "report", "total"}
    assert rows["train_lora"]["jobs"] == 2 and rows["train_lora"]["job_s_total"] == 40.0
    assert rows["train_lora"]["job_s_median"] == 20.0 and rows["train_lora"]["job_s_max"] == 30.0
    assert rows["train_lora"]["max_rss_mb"] == 1200
    assert rows["total"]["jobs"] == 4 and rows["total"]["job_s_total"] == 46.5
    assert all(r["ratio_to_previous"] == "" for r in rows.values())


def test_ratio_to_previous_figures_and_the_wall_clock(tmp_path):
    prev = read_previous("stage,jobs,job_s_total,source\ntrain_lora,2,80,run A\nrun,,200,run A\n", "prev.csv")
    rows = {r["stage"]: r for r in bench_rows(_tree(tmp_path), prev, wall={"seconds": 100})}
    assert rows["train_lora"]["ratio_to_previous"] == 0.5 and rows["train_lora"]["previous_source"] == "run A"
    assert rows["run"]["job_s_total"] == 100.0 and rows["run"]["ratio_to_previous"] == 0.5
    assert rows["generate"]["ratio_to_previous"] == ""


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="no Snakemake benchmark files under"):
        bench_rows(tmp_path / "nothing", {})
    with pytest.raises(ValueError, match="old.csv: not a bench CSV"):
        read_previous("a,b\n1,2\n", "old.csv")


def test_committed_figures_come_from_git(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.csv").write_text("stage,job_s_total\ntrain_lora,80\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "figures")
    (tmp_path / "results" / "bench.csv").write_text("changed, not committed\n")
    monkeypatch.chdir(tmp_path)
    assert read_previous(committed_text("HEAD:results/bench.csv"), "HEAD") == {"train_lora": (80.0, "HEAD")}
    assert committed_text("HEAD:results/missing.csv") is None


def test_a_stale_wall_clock_is_left_out(tmp_path):
    import os

    b = _tree(tmp_path)
    wall = tmp_path / "run.json"
    wall.write_text(json.dumps({"seconds": 100}))
    assert current_wall(wall, b) == {"seconds": 100}
    os.utime(wall, (1, 1))  # written before the jobs ran: an earlier run's
    assert current_wall(wall, b) is None
    assert current_wall(tmp_path / "missing.json", b) is None


def test_command_writes_the_csv(tmp_path):
    b = _tree(tmp_path)
    wall = tmp_path / "run.json"
    wall.write_text(json.dumps({"started": 0, "finished": 100, "seconds": 100}))
    out = tmp_path / "bench.csv"
    done = subprocess.run([sys.executable, "-m", "dnd.cli", "bench", "--benchmarks", str(b), "--wall", str(wall),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["stage"] for r in rows] == ["train_lora", "report", "generate", "total", "run"]


def test_the_baseline_stands_in_until_figures_are_committed(tmp_path):
    b = _tree(tmp_path)
    base = tmp_path / "baseline.csv"
    base.write_text("stage,jobs,job_s_total,source\ntrain_lora,7,80,issue 28\n")
    out = tmp_path / "bench.csv"
    done = subprocess.run([sys.executable, "-m", "dnd.cli", "bench", "--benchmarks", str(b), "--previous-git",
                           "HEAD:no/such/file.csv", "--baseline", str(base), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {r["stage"]: r for r in csv.DictReader(out.open())}
    assert rows["train_lora"]["ratio_to_previous"] == "0.5" and rows["train_lora"]["previous_source"] == "issue 28"
