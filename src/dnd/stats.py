"""Statistics of paired per-item scores: seeded bootstrap resamples, percentile, paired and pooled
95% CIs, and the words a CI earns (`ci_class`, `relation`, `verdict`).

Every report uses these: one bootstrap, one CI. At `resamples <= 0` there is no bootstrap and
every CI is NaN ("no CI"), never a point interval.
"""

from __future__ import annotations

import math
import zlib


def bootstrap_indices(n: int, resamples: int, seed: int, target: str):
    """(resamples, n) item indices, seeded by (seed, target): shared by every row of a target;
    None when there are no resamples."""
    import numpy as np

    if resamples <= 0:
        return None
    rng = np.random.default_rng([int(seed), zlib.crc32(target.encode())])
    return rng.integers(0, n, size=(resamples, n))


def percentile_ci(boot) -> tuple[float, float]:
    import numpy as np

    if boot is None or len(boot) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


# A difference whose 95% CI lies inside ±EQUIVALENT points is called no difference ("level"): the
# CI rules out any gain or loss larger than that. A wider CI that holds 0 cannot tell the two apart.
EQUIVALENT = 1.0


def ci_class(lo: float, hi: float) -> str:
    """The paired 95% CI [lo, hi] of a difference (points), classified: "ahead" (above 0),
    "behind" (below 0), "level" (inside ±EQUIVALENT) or "apart" (wider, holding 0: not told apart)."""
    if lo > 0:
        return "ahead"
    if hi < 0:
        return "behind"
    return "level" if lo > -EQUIVALENT and hi < EQUIVALENT else "apart"


def relation(lo: float, hi: float, subject: str, other: str) -> str:
    """`subject` against `other` in words, from the paired 95% CI [lo, hi] of subject minus other
    (points), as `ci_class` reads it."""
    return {"ahead": f"{subject} is ahead of {other}", "behind": f"{other} is ahead of {subject}",
            "level": f"{subject} is level with {other}",
            "apart": f"{subject} and {other} are not told apart"}[ci_class(lo, hi)]


def verdict(lo: float, hi: float, paper: float | None = None) -> str:
    """Plain words on one of the paper's claims, "subject minus baseline is `paper`", from our
    95% CI [lo, hi] of the same difference (same units; the paper's sign gives the direction
    claimed, + when it states no size): "reproduced" when the CI lies on the paper's side of 0,
    "not reproduced" when it lies on the other side or excludes the paper's size, else "too noisy
    to tell"."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "too noisy to tell (no CI)"
    sign = -1.0 if paper is not None and paper < 0 else 1.0
    low, high = sorted((sign * lo, sign * hi))
    size = abs(paper) if paper is not None else None
    if low > 0:
        return "reproduced" + (f" in direction, smaller than the paper's {paper:+.1f}" if size and high < size else "")
    if high < 0:
        return "not reproduced: the opposite direction"
    if size and high < size:
        return f"not reproduced: the CI excludes the paper's {paper:+.1f}"
    return "too noisy to tell: the CI holds both 0 and the paper's size" if size else "too noisy to tell"


def boot_means(values, idx):
    """Bootstrap means of per-item `values` for index matrix idx (None when either is None)."""
    import numpy as np

    if idx is None or values is None:
        return None
    return np.asarray(values, dtype=np.float64)[idx].mean(axis=1)


def paired_boot_means(diff, resamples: int, seed: int, target: str):
    """Bootstrap means of the per-item paired differences `diff` of one target (item indices from
    `bootstrap_indices(len(diff), resamples, seed, target)`); None at resamples <= 0."""
    return boot_means(diff, bootstrap_indices(len(diff), resamples, seed, target))


def pooled_ci(bs: list) -> tuple[float, float]:
    """95% CI of the mean over targets from each target's bootstrap means (same resample
    count; NaN when a target has none)."""
    import numpy as np

    ok = bs and all(b is not None for b in bs)
    return percentile_ci(np.mean(bs, axis=0)) if ok else (math.nan, math.nan)
