"""The longer-trained zoo probe (dnd.experiments.zoo_probe.probe, target `zoo_probe`): the longer
schedule (dnd.zoo.longer_schedule), the config section, the weight-space figures on LoRAs whose
geometry is known, the oracle's lead on synthetic per-item scores (the same bootstrap as the
default run's summary), metrics.json and the report, the score command against the default run's
scorer, and the Snakemake job set of the target on the smoke profile (dry run).

Everything is built in a temporary directory; no download.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from dnd.experiments.zoo_probe import probe as zp  # first: sets HF_*_OFFLINE before transformers/lm_eval load

# isort: split
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO, declared_argv, save_random_lora, word_model
from dnd import stats, summary
from dnd.cli import main as cli_main
from dnd.config import ConfigError, check_experiment, load_config, validate_config, zoo_probe_datasets
from dnd.zoo import longer_schedule

LORA = {"r": 8, "alpha": 16, "lr": 3e-4, "batch_size": 8, "phase1_steps": 70, "checkpoint_steps": 30,
        "warmup_ratio": 0.01}


# ------------------------------------------------------------------------------ the schedule
def test_longer_schedule_is_factor_times_the_steps_with_the_same_checkpoints():
    longer = longer_schedule(LORA, 3)
    assert longer["phase1_steps"] + longer["checkpoint_steps"] == 3 * (70 + 30) == 300
    assert longer["checkpoint_steps"] == 30 and longer["phase1_steps"] == 270
    assert {k: v for k, v in longer.items() if k != "phase1_steps"} == \
        {k: v for k, v in LORA.items() if k != "phase1_steps"}
    assert LORA["phase1_steps"] == 70  # the zoo's settings are not modified
    assert longer_schedule(LORA, 1) == LORA  # factor 1 is the zoo's own schedule


@pytest.mark.parametrize("factor", [0, -2, 1.5, True, "3"])
def test_longer_schedule_refuses_a_factor_that_is_not_a_whole_number_of_runs(factor):
    with pytest.raises(ValueError, match="steps factor must be an integer >= 1"):
        longer_schedule(LORA, factor)


def test_the_workflow_derives_the_probe_schedule_from_the_lora_section():
    """The probe's train-lora gets the zoo's settings through longer_schedule (no copy of the lora
    section in the rule file) with the configured factor."""
    text = (REPO / "workflow" / "rules" / "zoo_probe.smk").read_text()
    assert 'longer_schedule(config["lora"], PROBE_CONFIG["steps_factor"])' in text
    assert not re.search(r"phase1_steps|checkpoint_steps\s*[:=]", text)


# ------------------------------------------------------------------------------ config
def _cfg(**zoo_probe):
    return {"data": {"datasets": ["arc_easy", "boolq", "piqa"]}, "base_model": {"source": "tiny"},
            "zoo_probe": zoo_probe}


def test_config_section_defaults_and_checks():
    cfg = validate_config(_cfg())
    assert cfg["zoo_probe"] == {"datasets": [], "steps_factor": 3}
    assert zoo_probe_datasets(cfg) == ["arc_easy", "boolq"]  # empty: the first two targets
    assert zoo_probe_datasets(validate_config(_cfg(datasets=["piqa"]))) == ["piqa"]
    # checked when the `zoo_probe` target is asked for (check_experiment), not at start-up
    with pytest.raises(ConfigError, match=r"zoo_probe.datasets names datasets not in data.datasets: \['hellaswag'\]"):
        check_experiment(validate_config(_cfg(datasets=["hellaswag"])), "zoo_probe")
    held = {**_cfg(datasets=["piqa"]), "generator": {"heldout": ["arc_easy", "boolq"]}}
    with pytest.raises(ConfigError, match=r"zoo_probe.datasets \['piqa'\] are not held-out targets"):
        check_experiment(validate_config(held), "zoo_probe")
    with pytest.raises(ConfigError, match="zoo_probe.steps_factor"):
        validate_config(_cfg(steps_factor=0))


def test_committed_profiles_name_their_probe_datasets():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert zoo_probe_datasets(cfg) == ["openbookqa", "winogrande"] and cfg["zoo_probe"]["steps_factor"] == 3
    # the rule stated in config.yaml: the two targets with the smallest oracle lead in the committed metrics
    metrics = json.loads((REPO / "results" / "metrics.json").read_text())
    lead = {t: metrics[f"{t}/oracle_minus_train_avg/acc"] for t in cfg["data"]["datasets"]}
    assert sorted(lead, key=lead.get)[:2] == sorted(zoo_probe_datasets(cfg), key=lead.get)
    smoke = load_config(REPO / "config" / "smoke.yaml")
    assert zoo_probe_datasets(smoke) == ["capitals", "sounds"]


# ------------------------------------------------------------------------------ weight space
KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"


def _unit(i: int, n: int = 5) -> torch.Tensor:
    e = torch.zeros(n)
    e[i] = 1.0
    return e


def _save(path: Path, a: torch.Tensor, b: torch.Tensor) -> Path:
    """A one-module rank-1 LoRA with ΔW = b a^T, as a PEFT folder (adapter_model.safetensors) or a
    checkpoint file."""
    file = path / "adapter_model.safetensors" if path.suffix != ".safetensors" else path
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({KEY.format("A"): a[None].contiguous(), KEY.format("B"): b[:, None].contiguous()}, str(file))
    return path


@pytest.fixture
def geometry(tmp_path):
    """Sources with ΔW = e_i e_i^T (i = 0, 1, 2); the target's default LoRA e_3 e_3^T lies outside
    their span (reachability 0)."""
    finals = {f"s{i}": _save(tmp_path / f"s{i}" / "final", _unit(i), _unit(i)) for i in range(3)}
    finals["t"] = _save(tmp_path / "t" / "final", _unit(3), _unit(3))
    ckpts = [_save(tmp_path / "t" / "checkpoints" / f"step-{k:05d}.safetensors", _unit(3), (1 + 0.1 * k) * _unit(3))
             for k in range(3)]
    return tmp_path, finals, ckpts


def test_reachability_of_a_longer_lora_inside_the_sources_span(geometry):
    """A longer LoRA that became one source's deviation from the sources' mean (ΔW = e_0 e_0^T) is
    fully reachable; the default one (orthogonal to every source) not at all."""
    root, finals, ckpts = geometry
    longer = _save(root / "long" / "final", _unit(0), _unit(0))
    same = [_save(root / "long" / "checkpoints" / f"step-{k:05d}.safetensors", _unit(0), _unit(0)) for k in range(3)]
    w = zp.weight_figures("t", ["s0", "s1", "s2"], finals, longer, ckpts, same)
    assert w["reachability_default"] == pytest.approx(0.0, abs=1e-12)
    assert w["reachability_longer"] == pytest.approx(1.0)
    assert w["cosine_to_default"] == pytest.approx(0.0, abs=1e-12) and w["norm_ratio"] == pytest.approx(1.0)
    assert w["checkpoint_spread_longer"] == pytest.approx(0.0, abs=1e-12)  # identical checkpoints
    # the default checkpoints 1.0, 1.1, 1.2 x e_3 e_3^T: mean distance from their mean 0.2/3, over the
    # mean distance between the sources (sqrt 2)
    assert w["checkpoint_spread_default"] == pytest.approx((0.2 / 3) / math.sqrt(2))
    assert w["distance_to_default"] == pytest.approx(math.sqrt(2) / math.sqrt(2))


def test_a_scaled_longer_lora_keeps_its_direction(geometry):
    root, finals, ckpts = geometry
    longer = _save(root / "long" / "final", _unit(3), 2 * _unit(3))  # ΔW twice the default's
    w = zp.weight_figures("t", ["s0", "s1", "s2"], finals, longer, ckpts, ckpts)
    assert w["cosine_to_default"] == pytest.approx(1.0) and w["norm_ratio"] == pytest.approx(2.0)
    assert w["reachability_longer"] == pytest.approx(0.0, abs=1e-12)
    assert w["distance_to_default"] == pytest.approx(1 / math.sqrt(2))


def test_fold_reachability_of_every_fold(geometry):
    _, finals, _ = geometry
    folds = {"t": ["s0", "s1", "s2"], "s0": ["s1", "s2", "t"]}
    reach = zp.fold_reachability(folds, finals)
    assert set(reach) == {"t", "s0"} and reach["t"] == pytest.approx(0.0, abs=1e-12)
    assert reach["s0"] == pytest.approx(0.0, abs=1e-12)  # e_0 e_0^T is orthogonal to the others too


def test_adapter_factors_refuses_a_file_without_lora_factors(tmp_path):
    from dnd.diagnostics import adapter_factors

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="no LoRA A/B factors"):
        adapter_factors(tmp_path / "x.safetensors")


# ------------------------------------------------------------------------------ the oracle's lead
N = 60
SOURCES = ["s0", "s1"]


def _row(target: str, adapter: str, correct, lp=None, method: str = "source_lora", **extra) -> dict:
    correct = [int(c) for c in correct]
    lp = [float(x) for x in (lp if lp is not None else -np.arange(len(correct)) / 10 - 1 + np.asarray(correct))]
    return {"target": target, "method": method, "adapter": adapter, "n": len(correct), "acc": float(np.mean(correct)),
            "correct": correct, "ids": [f"{target}-{i}" for i in range(len(correct))], "gold_logprob": lp, **extra}


def _world(target: str = "t", seed: int = 0):
    """The default run's rows of `target` (two training LoRAs, the oracle, the base model) and the
    longer LoRA's row: the longer oracle is right on every item the default one is, and more."""
    rng = np.random.default_rng(seed)
    train = [rng.random(N) < 0.4 for _ in SOURCES]
    oracle = rng.random(N) < 0.45
    longer = oracle | (rng.random(N) < 0.5)
    default = [_row(target, d, c) for d, c in zip(SOURCES, train)] + [_row(target, target, oracle),
                                                                      _row(target, "base", oracle, method="base")]
    return default, _row(target, target, longer, zoo="longer", steps_factor=3)


