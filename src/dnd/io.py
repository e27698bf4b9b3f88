"""Atomic writes: every artifact is written to a temporary sibling, then renamed, so an
interrupted run never leaves a half-written file where a finished one is expected."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .paths import REPO_ROOT


class UnsafeOutputError(ValueError):
    """An output directory that must not be replaced: it holds files this step did not write,
    it is not a directory, or it contains the working directory, the repository or the home
    directory (e.g. `--out .`)."""


def _protected_dirs() -> dict[str, Path]:
    """Directories no step may ever replace, nor any parent of them (`/` included)."""

    return {"the working directory": Path.cwd(), "the repository root": REPO_ROOT, "the home directory": Path.home()}


def check_replaceable_dir(path: str | Path, replaceable: Callable[[Path], bool] | None = None) -> None:
    """Raise UnsafeOutputError unless directory output `path` may be written: it does not exist,
    or it is a real (not symlinked) directory that is empty or that `replaceable(path)` accepts
    (default: any), and it is neither the working directory, the repository root, the home
    directory nor a parent of one of them."""
    path = Path(os.path.abspath(path))
    real = path.resolve()
    for what, d in _protected_dirs().items():
        if d.resolve().is_relative_to(real):
            raise UnsafeOutputError(f"refusing to replace {path}: it is {what} ({d}) or a parent of it")
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise UnsafeOutputError(f"refusing to replace {path}: it exists and is not a directory")
    if any(path.iterdir()) and not (replaceable is None or replaceable(path)):
        raise UnsafeOutputError(
            f"refusing to replace {path}: it holds files this step did not write "
            f"({', '.join(sorted(p.name for p in path.iterdir())[:5])}); remove them or choose another directory "
            "(a command's --force, where it has one, overrides this)"
        )


def _swap_dir(new: Path, path: Path) -> None:
    """Rename directory `new` to `path`. An existing `path` is first moved aside and deleted only
    once `new` is in place; if the rename fails it is moved back, so it is never lost."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    old = new.with_name(new.name.removesuffix(".tmp") + ".old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, is_dir: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success move it into place.

    A file replaces an existing file. A directory (`is_dir`) may replace only what
    `check_replaceable_dir(path, replaceable)` allows (checked before the temp path is made and
    again before the swap; never `.`, the working directory or a parent of it), and an existing
    directory is swapped out without a moment where neither the old nor the new one exists.
    """
    path = Path(os.path.abspath(path))
    if is_dir:
        check_replaceable_dir(path, replaceable)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; published directories should be readable
    target = tmp if is_dir else tmp / path.name
    try:
        try:
            yield target
            if is_dir:
                check_replaceable_dir(path, replaceable)
                _swap_dir(tmp, path)
            else:
                os.replace(target, path)
        except Exception as exc:
            named = _name_the_output(exc, target, path)
            if named is not exc:
                raise named from exc
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _name_the_output(exc: Exception, tmp: Path, path: Path) -> Exception:
    """`exc` as the user should see it: naming the output `path`, never its temporary sibling
    `tmp` (an error that names no file at all, such as a full disk or a file-size limit hit by
    write(), is given the output's name); any other exception is returned unchanged."""
    def swap(text: str) -> str:
        return text.replace(str(tmp), str(path))

    if isinstance(exc, OSError) and exc.errno is not None:
        name = exc.filename
        if name is None or str(name).startswith(str(tmp)):
            name = swap(str(name)) if name is not None else str(path)
            try:
                return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), name)
            except TypeError:
                return exc
        return exc
    if str(tmp) in str(exc) and not isinstance(exc, UnsafeOutputError):
        try:
            return type(exc)(swap(str(exc)))
        except TypeError:
            return exc
    return exc


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any, **kw) -> None:
    write_text(path, json.dumps(obj, indent=kw.pop("indent", 2), sort_keys=kw.pop("sort_keys", False), **kw) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: str | Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
    """A CSV file (header `fieldnames`, "\n" line ends), written atomically. A row is a
    mapping (its values for `fieldnames`, "" where missing, other keys ignored: csv.DictWriter
    with extrasaction="ignore") or a sequence of values in the order of `fieldnames`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fieldnames)
    w.writerows([r.get(k, "") for k in fieldnames] if isinstance(r, Mapping) else r for r in rows)
    write_text(path, buf.getvalue())


def save_torch(path: str | Path, obj: Any) -> None:
    """`torch.save(obj)` to `path`, atomically (read back with `load_torch`)."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's writer names no file ("unexpected pos 576 vs 534")
            raise _write_error(path, exc) from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), at most 200 characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _is_read_error(exc: BaseException) -> bool:
    """An exception a safetensors reader raises for a missing, truncated or corrupt file."""
    return type(exc).__name__ == "SafetensorError" or isinstance(exc, (OSError, ValueError, RuntimeError))


