"""Numbers in report text: one formatter for every report."""

from __future__ import annotations

import math
import re
from typing import Any

from dnd.stats import relation, verdict


def model_name(base_model: dict[str, Any]) -> str:
    """The base model as the reports name it (config `base_model`): a local directory by its last
    component, never a machine path."""
    from pathlib import PurePath

    src = base_model.get("source")
    if src == "smollm2_wheel":
        return "SmolLM2-135M-Instruct (GGUF Q4_1)"
    if src == "tiny":
        return "the tiny random test model"
    if src == "local" and base_model.get("path"):
        return f"{PurePath(base_model['path']).name} (a local directory)"
    return base_model.get("name_or_path") or base_model.get("name") or src or "this run's base model"


def number(x: Any, digits: int = 1, sign: bool = False) -> str:
    """`x` with `digits` decimals (and a leading + or - when `sign`); "n/a" for None, NaN, inf or
    anything that is not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def signed(x: Any, digits: int = 1) -> str:
    """`number(x, digits)` with its sign: a difference."""
    return number(x, digits, sign=True)


def pct(x: Any) -> float:
    """A fraction in percent (NaN for None)."""
    return math.nan if x is None else 100 * float(x)


def ci_text(c: dict[str, Any]) -> str:
    """A paired difference `c` (acc, acc_ci_low, acc_ci_high in points) with its 95% CI, in words."""
    return f"{ci(c['acc'], c['acc_ci_low'], c['acc_ci_high'])} points"


def dnd_relation(c: dict[str, Any]) -> str:
    """DnD against one baseline (`c["label"]`), in words, from the paired 95% CI of DnD minus it."""

    return relation(c["acc_ci_low"], c["acc_ci_high"], "DnD", c["label"])


def paper_claim(paper: str, row: dict[str, Any], here: str, train_avg: Any, dnd: Any, c: dict[str, Any],
                untestable: str | None = None) -> str:
    """The paper's DnD-minus-training-LoRAs claim next to ours and the verdict of our CI on it:
    `paper`/`here` describe the two set-ups ("Qwen2.5-0.5B, its protocol"; "" for none), `row` has
    the paper's train_avg and dnd (points), `train_avg`/`dnd` are our fractions and `c` our paired
    difference (acc, acc_ci_low, acc_ci_high, points); `untestable`: why the set-up cannot test the
    claim (dnd.stats.untestable_reason), passed to dnd.stats.verdict."""

    claim = row["dnd"] - row["train_avg"]
    return (f"**The paper** ({paper}): training LoRAs {row['train_avg']:.1f} → DnD {row['dnd']:.1f} "
            f"({claim:+.1f} points). **Here**{f' ({here})' if here else ''}: {number(pct(train_avg))} → "
            f"{number(pct(dnd))} ({ci_text(c)}). "
            f"**Verdict: {verdict(c['acc_ci_low'], c['acc_ci_high'], claim, untestable)}.**")


def ci(est: Any, lo: Any, hi: Any, digits: int = 1, sign: bool = True) -> str:
    """The one CI format of every report table: `+1.2 [+0.4, +2.1]` (a difference, `sign`) or
    `28.3 [24.1, 33.0]` (a level); "n/a" without an estimate, the estimate alone without bounds."""
    if number(est) == "n/a":
        return "n/a"
    if number(lo) == "n/a" or number(hi) == "n/a":
        return number(est, digits, sign)
    return f"{number(est, digits, sign)} [{number(lo, digits, sign)}, {number(hi, digits, sign)}]"


def ci_digits(half_widths: Any) -> int:
    """Decimals that give the smallest finite CI half-width of a column two significant digits
    (0 for half-widths of 10 or more, at most 4): the precision that matches the CI."""
    hw = [abs(float(h)) for h in half_widths if number(h) != "n/a" and float(h) != 0]
    if not hw:
        return 1
    return int(min(4, max(0, 1 - math.floor(math.log10(min(hw))))))


_NUMERIC_CELL = re.compile(r"^(\*\*)?([+\-−<≤>≥~]? ?[0-9]|\[[+\-−]?[0-9])|^n/a$")


def md_table(df: Any) -> str:
    """A DataFrame as a Markdown table: columns of numbers (every cell that is not empty, a dash or
    "reference" starts with a number, a sign, a bound or is "n/a") right-aligned, the others
    left-aligned; cells as given (no reformatting)."""
    def numeric(col: Any) -> bool:
        cells = [str(v).strip() for v in col
                 if str(v).strip() not in ("", "nan", "None", "-", "—", "reference", "(reference)")]
        return bool(cells) and all(_NUMERIC_CELL.match(c) for c in cells) and not all(c == "n/a" for c in cells)

    align = tuple("right" if numeric(df[c]) else "left" for c in df.columns)
    return df.to_markdown(index=False, colalign=align, disable_numparse=True)