def test_lead_is_paired_over_items_as_in_the_default_summary():
    default, longer = _world()
    fig, boots = zp.lead_figures("t", SOURCES, default, longer, resamples=500, seed=0)
    c = lambda r: np.asarray(r["correct"], dtype=float)  # noqa: E731
    train_avg = (c(default[0]) + c(default[1])) / 2
    assert fig["lead_default/acc"] == pytest.approx((c(default[2]) - train_avg).mean())
    assert fig["lead_longer/acc"] == pytest.approx((c(longer) - train_avg).mean())
    assert fig["lead_change/acc"] == pytest.approx(fig["lead_longer/acc"] - fig["lead_default/acc"])
    assert fig["lead_change/acc"] > 0 and fig["lead_change/acc_ci_low"] > 0  # the longer oracle only gains items
    assert fig["reading_lead_change"] == "the longer-trained oracle is ahead of the default oracle"
    # the default lead and its CI are exactly the default run's oracle_minus_train_avg (same resamples)
    rows = default
    want, _ = summary._comparisons("t", rows, SOURCES, stats.bootstrap_indices(N, 500, 0, "t"), [summary.HEADROOM])
    for m in summary.ITEM_METRICS:
        for suffix in ("", "_ci_low", "_ci_high"):
            assert fig[f"lead_default/{m}{suffix}"] == pytest.approx(want[f"t/oracle_minus_train_avg/{m}{suffix}"])
    assert fig["headroom_longer"] in (zp.TESTABLE, stats.untestable_reason(
        oracle_ci=(100 * fig["lead_longer/acc_ci_low"], 100 * fig["lead_longer/acc_ci_high"])))
    assert boots[("lead_change", "acc")].shape == (500,)


