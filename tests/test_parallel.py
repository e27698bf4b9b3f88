"""Data-parallel generator training (dnd.parallel, issue 31) on the CPU: two gloo processes,
started here the way a launcher starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in
the environment; accelerate's PartialState opens the process group), on test_generators' tiny
fold. Two processes train the one-process generator (<= 1e-6), a process killed mid-run resumes
under two processes bitwise as the uninterrupted two-process run (and under one process, and
back), and a NaN on one process stops both at the same step with the same one-line error."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dnd.generators as training
import dnd.parallel as parallel
from dnd.cli import describe_failure
from dnd.io import load_torch
from dnd.parallel import Ranks, launch_prefix
from dnd.zoo import NonFiniteError
from test_generators import SOURCES, TARGET, make_work, params

TOLERANCE = 1e-6
TIMEOUT_S = 60.0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_work(tmp_path_factory.mktemp("dnd"))


def fold(work: Path, out: Path) -> tuple:
    """The positional arguments of train_generator for the tiny fold, output `out`."""
    return (TARGET, SOURCES, [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
            [work / f"results/encoded/{d}/train.pt" for d in SOURCES], work / "results/zoo/alpha/final",
            out, out.with_suffix(".csv"))  # fmt: skip


def sft_kwargs(work: Path, base: Path | None) -> dict:
    if base is None:
        return {}
    return {"train_data": [work / f"results/data/{d}/train.jsonl" for d in SOURCES], "base_model": base}


def _rank_main(rank: int, world: int, port: int, job: dict) -> None:
    """One process of a data-parallel run: the launcher's environment, then train_generator.
    job: work, out, generator (params), base (sft), and a fault: {"kill": step} (this process
    exits abruptly in the forward pass of 1-based step `step`) or {"nan": step} (its loss is
    NaN there), on rank job["fault_rank"]; job["bucket"]: gradient elements per all-reduce;
    job["record_gradient"]: write grad-<r>.pt, the summed gradient of the first step. Writes
    rank-<r>.json (the one-line error if any, the peak RSS) and rank-<r>.pt (the parameters it
    returned)."""
    entered = time.time()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    work, out = Path(job["work"]), Path(job["out"])
    fault = job.get("fault", {})
    if fault and rank == job["fault_rank"]:
        real, calls = training.weighted_mse, [0]

        def faulty(pred, target, weights):
            calls[0] += 1
            if calls[0] == fault.get("kill"):
                os._exit(3)  # no exception, no cleanup: a killed process
            loss = real(pred, target, weights)
            return loss * float("nan") if calls[0] == fault.get("nan") else loss

        training.weighted_mse = faulty
    if job.get("bucket"):  # gradients summed in several all-reduces
        parallel.BUCKET_ELEMENTS = job["bucket"]
    if job.get("record_gradient"):
        record_first_gradient(out.parent / f"grad-{rank}.pt")
    p = {**params(**job["generator"]), "prompt": {"format": "cloze"}}
    report: dict = {}
    try:
        ckpt = training.train_generator(p, *fold(work, out), **sft_kwargs(work, job.get("base")))
        torch.save(ckpt["model"], out.parent / f"rank-{rank}.pt")
    except Exception as exc:  # noqa: BLE001 - the error line is what the test checks
        report["error"] = describe_failure(exc)
        report["error_type"] = type(exc).__name__
    report["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report["entered"], report["left"] = entered, time.time()
    (out.parent / f"rank-{rank}.json").write_text(json.dumps(report))
    os._exit(0)  # skip the interpreter's teardown (seconds on a busy machine); everything is written


def record_first_gradient(path: Path) -> None:
    """Save the gradient the trainer clips at its first step (after the sum over processes)."""
    real = torch.nn.utils.clip_grad_norm_

    def clip(parameters, *args, **kwargs):
        parameters = list(parameters)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save([p.grad.clone() for p in parameters], path)
        return real(parameters, *args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(job: dict, world: int = 2) -> tuple[list[int], list[dict], float]:
    """Run `world` processes of `job`; (exit codes, rank reports, seconds). Fails the test if they
    do not all end within TIMEOUT_S (a hang), after killing them."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, job)) for r in range(world)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(max(TIMEOUT_S - (time.monotonic() - started), 0.1))
    seconds = time.monotonic() - started
    hung = [r for r, proc in enumerate(procs) if proc.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join()
    assert not hung, f"processes {hung} still running after {TIMEOUT_S} s"
    out = Path(job["out"]).parent
    reports = [json.loads(p.read_text()) if (p := out / f"rank-{r}.json").exists() else {} for r in range(world)]
    return [proc.exitcode for proc in procs], reports, seconds


def one_process(work: Path, out: Path, generator: dict, base: Path | None = None) -> dict:
    return training.train_generator({**params(**generator), "prompt": {"format": "cloze"}}, *fold(work, out),
                                    **sft_kwargs(work, base))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def live_diff(a: dict, b: dict) -> float:
    """max_diff over the parameters but the decoder's dead bias (DEAD)."""
    return max_diff({k: v for k, v in a.items() if k != DEAD}, {k: v for k, v in b.items() if k != DEAD})


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- units


def test_shares_cover_the_batch_in_item_order() -> None:
    for world in (1, 2, 3, 5):
        parts = [Ranks(r, world).share(7) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == 7 and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert all(hi > lo for lo, hi in parts)


@pytest.mark.parametrize("pairing", ["random", "fixed"])
def test_a_part_of_the_batch_is_the_rows_of_the_whole(pairing: str) -> None:
    """What a process draws for its pairs is the rows of the single-process batch: the prompts
    and targets bitwise, the noise up to the rounding of adding it (a different split of the
    vectorized loop)."""
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randn(3, 5, 4, 6, generator=g), torch.randn(2, 5, 4, 6, generator=g)]
    conds = [torch.randn(9, 3, 8, generator=g).half(), torch.randn(2, 3, 8, generator=g).half()]
    sampler = training.PairSampler(tokens, conds, n_prompts=4, batch_size=5, seed=11, pairing=pairing)
    for step in (0, 3):
        whole = sampler.batch(step)
        noisy = sampler.batch(step, 1e-2, 1e-3)
        assert whole[0].dtype == torch.float32
        for lo, hi in ((0, 2), (2, 5), (4, 5)):
            part = sampler.batch(step, part=(lo, hi))
            assert torch.equal(part[0], whole[0][lo:hi]) and torch.equal(part[1], whole[1][lo:hi])
            part = sampler.batch(step, 1e-2, 1e-3, part=(lo, hi))
            for got, expected in zip(part, noisy):
                torch.testing.assert_close(got, expected[lo:hi], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="not a non-empty part"):
        sampler.batch(0, part=(3, 3))


def batch_before(sampler: training.PairSampler, step: int, noise_condition: float, noise_target: float):
    """PairSampler.batch as it was before data parallelism (float32 pools, the whole batch)."""
    from dnd.schedule import derive_seed, draw_indices

    pools = [c.float() for c in sampler.conditions]
    g = torch.Generator().manual_seed(derive_seed(sampler.seed, "step", step))
    cond = torch.empty(sampler.batch_size, sampler.n_prompts, *pools[0].shape[1:])
    target = torch.empty(sampler.batch_size, *sampler.tokens[0].shape[1:])
    for j, item in enumerate(sampler.order.batch(step, sampler.batch_size)):
        d, k = sampler.items[item]
        draw = g if sampler.pairing == "random" else torch.Generator().manual_seed(
            derive_seed(sampler.seed, "pair", d, k))
        torch.index_select(pools[d], 0, draw_indices(pools[d].shape[0], sampler.n_prompts, draw), out=cond[j])
        target[j].copy_(sampler.tokens[d][k])
    if noise_condition > 0:
        cond.add_(torch.randn(cond.shape, generator=g), alpha=noise_condition)
    if noise_target > 0:
        target.add_(torch.randn(target.shape, generator=g), alpha=noise_target)
    return cond, target


@pytest.mark.parametrize("pairing", ["random", "fixed"])
def test_the_one_process_batch_is_the_batch_before(pairing: str) -> None:
    """The default run's draws did not move: the whole batch from float16 pools is bitwise the
    batch of the sampler before data parallelism (float32 copies of the pools)."""
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randn(3, 5, 4, 6, generator=g), torch.randn(4, 5, 4, 6, generator=g)]
    conds = [torch.randn(9, 3, 8, generator=g).half(), torch.randn(3, 3, 8, generator=g).half()]
    sampler = training.PairSampler(tokens, conds, n_prompts=4, batch_size=3, seed=5, pairing=pairing)
    for step in range(5):
        for noise in ((0.0, 0.0), (1e-2, 1e-3)):
            got, expected = sampler.batch(step, *noise), batch_before(sampler, step, *noise)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_conditions_stay_float16_and_mapped(work: Path) -> None:
    """The encoded prompts are read memory-mapped in their float16 (not copied to float32): the
    pools the sampler draws from are the file's pages, shared by every process that maps them."""
    states = training._load_sources(SOURCES, [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
                                    [work / f"results/encoded/{d}/train.pt" for d in SOURCES],
                                    params()["generator"], params()["encoder"])[2]
    assert all(s.dtype == torch.float16 for s in states)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the files are mapped into this process while the states live
        mapped = maps.read_text()
        assert all(str(work / f"results/encoded/{d}/train.pt") in mapped for d in SOURCES)
    del states


# ----------------------------------------------------------------------------- two processes

# AdamW turns the rounding differences of the summed gradient (1e-9 to 1e-7 here: the first step's
# gradients are compared below) into parameter differences of about lr x their relative size on the
# parameters with tiny gradients: 1 to 3e-6 after a few steps at the default lr 1e-3, 3e-7 at 1e-4.
# The parameter comparisons across process counts therefore train at lr 1e-4 (the parameters still
# move by about 1e-4, a hundred times the tolerance).
SMALL_LR = 1e-4
#: The hyper-convolutional decoder's first channel bias is dead: the next layer's LayerNorm over
#: (H, W) removes a per-channel constant, so its gradient is zero but for rounding, which AdamW
#: normalizes into steps of up to lr. It drifts by rounding noise in any run (one process with 1
#: or 2 threads: 3e-4 apart at lr 1e-3) and is compared to the loss it does not change.
DEAD = "layers.0.channel.bias"
# Tests of more than 20 s here (a two-process run costs about 10 s on 2 busy cores, mostly
# starting the processes) are marked slow: the kill-and-resume and cross-count resumes, the
# sft objective across processes.


@pytest.mark.parametrize("case", ["hyperconv-noise", pytest.param("t2l-both", marks=pytest.mark.slow)])
def test_two_processes_train_the_one_process_generator(work: Path, tmp_path: Path, tiny_model_dir: Path,
                                                       case: str, monkeypatch) -> None:
    """(a) Two gloo processes, each with its share of every batch (a batch of 3 splits 1 + 2),
    sum the one-process gradient (first step, within 1e-6), end with the one-process parameters
    (within 1e-6; for the decoder, all but its dead bias) and log its losses; both processes hold
    the same parameters, rank 0 alone writes the outputs."""
    if case == "hyperconv-noise":
        generator, base = {"batch_size": 3, "noise_condition": 0.05, "noise_target": 0.01}, None
    else:
        generator, base = {"design": "t2l", "t2l_hidden": 16, "t2l_embed": 8, "batch_size": 3, "objective": "both",
                           "sft_items": 2, "sft_weight": 0.5, "steps": 4}, tiny_model_dir
    generator["lr"] = SMALL_LR
    record_first_gradient(tmp_path / "one/grad.pt")
    single = one_process(work, tmp_path / "one/generator.pt", generator, base)
    monkeypatch.undo()
    out = tmp_path / "two/generator.pt"
    codes, reports, seconds = run_ranks({"work": str(work), "out": str(out), "generator": generator,
                                         "base": str(base) if base else None, "record_gradient": True,
                                         "bucket": 5000})
    assert codes == [0, 0] and not any("error" in r for r in reports), reports

    grads = [torch.load(p, weights_only=True) for p in (tmp_path / "one/grad.pt", out.parent / "grad-0.pt",
                                                        out.parent / "grad-1.pt")]
    assert all(torch.equal(a, b) for a, b in zip(grads[1], grads[2]))  # the same summed gradient on both
    assert max(float((a - b).abs().max()) for a, b in zip(grads[0], grads[1])) <= TOLERANCE
    ranks = [torch.load(out.parent / f"rank-{r}.pt", weights_only=True) for r in range(2)]
    assert_equal(ranks[0], ranks[1])  # the processes stay in step without a broadcast
    written = load_torch(out, "generator")
    assert_equal(written["model"], ranks[0])
    assert live_diff(single["model"], written["model"]) <= TOLERANCE
    if DEAD in single["model"]:
        names = [n for n, _ in training.build_generator(
            training.section("generator", params(**generator)["generator"]), (4, 16, 384), (40, 10, 34),
            [torch.zeros(1, 40, 10, 34)]).named_parameters()]  # fmt: skip
        assert float(grads[0][names.index(DEAD)].abs().max()) < 1e-8  # dead: rounding only
    if case == "hyperconv-noise":  # the tolerance has teeth: the noise moves the parameters past it
        quiet = one_process(work, tmp_path / "quiet/generator.pt", {**generator, "noise_condition": 0.0})
        assert max_diff(quiet["model"], single["model"]) > 100 * TOLERANCE

    one_log = (tmp_path / "one/generator.csv").read_text().splitlines()
    two_log = (tmp_path / "two/generator.csv").read_text().splitlines()
    assert one_log[0] == two_log[0] and len(one_log) == len(two_log) == generator.get("steps", 6) + 1
    for a, b in zip(one_log[1:], two_log[1:]):  # the logged losses are the global batch's
        for x, y in zip(a.split(","), b.split(",")):
            assert float(x) == pytest.approx(float(y), rel=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["generator.csv", "generator.pt"] + [f"{k}-{r}.{e}" for k, e in (("rank", "json"), ("rank", "pt"),
                                                                       ("grad", "pt")) for r in range(2)])
    print(f"{case}: 2 processes in {seconds:.1f} s, peak RSS per process "
          f"{[round(r['max_rss_kb'] / 1024) for r in reports]} MiB")


RESUMED = {"steps": 8, "save_every": 4, "lr": SMALL_LR}


@pytest.fixture(scope="module")
def uninterrupted(work: Path, tmp_path_factory) -> Path:
    """The generator of an uninterrupted two-process run of RESUMED."""
    out = tmp_path_factory.mktemp("full") / "generator.pt"
    codes, reports, _ = run_ranks({"work": str(work), "out": str(out), "generator": RESUMED})
    assert codes == [0, 0], reports
    return out


@pytest.fixture(scope="module")
def killed(work: Path, tmp_path_factory) -> bytes:
    """The resume file a two-process run of RESUMED leaves when process 1 is killed in step 5."""
    out = tmp_path_factory.mktemp("killed") / "generator.pt"
    job = {"work": str(work), "out": str(out), "generator": RESUMED, "fault": {"kill": 5}, "fault_rank": 1}
    codes, reports, _ = run_ranks(job)
    assert codes[1] == 3 and "error" in reports[0], (codes, reports)  # process 0 failed, did not hang
    assert load_torch(training.resume_path(out), "resume")["step"] == 4 and not out.exists()
    return training.resume_path(out).read_bytes()


@pytest.mark.slow  # three two-process runs: 30 s on 2 busy cores
def test_kill_and_resume_under_two_processes_is_bitwise(work: Path, tmp_path: Path, uninterrupted: Path,
                                                       killed: bytes) -> None:
    """(b) Process 1 killed in step 5 (the last resume point: step 4; process 0 fails instead of
    hanging); the rerun under two processes writes bitwise the uninterrupted run's generator and log."""
    out = tmp_path / "generator.pt"
    training.resume_path(out).write_bytes(killed)
    codes, reports, _ = run_ranks({"work": str(work), "out": str(out), "generator": RESUMED})
    assert codes == [0, 0], reports
    assert out.read_bytes() == uninterrupted.read_bytes()
    assert out.with_suffix(".csv").read_text() == uninterrupted.with_suffix(".csv").read_text()
    assert not training.resume_path(out).exists()


@pytest.mark.slow  # two or four two-process runs
def test_resume_across_process_counts(work: Path, tmp_path: Path, uninterrupted: Path, killed: bytes) -> None:
    """The two-process resume point continued by one process, and a one-process resume point
    continued by two, end within 1e-6 of the one-process run, as the two-process run does (the
    decoder's dead bias aside)."""
    single = one_process(work, tmp_path / "single/generator.pt", RESUMED)["model"]
    assert live_diff(load_torch(uninterrupted, "generator")["model"], single) <= TOLERANCE
    down = tmp_path / "down/generator.pt"
    down.parent.mkdir()
    training.resume_path(down).write_bytes(killed)
    assert live_diff(one_process(work, down, RESUMED)["model"], single) <= TOLERANCE

    up = tmp_path / "up/generator.pt"
    real, calls = training.weighted_mse, [0]

    def interrupt(*args):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(*args)

    training.weighted_mse = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            one_process(work, up, RESUMED)
    finally:
        training.weighted_mse = real
    assert load_torch(training.resume_path(up), "resume")["step"] == 4
    codes, reports, _ = run_ranks({"work": str(work), "out": str(up), "generator": RESUMED})
    assert codes == [0, 0], reports
    assert live_diff(load_torch(up, "generator")["model"], single) <= TOLERANCE


@pytest.mark.slow  # accelerate's launcher and torchrun start the processes: about 25 s on 2 busy cores
def test_the_rule_command_under_accelerate_launch(work: Path, tmp_path: Path) -> None:
    """The command a rule runs for a job holding 2 GPUs (workflow/rules/common.smk job_launcher:
    `accelerate launch --multi_gpu --num_processes 2 ... --no_python python -m dnd.cli train-generator`),
    here with --device cpu (gloo): the one-process generator within 1e-6; nothing before the
    one-process command."""
    assert launch_prefix(1) == launch_prefix(0) == ""
    generator = {"batch_size": 3, "lr": SMALL_LR}
    single = one_process(work, tmp_path / "one/generator.pt", generator)
    out = tmp_path / "cli/generator.pt"
    args = fold(work, out)
    command = (launch_prefix(2) + "python -m dnd.cli train-generator --device cpu --threads 1 --params "
               + shlex.quote(json.dumps(params(**generator))) + f" --target {args[0]} --sources {' '.join(args[1])}"
               + " --tokens " + " ".join(map(str, args[2])) + " --encoded " + " ".join(map(str, args[3]))
               + f" --template-adapter {args[4]} --out {out} --log {args[6]}")
    src = str(Path(training.__file__).parents[1])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("data-parallel process") == 2  # two processes, one group
    assert live_diff(load_torch(out, "generator")["model"], single["model"]) <= TOLERANCE


def test_nan_on_one_process_stops_both(work: Path, tmp_path: Path) -> None:
    """(c) A NaN loss on process 1 in step 3 stops both processes at step 3 with the same
    one-line error, within the timeout; the resume point of step 2 stays, nothing else is written."""
    out = tmp_path / "nan/generator.pt"
    job = {"work": str(work), "out": str(out), "generator": {}, "fault": {"nan": 3}, "fault_rank": 1}
    codes, reports, seconds = run_ranks(job)
    assert codes == [0, 0] and seconds < TIMEOUT_S
    errors = [r.get("error") for r in reports]
    assert errors[0] == errors[1] and "\n" not in errors[0], errors
    assert reports[0]["error_type"] == reports[1]["error_type"] == NonFiniteError.__name__
    assert errors[0].startswith("NonFiniteError: non-finite loss (nan) at step 3:") and "step 2, is kept" in errors[0]
    assert load_torch(training.resume_path(out), "resume")["step"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["generator.resume.pt", "rank-0.json", "rank-1.json"]
