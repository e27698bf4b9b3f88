"""The few-shot experiment: first-k selection and the LoRA step count (dnd.experiments.fewshot.tuning), ICL prompts,
the `dnd-prefix-cache` backend (dnd.scoring.lm_prefix_cache), scoring on the default run's task, the
summary's columns and cost definitions and the report (dnd.experiments.fewshot.report), config checks.

Everything is built in a temporary directory: a tiny random Llama with a word-level tokenizer
(so token counts are word counts), hand-written items. No download.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from dnd.experiments.fewshot import tuning as fs  # first: sets HF_*_OFFLINE before transformers/lm_eval load

# isort: split
import numpy as np
import pytest
import torch

from conftest import declared_argv, word_tokenizer
from dnd import stats
from dnd.cli import main as cli_main
from dnd.config import ConfigError, check_experiment, validate_config
from dnd.experiments.fewshot import report as fr
from dnd.formats.prompts import lm_eval_task_yaml, to_eval_record

TARGET = "alpha"
WORDS = "cat dog sun moon red blue green big small fast slow tree rock river bird fish cold hot".split()
MAX_POSITIONS = 256


def _items(prefix: str, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        choices = list(rng.choice(WORDS, size=3 + i % 2, replace=False))
        out.append({"id": f"{prefix}-{i}", "question": "what is " + " ".join(rng.choice(WORDS, size=3)) + "?",
                    "choices": choices, "answer": int(rng.integers(len(choices))), "passage": None, "style": "qa"})
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Llama (256 positions, word-level tokenizer), 24 train and 6 test items of one
    target, its lm-eval task as the default run writes it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("fewshot")
    train, test = _items("train", 24, 1), _items("test", 6, 2)
    records = [to_eval_record(it) for it in test]
    texts = [fs.demonstration(it, "cloze") for it in train + test] + [c for it in test for c in it["choices"]]
    tok = word_tokenizer(texts)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=MAX_POSITIONS,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    data = root / "data" / TARGET
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(it) + "\n" for it in train))
    (data / "test.lmeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / f"dnd_{TARGET}.yaml").write_text(lm_eval_task_yaml(TARGET, data / "test.lmeval.jsonl"))
    return {"root": root, "model": model_dir, "tok": tok, "train": train, "test": test, "records": records,
            "data": data, "tasks": tasks}


# ------------------------------------------------------------------------------ settings
def test_first_k_is_the_first_k_items():
    items = [{"id": i} for i in range(5)]
    assert fs.first_k(items, 3, "x") == items[:3]
    assert fs.first_k(items, 5, "x") == items
    with pytest.raises(ValueError, match="k = 6 needs 6 labeled train items, there are 5"):
        fs.first_k(items, 6, "train.jsonl")


@pytest.mark.parametrize("k, epochs, batch, steps", [(1, 3, 1, 3), (16, 3, 8, 6), (64, 3, 8, 24), (256, 3, 8, 96),
                                                     (5, 3, 5, 3), (12, 1.5, 8, 3)])
def test_lora_settings_steps_from_epochs(k, epochs, batch, steps):
    lcfg = {"r": 8, "lr": 3e-4, "batch_size": 8, "phase1_steps": 70, "checkpoint_steps": 30}
    got = fs.lora_settings(lcfg, k, epochs)
    assert got["batch_size"] == batch and got["phase1_steps"] + got["checkpoint_steps"] == steps
    assert got["checkpoint_steps"] == 1 and got["r"] == 8 and got["lr"] == 3e-4  # the zoo's settings otherwise
    assert steps * batch >= epochs * k  # every item seen `epochs` times


def test_config_checks_targets():
    def cfg(**few):
        return {"data": {"datasets": ["arc_easy", "boolq", "piqa"]}, "base_model": {"source": "tiny"}, "fewshot": few}

    assert validate_config(cfg())["fewshot"]["ks"] == [1, 16, 64, 256]  # schema defaults
    assert fs.fewshot_targets(validate_config(cfg())) == ["arc_easy", "boolq", "piqa"]  # empty: every target
    assert fs.fewshot_targets(validate_config(cfg(targets=["boolq"]))) == ["boolq"]
    # checked when the `fewshot` target is asked for, not at start-up (a run holding out its own
    # dataset needs no edit of a section it never runs)
    unknown = validate_config(cfg(targets=["arc_challenge"]))
    with pytest.raises(ConfigError, match=r"fewshot.targets names datasets not in data.datasets: \['arc_challenge'\]"):
        check_experiment(unknown, "fewshot")
    bad = cfg(targets=["boolq"])
    bad["generator"] = {"heldout": ["arc_easy"]}
    with pytest.raises(ConfigError, match=r"\['boolq'\] are not held-out targets"):
        check_experiment(validate_config(bad), "fewshot")
    with pytest.raises(ConfigError, match=r"^fewshot\.ks\[0\]: 0 is less than the minimum of 1"):
        validate_config(cfg(ks=[0, 16]))


# ------------------------------------------------------------------------------ ICL prompts
def test_icl_prompt_puts_k_answered_demonstrations_before_the_item(world):
    train, rec = world["train"], world["records"][0]
    prefix = fs.icl_prefix(train[:3], "cloze")
    [got] = fs.icl_records([rec], prefix)
    demos = got["context"].split(fs.DEMO_DELIMITER)
    assert len(demos) == 4 and demos[-1] == rec["context"]  # three demonstrations, then the item as scored
    for d, it in zip(demos, train[:3]):  # the first k, in order, each with its gold answer
        assert d == f"Question: {it['question']}\nAnswer: {it['choices'][it['answer']]}"
    assert got["choices"] == rec["choices"] and got["answer"] == rec["answer"] and got["id"] == rec["id"]
    assert fs.icl_records([rec], fs.icl_prefix([], "cloze")) == [rec]  # k = 0: the zero-shot item


# ------------------------------------------------------------------------------ the backend
def test_shared_prefix_length():
    from dnd.scoring.lm_prefix_cache import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps a token of its own
    assert shared_prefix_length([[1], [1, 2]]) == 0 and shared_prefix_length([]) == 0
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0


def _requests(tok, contexts: list[str], records: list[dict]):
    """lm-eval's (request, context tokens, continuation tokens) for every choice of each record."""
    out = []
    for ctx_text, r in zip(contexts, records):
        ctx = tok(ctx_text, add_special_tokens=False)["input_ids"]
        for c in r["choices"]:
            whole = tok(ctx_text + " " + c, add_special_tokens=False)["input_ids"]
            out.append(((ctx_text, " " + c), ctx, whole[len(ctx):]))
    return out