def test_no_lead_change_is_level_or_not_told_apart():
    default, _ = _world()
    same = {**default[2], "zoo": "longer"}  # the longer LoRA scores exactly as the default one
    fig, _ = zp.lead_figures("t", SOURCES, default, same, resamples=200, seed=0)
    assert fig["lead_change/acc"] == 0.0 and fig["lead_change/acc_ci_low"] == fig["lead_change/acc_ci_high"] == 0.0
    assert fig["reading_lead_change"] == "the longer-trained oracle is level with the default oracle"


def test_lead_refuses_other_items_and_missing_rows():
    default, longer = _world()
    with pytest.raises(ValueError, match="scored on other items"):
        zp.lead_figures("t", SOURCES, default, {**longer, "ids": longer["ids"][::-1]}, 100, 0)
    with pytest.raises(ValueError, match=r"no source_lora rows of \['s1'\]"):
        zp.lead_figures("t", SOURCES, [r for r in default if r["adapter"] != "s1"], longer, 100, 0)


# ------------------------------------------------------------------------------ metrics.json and report
def _weights(reach_default: float, reach_longer: float) -> dict:
    return {"reachability_default": reach_default, "reachability_longer": reach_longer,
            "checkpoint_spread_default": 0.02, "checkpoint_spread_longer": 0.01, "cosine_to_default": 0.8,
            "distance_to_default": 0.5, "norm_ratio": 1.4}


