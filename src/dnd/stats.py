"""Statistics of paired per-item scores: seeded bootstrap resamples, percentile, paired and pooled
95% CIs, and the words a CI earns (`ci_class`, `relation`; `verdict` in the vocabulary VERDICTS).

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


# The verdict vocabulary, defined once: what every report says about a claim of the paper, and the
# rule behind each word (README "Glossary" repeats it; tests/test_stats.py holds the two together).
REPRODUCED, NOT_REPRODUCED, LEVEL, NOT_TOLD_APART, NOT_TESTABLE = (
    "reproduced", "not reproduced", "level", "not told apart", "not testable here")
VERDICTS = {
    REPRODUCED: "the 95% CI of the paper's difference lies on the paper's side of 0; where it also lies below "
                "the paper's size, the verdict adds \"in direction, smaller than the paper's\"",
    NOT_REPRODUCED: "the 95% CI lies on the other side of 0, or it holds 0, is not level and excludes the "
                    "paper's size",
    LEVEL: f"the 95% CI holds 0 and lies inside ±{EQUIVALENT:g} point: no difference of that size either way",
    NOT_TOLD_APART: f"the 95% CI holds 0 and reaches beyond ±{EQUIVALENT:g} point (or there is no CI): the data "
                    "cannot tell",
    NOT_TESTABLE: "the set-up cannot show the claim: every method sits at a floor or a ceiling, or no adapter "
                  "trained on the target's labels beats the claim's baseline (for the paper's claims: the oracle, "
                  "the target's own LoRA, does not beat the training-LoRA average)",
}


def verdict(lo: float, hi: float, paper: float | None = None, untestable: str | None = None) -> str:
    """One of VERDICTS on a claim of the paper, "subject minus baseline is `paper`", from our 95% CI
    [lo, hi] of the same difference (same units; the paper's sign gives the direction claimed, +
    when it states no size), with the reason after a colon where there is one. In order:
    `untestable` (a reason, from `untestable_reason`) -> "not testable here"; no CI -> "not told
    apart"; the CI on the paper's side of 0 -> "reproduced"; inside ±EQUIVALENT -> "level"; on the
    other side of 0 or below the paper's size -> "not reproduced"; else "not told apart"."""
    if untestable:
        return f"{NOT_TESTABLE}: {untestable}"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{NOT_TOLD_APART}: no CI"
    sign = -1.0 if paper is not None and paper < 0 else 1.0
    low, high = sorted((sign * lo, sign * hi))
    size = abs(paper) if paper is not None else None
    if low > 0:
        return REPRODUCED + (f" in direction, smaller than the paper's {paper:+.1f}" if size and high < size else "")
    if ci_class(lo, hi) == "level":
        return LEVEL + (f": the CI excludes the paper's {paper:+.1f}" if size else "")
    if high < 0:
        return f"{NOT_REPRODUCED}: the opposite direction"
    if size and high < size:
        return f"{NOT_REPRODUCED}: the CI excludes the paper's {paper:+.1f}"
    return NOT_TOLD_APART + (": the CI holds both 0 and the paper's size" if size else "")


def verdict_word(text: str) -> str | None:
    """The VERDICTS word a verdict text starts with (the longest that fits), else None."""
    t = text.strip().strip("*").lower()
    return next((w for w in sorted(VERDICTS, key=len, reverse=True) if t.startswith(w)), None)


