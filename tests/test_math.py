"""The math experiment (dnd.experiments.mathcode.data, dnd.experiments.mathcode.score,
dnd.experiments.mathcode.report): answer extraction
against lm-eval's own filters, deterministic disjoint splits, the chat training examples, and
the scoring of every method end to end on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, SMOKE_DATA, declared_argv, save_encoded, save_random_lora, word_model, word_tokenizer
from dnd.cli import main as cli_main
from dnd.config import ConfigError, section
from dnd.experiments.mathcode import data as md, report as mcr

FIXTURES = SMOKE_DATA  # tests/data/smoke/math_code: hand-written items in the authors' file format


# ------------------------------------------------------------------------------ extraction
def _lm_eval_filter(name: str, pattern: str, group_select: int = 0):
    from lm_eval.api.registry import get_filter

    return get_filter(name)(regex_pattern=pattern, group_select=group_select)


def test_gsm8k_task_is_lm_evals_filters_and_metric_verbatim(tmp_path):
    import yaml
    from lm_eval import tasks

    ref = yaml.safe_load((Path(tasks.__file__).parent / "gsm8k" / "gsm8k.yaml").read_text())
    cfg = md.task_configs("math", "gsm8k", tmp_path / "t.jsonl", 32)["dnd_math_gsm8k_gen"]
    assert cfg["filter_list"] == ref["filter_list"] and cfg["metric_list"] == ref["metric_list"]
    assert cfg["generation_kwargs"] == {"until": md.STOP["math"], "do_sample": False, "max_gen_toks": 32}
    assert cfg["doc_to_target"] == "{{response}}"  # the full reference, as lm-eval's gsm8k (its metric strips "#### ")


@pytest.mark.parametrize("output, strict, flexible", [
    ("Half of 84 is 42.\n#### 42", "42", "42"),
    ("She pays 3 * $4 = $12, so the answer is $1,212.", "[invalid]", "$1,212."),
    ("No number here", "[invalid]", "[invalid]"),
    ("#### -7 and then 9", "-7", "9"),
])
def test_gsm8k_extraction_is_lm_evals(output, strict, flexible):
    """What lm-eval's gsm8k filters (the ones our task lists) read from an output."""
    from lm_eval.filters.extraction import RegexFilter

    cfg = md._lm_eval_gsm8k()["filter_list"]
    got = {}
    for pipe in cfg:
        kw = {k: v for k, v in pipe["filter"][0].items() if k != "function"}
        got[pipe["name"]] = RegexFilter(**kw).apply([[output]], [{}])[0][0]
    assert got == {"strict-match": strict, "flexible-extract": flexible}


@pytest.mark.parametrize("output, gold", [
    ("so the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac12"),
    ("We get \\boxed{ 5 } apples", "5"),
    ("First \\boxed{3}, then \\boxed{4}.", "4"),
    ("First \\boxed{3}, then \\boxed{4}.", "3"),
    ("The answer is \\boxed{x^2+1}", "x^2 + 1"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\text{(A)}}", "\\text{(A)}"),
    ("\\boxed 7", "7"),
    ("\\boxed{12", "12"),  # never closed: no boxed answer
    ("$\\dfrac{3}{4}$", "\\frac{3}{4}"),  # no \boxed: hendrycks_math's own rule (text between $)
    ("the answer is 9", "9"),
])
def test_math_extraction_agrees_with_lm_evals_hendrycks_math(output, gold):
    """Ours (filter + exact_match on normalized strings) decides exactly as lm-eval's
    hendrycks_math would: is_equiv on the last boxed answer, else its process_results rule."""
    from lm_eval.tasks.hendrycks_math import utils

    ours = md.extract_math_answer(output) == md.normalize_math_answer(gold)
    boxed = utils.last_boxed_only_string(output)
    if boxed:
        theirs = utils.is_equiv(utils.remove_boxed(boxed), gold)
    else:
        theirs = bool(utils.process_results({"solution": f"\\boxed{{{gold}}}"}, [output])["exact_match"])
    assert ours == theirs