def _metrics(resamples: int = 300) -> dict:
    (da, la), (db, lb) = _world("alpha", 1), _world("beta", 2)
    settings = {"datasets": ["alpha", "beta"], "steps_factor": 3, "folds": {"alpha": SOURCES, "beta": SOURCES},
                "lora": LORA, "bootstrap": resamples, "seed": 0}
    weights = {"alpha": _weights(0.10, 0.12), "beta": _weights(0.02, 0.05)}
    losses = {"alpha": {"default": 1.2, "longer": 0.9}, "beta": {"default": 0.8, "longer": 0.7}}
    return zp.probe_metrics(settings, da + db, [la, lb], weights, {"alpha": 0.1, "beta": 0.02, "s0": 0.3}, losses)


def test_metrics_pool_the_probe_datasets():
    m = _metrics()
    assert m["steps_default"] == 100 and m["steps_longer"] == 300 and m["datasets"] == ["alpha", "beta"]
    for key in ("reachability_longer", "lead_change/acc", "oracle_longer/acc", "final_loss_longer"):
        assert m[f"mean/{key}"] == pytest.approx((m[f"alpha/{key}"] + m[f"beta/{key}"]) / 2)
    assert m["mean/lead_change/acc_ci_low"] <= m["mean/lead_change/acc"] <= m["mean/lead_change/acc_ci_high"]
    assert m["mean/reading_lead_change"].startswith("the longer-trained oracle")
    json.dumps(m, allow_nan=False)  # strict JSON


def test_metrics_without_bootstrap_have_no_ci_and_say_so():
    m = _metrics(resamples=0)
    assert m["alpha/lead_change/acc_ci_low"] is None and m["mean/lead_change/acc_ci_high"] is None
    assert m["mean/reading_lead_change"] == "not told apart (no CI)"
    assert m["alpha/headroom_default"].startswith("the oracle does not beat the training-LoRA average (no CI)")
    json.dumps(m, allow_nan=False)


def test_report_answers_the_question_with_the_numbers():
    m = _metrics()
    md = zp.render_report(m)
    assert md.startswith("# A longer-trained zoo: one probe")
    assert "100 → 300" in md and "0.1 → 0.12 (higher)" in md and "0.02 → 0.05 (higher)" in md
    assert f"{100 * m['mean/lead_change/acc']:+.1f} [{100 * m['mean/lead_change/acc_ci_low']:+.1f}, " in md
    assert f": {m['mean/reading_lead_change']}." in md and "| Reading |" in md and "| Verdict |" not in md
    assert "from 0.02 (beta) to 0.3 (s0)" in md  # every fold's reachability, for scale
    assert all(w in md for w in stats.VERDICTS)
    assert "nan" not in md.lower()


@pytest.mark.parametrize("before, after, word", [(0.1, 0.105, "unchanged"), (0.1, 0.2, "higher"),
                                                 (0.1, 0.05, "lower"), (0.0012, 0.0009, "lower"),
                                                 (None, 0.1, "not measured")])
