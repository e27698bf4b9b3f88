"""The function_space experiment's LoRA side (issue 30): the multi-task LoRA (train-lora on several
train files), the shared-A zoo, the target's validation split and pick, and its workflow targets;
and that none of it changes the default run's zoo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, SMOKE_DATA, save_random_lora
from dnd import zoo as lora_mod
from dnd.config import ConfigError, check_experiment, load_config, validate_config
from dnd.evaluate import evaluate_multitask
from dnd.experiments.function_space.lora import pick_source, val_items, write_val_split
from dnd.io import read_jsonl, write_jsonl

LCFG = validate_config({"data": {"datasets": ["capitals", "sounds"], "custom": {
    "capitals": {"path": str(SMOKE_DATA / "capitals.jsonl")}, "sounds": {"path": str(SMOKE_DATA / "sounds.jsonl")}}},
    "base_model": {"source": "tiny"}, "generator": {"chunk_width": 32},
    "lora": {"r": 4, "alpha": 8, "lr": 5e-3, "batch_size": 4, "max_length": 48, "phase1_steps": 5,
             "checkpoint_steps": 3, "bf16_autocast": False}})["lora"]
SOURCES = ("capitals", "sounds", "opposites")


@pytest.fixture()
def train_files(tmp_path, smoke_items):
    """results/data/<ds>/train.jsonl of three datasets (12 items each)."""
    files = []
    for ds in SOURCES:
        p = tmp_path / "data" / ds / "train.jsonl"
        write_jsonl(p, smoke_items[ds][:12])
        files.append(p)
    return files


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("README.md", "adapter_config.json")}  # these name the base model's path


# ------------------------------------------------------------------------------------- multi-task LoRA
def test_multitask_lora_sees_every_source_and_is_deterministic(tmp_path, tiny_model_dir, train_files):
    cfg = dict(LCFG, phase1_steps=7, checkpoint_steps=2)  # 9 steps x 4 items = 36 = one epoch of the union
    a = lora_mod.train_lora(tiny_model_dir, train_files, tmp_path / "a" / "lora", cfg, "cloze", seed=0)
    rows = _log(tmp_path / "a" / "lora" / "train_log.csv")
    assert list(rows[0]) == lora_mod.MULTITASK_LOG_FIELDS and len(rows) == 9  # same total steps as one source LoRA
    seen: dict[str, int] = {}
    for r in rows:
        for cell in r["sources"].split():
            ds, n = cell.split(":")
            seen[ds] = seen.get(ds, 0) + int(n)
    # one epoch of the seeded order over the concatenation: every item once, so 12 of each source
    assert seen == {ds: 12 for ds in SOURCES}
    assert a["sources"] == {ds: {"train_items": 12, "items_seen": 12} for ds in SOURCES}
    # the batches mix the sources (a shuffle of the concatenation, not one file after another)
    assert sum(len(r["sources"].split()) > 1 for r in rows) >= 5
    # same seed and files: byte-identical LoRA, log and summary; another seed: another order
    lora_mod.train_lora(tiny_model_dir, train_files, tmp_path / "b" / "lora", cfg, "cloze", seed=0)
    assert _files(tmp_path / "a" / "lora") == _files(tmp_path / "b" / "lora")
    lora_mod.train_lora(tiny_model_dir, train_files, tmp_path / "c" / "lora", cfg, "cloze", seed=1)
    assert [r["sources"] for r in _log(tmp_path / "c" / "lora" / "train_log.csv")] != [r["sources"] for r in rows]


def test_multitask_training_files_are_checked(tmp_path, tiny_model_dir, train_files):
    with pytest.raises(ValueError, match="distinct dataset folders; repeated: \\['capitals'\\]"):
        lora_mod.train_lora(tiny_model_dir, [train_files[0], train_files[0]], tmp_path / "x", LCFG, "cloze", 0)
    empty = tmp_path / "data" / "empty" / "train.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    with pytest.raises(ValueError, match="no training items in .*empty"):
        lora_mod.train_lora(tiny_model_dir, [train_files[0], empty], tmp_path / "x", LCFG, "cloze", 0)
    # the fingerprint binds the files and their order
    fp = [lora_mod.resume_fingerprint(LCFG, "cloze", 0, f, tiny_model_dir)
          for f in (train_files[:2], train_files[1::-1], train_files[:1], train_files[0])]
    assert fp[0] != fp[1] and fp[0] != fp[2] and fp[2] == fp[3]


def test_train_lora_cli_takes_several_train_files(tmp_path, tiny_model_dir, train_files):
    from dnd import cli

    params = json.dumps({"lora": dict(LCFG, phase1_steps=2, checkpoint_steps=1), "prompt": {"format": "cloze"},
                         "seed": 0})
    assert cli.main(["train-lora", "--params", params, "--model", str(tiny_model_dir), "--train",
                     *map(str, train_files[:2]), "--out-dir", str(tmp_path / "mt")]) == 0
    summary = json.loads((tmp_path / "mt" / "summary.json").read_text())
    assert set(summary["sources"]) == {"capitals", "sounds"} and summary["steps"] == 3


# ------------------------------------------------------------------------------------- shared A
def test_shared_a_is_one_frozen_a_for_every_dataset(tmp_path, tiny_model_dir, train_files):
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from dnd.generators import tokenize_checkpoints
    from dnd.method.tokenization import LoraLayout, detokenize

    cfg = dict(LCFG, shared_a=True)
    outs = {}
    for f in train_files[:2]:
        s = lora_mod.train_lora(tiny_model_dir, f, tmp_path / f.parent.name, cfg, "cloze", seed=0)
        outs[f.parent.name] = load_file(tmp_path / f.parent.name / "final" / "adapter_model.safetensors")
    # the A the seed draws, on a fresh peft model
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pm = get_peft_model(model, lora_mod.make_lora_config(cfg, tiny_model_dir))
    n = lora_mod.shared_lora_a(pm, seed=0)
    init = {k: v.detach().float() for k, v in get_peft_model_state_dict(pm).items()}
    a_keys = [k for k in init if ".lora_A." in k]
    b_keys = [k for k in init if ".lora_B." in k]
    assert len(a_keys) == n == 2 * 7 and not any(p.requires_grad for k, p in pm.named_parameters() if "lora_A" in k)
    for ds, sd in outs.items():
        assert all(torch.equal(sd[k], init[k]) for k in a_keys), ds  # A: the seed's, unchanged by training
        assert all(sd[k].abs().sum() > 0 for k in b_keys), ds  # B trained away from its zero init
    assert not any(torch.equal(outs["capitals"][k], outs["sounds"][k]) for k in b_keys)
    assert s["trainable_params"] == sum(init[k].numel() for k in b_keys)  # only B is trained
    # another seed draws another A; every checkpoint keeps the shared A and tokenizes and round-trips
    pm2 = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         lora_mod.make_lora_config(cfg, tiny_model_dir))
    lora_mod.shared_lora_a(pm2, seed=1)
    assert not torch.equal(get_peft_model_state_dict(pm2)[a_keys[0]], init[a_keys[0]])
    decoded = []
    for ds in outs:
        zoo = tokenize_checkpoints(tmp_path / ds / "checkpoints", chunk_width=32)
        layout = LoraLayout.from_dict(zoo["layout"])
        assert zoo["tokens"].shape[0] == cfg["checkpoint_steps"]
        decoded += [detokenize(t, layout) for t in zoo["tokens"]]
    for sd in decoded:  # the same A tokens in every checkpoint of both datasets; they decode to the shared A
        assert all(torch.equal(sd[key], decoded[0][key]) for key in a_keys)
        assert all(torch.allclose(sd[key], init[key], rtol=1e-4, atol=1e-6) for key in a_keys)


# ------------------------------------------------------------------------------------- default path
# The default config's lora section (config/config.yaml + schema defaults) as it was before shared_a
# existed, and the resume fingerprint the zoo's trainer gave it on fixed files then (commit af4a47a).
DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "lr": 0.0003, "warmup_ratio": 0.01, "batch_size": 8,
                "max_length": 160, "phase1_steps": 70, "checkpoint_steps": 30, "bf16_autocast": True,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                "weight_decay": 0.0, "min_lr_ratio": 0.1}
DEFAULT_FINGERPRINT = "0d02596e55a35372c7dae694838cf5b159dbf690fda04a83679ab59011ca507f"


def test_default_zoo_params_and_fingerprint_are_unchanged(tmp_path):
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg["lora"] == DEFAULT_LORA  # no shared_a key: the train_lora rule's params are the same JSON
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    (model / "model.safetensors").write_bytes(b"x" * 100)
    train = tmp_path / "train.jsonl"
    train.write_text('{"id": "a", "question": "q", "choices": ["x", "y"], "answer": 0}\n')
    for lcfg in (cfg["lora"], {**cfg["lora"], "shared_a": False}):
        assert lora_mod.resume_fingerprint(lcfg, "cloze", 0, train, model) == DEFAULT_FINGERPRINT
        assert lora_mod.resume_fingerprint(lcfg, "cloze", 0, [train], model) == DEFAULT_FINGERPRINT
    shared = {**cfg["lora"], "shared_a": True}
    assert lora_mod.resume_fingerprint(shared, "cloze", 0, train, model) != DEFAULT_FINGERPRINT


def test_shared_a_false_trains_the_same_bytes(tmp_path, tiny_model_dir, train_files):
    absent, false = tmp_path / "absent" / "lora", tmp_path / "false" / "lora"
    summary = lora_mod.train_lora(tiny_model_dir, train_files[0], absent, LCFG, "cloze", 0)
    lora_mod.train_lora(tiny_model_dir, train_files[0], false, dict(LCFG, shared_a=False), "cloze", 0)
    assert _files(absent) == _files(false)
    assert "sources" not in summary and list(_log(absent / "train_log.csv")[0]) == lora_mod.LOG_FIELDS


# ------------------------------------------------------------------------------------- validation split
def _items(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "question": f"question {prefix}{i}?", "choices": ["yes", "no"], "answer": i % 2}
            for i in range(n)]


def test_val_items_are_seeded_and_never_test_items():
    train, test = _items("tr", 40), _items("te", 10)
    test.append(dict(train[3], id="te-copy"))  # a train question that is also a test question, under another id
    test.append(dict(_items("x", 1)[0], id=train[5]["id"]))  # a test item with a train item's id
    a = val_items(train, test, 8, seed=0, target="t")
    assert a == val_items(train, test, 8, seed=0, target="t")  # deterministic
    assert len(a) == 8 and len({it["id"] for it in a}) == 8
    assert [train.index(it) for it in a] == sorted(train.index(it) for it in a)  # kept in train order
    assert not {it["id"] for it in a} & {it["id"] for it in test}
    assert not {it["question"] for it in a} & {it["question"] for it in test}
    # the draw depends on the seed and the target; every eligible item is drawn at n = 38
    assert a != val_items(train, test, 8, seed=1, target="t") and a != val_items(train, test, 8, seed=0, target="u")
    assert len(val_items(train, test, 38, 0, "t")) == 38
    with pytest.raises(ValueError, match="n_val = 39 needs 39 train items that are not test items, there are 38"):
        val_items(train, test, 39, 0, "t")


def test_val_split_files(tmp_path):
    import yaml

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(train, _items("tr", 20))
    write_jsonl(test, _items("te", 5))
    out = [tmp_path / "val" / "t" / name for name in ("val.jsonl", "val.lmeval.jsonl", "dnd_t_val.yaml")]
    params = {"function_space": {"n_val": 6}, "prompt": {"format": "cloze"}, "seed": 0}
    items = write_val_split("t", params, train, test, out)
    assert read_jsonl(out[0]) == items and [r["id"] for r in read_jsonl(out[1])] == [it["id"] for it in items]
    task = yaml.safe_load(out[2].read_text())
    assert task["task"] == "dnd_t_val" and task["dataset_kwargs"]["data_files"]["test"].endswith("val.lmeval.jsonl")


def test_pick_source_rule():
    scores = {"a": {"acc": 0.5, "gold_logprob": -3.0}, "b": {"acc": 0.6, "gold_logprob": -9.0},
              "c": {"acc": 0.6, "gold_logprob": -2.0}}
    assert pick_source(scores) == "c"  # best accuracy, the tie broken by the gold log-probability
    assert pick_source({"a": {"acc": 0.5, "gold_logprob": -1.0}, "b": {"acc": 0.5, "gold_logprob": -1.0}}) == "a"


# ------------------------------------------------------------------------------------- config and workflow
def test_function_space_config():
    fs = load_config(REPO / "config" / "config.yaml")["function_space"]
    assert {k: fs[k] for k in ("targets", "n_val", "shared_a_zoo")} == {
        "targets": ["arc_challenge", "openbookqa", "piqa"], "n_val": 32, "shared_a_zoo": True}
    base = {"data": {"datasets": ["arc_easy", "boolq", "piqa", "hellaswag"]}, "base_model": {"source": "tiny"}}
    # empty targets: the ablation targets (the first three datasets by default)
    assert validate_config(json.loads(json.dumps(base)))["function_space"]["targets"] == ["arc_easy", "boolq", "piqa"]
    # checked when the target is asked for (check_experiment), not at start-up
    with pytest.raises(ConfigError, match=r"function_space.targets names datasets not in data.datasets"):
        check_experiment(validate_config({**base, "function_space": {"targets": ["winogrande"]}}), "function_space")
    held = {**base, "generator": {"heldout": ["arc_easy"]}, "function_space": {"targets": ["piqa"]}}
    with pytest.raises(ConfigError, match=r"function_space.targets \['piqa'\] are not held-out targets"):
        check_experiment(validate_config(held), "function_space")
    with pytest.raises(ConfigError, match="shared_a"):
        validate_config({**base, "lora": {"shared_a": "yes"}})


def test_function_space_lora_dry_run(tmp_path):
    """The smoke profile's job set of `function_space_lora`: the validation split, pick and scoring of
    its target, the shared-A zoo of every dataset, the zoo diagnostics of both zoos and the summary
    beside the default run's evaluation of the target and its multi-task LoRA (the default run's,
    reused); nothing of the experiment in `all`."""
    from test_workflow import dry_run_plan

    smoke = str(REPO / "config" / "smoke.yaml")
    jobs, counts = dry_run_plan("function_space_lora", smoke, tmp_path)
    assert {r: n for r, n in counts.items() if r.startswith(("fs_", "function_space"))} == {
        "fs_val_split": 1, "fs_val_pick": 1, "fs_evaluate": 1, "fs_shared_a_train_lora": 3,
        "fs_shared_a_tokenize_zoo": 3, "fs_zoo_diagnostics": 2, "fs_summarize": 1, "function_space_lora": 1}
    # the default zoo, capitals' evaluation and its multi-task LoRA (the default run's)
    assert counts["train_lora"] == 3 and counts["evaluate_target"] == 1
    assert counts["multitask_lora"] == 1 and counts["evaluate_multitask"] == 1
    summarize = next(j for j in jobs if j["rule"] == ["fs_summarize"])
    assert summarize["input"] == ["results/eval/capitals.jsonl", "results/eval_multitask/capitals.jsonl",
                                  "results/function_space/eval/capitals.jsonl"]
    multitask = next(j for j in jobs if j["rule"] == ["multitask_lora"])
    assert sorted(f for f in multitask["input"] if f.endswith("train.jsonl")) == [
        "results/data/opposites/train.jsonl", "results/data/sounds/train.jsonl"]  # capitals' fold sources
    assert all(b.startswith("benchmarks/function_space/") for j in jobs if j["rule"][0].startswith("fs_")
               for b in j["benchmark"])
    default, default_counts = dry_run_plan("all", smoke, tmp_path)
    assert default and not [j for j in default if j["rule"][0].startswith("fs_")]
    # in the main table: one multi-task LoRA per target
    assert default_counts["multitask_lora"] == default_counts["evaluate_multitask"] == default_counts["evaluate_target"]


# ------------------------------------------------------------------------------------- scoring commands
def test_val_pick_and_evaluate_commands(tmp_path, tiny_model_dir, smoke_items):
    """fs-val-pick scores every source LoRA on the validation items and picks by PICK_RULE;
    fs-evaluate scores the picked source on the test items and evaluate-multitask (the default run's
    command) the multi-task LoRA: with the picked source's own LoRA as the multi-task LoRA, both
    rows hold the same per-item scores."""
    import shutil

    from dnd import cli
    from dnd.formats.prompts import lm_eval_task_yaml, to_eval_record

    items = smoke_items["capitals"]
    train, test = tmp_path / "data" / "capitals" / "train.jsonl", tmp_path / "data" / "capitals" / "test.jsonl"
    write_jsonl(train, items[:-6])
    write_jsonl(test, items[-6:])
    write_jsonl(tmp_path / "data" / "capitals" / "test.lmeval.jsonl", [to_eval_record(it) for it in items[-6:]])
    task = tmp_path / "tasks" / "dnd_capitals.yaml"
    task.parent.mkdir()
    task.write_text(lm_eval_task_yaml("capitals", tmp_path / "data" / "capitals" / "test.lmeval.jsonl"))
    val = [tmp_path / "val" / "capitals" / n for n in ("val.jsonl", "val.lmeval.jsonl", "dnd_capitals_val.yaml")]
    params = json.dumps({"function_space": {"n_val": 5}, "prompt": {"format": "cloze"}, "seed": 0})
    assert cli.main(["fs-val-split", "--params", params, "--target", "capitals", "--train", str(train),
                     "--test", str(test), "--out", *map(str, val)]) == 0
    for i, ds in enumerate(["sounds", "opposites"]):
        save_random_lora(tiny_model_dir, tmp_path / "zoo" / ds / "final", seed=i, b_std=0.5)
    zoo = [str(tmp_path / "zoo" / ds / "final") for ds in ("sounds", "opposites")]
    ev = {"evaluation": {"batch_size": 8, "dtype": "float32"}}
    pick_file = tmp_path / "val_pick" / "capitals.json"
    assert cli.main(["fs-val-pick", "--params", json.dumps({**ev, "sources": ["sounds", "opposites"]}),
                     "--target", "capitals", "--model", str(tiny_model_dir), "--tasks", str(val[2]), "--zoo", *zoo,
                     "--cache-dir", str(tmp_path / "cache_val"), "--out", str(pick_file)]) == 0
    pick = json.loads(pick_file.read_text())
    assert pick["ids"] == [it["id"] for it in read_jsonl(val[0])] and pick["n_val"] == 5
    assert list(pick["sources"]) == ["sounds", "opposites"] and pick["picked"] == pick_source(pick["sources"])
    assert all(0 <= s["acc"] <= 1 and s["gold_logprob"] < 0 for s in pick["sources"].values())
    assert pick["sources"]["sounds"] != pick["sources"]["opposites"]  # two different LoRAs, two scores

    shutil.copytree(tmp_path / "zoo" / pick["picked"] / "final", tmp_path / "multitask" / "capitals" / "final")
    out = tmp_path / "eval" / "capitals.jsonl"
    argv = ["fs-evaluate", "--params", json.dumps(ev), "--target", "capitals", "--model", str(tiny_model_dir),
            "--tasks", str(task), "--zoo", *zoo, "--val-pick", str(pick_file), "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out)]
    assert cli.main(argv) == 0
    (vp,) = read_jsonl(out)
    mt_out = tmp_path / "eval_multitask" / "capitals.jsonl"
    mt_argv = ["evaluate-multitask", "--params", json.dumps({**ev, "sources": ["sounds", "opposites"]}),
               "--target", "capitals", "--model", str(tiny_model_dir), "--tasks", str(task),
               "--multitask", str(tmp_path / "multitask" / "capitals" / "final"),
               "--cache-dir", str(tmp_path / "cache"), "--out", str(mt_out)]
    assert cli.main(mt_argv) == 0
    (mt,) = read_jsonl(mt_out)
    assert mt["info"] == {"sources": ["sounds", "opposites"]}
    assert (mt["method"], mt["adapter"], vp["method"], vp["adapter"]) == (
        "multitask_lora", "multitask", "val_picked", pick["picked"])
    assert mt["ids"] == vp["ids"] == [it["id"] for it in items[-6:]]
    assert mt["correct"] == vp["correct"] and mt["gold_logprob"] == vp["gold_logprob"]
    assert vp["info"] == {"val_acc": {d: s["acc"] for d, s in pick["sources"].items()}}
    # a pick made for another target is refused; so is a multi-task LoRA trained on the target itself
    pick_file.write_text(json.dumps({**pick, "target": "sounds"}))
    assert cli.main(argv) == 1
    with pytest.raises(ValueError, match="among its fold's training datasets"):
        evaluate_multitask("capitals", {**ev, "sources": ["capitals", "sounds"]}, tiny_model_dir, [task],
                           tmp_path / "multitask" / "capitals" / "final")


def test_summary_compares_the_labeled_baselines_and_leaves_the_rest(tmp_path):
    """`dnd summarize` over the default run's rows and the function_space rows: each labeled
    baseline against LABELED_COMPARED and DnD against each, as paired item means; every figure of
    the default rows alone is unchanged (the default run's metrics.json keeps its keys and values)."""
    import numpy as np

    from dnd import summary
    from test_summary import DATASETS, _eval_rows, _summarize, _write_eval

    rows = _eval_rows()
    default_files = _write_eval(tmp_path / "default", rows)
    rng = np.random.default_rng(1)
    labeled = {}
    for t, rs in rows.items():
        c = rng.binomial(1, 0.5, len(rs[0]["ids"])).tolist()
        src = next(r for r in rs if r["method"] == "source_lora" and r["adapter"] != t)
        labeled[t] = [dict(rs[0], method="multitask_lora", adapter="multitask", correct=c, acc=float(np.mean(c))),
                      dict(src, method="val_picked", info={"val_acc": {src["adapter"]: 0.5}})]
    fs_files = _write_eval(tmp_path / "fs", labeled)
    _, alone = _summarize(tmp_path / "default", default_files, {"evaluation": {"bootstrap": 200}, "seed": 0})
    _, both = _summarize(tmp_path / "fs", default_files + fs_files, {"evaluation": {"bootstrap": 200}, "seed": 0})
    # nothing of the default figures moves; the main table's multi-task LoRA column fills in
    moved = {k for k in alone if both[k] != alone[k]}
    assert moved == {f"{t}/multitask" for t in [*DATASETS, "mean"]} and all(alone[k] is None for k in moved)
    for t in DATASETS:
        assert both[f"{t}/multitask"] == pytest.approx(labeled[t][0]["acc"])
    pairs = [p for m in summary.LABELED_METHODS for p in [*((m, b) for b in summary.LABELED_COMPARED), ("dnd", m)]]
    assert summary.comparison_pairs(["dnd", *summary.LABELED_METHODS])[-len(pairs) - 1:-1] == pairs
    assert set(both) - set(alone) == {f"{t}/{s}_minus_{b}/{m}{suffix}" for t in [*DATASETS, "mean"] for s, b in pairs
                                      for m in ("acc", "gold_logprob") for suffix in ("", "_ci_low", "_ci_high")}
    for t in DATASETS:
        by = {(r["method"], r["adapter"]): np.asarray(r["correct"], float) for r in rows[t] + labeled[t]}
        train = np.mean([v for (m, a), v in by.items() if m == "source_lora" and a != t], axis=0)
        dnd = np.mean([v for (m, _), v in by.items() if m == "dnd"], axis=0)
        mt, vp = by[("multitask_lora", "multitask")], by[("val_picked", labeled[t][1]["adapter"])]
        assert both[f"{t}/multitask_lora_minus_train_avg/acc"] == pytest.approx(float((mt - train).mean()))
        assert both[f"{t}/dnd_minus_val_picked/acc"] == pytest.approx(float((dnd - vp).mean()))
        lo, hi = both[f"{t}/dnd_minus_multitask_lora/acc_ci_low"], both[f"{t}/dnd_minus_multitask_lora/acc_ci_high"]
        assert lo <= both[f"{t}/dnd_minus_multitask_lora/acc"] <= hi