def test_reference_loglikelihood_of_a_poor_model_is_a_number(tmp_path):
    """A long reference under a poor model has a log-likelihood far below -709: the loglik task
    must still aggregate (lm-eval's perplexity would overflow) and hand the values through."""
    from lm_eval import evaluator
    from lm_eval.api.model import LM

    from dnd.evaluate import load_task
    from dnd.experiments.mathcode.score import loglik_result

    class Poor(LM):
        def loglikelihood(self, requests, disable_tqdm=False):
            return [(-5000.0 - i, False) for i, _ in enumerate(requests)]

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    cfg = section("math", SMOKE_MATH)
    md.write_domain("math", cfg, FIXTURES, md.output_paths("math", cfg, tmp_path))
    name = md.task_name("math", "gsm8k", md.LOGLIK_TASK)
    res = evaluator.evaluate(lm=Poor(), task_dict=load_task(tmp_path / "tasks", name), bootstrap_iters=0,
                             log_samples=True)
    assert sorted(loglik_result(res, name)) == [-5001.0, -5000.0]


def test_math_gold_answers_are_the_last_boxed_and_after_hashes():
    assert md.math_answer("so $x = \\boxed{\\frac{1}{2}}$.", "math") == "\\frac{1}{2}"
    assert md.math_answer("a\n#### 1,234", "gsm8k") == "1,234"


# ------------------------------------------------------------------------------ splits
SMOKE_MATH = {"data_dir": None, "shards": 1, "target_share": 0.5, "n_train": 4, "n_cond": 2, "n_test": 2}


def _prompts(items):
    return {it["prompt"].strip() for it in items}


def _check_math_splits(splits: dict, n_cond: int, n_test: int, shards: int) -> None:
    assert set(splits) == {"gsm8k", "math", "math_iio", "mu_math", *(f"math_s{k}" for k in range(shards))}
    held = set()
    for t in ("gsm8k", "math"):
        cond, test = _prompts(splits[t]["cond"]), _prompts(splits[t]["test"])
        assert len(cond) == n_cond and len(test) == n_test and not cond & test
        assert not splits[t]["train"]
        held |= cond | test
        assert all(it["answer"] for it in splits[t]["test"])
    for s in set(splits) - {"gsm8k", "math"}:
        assert splits[s]["train"] and not splits[s]["cond"] and not splits[s]["test"]
        assert not _prompts(splits[s]["train"]) & held, s  # no scored or conditioning item trains a LoRA
    shard_prompts = [_prompts(splits[f"math_s{k}"]["train"]) for k in range(shards)]
    for i in range(shards):
        for j in range(i + 1, shards):
            assert not shard_prompts[i] & shard_prompts[j]
    # the MATH target's items all come from the target share, no shard item does
    share = 0.5 if shards == 1 else 0.2
    for it in splits["math"]["cond"] + splits["math"]["test"]:
        assert md.hash_unit("math", it["prompt"]) < share
    for k in range(shards):
        assert all(md.shard_of(md.hash_unit("math", it["prompt"]), shards, share) == k
                   for it in splits[f"math_s{k}"]["train"])


def test_math_splits_deterministic_and_disjoint_on_fixtures():
    cfg = section("math", SMOKE_MATH)
    a, b = md.prepare_math(cfg, FIXTURES), md.prepare_math(cfg, FIXTURES)
    assert a == b
    _check_math_splits(a, 2, 2, 1)
    # Mu-Math's exact duplicates are dropped (the fixture repeats one item, as the real file does)
    assert len(md.prepare_math(section("math", {**SMOKE_MATH, "n_train": 99}), FIXTURES)["mu_math"]["train"]) == 6


@pytest.mark.skipif(not (SHARED_DATA / "math_code" / "MATH.json.gz").exists(), reason="shared data not present")
def test_math_splits_on_the_shared_data():
    import hashlib

    from dnd.benchmarks.datasets import load_generation_set

    cfg = section("math", {})
    splits = md.prepare_math(cfg, SHARED_DATA)
    _check_math_splits(splits, cfg["n_cond"], cfg["n_test"], cfg["shards"])
    # the facts the design rests on (shared/data/README.md)
    mc = SHARED_DATA / "math_code"
    digest = [hashlib.sha256((mc / f).read_bytes()).hexdigest()
              for f in ("Math-Plus.json.gz", "Math-IIO-68K-Mini.json.gz")]
    assert digest[0] == digest[1]
    assert len(load_generation_set("mu_math", SHARED_DATA)) == 271
    # GSM8K never trains anything: none of its prompts is in a source
    gsm = _prompts(load_generation_set("gsm8k", SHARED_DATA))
    for s in ("math_iio", "mu_math", "math_s0", "math_s1"):
        assert not _prompts(splits[s]["train"]) & gsm