@pytest.fixture(scope="module")
def fp32(world):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(world["model"]), dtype=torch.float32).eval()


@pytest.mark.parametrize("batch_size, chunk", [(32, 1024), (3, 7)])
def test_prefix_cache_equals_the_plain_forward_pass(world, fp32, batch_size, chunk, monkeypatch):
    """With 8 demonstrations before every item, the prefix is computed once (in chunks), every
    packed forward pass sees only the items' own tokens, and in float32 each log-likelihood equals
    the plain forward pass over the whole sequence; several batches share the one prefix."""
    import torch.nn.functional as F

    from dnd.scoring.lm_prefix_cache import PrefixCacheLM

    tok, records = world["tok"], world["records"]
    prefix = fs.icl_prefix(world["train"][:8], "cloze")
    reqs = _requests(tok, [prefix + r["context"] for r in records], records)
    lm = PrefixCacheLM(pretrained=fp32, tokenizer=tok, batch_size=batch_size, softmax_dtype="float32")
    lm.prefix_chunk = chunk
    shared = len(tok(prefix, add_special_tokens=False)["input_ids"])
    seen = []
    real = type(lm)._forward
    monkeypatch.setattr(type(lm), "_forward",
                        lambda self, packs: seen.append(max(map(len, packs))) or real(self, packs))
    got = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert lm.prefix_passes == 1 and len(seen) >= (2 if batch_size < 8 else 1)
    assert max(seen) < shared  # the demonstrations never go through a packed pass again
    for (_, ctx, cont), (lp, greedy) in zip(reqs, got):
        with torch.no_grad():
            logits = fp32(torch.tensor([ctx + cont[:-1]])).logits[0, len(ctx) - 1:]
        logp = F.log_softmax(logits.float(), -1)
        assert lp == pytest.approx(float(logp.gather(1, torch.tensor(cont).unsqueeze(1)).sum()), abs=1e-4)
        assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_without_a_shared_prefix_it_is_dnd_prefix(world, fp32):
    from dnd.scoring.lm_backend import PrefixSharingLM
    from dnd.scoring.lm_prefix_cache import PrefixCacheLM

    tok, records = world["tok"], world["records"]
    reqs = _requests(tok, [r["context"] for r in records], records)  # zero-shot: "Question : what is" shared
    lm = PrefixCacheLM(pretrained=fp32, tokenizer=tok, batch_size=8, softmax_dtype="float32")
    plain = PrefixSharingLM(pretrained=fp32, tokenizer=tok, batch_size=8, softmax_dtype="float32")
    assert lm._loglikelihood_tokens(reqs, disable_tqdm=True) == plain._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert lm.prefix_passes == 0


