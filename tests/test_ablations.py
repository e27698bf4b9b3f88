"""The ablations' building blocks: condition forms, the hashing extractor, pool size and fixed
pairing in the pair sampler, the settings of each family, the summary's paired comparisons and
the verdicts; rule params that stay those of the default run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnd.config import ConfigError, check_experiment, rule_section, section, validate_config
from dnd.experiments.ablations import report as ab
from dnd.formats.prompts import condition_text
from dnd.generators import PairSampler
from dnd.method.encoder import HASH_DIM, HashingEncoder, encoding_signature, make_encoder

ITEM = {"id": "x-1", "question": "Which is a fruit?", "choices": ["apple", "stone"], "answer": 0}


def test_condition_forms():
    assert condition_text(ITEM) == "Which is a fruit?\nA: apple\nB: stone"
    assert condition_text(ITEM, "answer") == "apple"
    assert condition_text(ITEM, "prompt_answer") == "Which is a fruit?\nA: apple\nB: stone\nAnswer: apple"
    mixed = {condition_text({**ITEM, "id": f"x-{i}"}, "mixed") for i in range(20)}
    assert mixed == {condition_text(ITEM), condition_text(ITEM, "prompt_answer")}  # both forms occur
    assert condition_text(ITEM, "mixed") == condition_text(ITEM, "mixed")  # stable per item
    with pytest.raises(ValueError, match="needs labeled items"):
        condition_text({**ITEM, "answer": None}, "answer")
    with pytest.raises(ValueError, match="unknown condition form"):
        condition_text(ITEM, "label")


def test_hashing_encoder_is_a_signed_bag_of_words():
    enc = HashingEncoder(section("encoder", {"kind": "hashing", "max_length": 6}))
    states, mask = enc.encode(["The cat, the CAT!", ""])
    assert states.shape == (2, 6, HASH_DIM) and mask.tolist()[0] == [True] * 4 + [False] * 2 and not mask[1].any()
    assert torch.equal(states[0, 1], states[0, 3]) and torch.equal(states[0, 0], states[0, 2])  # case-free words
    assert (states[0, :4].abs().sum(-1) == 1).all() and states[0, 4:].abs().sum() == 0
    pooled, pmask = HashingEncoder(section("encoder", {"kind": "hashing", "pooling": "mean"})).encode(["a b a"])
    assert pooled.shape == (1, 1, HASH_DIM) and pmask.all()
    assert isinstance(make_encoder({"kind": "hashing"}), HashingEncoder)
    with pytest.raises(ValueError, match="needs encoder.path"):
        make_encoder({"kind": "llm"})


def test_pair_sampler_pool_and_fixed_pairing():
    tokens = [torch.arange(3 * 2, dtype=torch.float32).view(3, 1, 2, 1), torch.zeros(2, 1, 2, 1)]
    pools = [torch.arange(50, dtype=torch.float32).view(50, 1, 1),
             100 + torch.arange(40, dtype=torch.float32).view(40, 1, 1)]
    small = PairSampler(tokens, pools, n_prompts=4, batch_size=5, seed=1, pool_size=6)
    for step in range(6):
        cond, _ = small.batch(step)
        drawn = cond.flatten()
        assert ((drawn < 6) | ((drawn >= 100) & (drawn < 106))).all()  # only the first 6 of each pool
    fixed = PairSampler(tokens, pools, n_prompts=4, batch_size=5, seed=1, pairing="fixed")
    seen: dict[tuple, tuple] = {}
    for step in range(8):
        cond, target = fixed.batch(step)
        for c, t in zip(cond, target):
            key = tuple(t.flatten().tolist())
            seen.setdefault(key, set()).add(tuple(c.flatten().tolist()))
    # the two nonzero checkpoints each keep one draw; dataset 1's (all-zero) checkpoints share a
    # target but each keeps its own draw
    assert all(len(v) == 1 for k, v in seen.items() if any(k))
    rand = PairSampler(tokens, pools, n_prompts=4, batch_size=5, seed=1)
    draws = {tuple(rand.batch(s)[0][0].flatten().tolist()) for s in range(8)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="pairing"):
        PairSampler(tokens, pools, 4, 5, 1, pairing="sometimes")


def test_rule_params_leave_out_ablation_keys_at_their_defaults():
    enc = section("encoder", {"max_length": 32})
    assert "kind" in enc and "kind" not in rule_section("encoder", enc) and "form" not in rule_section("encoder", enc)
    assert rule_section("encoder", {**enc, "kind": "hashing"})["kind"] == "hashing"
    gen = section("generator", {})
    assert not {"pool_size", "pairing"} & set(rule_section("generator", gen))
    assert rule_section("generator", {**gen, "pool_size": 32})["pool_size"] == 32
    # a cache written before the keys existed has the default signature
    assert encoding_signature({"max_length": 32}) == encoding_signature({**enc, "kind": "minilm", "form": "prompt"})


def test_settings_of_each_family():
    ds = ["a", "b", "c", "d"]
    assert ab.setting_overrides("condition", "answer", "a", ds, 0, "base")["encoder"] == {"form": "answer"}
    assert ab.setting_overrides("extractor", "llm", "a", ds, 0, "base")["encoder"] == {"kind": "llm", "path": "base"}
    assert ab.setting_overrides("pool", "all", "a", ds, 0, "base")["generator"] == {"pool_size": None}
    assert ab.setting_overrides("pool", "32", "a", ds, 0, "base")["generator"] == {"pool_size": 32}
    two = ab.setting_overrides("sources", "2", "a", ds, 0, "base")["sources"]
    three = ab.setting_overrides("sources", "3", "a", ds, 0, "base")["sources"]
    assert len(two) == 2 and three[:2] == two and "a" not in three and sorted(three) == ["b", "c", "d"]
    assert ab.is_default("sources", "3", len(ds)) and not ab.is_default("sources", "2", len(ds))
    assert ab.is_default("pool", "all", len(ds)) and ab.encoding_variant("pool", "32") is None
    assert ab.encoding_variant("extractor", "hashing") == "extractor-hashing"
    with pytest.raises(ValueError, match="outside 1..3"):
        ab.setting_overrides("sources", "4", "a", ds, 0, "base")
    with pytest.raises(ValueError, match="unknown ablation family"):
        ab.setting_overrides("depth", "2", "a", ds, 0, "base")


def test_extra_sources_extend_the_curve_after_the_target_s_other_datasets():
    """Extra source tasks come after the other datasets, in one seeded order for every target;
    the settings up to len(datasets) - 1 are the same as without them (their results stay valid)."""
    ds, extra = ["a", "b", "c", "d"], ["x", "y", "z"]
    for target in ds:
        plain = ab.source_order(target, ds, 0)
        order = ab.source_order(target, ds, 0, extra)
        assert order[:3] == plain and sorted(order[3:]) == extra
        assert order[3:] == ab.source_order("a", ds, 0, extra)[3:]  # the same extras order for every target
        for n in (1, 2, 3):
            assert ab.setting_overrides("sources", str(n), target, ds, 0, "base", extra)["sources"] == plain[:n]
    assert ab.source_order("a", ds, 0, list(reversed(extra))) == ab.source_order("a", ds, 0, extra)  # by name
    five = ab.setting_overrides("sources", "5", "b", ds, 0, "base", extra)["sources"]
    assert five[:3] == ab.source_order("b", ds, 0) and len(set(five[3:]) & set(extra)) == 2
    assert ab.is_default("sources", "3", len(ds)) and not ab.is_default("sources", "5", len(ds))
    with pytest.raises(ValueError, match=r"outside 1..6 .*3 other datasets, 3 extra"):
        ab.setting_overrides("sources", "7", "a", ds, 0, "base", extra)
    with pytest.raises(ValueError, match=r"\['b'\] are also in data.datasets"):
        ab.source_order("a", ds, 0, ["b", "x"])


def test_config_checks_and_defaults():
    cfg = validate_config({"data": {"datasets": ["arc_easy", "boolq", "piqa", "hellaswag"]},
                           "base_model": {"source": "smollm2_wheel"}})
    assert cfg["ablations"]["targets"] == ["arc_easy", "boolq", "piqa"] and cfg["ablations"]["sources"] == [2, 3]
    assert cfg["ablations"]["n_adapters"] == 3 and cfg["ablations"]["source_orders"] == 3
    with pytest.raises(ConfigError, match="source_orders"):
        validate_config({"data": {"datasets": ["arc_easy", "boolq", "piqa"]}, "base_model": {"source": "smollm2_wheel"},
                         "ablations": {"source_orders": 0}})
    with pytest.raises(ConfigError, match="ablations.targets"):
        _ablations_checked({"data": {"datasets": ["arc_easy", "boolq"]}, "base_model": {"source": "smollm2_wheel"},
                         "ablations": {"targets": ["piqa"]}})
    # extra source tasks: custom datasets (defaults filled in), never one of data.datasets
    base = {"data": {"datasets": ["arc_easy", "boolq", "piqa"]}, "base_model": {"source": "smollm2_wheel"}}
    cfg = validate_config({**base, "ablations": {"sources": [2, 4], "extra_sources": {"x": {"path": "x.jsonl"},
                                                                                     "y": {"path": "y.jsonl"}}}})
    assert cfg["ablations"]["extra_sources"]["x"] == {"path": "x.jsonl", "style": "qa", "has_train": False}
    with pytest.raises(ConfigError, match=r"ablations.sources \[5\]: .* 2 other datasets and 2 extra"):
        _ablations_checked({**base, "ablations": {"sources": [5], "extra_sources": {"x": {"path": "x.jsonl"},
                                                                                "y": {"path": "y.jsonl"}}}})
    mine = {"data": {"datasets": ["arc_easy", "mine"], "custom": {"mine": {"path": "m.jsonl"}}},
            "base_model": {"source": "smollm2_wheel"}}
    with pytest.raises(ConfigError, match=r"extra_sources \['mine'\] are in data.datasets"):
        _ablations_checked({**mine, "ablations": {"extra_sources": {"mine": {"path": "b.jsonl"}}}})
    with pytest.raises(ConfigError, match=r"^ablations\.extra_sources\.boolq: a custom dataset may not take the name"):
        validate_config({**base, "ablations": {"extra_sources": {"boolq": {"path": "b.jsonl"}}}})
    with pytest.raises(ConfigError, match="extra_sources"):
        validate_config({**base, "ablations": {"extra_sources": {"x": {"file": "x.jsonl"}}}})
    with pytest.raises(ConfigError, match="exceeds generate.n_adapters"):
        _ablations_checked({"data": {"datasets": ["arc_easy", "boolq"]}, "base_model": {"source": "smollm2_wheel"},
                         "generate": {"n_adapters": 2}, "ablations": {"n_adapters": 3}})


def _ablations_checked(cfg: dict) -> None:
    """The ablations section is checked when its target is asked for (check_experiment), after the
    start-up validation, which passes."""
    check_experiment(validate_config(cfg), "ablations")


def _rows(target, dnd, train, ids=None):
    ids = ids or [f"{target}-{i}" for i in range(len(dnd[0]))]
    rows = [{"target": target, "method": "dnd", "adapter": f"dnd_{i}", "ids": ids, "correct": c,
             "gold_logprob": [-1.0] * len(c)} for i, c in enumerate(dnd)]
    rows += [{"target": target, "method": "source_lora", "adapter": name, "ids": ids, "correct": c,
              "gold_logprob": [-2.0] * len(c)} for name, c in train.items()]
    return rows


def test_summary_pairs_settings_and_states_the_verdict():
    n = 40
    good, bad = [1] * n, [0] * n
    half = [i % 2 for i in range(n)]
    cells = {("prompt", "t"): _rows("t", [good, good], {"s1": half, "s2": half}),
             ("answer", "t"): _rows("t", [bad, bad], {"s1": half, "s2": half}),
             ("mixed", "t"): _rows("t", [half, half], {"s1": half, "s2": half})}
    sources = {k: ["s1", "s2"] for k in cells}
    rows, m = ab.summarize(cells, "condition", sources, n_adapters=2, resamples=200, seed=0)
    assert {(r["setting"], r["method"]) for r in rows} >= {("prompt", "dnd"), ("prompt", "train_avg")}
    assert m["prompt/t/dnd_minus_train_avg/acc"] == pytest.approx(50)
    assert m["answer/mean/dnd_minus_train_avg/acc"] == pytest.approx(-50)
    assert m["reference"] == "prompt" and m["prompt_minus_answer/mean/dnd/acc"] == pytest.approx(100)
    assert m["prompt_minus_mixed/mean/dnd/acc_ci_low"] > 0
    m["defaults"] = ["prompt"]
    text = ab.family_verdict(m)
    assert "DnD (prompt) is ahead of DnD (answer) (+100.0 points" in text and "Verdict: **reproduced**." in text
    assert "prompt (default)" in ab.family_table(m).to_markdown()
    # the sources family compares the most datasets with the fewest
    cells = {("1", "t"): _rows("t", [good], {"s1": half}), ("2", "t"): _rows("t", [half], {"s1": half, "s2": half})}
    _, m = ab.summarize(cells, "sources", {("1", "t"): ["s1"], ("2", "t"): ["s1", "s2"]}, 1, 200, 0)
    assert m["reference"] == "2" and "DnD (1 source) is ahead of DnD (2 sources)" in ab.family_verdict(m)
    assert "Verdict: **not reproduced**." in ab.family_verdict(m)
    # verdict words from the CIs (dnd.stats.verdict): inside ±1 point is level; a wide CI that holds 0
    # cannot tell them apart
    v = {"family": "pool", "settings": ["all", "32"], "reference": "all"}
    for (d, lo, hi), words in [((0.1, -0.6, 0.7), ("DnD (all) is level with DnD (32)", "**level**", "inside ±1 point")),
                               ((0.5, -1.5, 2.5), ("DnD (all) and DnD (32) are not told apart", "**not told apart**")),
                               ((2.0, 0.5, 3.5), ("DnD (all) is ahead of DnD (32)", "**reproduced**")),
                               ((-2.0, -3.5, -0.5), ("DnD (32) is ahead of DnD (all)", "**not reproduced**"))]:
        v.update({"all_minus_32/mean/dnd/acc": d, "all_minus_32/mean/dnd/acc_ci_low": lo,
                  "all_minus_32/mean/dnd/acc_ci_high": hi})
        text = ab.family_verdict(v)
        assert all(w in text for w in words), (text, words)
    # settings that disagree: each word with its count, in the vocabulary's order
    v = {"family": "pool", "settings": ["all", "8", "16", "32"], "reference": "all"}
    for s, (lo, hi) in (("8", (0.5, 3.5)), ("16", (-1.5, 2.5)), ("32", (0.2, 1.9))):
        v.update({f"all_minus_{s}/mean/dnd/acc": (lo + hi) / 2, f"all_minus_{s}/mean/dnd/acc_ci_low": lo,
                  f"all_minus_{s}/mean/dnd/acc_ci_high": hi})
    assert "Verdict: **reproduced** against 2 of 3 settings, **not told apart** against 1." in ab.family_verdict(v)
    with pytest.raises(ValueError, match="1 of the 2 training LoRAs"):
        ab.summarize({("p", "t"): _rows("t", [good], {"s1": half})}, "pool", {("p", "t"): ["s1", "s2"]}, 1, 10, 0)


def test_report_and_figure(tmp_path):
    n = 40
    good, half = [1] * n, [i % 2 for i in range(n)]
    cells = {("prompt", "t"): _rows("t", [good], {"s1": half}), ("answer", "t"): _rows("t", [half], {"s1": half})}
    _, m = ab.summarize(cells, "condition", {k: ["s1"] for k in cells}, 1, 100, 0)
    m["defaults"] = ["prompt"]
    fig = tmp_path / "figures" / "ablations.png"
    ab.ablations_figure([m], fig)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = ab.ablations_markdown([m], "figures/ablations.png", {"condition": (1.5, 2.0, 4)}, 1, "hyperconv")
    assert text.startswith("## Ablations") and "### Condition form" in text and "mean of 1 adapter per" in text
    assert "design `hyperconv`" in text  # the run's design, what the glance's Generator column reads
    assert "Budget: 4 jobs, 1.5 min" in text and "(figures/ablations.png)" in text
    # the source-count curve beyond the run's datasets: extras named in order, accuracy by setting
    cells = {("1", "t"): _rows("t", [half], {"s1": half}), ("2", "t"): _rows("t", [good], {"s1": half, "x": good}),
             ("3", "t"): _rows("t", [good], {"s1": half, "x": good, "y": half})}
    srcs = {("1", "t"): ["s1"], ("2", "t"): ["s1", "x"], ("3", "t"): ["s1", "x", "y"]}
    _, c = ab.summarize(cells, "sources", srcs, 1, 100, 0, extra=["y", "x"])
    assert c["extra_sources"] == ["x", "y"] and c["3/t/n_extra_sources"] == 2 and c["1/t/n_extra_sources"] == 0
    assert c["2/mean/train_avg/acc"] == pytest.approx(75) and c["2/mean/dnd/acc"] == pytest.approx(100)
    assert ab._n_without_extra(c) == 1
    text = ab.ablations_markdown([m, c], "f.png", {"sources": (9.0, 9.5, 20), "sources/extra": (4.0, 4.2, 8)}, 1)
    assert "settings above 1 add extra source tasks" in text and "in this order: x, y" in text
    acc = ab.accuracy_table(c).set_index("Setting")
    assert acc.loc["2", "DnD"] == "100.0" and acc.loc["2", "Training LoRAs (avg)"] == "75.0"
    assert "of which the extra tasks' data, LoRAs, tokens and encodings 4.0 min (8 jobs)" in text
    import matplotlib.image

    one = matplotlib.image.imread(fig).shape[1]
    ab.ablations_figure([m, c], fig)  # two families and one more panel: accuracy against the number of sources
    assert matplotlib.image.imread(fig).shape[1] == pytest.approx(3 * one, rel=0.05)


def test_family_budget_counts_the_jobs_of_its_configured_settings_only(tmp_path):
    """The report's budget per family: its cells, summary, own encodings and (the curve) its extra
    tasks' jobs, not the files left by settings no longer configured or by another family."""
    from dnd.reporting.tables import benchmark_minutes

    def bench(rel, s):
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t1\t{s / 2}\n")

    for rel, s in {"condition/evaluate_answer_t.tsv": 60, "condition/evaluate_prompt_answer_t.tsv": 120,
                   "condition/generate_answer_t_0.tsv": 6, "condition/train_generator_mixed_t.tsv": 600,
                   "condition/summary.tsv": 6, "encode/condition-answer_ds_train.tsv": 30,
                   "encode/extractor-llm_ds_train.tsv": 900, "sources/evaluate_2_t.tsv": 60,
                   "sources/evaluate_12_t.tsv": 600, "sources/extra/train_lora_x.tsv": 120,
                   "sources/train_generator_2o1_t.tsv": 240,
                   "sources/extra/encode_prompts_x_train.tsv": 6, "sources/extra/train_lora_z.tsv": 900}.items():
        bench(rel, s)
    files = sorted(tmp_path.rglob("*.tsv"))  # the files the report is passed (--benchmarks)
    cond = {"family": "condition", "settings": ["prompt", "answer", "prompt_answer"], "targets": ["t"]}
    assert benchmark_minutes(files, ab.family_jobs(cond)) == pytest.approx((3.7, 1.85, 5))  # not `mixed`
    assert benchmark_minutes(files, ab.family_jobs(cond, extra_only=True)) is None
    curve = {"family": "sources", "settings": ["2", "14"], "targets": ["t"], "extra_sources": ["x"]}
    assert benchmark_minutes(files, ab.family_jobs(curve)) == pytest.approx((3.1, 1.55, 3))  # not 12, not z
    curve["settings"] = ["2", "2o1", "14"]  # a count in another source order: its jobs count too
    assert benchmark_minutes(files, ab.family_jobs(curve)) == pytest.approx((7.1, 3.55, 4))
    assert benchmark_minutes(files, ab.family_jobs(curve, extra_only=True)) == pytest.approx((2.1, 1.05, 2))
    # the workflow's paths (benchmarks/ablations/...): the files are picked by their last folders
    rel = [f.relative_to(tmp_path) for f in files]
    assert [f for f in rel if ab.family_jobs(cond)(Path("benchmarks/ablations") / f)] == \
        [f for f in rel if ab.family_jobs(cond)(f)]


