"""The function_space experiment's generator side (issue 30 items 5-6): the noise baseline, the ΔW distance
check, the report's scores.csv / metrics.json / report.md on small synthetic inputs, and the smoke job set of
`function_space` (dnd.experiments.function_space.checks and .report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from dnd.cli import main as cli_main
from dnd.config import ConfigError, check_experiment, validate_config
from dnd.diagnostics import adapter_factors, distance, gram
from dnd.experiments.function_space import checks, report
from dnd.io import save_safetensors
from dnd.summary import CONTROL_KINDS, SCORE_COLUMNS

GENS = {"gsft": {"objective": "sft", "zoo": "default", "design": "hyperconv"},
        "gshared": {"objective": "reconstruction", "zoo": "shared_a", "design": "hyperconv"}}


# ------------------------------------------------------------------------------------- ΔW checks
def _lora(path: Path, seed: int, scale: float = 1.0, shared_a: dict | None = None) -> dict[str, torch.Tensor]:
    """A small two-module PEFT-style LoRA folder (A (2, 6), B (5, 2)); `shared_a`: its A tensors."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for m in ("q_proj", "v_proj"):
        ka = f"base_model.model.layers.0.self_attn.{m}.lora_A.weight"
        sd[ka] = shared_a[ka].clone() if shared_a else torch.randn(2, 6, generator=g)
        sd[ka.replace("lora_A", "lora_B")] = scale * torch.randn(5, 2, generator=g)
    path.mkdir(parents=True, exist_ok=True)
    save_safetensors(sd, path / "adapter_model.safetensors", path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "peft_type": "LORA"}))
    return sd


def _dist(a: Path, b: Path) -> float:
    return distance(gram([adapter_factors(a), adapter_factors(b)]), 0, 1)