def test_a_prompt_beyond_the_context_is_an_error_not_truncated(world, fp32):
    from dnd.scoring.lm_prefix_cache import PrefixCacheLM

    tok, records = world["tok"], world["records"]
    prefix = fs.icl_prefix(world["train"][:24], "cloze")  # 24 demonstrations: more than 256 positions
    reqs = _requests(tok, [prefix + r["context"] for r in records[:2]], records[:2])
    lm = PrefixCacheLM(pretrained=fp32, tokenizer=tok, batch_size=8, softmax_dtype="float32")
    with pytest.raises(ValueError, match="more than the model's context of 256"):
        lm._loglikelihood_tokens(reqs, disable_tqdm=True)


# ------------------------------------------------------------------------------ commands
EVALUATION = {"batch_size": 8, "dtype": "float32", "limit": None}


def test_train_score_and_icl_commands(world, tmp_path):
    """fewshot-train trains on the first k items for the epochs asked; fewshot-score scores the
    LoRAs on the task's items; fewshot-icl scores k = 0 (the base model, as dnd.evaluate scores it),
    the k that fit, and reports the k that does not."""
    from dnd import evaluate as ev

    lora = {"r": 4, "alpha": 8, "batch_size": 4, "max_length": 48, "lr": 1e-2, "bf16_autocast": False}
    for k, steps in ((2, 2), (5, 3)):
        out = tmp_path / "lora" / TARGET / f"k{k}"
        params = {"lora": lora, "prompt": {"format": "cloze"}, "seed": 0, "fewshot": {"epochs": 2}}
        assert cli_main(["fewshot-train", "--params", json.dumps(params), "--k", str(k), "--model",
                         str(world["model"]), "--train", str(world["data"] / "train.jsonl"), "--out-dir", str(out),
                         "--timings", str(tmp_path / f"t{k}.json"), "--threads", "1"]) == 0
        assert [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()] == \
            [it["id"] for it in world["train"][:k]]
        assert json.loads((out / "summary.json").read_text())["steps"] == steps  # ceil(2 * k / min(4, k))
        assert (out / "final" / "adapter_model.safetensors").is_file() and not (out / "checkpoints").exists()
        timing = json.loads((tmp_path / f"t{k}.json").read_text())
        assert timing["steps"] == steps and timing["loop_s"] > 0

    ft = tmp_path / "ft.jsonl"
    assert cli_main(["fewshot-score", "--params", json.dumps({"evaluation": EVALUATION, "fewshot": {"ks": [2, 5]}}),
                     "--target", TARGET, "--model", str(world["model"]), *declared_argv(tasks=world["tasks"]),
                     "--loras", *map(str, sorted((tmp_path / "lora" / TARGET).glob("k*/final"))), "--out", str(ft),
                     "--threads", "1"]) == 0
    rows = [json.loads(line) for line in ft.read_text().splitlines()]
    ids = [r["id"] for r in world["records"]]
    assert [(r["method"], r["k"], r["adapter"]) for r in rows] == [("fewshot_ft", 2, "2"), ("fewshot_ft", 5, "5")]
    assert all(r["ids"] == ids and r["n"] == 6 and len(r["gold_logprob"]) == 6 for r in rows)

    icl, ctx, tim = tmp_path / "icl.jsonl", tmp_path / "ctx.json", tmp_path / "icl_t.json"
    params = {"evaluation": EVALUATION, "fewshot": {"icl_ks": [4, 8, 24]}, "prompt": {"format": "cloze"}}
    assert cli_main(["fewshot-icl", "--params", json.dumps(params), "--target", TARGET, "--model", str(world["model"]),
                     *declared_argv(tasks=world["tasks"]), "--train", str(world["data"] / "train.jsonl"),
                     "--out", str(icl), "--context-out", str(ctx), "--timings", str(tim), "--threads", "1"]) == 0
    rows = [json.loads(line) for line in icl.read_text().splitlines()]
    assert [r["k"] for r in rows] == [0, 4, 8] and all(r["method"] == "icl" and r["ids"] == ids for r in rows)
    info = json.loads(ctx.read_text())
    assert info["max_length"] == MAX_POSITIONS and info["skipped"] == [24]
    assert info["positions"]["24"] > MAX_POSITIONS >= info["positions"]["8"] > info["positions"]["4"]
    assert set(json.loads(tim.read_text())["scoring_s"]) == {"0", "4", "8"}
    # k = 0 is the base model as the default run scores it
    base = ev.InPlaceScorer(world["model"], tmp_path / "lora" / TARGET / "k2" / "final", world["tasks"],
                            f"dnd_{TARGET}", limit=None, batch_size=8).score(None)
    assert rows[0]["correct"] == base.correct
    assert rows[0]["gold_logprob"] == pytest.approx(base.gold_logprob(), abs=1e-5)