def test_reachability_words(before, after, word):
    assert zp.reach_words(before, after) == word


def test_headroom_words_name_the_reason():
    reason = stats.untestable_reason(oracle_ci=(-1.0, 2.0))
    assert zp.headroom_words(zp.TESTABLE, zp.TESTABLE) == "testable with either LoRA"
    assert zp.headroom_words(reason, zp.TESTABLE) == \
        f"{stats.NOT_TESTABLE} ({reason}) with the default LoRA, testable with the longer one"


def test_probe_settings_refuse_a_dataset_without_fold():
    with pytest.raises(ValueError, match=r"probe datasets \['x'\] have no fold"):
        zp.probe_settings({"zoo_probe": {"datasets": ["x"]}, "folds": {"t": ["s"]}})
    s = zp.probe_settings({"folds": {"a": ["b"], "b": ["a"], "c": ["a"]}, "bootstrap": 10})
    assert s["datasets"] == ["a", "b"] and s["steps_factor"] == 3 and s["lora"]["phase1_steps"] > 0


# ------------------------------------------------------------------------------ commands
def _lora_run(root: Path, name: str, a: torch.Tensor, b: torch.Tensor, loss: float) -> None:
    _save(root / name / "final", a, b)
    for k in range(2):
        _save(root / name / "checkpoints" / f"step-{k + 1:05d}.safetensors", a, (1 + 0.1 * k) * b)
    (root / name / "summary.json").write_text(json.dumps({"final_loss": loss}))


def test_report_command_writes_metrics_and_report(tmp_path):
    """zoo-probe-report finds every input among the declared paths by its dataset's name and writes
    metrics.json and report.md."""
    zoo, probe, ev, pev = tmp_path / "zoo", tmp_path / "zoo_probe" / "zoo", tmp_path / "eval", tmp_path / "pev"
    for i, d in enumerate(["s0", "s1", "t"]):
        _lora_run(zoo, d, _unit(i), _unit(i), 1.0)
    _lora_run(probe, "t", _unit(0) + _unit(2), _unit(0) + _unit(2), 0.5)
    default, longer = _world("t")
    ev.mkdir()
    pev.mkdir()
    (ev / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in default))
    (pev / "t.jsonl").write_text(json.dumps(longer) + "\n")
    params = {"zoo_probe": {"datasets": ["t"], "steps_factor": 3}, "lora": LORA, "bootstrap": 100, "seed": 0,
              "folds": {"t": ["s0", "s1"], "s0": ["s1", "t"], "s1": ["s0", "t"]}}
    out = tmp_path / "out"
    zoo_paths = [str(zoo / d / "final") for d in ("s0", "s1", "t")] + [str(zoo / "t" / p) for p in
                                                                       ("checkpoints", "summary.json")]
    argv = ["zoo-probe-report", "--params", json.dumps(params), "--default-eval", str(ev / "t.jsonl"),
            "--probe-eval", str(pev / "t.jsonl"), "--zoo", *zoo_paths,
            "--probe-zoo", *(str(probe / "t" / p) for p in ("final", "checkpoints", "summary.json")),
            "--metrics", str(out / "metrics.json"), "--out", str(out / "report.md")]
    assert cli_main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["t/final_loss_default"] == 1.0 and m["t/final_loss_longer"] == 0.5
    assert m["t/reachability_default"] == pytest.approx(0.0, abs=1e-9) and 0 < m["t/reachability_longer"] < 1
    assert set(m["reachability_folds"]) == {"t", "s0", "s1"}
    assert (out / "report.md").read_text() == zp.render_report(m)
    # a missing input is one line naming it
    assert cli_main([*argv[:argv.index("--zoo") + 1], *zoo_paths[:-1], *argv[argv.index("--probe-zoo"):]]) == 1