def test_summary_command_refuses_incomplete_cells(tmp_path, caplog):
    """An ablation cell's eval file with fewer DnD adapters than n_adapters, or without a training
    LoRA of the cell: `dnd ablation-summary` names the cell and what is missing."""
    import json

    from dnd.cli import main as cli_main

    n = 20
    rows = _rows("t", [[1] * n, [0] * n], {"s1": [1, 0] * 10, "s2": [0, 1] * 10})
    rows.append({**rows[-1], "method": "base", "adapter": "base"})
    f = tmp_path / "cell.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["ablation-summary", "--params", json.dumps({"family": "condition", "n_adapters": 3, "bootstrap": 10,
                                                        "cells": [["prompt", "t", str(f), ["s1", "s2"]]]}),
            "--out", str(tmp_path / "c.csv"), "--metrics", str(tmp_path / "c.json")]
    assert cli_main(argv) == 1 and not (tmp_path / "c.csv").exists()
    assert f"in condition/prompt/t ({f}): target t: 2 dnd adapters ['dnd_0', 'dnd_1'], expected 3" in caplog.text
    caplog.clear()
    argv[2] = json.dumps({"family": "condition", "n_adapters": 2, "bootstrap": 10,
                          "cells": [["prompt", "t", str(f), ["s1", "s3"]]]})
    assert cli_main(argv) == 1 and "target t: no source_lora/s3 row" in caplog.text
    argv[2] = json.dumps({"family": "condition", "n_adapters": 2, "bootstrap": 10,
                          "cells": [["prompt", "t", str(f), ["s1", "s2"]]]})
    assert cli_main(argv) == 0
    # a cell without an eval file is the default run's: its target's file among --default-eval
    default = tmp_path / "eval" / "t.jsonl"
    default.parent.mkdir()
    default.write_text(f.read_text())
    argv[2] = json.dumps({"family": "condition", "n_adapters": 2, "bootstrap": 10,
                          "cells": [["default", "t", None, ["s1", "s2"]]]})
    assert cli_main(argv + ["--default-eval", str(f)]) == 1
    assert (f"condition/default/t: the default run's rows: no path ending in t.jsonl among the --default-eval "
            f"paths ({f})") in caplog.text
    assert cli_main(argv + ["--default-eval", str(f), str(default)]) == 0


