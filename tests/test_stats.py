"""dnd.stats: the one bootstrap and CI every report uses, pinned to the numbers of results/metrics.json's code."""

import math

import numpy as np

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
