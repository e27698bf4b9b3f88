"""dnd.stats: the one bootstrap and CI every report uses, pinned to the numbers of results/metrics.json's code."""

import math
from pathlib import Path

import numpy as np
import pytest

from dnd import stats, summary

V = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
W = [0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1]


def test_bootstrap_numbers_are_pinned():
    """Bit-identical to the summary before the move to dnd.stats (same seed -> same CIs)."""
    idx = stats.bootstrap_indices(len(V), 200, 42, "arc_e")
    assert idx[:2, :4].tolist() == [[2, 9, 4, 11], [4, 3, 0, 2]]
    assert stats.percentile_ci(stats.boot_means(V, idx)) == (0.25, 0.8354166666666671)
    diff = [100 * (a - b) for a, b in zip(V, W)]
    assert stats.percentile_ci(stats.paired_boot_means(diff, 200, 42, "arc_e")) == (-41.666666666666664,
                                                                                     41.666666666666664)
    assert summary.bootstrap_indices is stats.bootstrap_indices  # the summary uses the same code


def test_no_resamples_means_no_ci():
    """resamples <= 0: no bootstrap, and every CI (single or pooled) is NaN, never a point."""
    diff = np.array([100.0, 0.0, -100.0])
    assert stats.paired_boot_means(diff, 0, 1, "t") is None
    assert all(math.isnan(x) for x in stats.percentile_ci(None))
    assert all(math.isnan(x) for x in stats.pooled_ci([None, None]))
    b = stats.paired_boot_means(diff, 50, 1, "t")
    assert stats.pooled_ci([b, b]) == stats.percentile_ci(b)


@pytest.mark.parametrize("lo,hi,paper,untestable,text", [
    (1.0, 5.0, 9.7, None, "reproduced in direction, smaller than the paper's +9.7"),
    (1.0, 12.0, 9.7, None, "reproduced"),
    (-8.0, -2.0, -5.0, None, "reproduced"),  # the paper claims a drop, and we see one
    (-6.0, -1.0, 9.7, None, "not reproduced: the opposite direction"),
    (-2.0, 3.0, 9.7, None, "not reproduced: the CI excludes the paper's +9.7"),
    (-0.5, 0.9, 21.0, None, "level: the CI excludes the paper's +21.0"),  # inside ±1 comes before "excludes"
    (-0.5, 0.9, None, None, "level"),
    (-2.0, 11.0, 9.7, None, "not told apart: the CI holds both 0 and the paper's size"),
    (-1.0, 1.0, None, None, "not told apart"),  # ±1 itself is not inside
    (math.nan, 1.0, 9.7, None, "not told apart: no CI"),
    (5.0, 9.0, 9.7, "every method at the floor", "not testable here: every method at the floor"),
])
def test_verdict_follows_the_rule_and_speaks_the_vocabulary(lo, hi, paper, untestable, text):
    got = stats.verdict(lo, hi, paper, untestable)
    assert got == text
    assert stats.verdict_word(got) in stats.VERDICTS and stats.verdict_word(got) == text.split(":")[0].split(" in ")[0]


def test_verdict_word_prefers_the_longest_term():
    assert stats.verdict_word("**Not reproduced**: the opposite direction") == "not reproduced"
    assert stats.verdict_word("reproduced in direction") == "reproduced"
    assert stats.verdict_word("too noisy to tell") is None


@pytest.mark.parametrize("acc,oracle_ci,reason", [
    ([0.0, 0.0, 0.0], None, "every method at the floor"),
    ([1.0, 1.0], (2.0, 5.0), "every method at the ceiling"),
    ([0.3, 0.4], (-3.0, 1.0), "the oracle does not beat the training-LoRA average (CI [-3.0, +1.0])"),
    ([0.3, 0.4], (math.nan, math.nan), "the oracle does not beat the training-LoRA average (no CI)"),
    ([0.3, 0.0], (0.5, 4.0), None),
    (None, None, None),
])
def test_untestable_reason(acc, oracle_ci, reason):
    assert stats.untestable_reason(acc, oracle_ci) == reason


def test_readme_glossary_states_each_verdict_as_the_code_defines_it():
    """README "Glossary" repeats VERDICTS word for word: one definition, read in two places."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for word, rule in stats.VERDICTS.items():
        assert f"- **{word}**: {rule}." in readme, word


RUNS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]  # 3 zoo seeds x 2 generator seeds


def test_seed_draws_resample_zoo_seeds_then_generator_seeds():
    w = stats.seed_draws(RUNS, 500, seed=0)
    assert w.shape == (500, 6) and np.allclose(w.sum(axis=1), 1.0)
    zoo_share = np.stack([w[:, [0, 1]].sum(1), w[:, [2, 3]].sum(1), w[:, [4, 5]].sum(1)], axis=1)
    assert np.allclose(np.round(zoo_share * 3), zoo_share * 3)  # each zoo seed drawn 0-3 times of 3
    assert (zoo_share == 0).any() and (zoo_share == 1).any()  # with replacement: some left out, some drawn thrice
    assert np.array_equal(w, stats.seed_draws(RUNS, 500, seed=0))
    assert not np.array_equal(w, stats.seed_draws(RUNS, 500, seed=1))
    assert stats.seed_draws(RUNS, 0, seed=0) is None


def test_hierarchical_bootstrap_adds_the_seed_spread_to_the_item_spread():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 200)
    idx = stats.bootstrap_indices(200, 2000, 0, "t")
    # no seed effect: every run has the same items -> the item-only bootstrap exactly
    same = np.tile(noise, (6, 1))
    h = stats.hierarchical_boot_means(same, stats.seed_draws(RUNS, 2000, 0), idx)
    assert np.allclose(h, stats.boot_means(noise, idx))
    # zoo seeds move the difference by -1, 0, +1: the CI widens by about that spread, items alone do not see it
    shifted = same + np.repeat([-1.0, 0.0, 1.0], 2)[:, None]
    h = stats.hierarchical_boot_means(shifted, stats.seed_draws(RUNS, 2000, 0), idx)
    lo, hi = stats.percentile_ci(h)
    ilo, ihi = stats.percentile_ci(stats.boot_means(shifted.mean(0), idx))
    assert hi - lo > (ihi - ilo) + 1.0
    assert lo < shifted.mean() < hi


def test_seed_item_spread_separates_the_two_sources():
    noise = np.random.default_rng(1).normal(0, 2.0, 400)
    offsets = np.array([0.0, 0.2, 3.0, 3.2, 6.0, 6.2])  # zoo seeds 3 apart, generator seeds 0.2 apart
    s = stats.seed_item_spread(noise + offsets[:, None], RUNS)
    assert s["zoo_sd"] == pytest.approx(3.0)
    assert s["generator_sd"] == pytest.approx(np.std([0.0, 0.2], ddof=1))
    assert s["seed_sd"] == pytest.approx(np.std(offsets, ddof=1))
    assert s["item_se"] == pytest.approx(np.std(noise, ddof=1) / 20)
