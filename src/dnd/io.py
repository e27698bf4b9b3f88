"""Atomic writes: every artifact is written to a temporary sibling, then renamed, so an
interrupted run never leaves a half-written file where a finished one is expected."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success move it into place (replacing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; published directories should be readable
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if is_dir:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, **kw) -> None:
    write_text(path, json.dumps(obj, indent=kw.pop("indent", 2), sort_keys=kw.pop("sort_keys", False), **kw) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    kw.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, **kw)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {first[:200]}); it is corrupt, "
            "truncated or not a file this pipeline wrote: delete it and rerun the step that makes it"
        ) from exc


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