def test_icl_needs_enough_train_items(world, tmp_path):
    params = {"evaluation": EVALUATION, "fewshot": {"icl_ks": [30]}}
    argv = ["fewshot-icl", "--params", json.dumps(params), "--target", TARGET, "--model", str(world["model"]),
            *declared_argv(tasks=world["tasks"]), "--train", str(world["data"] / "train.jsonl"), "--out",
            str(tmp_path / "a"), "--context-out", str(tmp_path / "b"), "--timings", str(tmp_path / "c"), "--debug"]
    with pytest.raises(ValueError, match="k = 30 needs 30 labeled train items, there are 24"):
        cli_main(argv)


# ------------------------------------------------------------------------------ summary and report
def _row(method: str, adapter: str, correct: list[int], k: int | None = None) -> dict:
    r = {"target": TARGET, "method": method, "adapter": adapter, "n": len(correct), "acc": float(np.mean(correct)),
         "ids": [f"q{i}" for i in range(len(correct))], "correct": correct, "metric": "acc",
         "gold_logprob": [0.0] * len(correct)}
    return r if k is None else {**r, "k": k}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in obj) if isinstance(obj, list) else json.dumps(obj))


@pytest.fixture
def summary_world(tmp_path):
    n = 40
    good = [1] * 30 + [0] * 10
    _write(tmp_path / "eval" / f"{TARGET}.jsonl", [
        _row("base", "base", [0] * n), _row("dnd", "0", good), _row("dnd", "1", [1] * 28 + [0] * 12),
        _row("dnd_hyperconv", "0", [0] * n)])
    few = tmp_path / "fewshot" / "eval" / TARGET
    _write(few / "fewshot_ft.jsonl", [_row("fewshot_ft", "1", [0] * n, 1), _row("fewshot_ft", "4", good, 4)])
    _write(few / "icl.jsonl", [_row("icl", "0", [0] * 20 + [1] * 20, 0), _row("icl", "2", [1] * n, 2)])
    _write(few / "icl_context.json", {"max_length": 8192, "positions": {"0": 60, "2": 300, "64": 9000},
                                       "skipped": [64]})
    tim = tmp_path / "fewshot" / "timings"
    _write(tim / "train" / f"{TARGET}_k1.json", {"wall_s": 9.0, "loop_s": 2.5, "steps": 3})
    _write(tim / "train" / f"{TARGET}_k4.json", {"wall_s": 20.0, "loop_s": 12.0, "steps": 6})
    _write(tim / "icl" / f"{TARGET}.json", {"scoring_s": {"0": 10.0, "2": 14.5}, "wall_s": 30.0})
    gen = tmp_path / "timings" / "generate" / TARGET
    for name, s in (("dnd_0", 0.4), ("dnd_1", 7.0), ("dnd_basis_0", 99.0)):  # dnd_basis: not method dnd
        _write(gen / f"{name}.json", {"total_s": s, "load_s": 3.0})
    _write(tmp_path / "timings" / "train_generator" / f"{TARGET}_basis.json", {"wall_s": 500.0})
    return tmp_path