def test_unknown_generation_set_is_named():
    from dnd.benchmarks.datasets import load_generation_set

    with pytest.raises(ValueError, match="unknown generation set 'nope'"):
        load_generation_set("nope", FIXTURES)


# ------------------------------------------------------------------------------ training examples
def test_chat_examples_train_on_the_response_only():
    from dnd.zoo import collate, encode_examples

    item = {"id": "x", "domain": "math", "prompt": "What is 2 + 3 ?", "response": "It is 5 .\n#### 5"}
    ctx, cont = md.training_example(item)
    assert ctx == md.eval_context(item, "math") and ctx.endswith("<|im_start|>assistant\n")
    assert cont == item["response"] + "<|im_end|>"
    tok = word_tokenizer([ctx + cont, "a b c d e f g h"])
    (ids, start), = encode_examples([item], tok, md.FORMAT, max_length=256)
    assert ids[:start] == tok(ctx, add_special_tokens=False)["input_ids"]
    assert ids[start:] == tok(cont, add_special_tokens=False)["input_ids"]
    _, mask, target = collate([(ids, start)], tok.pad_token_id)
    labelled = (target[0] != -100).nonzero().flatten().tolist()
    assert labelled == list(range(start - 1, len(ids) - 1))  # exactly the response tokens are predicted
    assert target[0, start - 1:len(ids) - 1].tolist() == ids[start:]


def test_long_chat_examples_keep_their_prompt_and_the_start_of_the_response():
    from dnd.zoo import encode_examples

    item = {"id": "y", "domain": "math", "prompt": "Add .", "response": " ".join(["a"] * 200)}
    ctx, cont = md.training_example(item)
    tok = word_tokenizer([ctx + cont])
    n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
    (ids, start), = encode_examples([item], tok, md.FORMAT, max_length=64)
    assert len(ids) == 64 and start == n_ctx  # cut from the right: the whole prompt survives
    # a prompt that would leave under a quarter of the budget is cut from the left instead
    long = {"id": "z", "domain": "math", "prompt": " ".join(["b"] * 80), "response": "a a"}
    (ids, start), = encode_examples([long], tok, md.FORMAT, max_length=64)
    assert len(ids) == 64 and ids[start:] == tok(md.training_example(long)[1], add_special_tokens=False)["input_ids"]


def test_chat_is_no_run_format():
    from dnd.config import validate_config

    with pytest.raises(ConfigError, match="prompt.format 'chat'"):
        validate_config({"data": {"datasets": ["arc_easy", "boolq"]}, "prompt": {"format": "chat"},
                         "base_model": {"source": "tiny"}})


def test_math_and_code_sections_stay_out_of_the_default_run():
    from dnd.config import EXPERIMENTS, config_hash, load_config, run_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    assert {"math", "code"} <= set(EXPERIMENTS) and {"math", "code"} <= set(cfg)
    edited = {**cfg, "math": {**cfg["math"], "n_test": 7}, "code": {**cfg["code"], "shards": 9}}
    assert config_hash(run_config(edited)) == config_hash(run_config(cfg))
    assert not {"math", "code"} & set(run_config(cfg))


# ------------------------------------------------------------------------------ scoring end to end
SOURCES = ["math_iio", "mu_math", "math_s0"]


@pytest.fixture(scope="module")
def mworld(tmp_path_factory):
    """Tiny random Llama (word tokenizer over the fixtures), the math tasks from the fixtures,
    three random source LoRAs, one DnD adapter and a zero LoRA (B = 0: the base model)."""

    root = tmp_path_factory.mktemp("mathworld")
    cfg = section("math", {**SMOKE_MATH, "max_new_tokens": 6})
    out = root / "math"
    md.write_domain("math", cfg, FIXTURES, md.output_paths("math", cfg, out))
    texts = [json.loads(x)["context"] + json.loads(x)["reference"]
             for t in ("gsm8k", "math") for x in (out / "data" / t / "test.lmeval.jsonl").read_text().splitlines()]
    model_dir, tok = word_model(root, texts + ["1 2 3 4 5 6 7 8 9 0 #### boxed"])
    zoo = out / "zoo"
    for k, s in enumerate(SOURCES):
        save_random_lora(model_dir, zoo / s / "final", seed=10 + k)
    gen = out / "generated" / "gsm8k"
    save_random_lora(model_dir, gen / "dnd_0", seed=20)
    save_random_lora(model_dir, gen / "control_random_0", seed=21, b_std=0.0)
    enc = out / "encoded"
    e = torch.eye(8)
    for k, s in enumerate(SOURCES):
        save_encoded(enc / s / "train.pt", e[k], decoy=e[7])
    save_encoded(enc / "gsm8k" / "cond.pt", 0.9 * e[1] + 0.2 * e[5], decoy=e[0])
    params = {"math": cfg, "evaluation": {"batch_size": 4, "dtype": "float32"}, "sources": SOURCES}
    argv = ["evaluate-mathcode", "--domain", "math", "--target", "gsm8k", "--params", json.dumps(params),
            "--model", str(model_dir), *declared_argv(tasks=out / "tasks", zoo=zoo, generated=gen, encoded=enc),
            "--cond", str(enc / "gsm8k" / "cond.pt"), "--threads", "1"]
    return {"root": root, "out": out, "argv": argv, "model": model_dir, "cfg": cfg}