def _write_error(path: str | Path, exc: BaseException) -> OSError:
    return OSError(f"cannot write {os.path.abspath(path)} ({type(exc).__name__}: {_first_line(exc)})")


def save_safetensors(tensors: dict[str, Any], tmp: str | Path, output: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_file(tensors, tmp)` inside an `atomic_path(output)`; a failure (full
    disk, size limit) names `output`, not the temporary file."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except Exception as exc:
        if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
            raise _write_error(output, exc) from exc
        raise


def load_safetensors(path: str | Path, what: str) -> dict[str, Any]:
    """safetensors' `load_file(path)` (CPU tensors), every failure (missing, truncated, corrupt
    header) turned into one error that names the file and what it should have been."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:
        if not _is_read_error(exc):
            raise
        raise ArtifactError(_unreadable(what, path, exc)) from exc


def check_safetensors(location: str | Path, what: str) -> None:
    """Read the header of a .safetensors file, or of every *.safetensors file of a model
    directory (cheap: no tensor data is loaded), so that a corrupt or truncated one is named
    before a loader (transformers, PEFT, safe_open) fails on it without a file name."""
    from safetensors import safe_open

    location = Path(location)
    files = sorted(location.glob("*.safetensors")) if location.is_dir() else [location]
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:
            if not _is_read_error(exc):
                raise
            raise ArtifactError(_unreadable(what, path, exc)) from exc


def _unreadable(what: str, path: str | Path, exc: BaseException, reason: str | None = None) -> str:
    """One line for an artifact that cannot be read: what it is, its path and why (`reason`, else the
    exception's first line), and what to do."""
    return (f"{what} {path} cannot be read ({type(exc).__name__}: {reason or _first_line(exc)}); it is corrupt, "
            "truncated or not a file this pipeline wrote: delete it and rerun the step that makes it")


def read_jsonl(path: str | Path) -> list[dict]:
    """The parsed non-blank lines of a UTF-8 JSONL file. A line that is not UTF-8 or not
    valid JSON raises ValueError naming the file and its 1-based line number."""
    with open(path, "rb") as f:
        return [obj for _, obj in parse_jsonl_lines(f, path)]


class ArtifactError(ValueError):
    """A file the pipeline reads is missing, unreadable, corrupt or of the wrong kind; the
    message names the file."""


def load_torch(path: str | Path, what: str, **kw) -> Any:
    """`torch.load` with `weights_only=True` (a crafted pickle cannot run code), and every
    failure (missing, truncated, corrupt, not a torch file) turned into one ArtifactError that
    names the file and what it should have been."""

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    kw.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, **kw)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(_unreadable(what, path, exc, _torch_reason(exc))) from exc


def _torch_reason(exc: BaseException) -> str:
    """Why torch.load failed, in at most 200 characters and without torch's advice to retry with
    `weights_only=False` (loading a file that fails the safe unpickler can run arbitrary code):
    for the weights-only unpickler, only its own reason ("Unsupported operand 149")."""

    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
        reason = " ".join(m.group(1).split()) if m else "the file holds something other than tensors and plain data"
        return f"the safe (weights-only) unpickler refused it: {reason}"[:200]
    return _first_line(exc)


def parse_jsonl_lines(lines: Iterable[bytes], path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed value) for each non-blank line of raw JSONL bytes
    (blank lines are counted, not yielded). `path` only names the file in errors: ValueError
    with the line and byte offset for bytes that are not UTF-8, with the line and the JSON
    error for a line that does not parse."""
    offset = 0  # bytes before this line
    for lineno, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}, line {lineno}: not UTF-8: byte {raw[exc.start]:#04x} at byte offset "
                f"{offset + exc.start} of the file (byte {exc.start + 1} of the line)"
            ) from exc
        offset += len(raw)
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