def _files(folder: Path) -> list[str]:
    """Every file under `folder` (what the rule declares there)."""
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def _summary_inputs(w: Path) -> list[str]:
    """fewshot-summary's inputs: every file of the summary world's folders."""
    return ["--fewshot-eval", *_files(w / "fewshot" / "eval"), "--dnd-eval", *_files(w / "eval"),
            "--timings", *_files(w / "fewshot" / "timings"), "--generate-timings", *_files(w / "timings" / "generate")]


def run_summary(w: Path) -> None:
    """`dnd fewshot-summary` on a `summary_world`: w/fewshot.csv and w/metrics.json."""
    params = {"targets": [TARGET], "bootstrap": 300, "seed": 0}
    assert cli_main(["fewshot-summary", "--params", json.dumps(params), *_summary_inputs(w),
                     "--csv", str(w / "fewshot.csv"), "--metrics", str(w / "metrics.json")]) == 0


def run_report(w: Path) -> str:
    """`dnd fewshot-report` after `run_summary`: the text of w/report/report.md."""
    assert cli_main(["fewshot-report", "--params", json.dumps({"fewshot": {"ks": [1, 4], "icl_ks": [2, 64]},
                                                               "generator": {"design": "basis"}}),
                     "--csv", str(w / "fewshot.csv"), "--metrics", str(w / "metrics.json"),
                     "--generate-timings", *_files(w / "timings" / "generate"),
                     "--generator-timings", *_files(w / "timings" / "train_generator"),
                     *(["--benchmarks", *_files(w / "benchmarks")] if (w / "benchmarks").is_dir() else []),
                     "--out", str(w / "report" / "report.md"),
                     "--figure", str(w / "report" / "figures" / "fewshot.png")]) == 0
    return (w / "report" / "report.md").read_text()