def untestable_reason(accuracies=None, oracle_ci: tuple[float, float] | None = None,
                      floor: float = 0.0, ceiling: float = 1.0) -> str | None:
    """Why a DnD claim cannot be tested, or None: every accuracy in `accuracies` (fractions of every
    method compared) at `floor` or at `ceiling`, or `oracle_ci`, the paired 95% CI of the oracle
    minus the training-LoRA average (in points), not above 0 (no headroom for DnD to show)."""
    acc = [float(a) for a in (accuracies or []) if a is not None and not math.isnan(float(a))]
    if acc and all(a <= floor for a in acc):
        return "every method at the floor"
    if acc and all(a >= ceiling for a in acc):
        return "every method at the ceiling"
    if oracle_ci is not None:
        lo, hi = oracle_ci
        if lo is None or hi is None or math.isnan(lo) or not lo > 0:
            ci = "no CI" if lo is None or hi is None or math.isnan(lo) else f"CI [{lo:+.1f}, {hi:+.1f}]"
            return f"the oracle does not beat the training-LoRA average ({ci})"
    return None


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


# ------------------------------------------------------------------ seeds: a two-level bootstrap
def seed_draws(runs, resamples: int, seed: int):
    """(resamples, len(runs)) weights of each run in a two-level bootstrap over training seeds:
    `runs` are (zoo seed, generator seed) pairs; each resample draws zoo seeds with replacement,
    then, within each drawn zoo seed, its generator seeds with replacement, and a run's weight is
    its share of the resample's mean (rows sum to 1). One draw serves every target of a resample,
    because one zoo seed trains the LoRAs of every dataset. None at resamples <= 0."""
    import numpy as np

    if resamples <= 0:
        return None
    runs = [tuple(r) for r in runs]
    zoos = sorted({z for z, _ in runs})
    members = {z: [i for i, r in enumerate(runs) if r[0] == z] for z in zoos}
    rng = np.random.default_rng([int(seed), zlib.crc32(b"seeds")])
    w = np.zeros((resamples, len(runs)))
    for b in range(resamples):
        for z in rng.choice(zoos, size=len(zoos)):
            gens = members[z]
            picked = rng.choice(gens, size=len(gens))
            np.add.at(w[b], picked, 1.0 / (len(zoos) * len(gens)))
    return w


def hierarchical_boot_means(diff, weights, item_idx):
    """Bootstrap means of one target's paired differences `diff` (runs x items: one row per
    (zoo, generator) seed run, the same items in every row) under a two-level bootstrap: the seed
    level from `weights` (`seed_draws`), the item level from `item_idx` (`bootstrap_indices`,
    shared by every run, so each item stays paired across seeds). None when either is None."""
    import numpy as np

    if weights is None or item_idx is None:
        return None
    diff = np.asarray(diff, dtype=np.float64)
    run_means = diff[:, item_idx].mean(axis=2)  # (runs, resamples): each run on the resample's items
    return np.einsum("br,rb->b", weights, run_means)


def seed_item_spread(diff, runs) -> dict[str, float]:
    """How far training seeds and test items each move a paired difference (one target, runs x
    items): `seed_sd`, the SD of the per-run means over every run; `zoo_sd`, the SD over zoo seeds
    of their runs' means; `generator_sd`, the mean SD over generator seeds within a zoo seed (NaN
    with one generator seed); `item_se`, the standard error of a run's mean from its items (the
    mean over runs of SD / sqrt(n)). Seed SDs above the item SE mean that the seed, not the test
    set, limits the verdict."""
    import numpy as np

    diff = np.asarray(diff, dtype=np.float64)
    runs = [tuple(r) for r in runs]
    means = diff.mean(axis=1)
    zoos = sorted({z for z, _ in runs})
    by_zoo = {z: means[[i for i, r in enumerate(runs) if r[0] == z]] for z in zoos}
    within = [np.std(v, ddof=1) for v in by_zoo.values() if len(v) > 1]
    return {
        "seed_sd": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan,
        "zoo_sd": float(np.std([v.mean() for v in by_zoo.values()], ddof=1)) if len(zoos) > 1 else math.nan,
        "generator_sd": float(np.mean(within)) if within else math.nan,
        "item_se": (float(np.mean(diff.std(axis=1, ddof=1)) / math.sqrt(diff.shape[1])) if diff.shape[1] > 1
                    else math.nan),
    }