def test_score_command_is_the_default_runs_scorer(tmp_path):
    """zoo-probe-score scores the longer LoRA on the target's task items with dnd.evaluate's scorer:
    the same per-item results as InPlaceScorer on that adapter; a rerun reads the score cache."""
    from dnd import evaluate as ev
    from dnd.formats.prompts import lm_eval_task_yaml, to_eval_record

    items = [{"id": f"q{i}", "question": f"which is {w}?", "choices": ["red", "blue", "green"], "answer": i % 3,
              "passage": None, "style": "qa"} for i, w in enumerate(["sky", "sea", "leaf", "rose", "grass", "ice"])]
    records = [to_eval_record(it) for it in items]
    model_dir, _ = word_model(tmp_path, [r["context"] + " " + " ".join(r["choices"]) for r in records] + ["Answer :"])
    data, tasks = tmp_path / "data" / "t", tmp_path / "tasks"
    data.mkdir(parents=True)
    tasks.mkdir()
    (data / "test.lmeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tasks / "dnd_t.yaml").write_text(lm_eval_task_yaml("t", data / "test.lmeval.jsonl"))
    lora = tmp_path / "zoo_probe" / "zoo" / "t" / "final"
    save_random_lora(model_dir, lora, seed=3, b_std=0.5)
    params = {"evaluation": {"batch_size": 4, "dtype": "float32", "limit": None}, "zoo_probe": {"steps_factor": 3}}
    out, cache = tmp_path / "t.jsonl", tmp_path / "eval_cache" / "t"
    argv = ["zoo-probe-score", "--params", json.dumps(params), "--target", "t", "--model", str(model_dir),
            *declared_argv(tasks=tasks), "--lora", str(lora), "--out", str(out), "--cache-dir", str(cache),
            "--threads", "1"]
    assert cli_main(argv) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["method"], row["adapter"], row["zoo"], row["steps_factor"]) == ("source_lora", "t", "longer", 3)
    direct = ev.InPlaceScorer(model_dir, lora, tasks, "dnd_t", limit=None, batch_size=4).score(
        ev.load_state_dict(lora))
    assert row["ids"] == [r["id"] for r in records] and row["correct"] == direct.correct
    assert row["gold_logprob"] == pytest.approx(direct.gold_logprob(), abs=1e-5)
    assert any(cache.rglob("*.json"))
    out.unlink()
    assert cli_main(argv) == 0 and json.loads(out.read_text())["correct"] == row["correct"]  # from the cache
    bad = json.dumps({**params, "lora": {}})
    assert cli_main([*argv[:2], bad, *argv[3:]]) == 1


# ------------------------------------------------------------------------------ the workflow
def _dry_run(*targets: str, tmp_path: Path) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-n", "--cores", "1",
           *targets, "--configfile", str(REPO / "config" / "smoke.yaml"), "-d", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def _jobs(dry_run: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", dry_run, re.S)
    return {name: int(n) for name, n in (line.split() for line in m.group(1).splitlines())}


def test_smoke_dry_run_job_set(tmp_path):
    """`snakemake -n zoo_probe` on the smoke profile: two longer LoRAs, two scoring jobs and the
    report, on top of the default run's jobs it reads (nothing of the default run twice); every
    probe file under results/zoo_probe, logs/zoo_probe or benchmarks/zoo_probe; `all` plans none."""
    out = _dry_run("zoo_probe", tmp_path=tmp_path)
    jobs = _jobs(out)
    assert {k: v for k, v in jobs.items() if k.startswith("zoo_probe")} == \
        {"zoo_probe_train_lora": 2, "zoo_probe_score": 2, "zoo_probe_report": 1, "zoo_probe": 1}
    assert jobs["train_lora"] == 3 and jobs["evaluate_target"] == 2  # the default zoo; the probe targets' scores
    probe_files = [f for line in out.splitlines() if (m := re.match(r"^    (?:output|log|benchmark): (.*)$", line))
                   for f in m.group(1).split(", ") if "zoo_probe" in f]
    assert probe_files and all(f.split("/")[:2] in (["results", "zoo_probe"], ["logs", "zoo_probe"],
                                                    ["benchmarks", "zoo_probe"]) for f in probe_files), probe_files
    assert "phase1_steps\": 20" in out  # 3 x (4 + 4) steps, the last 4 the checkpoints
    assert "zoo_probe" not in json.dumps(_jobs(_dry_run("all", tmp_path=tmp_path)))