def test_summary_columns_and_cost_definitions(summary_world):
    w = summary_world
    run_summary(w)
    rows = list(csv.DictReader(open(w / "fewshot.csv")))
    assert list(rows[0]) == ["target", "method", "k", "n", "acc", "seconds"]
    got = {(r["method"], int(r["k"])): (float(r["acc"]), float(r["seconds"])) for r in rows}
    assert set(got) == {("dnd", 0), ("fewshot_ft", 1), ("fewshot_ft", 4), ("icl", 0), ("icl", 2)}
    assert got[("dnd", 0)] == (pytest.approx(0.725), pytest.approx(3.7))  # mean over adapters; median seconds
    assert got[("fewshot_ft", 4)][1] == 12.0  # the training loop
    assert got[("icl", 2)][1] == 4.5 and got[("icl", 0)][1] == 0.0  # extra scoring time over zero-shot
    assert all(int(r["n"]) == 40 for r in rows)
    m = json.loads((w / "metrics.json").read_text())
    assert "seconds" not in json.dumps(m)  # no timings: a DVC metric
    key = f"{TARGET}/dnd_minus_fewshot_ft_k1"
    assert m[f"{key}/acc"] == pytest.approx(72.5) and m[f"{key}/acc_ci_low"] > 50  # DnD far above: reproduced
    key = f"{TARGET}/dnd_minus_icl_k2"
    assert m[f"{key}/acc"] == pytest.approx(-27.5) and m[f"{key}/acc_ci_high"] < 0  # ICL above DnD
    assert m[f"{TARGET}/dnd_minus_fewshot_ft_k4/acc"] == pytest.approx(-2.5)
    assert m["mean/dnd_minus_icl_k2/targets"] == 1
    assert m[f"{TARGET}/icl/k64/fits"] is False and m[f"{TARGET}/icl/k2/fits"] is True

    text = run_report(w)
    for needle in ("## Results", "## The paper's direction against ours", "## Budget", "k=64 (9000 positions > 8192)",
                   "(DnD minus it, points, paired 95% CI): **reproduced** in 1 of 2: alpha k=1",
                   "**not reproduced** in 1 of 1: alpha k=2", "**not told apart** in 1 of 2: alpha k=4",
                   "500 s", "](figures/fewshot.png)", "DnD 3.70 s per adapter (median; 0.40-7.00 s",
                   "(`dnd`, design `basis`)"):  # the glance's Generator column reads the design
        assert needle in text, needle
    assert (w / "report" / "figures" / "fewshot.png").stat().st_size > 10_000
    assert "no benchmark files (run through Snakemake to measure)" in text  # none passed
    # the target's declared job benchmarks (benchmarks/fewshot/{T}/*.tsv): the last run of each job
    for job, s in (("train_k1", 60.0), ("train_k4", 120.0), ("score", 30.0), ("icl", 90.0)):
        bench = w / "benchmarks" / "fewshot" / TARGET / f"{job}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n999\t0:16:39\t1\t999\n{s}\t0:00:00\t1\t{s / 2}\n")
    assert "5.0 min of wall time over 4 jobs (2.5 min of CPU time" in run_report(w)


def test_summary_refuses_other_items(summary_world):
    w = summary_world
    rows = [json.loads(line) for line in (w / "fewshot" / "eval" / TARGET / "icl.jsonl").read_text().splitlines()]
    rows[1]["ids"] = list(reversed(rows[1]["ids"]))
    _write(w / "fewshot" / "eval" / TARGET / "icl.jsonl", rows)
    inputs = fr.load_inputs([TARGET], *[list(map(Path, _files(w / d))) for d in
                                        ("fewshot/eval", "eval", "fewshot/timings", "timings/generate")])
    with pytest.raises(ValueError, match="scored on other test items"):
        fr.summarize(inputs, 100, 0)


@pytest.mark.parametrize("lo, hi, word", [(0.5, 3.0, "reproduced"),
                                          (-3.0, -0.1, "not reproduced: the opposite direction"), (-0.5, 0.5, "level"),
                                          (-1.0, 2.0, "not told apart"), (math.nan, 1.0, "not told apart: no CI")])
def test_verdict_is_the_shared_vocabulary(lo, hi, word):
    """The claim DnD minus the method > 0, judged by dnd.stats.verdict (no private words)."""
    assert fr._verdict({"x/acc_ci_low": lo, "x/acc_ci_high": hi}, "x") == word
    assert not hasattr(fr, "verdict") or fr.verdict is stats.verdict


