"""The end of every report command: the paper's numbers (optional), the figure's link, the write."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dnd.io import write_text

log = logging.getLogger("dnd.report")


def read_paper_numbers(path: Path | str | None) -> dict[str, Any]:
    """config/paper_numbers.yaml parsed; {} when no file is given or it does not exist (a report
    then says it has no paper numbers instead of failing)."""
    import yaml

    if path is None or not Path(path).is_file():
        return {}
    return yaml.safe_load(Path(path).read_text()) or {}


def figure_link(figure: Path | str, out: Path | str) -> str:
    """The path of `figure` relative to the report `out`'s folder, with forward slashes (a
    Markdown link that works wherever the run directory lives)."""
    return Path(os.path.relpath(Path(figure).resolve(), Path(out).resolve().parent)).as_posix()


def write_report(out: Path | str, text: str, figure: Path | str | None = None) -> None:
    """Write the report atomically and say so (and which figure goes with it)."""

    write_text(Path(out), text)
    log.info("wrote %s", f"{out} and {figure}" if figure is not None else out)