@pytest.fixture(scope="module")
def mrows(mworld):
    dest = mworld["root"] / "eval" / "gsm8k.jsonl"
    assert cli_main([*mworld["argv"], "--out", str(dest), "--cache-dir", str(mworld["root"] / "cache")]) == 0
    return [json.loads(x) for x in dest.read_text().splitlines()]


def test_every_method_scored_on_the_same_items(mworld, mrows):
    from dnd.io import read_jsonl

    test = read_jsonl(mworld["out"] / "data" / "gsm8k" / "test.lmeval.jsonl")
    got = [(r["method"], r["adapter"]) for r in mrows]
    assert got == [("base", "base"), *(("source_lora", s) for s in SOURCES), ("soup", "soup"), ("nearest", "mu_math"),
                   ("dnd", "0"), ("control_random", "0")]
    for r in mrows:
        assert r["ids"] == [t["id"] for t in test] and r["n"] == 2 == len(r["correct"]) == len(r["gold_logprob"])
        assert r["metric"] == "exact_match,flexible-extract" and len(r["extra"]["strict-match"]) == 2
        assert all(v < 0 for v in r["gold_logprob"])


def test_correctness_is_lm_evals_on_the_outputs(mworld, mrows):
    """Recompute each item's verdict from the logged output with lm-eval's own gsm8k filter
    and exact_match (its regexes_to_ignore, ignore_case)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    from dnd.io import read_jsonl

    ref = md._lm_eval_gsm8k()
    pipe = next(p for p in ref["filter_list"] if p["name"] == "flexible-extract")
    regex = RegexFilter(**{k: v for k, v in pipe["filter"][0].items() if k != "function"})
    kw = {k: v for k, v in ref["metric_list"][0].items() if k not in ("metric", "aggregation", "higher_is_better")}
    test = read_jsonl(mworld["out"] / "data" / "gsm8k" / "test.lmeval.jsonl")
    for r in mrows:
        for out, doc, c in zip(r["outputs"], test, r["correct"]):
            pred = regex.apply([[out]], [doc])[0][0]
            em = exact_match_hf_evaluate(predictions=[pred], references=[doc["response"]], **kw)["exact_match"]
            assert int(em) == c


def test_a_zero_lora_scores_like_the_base_model(mrows):
    by = {(r["method"], r["adapter"]): r for r in mrows}
    base, zero = by[("base", "base")], by[("control_random", "0")]
    assert zero["outputs"] == base["outputs"]
    assert zero["gold_logprob"] == pytest.approx(base["gold_logprob"], abs=1e-4)
    assert by[("dnd", "0")]["gold_logprob"] != pytest.approx(base["gold_logprob"], abs=1e-3)


def test_cache_reuses_every_adapter(mworld, mrows, monkeypatch):
    from dnd.experiments.mathcode import score as mathcode

    def boom(*a, **k):
        raise AssertionError("scored again")

    monkeypatch.setattr(mathcode.GenerationScorer, "score", boom)
    dest = mworld["root"] / "eval2.jsonl"
    assert cli_main([*mworld["argv"], "--out", str(dest), "--cache-dir", str(mworld["root"] / "cache")]) == 0
    assert [json.loads(x) for x in dest.read_text().splitlines()] == mrows


def test_summary_and_report(mworld, mrows, tmp_path):
    import pandas as pd

    ev = mworld["root"] / "eval" / "gsm8k.jsonl"
    scores, metrics = tmp_path / "scores.csv", tmp_path / "metrics.json"
    assert cli_main(["mathcode-summary", "--domain", "math", "--params",
                     json.dumps({"sources": SOURCES, "bootstrap": 50, "seed": 0}), "--eval", str(ev),
                     "--scores", str(scores), "--metrics", str(metrics)]) == 0
    df = pd.read_csv(scores)
    assert list(df.columns) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob",
                                "metric"]
    assert set(df.metric) == {"exact_match,flexible-extract"}
    m = json.loads(metrics.read_text())
    assert "gsm8k/dnd_minus_train_avg/gold_logprob" in m and m["gsm8k/metric"] == "exact_match,flexible-extract"
    md_out, fig = tmp_path / "report.md", tmp_path / "figures" / "math.png"
    paper = Path(__file__).resolve().parents[1] / "config" / "paper_numbers.yaml"
    params = {"sources": SOURCES, "settings": {"shards": 3, "target_share": 0.25}, "base_model": {"source": "tiny"},
              "design": "hyperconv"}
    assert cli_main(["mathcode-report", "--domain", "math", "--params", json.dumps(params),
                     "--scores", str(scores), "--metrics", str(metrics), "--paper-numbers", str(paper),
                     "--out", str(md_out), "--figure", str(fig)]) == 0
    text = md_out.read_text()
    assert text.startswith("## Math") and "42.9 → DnD 66.3" in text and fig.stat().st_size > 0
    assert "**Here** (the tiny random test model)" in text
    assert "3 shards of MATH split by a hash" in text and "25% of MATH (by the same hash) is kept apart" in text
    assert "DnD: design `hyperconv`" in text  # what the glance's Generator column reads
    assert mcr._name("nearest/mu_math") == "nearest (mu_math)" and mcr._name("source_lora/mu_math") == "mu_math"
    # the tiny model solves nothing: every method at 0 on every item, and the report says the
    # metric cannot compare them; once one method scores, the note goes
    assert df.acc.eq(0).all()
    assert "`exact_match,flexible-extract` is at its floor here and cannot compare them" in text
    assert "**Verdict: not testable here: every method at the floor.**" in text  # the paper's claim, untested
    # and no relation word (level, ahead, ...) between methods the metric cannot tell apart
    assert "In words: DnD against each baseline is not testable here on `exact_match,flexible-extract`" in text
    assert "DnD is level with" not in text
    df.loc[df.method == "base", ["acc", "ci_high"]] = 0.5
    df.to_csv(scores, index=False)
    assert cli_main(["mathcode-report", "--domain", "math", "--params", json.dumps(params),
                     "--scores", str(scores), "--metrics", str(metrics), "--paper-numbers", str(paper),
                     "--out", str(md_out), "--figure", str(fig)]) == 0
    text = md_out.read_text()
    assert "is at its floor here" not in text and "not testable here" not in text and "**Verdict: " in text


def test_summary_refuses_incomplete_rows(mworld, mrows, tmp_path, caplog):
    """An empty file, a target without its dnd rows, a short row: one error naming target and method."""
    rows = [json.loads(line) for line in (mworld["root"] / "eval" / "gsm8k.jsonl").read_text().splitlines()]

    def refused(files: list[Path]) -> str:
        caplog.clear()
        assert cli_main(["mathcode-summary", "--domain", "math", "--params",
                         json.dumps({"sources": SOURCES, "bootstrap": 10, "seed": 0}), "--eval", *map(str, files),
                         "--scores", str(tmp_path / "s.csv"), "--metrics", str(tmp_path / "m.json")]) == 1
        assert not (tmp_path / "s.csv").exists()
        return caplog.text

    ev = tmp_path / "gsm8k.jsonl"
    ev.write_text("")
    assert f"target gsm8k: evaluation file {ev} is empty" in refused([ev])
    ev.write_text("".join(json.dumps(r) + "\n" for r in rows if r["method"] != "dnd"))
    assert "target gsm8k: no dnd rows" in refused([ev])
    short = [dict(r) for r in rows]
    s = next(r for r in short if r["method"] == "soup")
    for key in ("ids", "correct", "gold_logprob", "outputs"):
        s[key] = s[key][:-1]
    s["n"] -= 1
    ev.write_text("".join(json.dumps(r) + "\n" for r in short))
    assert f"target gsm8k: soup/soup has {len(rows[0]['ids']) - 1} items" in refused([ev])