def test_an_icl_cost_at_or_below_zero_is_timing_noise():
    """ICL's cost is the k-shot minus the zero-shot scoring time: a non-positive difference is
    within the timing noise, never 'cheaper than DnD'."""
    import pandas as pd

    df = pd.DataFrame([{"target": "t", "method": "dnd", "k": 0, "seconds": 0.6},
                       {"target": "t", "method": "icl", "k": 1, "seconds": -3.9},
                       {"target": "t", "method": "icl", "k": 64, "seconds": 65.0},
                       {"target": "t", "method": "fewshot_ft", "k": 1, "seconds": 0.2},
                       {"target": "t", "method": "fewshot_ft", "k": 2, "seconds": 0.5}])
    line = fr.cost_lines(df, {"targets": ["t"]}, {"t": (0.4, 0.7)})[0]
    assert "k=1 ≤ 0 s (n/a; **not told apart**: below the timing noise)" in line and "-3.9" not in line
    assert "k=64 65 s (108x DnD; **reproduced**)" in line
    assert "k=1 0.20 s (0.33x DnD; **not reproduced**: cheaper than DnD)" in line
    assert "k=2 0.50 s (0.83x DnD; **not told apart**: within DnD's range)" in line


def test_the_results_table_shows_no_negative_time():
    """The table's cost of an ICL row measured at or below 0 is the noise mark (its meaning under
    the table), the zero-shot reference row says so, and no cell holds a negative time."""
    import pandas as pd

    df = pd.DataFrame([{"target": "t", "method": "dnd", "k": 0, "n": 3, "acc": 0.5, "seconds": 0.6},
                       {"target": "t", "method": "icl", "k": 0, "n": 3, "acc": 0.4, "seconds": 0.0},
                       {"target": "t", "method": "icl", "k": 1, "n": 3, "acc": 0.4, "seconds": -3.9},
                       {"target": "t", "method": "icl", "k": 64, "n": 3, "acc": 0.4, "seconds": 65.0}])
    m = {"targets": ["t"]}
    for k in (1, 64):
        m.update({f"t/dnd_minus_icl_k{k}/acc": 10.0, f"t/dnd_minus_icl_k{k}/acc_ci_low": 1.0,
                  f"t/dnd_minus_icl_k{k}/acc_ci_high": 19.0})
    secs = list(fr.results_table(df, m)["Seconds"])
    assert secs == ["0.60", "reference", fr.NOISE_MARK, "65"]
    assert not any(s.startswith(("-", "−")) for s in secs)
    assert list(fr.results_table(df, m)["DnD − it (points, 95% CI)"])[2] == "+10.0 [+1.0, +19.0]"


def test_summary_refuses_a_missing_method(summary_world, caplog):
    """No ICL rows for the target (an emptied icl.jsonl): refused, naming target and method."""
    w = summary_world
    (w / "fewshot" / "eval" / TARGET / "icl.jsonl").write_text("")
    assert cli_main(["fewshot-summary", "--params", json.dumps({"targets": [TARGET], "bootstrap": 10}),
                     *_summary_inputs(w), "--csv", str(w / "fewshot.csv"),
                     "--metrics", str(w / "metrics.json")]) == 1
    assert f"target {TARGET}: no icl rows" in caplog.text and not (w / "fewshot.csv").exists()


def test_summary_refuses_an_icl_k_that_fit_but_has_no_row(summary_world, caplog):
    """k=2 fit the context (icl_context.json: not skipped) but has no row: refused; k=64 did
    not fit and is excused."""
    w = summary_world
    icl = w / "fewshot" / "eval" / TARGET / "icl.jsonl"
    icl.write_text(icl.read_text().splitlines()[0] + "\n")  # k=0 only
    assert cli_main(["fewshot-summary", "--params", json.dumps({"targets": [TARGET], "bootstrap": 10}),
                     *_summary_inputs(w), "--csv", str(w / "fewshot.csv"),
                     "--metrics", str(w / "metrics.json")]) == 1
    assert f"target {TARGET}: no icl/2" in caplog.text and "icl/64" not in caplog.text