# ------------------------------------------------------------------ the sources curve over source orders
DS7 = ["arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande"]


def _old_source_order(target, datasets, seed, extra=()):
    """The one seeded order the curve took before source orders (issue 29), verbatim."""
    import random

    from dnd.schedule import derive_seed

    others = [d for d in datasets if d != target]
    random.Random(derive_seed(seed, "ablation-sources", target)).shuffle(others)
    more = sorted(extra)
    random.Random(derive_seed(seed, "ablation-extra-sources")).shuffle(more)
    return others + more


def test_order_zero_keeps_the_committed_settings_names_and_sources():
    """Order 0 is the curve as it was: the same names ("3") and the same sources for every count,
    so the committed runs' generators and scores stay valid; orders >= 1 only add names ("3o1")
    below all the other datasets."""
    extra = ["siqa", "qasc", "sciq"]
    configured = [2, 3, 4, 5, 6, 8]
    plain = ab.family_settings("sources", configured, len(DS7), 1)
    assert plain == [str(n) for n in configured]
    settings = ab.family_settings("sources", configured, len(DS7), 3)
    assert [s for s in settings if ab.parse_source_setting(s)[1] == 0] == plain
    assert set(settings) - set(plain) == {f"{n}o{o}" for n in (2, 3, 4, 5) for o in (1, 2)}  # 8 more per target
    assert settings.index("3o2") == settings.index("3") + 2 < settings.index("4")  # orders next to their count
    for target in DS7:
        assert ab.source_order(target, DS7, 42, extra) == _old_source_order(target, DS7, 42, extra)
        for n in configured:
            got = ab.setting_overrides("sources", str(n), target, DS7, 42, "base", extra)["sources"]
            assert got == _old_source_order(target, DS7, 42, extra)[:n]
    assert [ab.parse_source_setting(s) for s in ("3", "3o1", "14", "2o12")] == [(3, 0), (3, 1), (14, 0), (2, 12)]
    assert all(ab.source_setting(*ab.parse_source_setting(s)) == s for s in settings)
    for bad in ("3o0", "o1", "3o", "3x1", "-3", "3o01"):
        with pytest.raises(ValueError, match="is not a count"):
            ab.parse_source_setting(bad)
    assert ab.is_default("sources", "6", len(DS7)) and not ab.is_default("sources", "5o1", len(DS7))
    with pytest.raises(ValueError, match="every other order is the same there"):  # 6 = all the others: no orders
        ab.setting_overrides("sources", "6o1", "piqa", DS7, 42, "base", extra)
    with pytest.raises(ValueError, match="names an order"):
        ab.family_settings("sources", ["3o1"], len(DS7), 3)
    assert ab.family_settings("pool", [32, "all"], len(DS7), 3) == ["32", "all"]  # other families: as configured
    assert ab.reference_setting("sources", ["2", "2o1", "3", "3o1", "10"]) == "10"
    assert ab.reference_setting("sources", ["2", "3o1", "3"]) == "3"  # the most datasets, order 0