@pytest.mark.parametrize("dist", [0.0, 0.05, 3.0, 40.0])
def test_noise_adapter_lies_at_the_requested_distance_and_is_seeded(tmp_path, dist):
    sd = _lora(tmp_path / "src", 0)
    noised, sigma = checks.noise_adapter(sd, dist, seed=7)
    got = distance(gram([checks.sd_factors(sd), checks.sd_factors(noised)]), 0, 1)
    assert got == pytest.approx(dist, rel=1e-4, abs=1e-6)
    assert (sigma == 0) == (dist == 0) and sigma >= 0
    again, _ = checks.noise_adapter(sd, dist, seed=7)
    other, _ = checks.noise_adapter(sd, dist, seed=8)
    assert all(torch.equal(again[k], noised[k]) for k in sd)
    assert dist == 0 or any(not torch.equal(other[k], noised[k]) for k in sd)
    assert {k: v.dtype for k, v in noised.items()} == {k: v.dtype for k, v in sd.items()}
    # the noise is on A and B alike (every entry moves), growing with the distance
    if dist > 0:
        assert all(not torch.equal(noised[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="finite"):
        checks.noise_adapter(sd, math.nan, seed=7)


def _check_world(tmp_path: Path) -> dict:
    """Three training LoRAs (one far from the others), the prompt-nearest one b; generated adapters: a
    copy of b and one midway between a and c; a default eval file naming b the nearest."""
    src = {d: tmp_path / "zoo" / d / "final" for d in ("a", "b", "c")}
    sds = {d: _lora(p, i, scale=1.0 + 2 * (d == "c")) for i, (d, p) in enumerate(src.items())}
    gen = tmp_path / "gen"
    copy = gen / "dnd_0"
    _lora(copy, 1)  # the same draw as b: b's copy
    mid = {k: (sds["a"][k] + sds["c"][k]) / 2 if ".lora_B." in k else sds["a"][k] for k in sds["a"]}
    (gen / "dnd_1").mkdir(parents=True)
    save_safetensors(mid, gen / "dnd_1" / "adapter_model.safetensors", gen / "dnd_1" / "adapter_model.safetensors")
    (gen / "dnd_1" / "adapter_config.json").write_text((src["a"] / "adapter_config.json").read_text())
    ev = tmp_path / "eval" / "t.jsonl"
    ev.parent.mkdir()
    ev.write_text(json.dumps({"target": "t", "method": "nearest", "adapter": "b"}) + "\n"
                  + json.dumps({"target": "t", "method": "base", "adapter": "base"}) + "\n")
    return {"target": "t", "seed": 3, "eval": str(ev),
            "generators": {"g": {"zoo": "default", "sources": {d: str(p) for d, p in src.items()},
                                 "adapters": [str(gen / "dnd_0"), str(gen / "dnd_1")],
                                 "noise": [str(tmp_path / "noise" / f"g_{i}") for i in range(2)]}}}


def test_distance_check_and_noise_baseline_command(tmp_path):
    plan = _check_world(tmp_path)
    out = tmp_path / "checks.csv"
    assert cli_main(["fs-checks", "--plan-json", json.dumps(plan), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == checks.CHECK_COLUMNS and len(rows) == 2
    src = plan["generators"]["g"]["sources"]
    between = [_dist(Path(src[x]), Path(src[y])) for x, y in (("a", "b"), ("a", "c"), ("b", "c"))]
    copy, mid = rows
    # the copy of b: at distance 0 from b, nearest by ΔW and by prompts
    assert copy["nearest_dw"] == "b" and float(copy["dist_nearest_dw"]) == pytest.approx(0, abs=1e-9)
    assert float(copy["ratio_to_min_between"]) == pytest.approx(0, abs=1e-9)
    assert float(copy["min_between"]) == pytest.approx(min(between))
    assert float(copy["mean_between"]) == pytest.approx(sum(between) / 3)
    # the other adapter: its nearest training LoRA by ΔW is the closest of the three, computed apart
    own = {d: _dist(Path(plan["generators"]["g"]["adapters"][1]), Path(p)) for d, p in src.items()}
    assert mid["nearest_dw"] == min(own, key=own.get)
    assert float(mid["dist_nearest_dw"]) == pytest.approx(min(own.values()), rel=1e-6) and min(own.values()) > 0
    assert float(mid["dist_nearest_prompt"]) == pytest.approx(_dist(Path(plan["generators"]["g"]["adapters"][1]),
                                                                    Path(src["b"])), rel=1e-6)
    # each noise adapter: b plus noise at its adapter's distance from b, a PEFT folder with b's config
    for row, noise in zip(rows, plan["generators"]["g"]["noise"]):
        assert _dist(Path(noise), Path(src["b"])) == pytest.approx(float(row["dist_nearest_prompt"]), rel=1e-4,
                                                                   abs=1e-6)
        assert float(row["noise_dist"]) == pytest.approx(float(row["dist_nearest_prompt"]), rel=1e-4, abs=1e-6)
        cfg = json.loads((Path(noise) / "adapter_config.json").read_text())
        assert cfg == json.loads((Path(src["b"]) / "adapter_config.json").read_text())
    bad = dict(plan, eval=str(tmp_path / "none.jsonl"))
    (tmp_path / "none.jsonl").write_text(json.dumps({"target": "t", "method": "base", "adapter": "base"}) + "\n")
    with pytest.raises(ValueError, match="expected one nearest row"):
        checks.run_checks(bad)


# ------------------------------------------------------------------------------------- report
def _world(seed: int = 0, n: int = 40):
    """Per target: the default run's rows, the labeled baselines', the generators' side's (fs-score)."""
    from test_summary import DATASETS, _eval_rows

    rng = np.random.default_rng(seed)
    default = _eval_rows(seed)
    labeled, extra = {}, {}
    for t, rs in default.items():
        ids = rs[0]["ids"]

        def row(method, adapter, p):
            c = rng.binomial(1, p, n).tolist()
            lp = (-2.0 + 1.5 * np.asarray(c) + rng.normal(0, 0.3, n)).round(6).tolist()
            return {"target": t, "method": method, "adapter": adapter, "n": n, "acc": float(np.mean(c)),
                    "correct": c, "ids": ids, "metric": "acc", "gold_logprob": lp}

        src = next(r for r in rs if r["method"] == "source_lora" and r["adapter"] != t)
        labeled[t] = [row("multitask_lora", "multitask", 0.5), dict(src, method="val_picked")]
        extra[t] = [row("dnd_noise", str(i), 0.4) for i in range(2)]
        for g, p in (("gsft", 0.9), ("gshared", 0.5)):
            extra[t] += [row(g, str(i), p) for i in range(2)]
            extra[t] += [row(f"{g}_{k}", "0", 0.3) for k in CONTROL_KINDS]
            extra[t] += [row(f"{g}_noise", str(i), 0.3) for i in range(2)]
        extra[t].append(row("shared_a_nearest", src["adapter"], 0.45))
    return DATASETS, default, labeled, extra


def _write(root: Path, rows: dict) -> list[str]:
    from test_summary import _write_eval

    return _write_eval(root, rows)


def _checks_csv(path: Path, targets) -> str:
    rows = [{"target": t, "generator": g, "zoo": "default", "adapter": f"dnd_{i}", "nearest_dw": "x",
             "dist_nearest_dw": 0.5 + i, "nearest_prompt": "x", "dist_nearest_prompt": 1.0, "min_between": 1.0,
             "mean_between": 2.0, "ratio_to_min_between": 0.5 + i, "noise_sigma": 0.1, "noise_dist": 1.0}
            for t in targets for g in ("dnd", *GENS) for i in range(2)]
    pd.DataFrame(rows, columns=checks.CHECK_COLUMNS).to_csv(path, index=False)
    return str(path)


def run_report(tmp_path: Path, world=None):
    """Run fs-report on the synthetic world (or `world`, _world's tuple); (targets, default rows, extra
    rows, scores, metrics, report text)."""
    targets, default, labeled, extra = world or _world()
    files = {k: _write(tmp_path / k, v) for k, v in (("d", default), ("l", labeled), ("g", extra))}
    folds = {t: [d for d in targets if d != t] for t in targets}
    params = {"bootstrap": 300, "seed": 0, "folds": folds, "generators": GENS, "n_adapters": 2}
    diag = tmp_path / "diagnostics" / "shared_a" / f"{targets[0]}.csv"
    diag.parent.mkdir(parents=True)
    diag.write_text(f"fold,variant,metric,value\n{targets[0]},zoo,reachability,0.25\n")
    out = {k: tmp_path / "out" / f for k, f in (("scores", "scores.csv"), ("metrics", "metrics.json"),
                                                ("md", "report.md"), ("fig", "figures/fs.png"))}
    bench = []
    for name, sec in (("train_generator_gsft_arc_easy", 90), ("train_generator_gsft_piqa", 30), ("score_boolq", 12),
                      ("train_shared_a_piqa", 6)):
        f = tmp_path / "benchmarks" / "function_space" / f"{name}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{sec}\t0:00:00\t1\t{sec}\n")
        bench.append(str(f))
    argv = ["fs-report", "--params", json.dumps(params), "--benchmarks", *bench,
            "--default-eval", *files["d"], "--labeled-eval", *files["l"],
            "--generators-eval", *files["g"], "--checks", _checks_csv(tmp_path / "checks.csv", targets),
            "--diagnostics", str(diag), "--scores", str(out["scores"]), "--metrics", str(out["metrics"]),
            "--out", str(out["md"]), "--figure", str(out["fig"])]
    assert cli_main(argv) == 0
    assert out["fig"].stat().st_size > 0
    return (targets, default, extra, pd.read_csv(out["scores"], keep_default_na=False),
            json.loads(out["metrics"].read_text()), out["md"].read_text())


def test_report_scores_metrics_and_words(tmp_path):
    targets, default, extra, scores, m, text = run_report(tmp_path)
    assert list(scores.columns) == SCORE_COLUMNS
    # every generator method has its adapters and a mean row; the default run's rows are there too
    for t in targets:
        st = scores[scores.target == t]
        assert set(st[st.method == "gsft"].adapter) == {"0", "1", "mean"}
        assert {"dnd", "nearest", "multitask_lora", "gsft_noise", "dnd_noise", "shared_a_nearest"} <= set(st.method)
        # a generator's difference is the paired item mean against the default run's nearest
        by = {(r["method"], r["adapter"]): np.asarray(r["correct"], float) for r in default[t] + extra[t]}
        gsft = np.mean([v for (mm, _), v in by.items() if mm == "gsft"], axis=0)
        near = next(v for (mm, _), v in by.items() if mm == "nearest")
        assert m[f"{t}/gsft_minus_nearest/acc"] == pytest.approx(float((gsft - near).mean()))
        lo, hi = m[f"{t}/gsft_minus_nearest/acc_ci_low"], m[f"{t}/gsft_minus_nearest/acc_ci_high"]
        assert lo <= m[f"{t}/gsft_minus_nearest/acc"] <= hi
        assert m[f"{t}/gsft/dist_ratio"] == pytest.approx(1.0)
        assert m[f"{t}/gsft/share_closer_than_sources"] == pytest.approx(0.5)
    pooled = np.mean([m[f"{t}/gsft_minus_nearest/acc"] for t in targets])
    assert m["mean/gsft_minus_nearest/acc"] == pytest.approx(pooled)
    for s, b in (("gsft", "multitask_lora"), ("gsft", "gsft_control_random"), ("gsft", "gsft_noise"),
                 ("dnd", "dnd_noise"), ("dnd", "control_other"), ("gshared", "shared_a_nearest"),
                 ("multitask_lora", "nearest"), ("gsft", "soup"), ("gsft", "train_avg")):
        for metric in ("acc", "gold_logprob"):
            assert m[f"mean/{s}_minus_{b}/{metric}_ci_low"] <= m[f"mean/{s}_minus_{b}/{metric}_ci_high"]
    assert m[f"{targets[0]}/shared_a/reachability"] == 0.25
    # gsft (p 0.9) is clearly ahead of nearest; the words say so in the project's vocabulary
    assert m["mean/gsft_minus_nearest/verdict"].startswith("reproduced")
    assert "| gsft | hyperconv | sft | default |" in text and "Ahead of the nearest source" in text
    # the paper's baseline too: each subject against the training-LoRA average, with its verdict word
    assert "Ahead of the training-LoRA average (pooled CI above 0)" in text and "(the paper's baseline), pooled" in text
    gsft_line = next(line for line in text.splitlines() if line.startswith("- gsft: "))
    assert gsft_line.endswith(m["mean/gsft_minus_train_avg/verdict"])
    # the measured job times, per kind of job (the target or the dataset taken off the name)
    assert "4 jobs, 2 min of job wall time" in text
    assert "| train_generator_gsft | 2 | 2.0 |" in text and "| score | 1 | 0.2 |" in text
    assert "| train_shared_a | 1 | 0.1 |" in text
    from test_verdict_words import check

    assert "reproduced" in check(text)


def test_room_above_a_baseline_is_a_labeled_adapter_ahead_of_it():
    """A generator's claim "beats B" is testable where the target's own LoRA or the multi-task LoRA
    beats B (pooled CI above 0); else the reason names both CIs."""
    def metrics(oracle, multitask):
        out = {}
        for ref, (v, lo, hi) in (("oracle", oracle), ("multitask_lora", multitask)):
            out.update({f"mean/{ref}_minus_nearest/acc": v, f"mean/{ref}_minus_nearest/acc_ci_low": lo,
                        f"mean/{ref}_minus_nearest/acc_ci_high": hi})
        return out

    assert report.room_reason(metrics((-0.01, -0.03, 0.01), (0.02, 0.005, 0.035)), "nearest") is None
    assert report.room_reason(metrics((0.02, 0.001, 0.04), (-0.02, -0.04, 0.0)), "nearest") is None
    why = report.room_reason(metrics((-0.01, -0.03, 0.01), (0.02, -0.01, 0.05)), "nearest")
    assert why == ("no adapter trained on the target's labels beats nearest (the target's own LoRA -1.0 [-3.0, +1.0]; "
                   "the multi-task LoRA +2.0 [-1.0, +5.0])")
    # the multi-task LoRA as the baseline: only the target's own LoRA can show room above it
    only = {"mean/oracle_minus_multitask_lora/acc": 0.0, "mean/oracle_minus_multitask_lora/acc_ci_low": -0.02,
            "mean/oracle_minus_multitask_lora/acc_ci_high": 0.02}
    assert "the multi-task LoRA" not in report.room_reason(only, "multitask_lora")


def test_answer_reads_the_cis_then_the_room():
    def m(room, **cis):
        out = {"mean/room/nearest": room, "mean/oracle_minus_nearest/acc": 0.03,
               "mean/oracle_minus_nearest/acc_ci_low": 0.01, "mean/oracle_minus_nearest/acc_ci_high": 0.05}
        for s, (lo, hi) in cis.items():
            out.update({f"mean/{s}_minus_nearest/acc_ci_low": lo, f"mean/{s}_minus_nearest/acc_ci_high": hi})
        return out

    ahead = report._answer(m("why", a=(0.001, 0.02), b=(-0.005, 0.005)), ["a", "b"], "nearest", "nearest")
    assert ahead == "Ahead of nearest (pooled CI above 0): a."
    level = report._answer(m("testable", a=(-0.02, 0.03), b=(-0.005, 0.005)), ["a", "b"], "nearest", "nearest")
    assert level.startswith("No generator is ahead of nearest (no pooled CI above 0), although labels can beat it "
                            "(the target's own LoRA +3.0 [+1.0, +5.0]")
    assert level.endswith("level with it (CI inside ±1 point): b.")
    none = report._answer(m("why", a=(-0.02, 0.03)), ["a"], "nearest", "nearest")
    assert none.endswith("nor is any adapter trained on the targets' labels, so the claim is not testable here.")


def test_no_room_above_nearest_makes_the_generators_claims_untestable(tmp_path):
    """Where neither the targets' own LoRAs nor the multi-task LoRA beat nearest, a generator's claim
    against nearest is "not testable here" (its CI still shown), the labeled baselines keep their
    own verdicts, and the answer says why; the other baselines keep theirs."""
    targets, default, labeled, extra = _world()
    for t in targets:
        near = next(r for r in default[t] if r["method"] == "nearest")
        for r in default[t]:
            if r["method"] == "source_lora" and r["adapter"] == t:  # the oracle: as good as nearest, no better
                r.update(correct=list(near["correct"]), acc=near["acc"], gold_logprob=list(near["gold_logprob"]))
        for r in labeled[t]:
            if r["method"] == "multitask_lora":
                r.update(correct=[0] * len(r["correct"]), acc=0.0)
    _, _, _, _, m, text = run_report(tmp_path, (targets, default, labeled, extra))
    assert m["mean/room/nearest"].startswith("no adapter trained on the target's labels beats nearest")
    assert m["mean/gsft_minus_nearest/acc_ci_low"] > 0  # gsft (p 0.9) is ahead all the same
    assert m["mean/gsft_minus_nearest/verdict"].startswith("not testable here: no adapter trained")
    assert m["mean/multitask_lora_minus_nearest/verdict"].startswith("not reproduced")  # measured, not gated
    assert m["mean/room/multitask_lora"] == "testable"  # the oracle beats the zeroed multi-task LoRA
    assert m["mean/gsft_minus_multitask_lora/verdict"].startswith("reproduced")
    assert "| gsft | hyperconv | sft | default |" in text and "| not testable here |" in text
    assert "- nearest: not testable here, no adapter trained" in text
    assert "Ahead of the nearest source (pooled CI above 0): " in text  # the CI is read whatever the room


def test_report_refuses_missing_generator_rows(tmp_path):
    targets, default, labeled, extra = _world()
    extra = {t: [r for r in rs if r["method"] != "gsft_noise"] for t, rs in extra.items()}
    folds = {t: [d for d in targets if d != t] for t in targets}
    with pytest.raises(ValueError, match="no .*gsft_noise"):
        report.run_report({"bootstrap": 10, "seed": 0, "folds": folds, "generators": GENS},
                          _write(tmp_path / "d", default), _write(tmp_path / "l", labeled),
                          _write(tmp_path / "g", extra), [_checks_csv(tmp_path / "c.csv", targets)], [], [],
                          tmp_path / "s.csv", tmp_path / "m.json", tmp_path / "r.md", tmp_path / "f.png")


# ------------------------------------------------------------------------------------- config and workflow
def test_function_space_generators_config():
    from dnd.config import function_space_generator

    base = {"data": {"datasets": ["arc_easy", "boolq", "piqa", "hellaswag"]}, "base_model": {"source": "tiny"},
            "generator": {"steps": 300, "variants": ["basis"]}}
    cfg = validate_config({**base, "function_space": {"generators": {
        "s": {"objective": "sft", "steps": 4}, "t": {"design": "t2l", "lr": 3e-5, "zoo": "shared_a"}}}})
    check_experiment(cfg, "function_space")
    settings, zoo = function_space_generator(cfg, "s")
    assert settings["objective"] == "sft" and settings["steps"] == 4 and zoo == "default" and "variants" not in settings
    assert function_space_generator(cfg, "t")[1] == "shared_a"
    bad = [({"generators": {"x": {"objective": "nope"}}}, r"function_space.generators.x: .*objective"),
           ({"generators": {"x": {"zoo": "shared_a"}}, "shared_a_zoo": False}, "needs function_space.shared_a_zoo"),
           ({"generators": {"dnd": {}}}, "the name dnd"),
           ({"n_adapters": 9}, "exceeds generate.n_adapters")]
    for fs, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            check_experiment(validate_config({**json.loads(json.dumps(base)), "function_space": fs}), "function_space")


def test_function_space_dry_run_job_set(tmp_path):
    """The smoke profile's job set of `function_space`: per generator its training (sft ones through the
    model's train data), its adapters, one checks and one scoring job of the target, the report; nothing
    of it in `all`."""
    from test_workflow import dry_run_plan

    smoke = str(REPO / "config" / "smoke.yaml")
    jobs, counts = dry_run_plan("function_space", smoke, tmp_path)
    assert {r: n for r, n in counts.items() if r.startswith(("fs_", "function_space"))} == {
        "fs_val_split": 1, "fs_val_pick": 1, "fs_evaluate": 1, "fs_shared_a_train_lora": 3,
        "fs_shared_a_tokenize_zoo": 3, "fs_zoo_diagnostics": 2, "fs_summarize": 1, "fs_train_generator": 2,
        "fs_train_generator_sft": 2, "fs_generate": 4, "fs_checks": 1, "fs_score": 1, "fs_report": 1,
        "function_space": 1}
    sft = [j for j in jobs if j["rule"] == ["fs_train_generator_sft"]]
    for j in sft:
        assert sorted(f for f in j["input"] if f.endswith("train.jsonl")) == [
            "results/data/opposites/train.jsonl", "results/data/sounds/train.jsonl"]
        assert "resources/models/base" in j["input"]
    shared = next(j for j in jobs if j["rule"] == ["fs_train_generator"]
                  and any("tokens_shared_a" in f for f in j["input"]))
    assert not [f for f in shared["input"] if f.startswith("results/tokens/")]
    checks_job = next(j for j in jobs if j["rule"] == ["fs_checks"])
    assert "results/generated/capitals/dnd_0" in checks_job["input"]  # the default run's DnD, reused
    assert all(b.startswith("benchmarks/function_space/") for j in jobs if j["rule"][0].startswith("fs_")
               for b in j["benchmark"])
    # the report declares every other job's benchmark of the experiment
    rep = next(j for j in jobs if j["rule"] == ["fs_report"])
    declared = {f for f in rep["input"] if f.startswith("benchmarks/")}
    planned = {b for j in jobs for b in j["benchmark"] if b.startswith("benchmarks/function_space/")}
    assert declared == planned - set(rep["benchmark"])
    default, _ = dry_run_plan("all", smoke, tmp_path)
    assert default and not [j for j in default if j["rule"][0].startswith(("fs_", "function_space"))]
