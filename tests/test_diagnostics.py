"""Generator diagnostics: ΔW geometry from LoRA factors, reachability, the selection rule."""

from __future__ import annotations

import math

import pytest
import torch

from dnd.diagnostics import function_space_rows, gram, reachability, select_design


def _adapter(g: torch.Generator, shapes=((6, 10), (8, 5)), r: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random LoRA factors (A (r, in), B (out, r)) per module."""
    return [(torch.randn(r, i, generator=g, dtype=torch.float64), torch.randn(o, r, generator=g, dtype=torch.float64))
            for o, i in shapes]


def test_gram_matches_dense_delta_w() -> None:
    g = torch.Generator().manual_seed(0)
    adapters = [_adapter(g) for _ in range(4)]
    dense = torch.stack([torch.cat([(b @ a).flatten() for a, b in ad]) for ad in adapters])
    torch.testing.assert_close(gram(adapters), dense @ dense.T)


def _gram_of(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.double() @ vectors.double().T


def test_reachability_is_the_share_in_the_span_of_the_source_deviations() -> None:
    torch.manual_seed(0)
    src = torch.randn(3, 20)
    mean = src.mean(0)
    inside = mean + 0.7 * (src[0] - mean) - 1.3 * (src[1] - mean)
    assert reachability(_gram_of(torch.cat([src, inside[None]])), [0, 1, 2], 3) == pytest.approx(1.0)
    basis = torch.linalg.qr((src - mean).T)[0]  # orthonormal basis of the deviations' span
    away = torch.randn(20)
    away -= basis @ (basis.T @ away)  # orthogonal to every deviation
    assert reachability(_gram_of(torch.cat([src, (mean + away)[None]])), [0, 1, 2], 3) == pytest.approx(0.0, abs=1e-9)
    half = mean + (src[0] - mean) / (src[0] - mean).norm() + away / away.norm()
    assert reachability(_gram_of(torch.cat([src, half[None]])), [0, 1, 2], 3) == pytest.approx(0.5)


def _rows(variant: str, fit: float, retrieval: float, stray: float, folds=("a", "b")) -> list[dict]:
    return [{"fold": f, "variant": variant, "metric": m, "value": v} for f in folds
            for m, v in (("fit_ratio", fit), ("retrieval_acc", retrieval), ("heldout_norm_ratio", stray))]


def test_selection_rule() -> None:
    good, bad = _rows("dnd", 0.1, 1.0, 1.0), _rows("dnd_basis", 0.01, 1.0, 1.0)
    assert select_design(good + bad)[0] == "dnd"  # the configured default is kept when it qualifies
    assert select_design(_rows("dnd", 0.9, 1.0, 1.0) + bad)[0] == "dnd_basis"
    assert select_design(_rows("dnd", 0.1, 0.5, 1.0) + bad)[0] == "dnd_basis"  # retrieval below the goal
    assert select_design(_rows("dnd", 0.1, 1.0, 5.0) + bad)[0] == "dnd_basis"  # strays from the sources
    chosen, reason = select_design(_rows("dnd", 0.9, 0.5, 1.0) + _rows("dnd_basis", 0.5, 0.5, 1.0))
    assert chosen == "dnd_basis" and "lowest mean fit_ratio" in reason
    zoo = [{"fold": "a", "variant": "zoo", "metric": "reachability", "value": 0.1}]
    assert select_design(zoo) == ("dnd", "no generator diagnostics")


def test_function_space_rows_come_from_metrics_json() -> None:
    metrics = {"mean/dnd_minus_control_other/gold_logprob": 0.2,
               "mean/dnd_minus_control_other/gold_logprob_ci_low": 0.1,
               "arc/dnd_basis_minus_soup/acc": -0.01, "mean/dnd_mean": 0.4, "mean/dnd_minus_train_avg": 0.0,
               "arc/dnd_minus_nearest/acc": None}
    rows = function_space_rows(metrics)
    assert {(r["fold"], r["variant"], r["metric"]) for r in rows} == {
        ("mean", "dnd", "minus_control_other_gold_logprob"), ("mean", "dnd", "minus_control_other_gold_logprob_ci_low"),
        ("arc", "dnd_basis", "minus_soup_acc")}
    assert all(math.isfinite(r["value"]) for r in rows)