def test_source_orders_differ_from_each_other_and_are_reproducible():
    extra = ["x", "y"]
    for seed in (0, 42):
        for target in DS7:
            orders = [ab.source_order(target, DS7, seed, extra, o) for o in range(4)]
            assert orders == [ab.source_order(target, DS7, seed, extra, o) for o in range(4)]  # reproducible
            others = sorted(d for d in DS7 if d != target)
            assert all(sorted(o[:6]) == others and o[6:] == orders[0][6:] for o in orders)  # extras: one order
            assert len({tuple(o) for o in orders}) == 4  # four distinct orders
            assert ab.source_order(target, DS7, seed, extra, 1) != ab.source_order(target, DS7, seed + 1, extra, 1)
        # the counts' source sets differ between orders somewhere (not only the order inside a set)
        sets = {o: {frozenset(ab.source_order(t, DS7, seed, (), o)[:3]) for t in DS7} for o in range(3)}
        assert sets[0] != sets[1] and sets[1] != sets[2]
    # two other datasets: order 1 is the other one of the two orders (the smoke profile's count 1)
    small = ["capitals", "sounds", "opposites"]
    assert ab.source_order("capitals", small, 0, (), 1) == list(reversed(ab.source_order("capitals", small, 0)))
    assert ab.source_order("capitals", small, 0, (), 2) in (ab.source_order("capitals", small, 0, (), o)
                                                            for o in (0, 1))  # no third order exists


def _order_cells(effects, targets=("t", "u"), n=80, seed=0):
    """Cells of the sources family on 5 datasets: counts 1 and 2 in the orders of `effects`
    (count -> per order the chance that DnD is right), 4 (the reference) at 0.7; training LoRAs
    right on every other item."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ds = list(targets) + ["a", "b", "c", "d"][: 5 - len(targets)]
    half = [i % 2 for i in range(n)]
    cells, srcs = {}, {}
    for t in targets:
        same = list((rng.random(n) < 0.5).astype(int))
        plan = {"4": 0.7}
        for count, ps in effects.items():
            plan.update({ab.source_setting(count, o): p for o, p in enumerate(ps)})
        for s, p in plan.items():
            srcs[(s, t)] = ab.setting_overrides("sources", s, t, ds, 0, "base")["sources"]
            correct = same if p is None else list((rng.random(n) < p).astype(int))
            cells[(s, t)] = _rows(t, [correct], {d: half for d in srcs[(s, t)]})
    return cells, srcs


def test_curve_over_orders_pools_orders_then_items():
    import numpy as np

    # no order effect: every order of count 1 scores the same items the same way (p None: one draw)
    cells, srcs = _order_cells({1: [None, None, None], 2: [0.5]})
    _, m = ab.summarize(cells, "sources", srcs, 1, 400, 0)
    assert m["orders"] == {"1": ["1", "1o1", "1o2"]} and m["reference"] == "4"
    for t in ("t", "u", "mean"):
        k = ab.order_key(1, t)
        assert m[k] == pytest.approx(m[f"1/{t}/dnd_minus_train_avg/acc"])  # the same centre as order 0 alone
        assert (m[f"{k}_ci_low"], m[f"{k}_ci_high"]) == pytest.approx((m[f"{k}_item_ci_low"], m[f"{k}_item_ci_high"]))
        assert m[f"{k}_order_sd"] == pytest.approx(0) and m[f"{k}_item_se"] > 0
    assert (m[f"{ab.order_key(1, 'mean')}_item_ci_low"], m[f"{ab.order_key(1, 'mean')}_item_ci_high"]) == \
        pytest.approx((m["1/mean/dnd_minus_train_avg/acc_ci_low"], m["1/mean/dnd_minus_train_avg/acc_ci_high"]))
    assert ab.order_key(2, "mean") not in m  # one order: no pooled figure
    # an order effect: order 1 far better, order 2 far worse than order 0; the CI over orders and
    # items is wider than order 0's over items and holds every order's mean
    cells, srcs = _order_cells({1: [0.5, 0.95, 0.1], 2: [0.6, 0.6, 0.6]})
    rows, m = ab.summarize(cells, "sources", srcs, 1, 400, 0)
    for t in ("t", "u", "mean"):
        k = ab.order_key(1, t)
        width, item_width = m[f"{k}_ci_high"] - m[f"{k}_ci_low"], m[f"{k}_item_ci_high"] - m[f"{k}_item_ci_low"]
        assert width > 2 * item_width
        assert m[f"{k}_order_sd"] > 3 * m[f"{k}_item_se"]
        by_order = m[f"{k}_by_order"]
        assert len(by_order) == 3 and by_order[1] > by_order[0] > by_order[2]
        assert m[k] == pytest.approx(np.mean(by_order))
        r = ab.order_key(1, t, ref="4")
        assert m[r] == pytest.approx(np.mean(m[f"{r}_by_order"]))
        assert m[f"{r}_by_order"][0] == pytest.approx(
            m["4_minus_1/mean/dnd/acc"] if t == "mean" else
            100 * (np.mean(cells[("4", t)][0]["correct"]) - np.mean(cells[("1", t)][0]["correct"])))
    assert m[ab.order_key(1, "mean")] == pytest.approx(np.mean([m[ab.order_key(1, t)] for t in ("t", "u")]))
    # one draw of orders serves both targets: their shared order effect does not average out over targets
    widths = {t: m[f"{ab.order_key(1, t)}_ci_high"] - m[f"{ab.order_key(1, t)}_ci_low"] for t in ("t", "u", "mean")}
    assert widths["mean"] > 0.85 * (widths["t"] + widths["u"]) / 2
    k = ab.order_key(2, "mean")
    assert m[f"{k}_ci_high"] - m[f"{k}_ci_low"] < m[f"{ab.order_key(1, 'mean')}_ci_high"] - m[
        f"{ab.order_key(1, 'mean')}_ci_low"]
    # the per-setting figures are those of the settings run alone (no key changed or lost)
    alone = {k: v for k, v in cells.items() if ab.parse_source_setting(k[0])[1] == 0}
    _, m0 = ab.summarize(alone, "sources", {k: srcs[k] for k in alone}, 1, 400, 0)
    same = {k for k in m0 if k not in ("settings", "orders")}
    assert same and all(m[k] == m0[k] for k in same), [k for k in same if m[k] != m0[k]]
    assert {(r["setting"], r["method"]) for r in rows} >= {("1o2", "dnd"), ("1o2", "train_avg")}
    # the verdict tests 4 against each count once, over its orders
    text = ab.family_verdict(m)
    assert "DnD (1 source, mean over 3 orders)" in text and "1 source, order" not in text
    assert "DnD (2 sources, mean over 3 orders)" in text and "over source orders and items" in text
    key = ab.order_key(1, "mean", ref="4")
    lo, hi = m[f"{key}_ci_low"], m[f"{key}_ci_high"]
    assert f"({m[key]:+.1f} points [{lo:+.1f}, {hi:+.1f}])" in text
    with pytest.raises(ValueError, match="were scored on other items of t"):
        bad = dict(cells)
        bad[("1o1", "t")] = _rows("t", [[1] * 80], {d: [0] * 80 for d in srcs[("1o1", "t")]},
                                  ids=[f"other-{i}" for i in range(80)])
        ab.summarize(bad, "sources", srcs, 1, 50, 0)


def test_report_lists_the_curve_and_the_datasets_each_order_adds(tmp_path):
    cells, srcs = _order_cells({1: [0.5, 0.9, 0.2], 2: [0.5, 0.6, 0.4]})
    _, m = ab.summarize(cells, "sources", srcs, 1, 200, 0)
    m["defaults"] = ["4"]
    ds = ["t", "u", "a", "b", "c"]
    table = ab.curve_table(m).set_index("Datasets")
    assert list(table.index) == ["1", "2", "4"] and list(table["Orders"]) == ["3", "3", "1"]
    k = ab.order_key(2, "mean")
    assert table.loc["2", "Mean over targets"] == f"{m[k]:+.1f} [{m[k + '_ci_low']:+.1f}, {m[k + '_ci_high']:+.1f}]"
    assert table.loc["4", "DnD (4 sources) minus DnD (this count)"] == "(reference)"
    lines = ab.added_datasets(m, "u")
    orders = [ab.source_order("u", ds, 0, (), o) for o in range(3)]
    assert lines[0] == "1 source: " + "; ".join(f"order {o}: +{orders[o][0]}" for o in range(3))
    assert lines[1] == "2 sources: " + "; ".join(f"order {o}: +{orders[o][1]}" for o in range(3))
    assert lines[2] == f"4 sources: order 0: +{orders[0][2]}, +{orders[0][3]}"
    text = ab.ablations_markdown([m], "f.png", {}, 1)
    from dnd.benchmarks.datasets import title

    assert "The curve over 3 seeded orders" in text and f"- {title('u')}:" in text
    assert "  - " + lines[0] in text and "  - " + lines[1] in text
    ab.ablations_figure([m], tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
