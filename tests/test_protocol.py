"""The paper-protocol experiment: the paper's answer format and parser (dnd.formats.paper), the
generating backend (dnd.scoring.lm_generate), scoring every method under three protocols
(dnd.experiments.protocol.score) and its summary (dnd.experiments.protocol.report).

Everything is built in a temporary directory: a tiny random Llama with a word-level tokenizer,
hand-written items, random PEFT LoRA adapters. No download.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import declared_argv, declared_paths, save_encoded, save_random_lora, word_model
from dnd.cli import main as cli_main
from dnd.config import ConfigError, section, validate_config
from dnd.experiments.protocol import (
    report as pr,
    score as protocol,  # first: sets HF_*_OFFLINE before transformers/lm_eval load
)
from dnd.formats import paper as pf

MC = {"id": "m-1", "question": "Which is a bird?", "choices": ["cat", "crow", "fish", "tree"], "answer": 1,
      "passage": None, "style": "qa"}
YN = {"id": "y-1", "question": "is the sky blue?", "choices": ["no", "yes"], "answer": 1,
      "passage": "The sky is blue on clear days.", "style": "qa"}
END = {"id": "e-1", "question": "He opened the door and", "choices": ["walked in.", "ate it."], "answer": 0,
       "passage": None, "style": "completion"}


# ------------------------------------------------------------------------------ the format
def test_answer_kinds_labels_and_gold():
    assert pf.answer_kind(MC) == "letter" and pf.labels(MC) == ["A", "B", "C", "D"] and pf.gold_label(MC) == "B"
    assert pf.answer_kind(YN) == "truefalse" and pf.labels(YN) == ["False", "True"] and pf.gold_label(YN) == "True"
    assert pf.answer_texts(YN) == ["[False]", "[True]"]
    assert pf.labels({**MC, "choices": list("abcde")})[-1] == "E"
    with pytest.raises(ValueError, match="2-5 options"):
        pf.answer_kind({**MC, "choices": list("abcdef")})


def test_render_templates():
    chat = pf.render_context(MC, "chatml")
    assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_start|>assistant\n")
    assert "Which is a bird?\nA: cat\nB: crow\nC: fish\nD: tree<|im_end|>" in chat
    default = pf.render_context(YN, "default")
    assert default.startswith("System: ") and default.endswith("\nAssistant:")
    assert "Human: The sky is blue on clear days.\nis the sky blue?\nAssistant:" in default  # no options listed
    assert "[True] or [False]" in default
    assert "Sentence: He opened the door and\nA: walked in.\nB: ate it." in pf.render_context(END, "default")
    ctx, cont = pf.training_example(MC, "chatml")
    assert ctx == chat and cont == "[B]<|im_end|>"
    rec = pf.eval_record(YN, "default")
    assert rec["choices"] == ["[False]", "[True]"] and rec["gold"] == "True" and rec["kind"] == "truefalse"
    with pytest.raises(ValueError, match="unknown template"):
        pf.render_context(MC, "alpaca")


@pytest.mark.parametrize("output, kind, parsed", [
    # letters: the second character decides (the authors' calculate_acc.py, commit 60e2192)
    ("[C]", "letter", "C"), (" [C]", "letter", "C"), (" C: fish", "letter", "C"), ("(B)", "letter", "B"),
    (" 3", "letter", "C"), ("[1]", "letter", "A"), (" [", "letter", ""), ("C", "letter", pf.INVALID),
    ("", "letter", pf.INVALID), (" The answer is C", "letter", pf.INVALID), ("C.", "letter", pf.INVALID),
    ("  [C]", "letter", pf.INVALID), (" [E]", "letter", "E"),
    # true/false: after the last "ns: ", the first line; long text -> first of True, False, false, true
    ("[True]", "truefalse", "True"), (" [false]", "truefalse", "False"), ("True", "truefalse", "True"),
    (" True", "truefalse", pf.INVALID), ("Answers: False", "truefalse", "False"),
    ("The answer is no.", "truefalse", pf.INVALID), ("false, not True", "truefalse", "True"),
    ("xxxxxxxxxxxxxxxxxxxx True", "truefalse", pf.INVALID),  # beyond the 20 characters read
])
def test_parser(output, kind, parsed):
    assert pf.parse_answer(output, kind) == parsed


# ------------------------------------------------------------------------------ the backend
def _tiny_model(root: Path, texts: list[str]):
    """(model directory, tokenizer): a random 2-layer Llama with a word-level tokenizer over `texts`."""
    return word_model(root, texts)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random Llama whose vocabulary covers the protocol items, in float32, and its backend."""
    from transformers import AutoModelForCausalLM

    from dnd.scoring.lm_generate import SharedPrefillLM

    texts = [pf.render_context(it, t) + " " + " ".join(pf.answer_texts(it)) for it in (MC, YN, END)
             for t in pf.TEMPLATES]
    model_dir, tok = _tiny_model(tmp_path_factory.mktemp("protolm"), texts)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    lm = SharedPrefillLM(pretrained=model, tokenizer=tok, batch_size=4, softmax_dtype="float32")
    return {"dir": model_dir, "model": model, "tok": tok, "lm": lm, "texts": texts}


class _Req:
    def __init__(self, context, kwargs):
        self.args = (context, kwargs)


GREEDY = {"do_sample": False, "max_gen_toks": 6, "until": []}


def _sampled(seed):
    return {"do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50, "seed": seed, "max_gen_toks": 6,
            "until": []}


@pytest.mark.parametrize("templates", [("default",) * 3, ("default", "default", "chatml")])
def test_greedy_equals_transformers_generate(tiny_lm, templates):
    """Contexts of different lengths, batched together, decode exactly what `generate` decodes
    for each alone: with a shared token prefix computed once (one template) or without one."""
    lm, tok, model = tiny_lm["lm"], tiny_lm["tok"], tiny_lm["model"]
    contexts = [pf.render_context(it, t) for it, t in zip((MC, YN, END), templates)]
    encs = [tok(c, add_special_tokens=False)["input_ids"] for c in contexts]
    shared = next(k for k in range(min(map(len, encs))) if len({e[k] for e in encs}) > 1)
    assert (shared >= lm.min_shared_prefix) == (len(set(templates)) == 1)
    got = lm.generate_until([_Req(c, GREEDY) for c in contexts], disable_tqdm=True)
    for c, g in zip(contexts, got):
        ids = torch.tensor([tok(c, add_special_tokens=False)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        text = tok.decode(ref[0, ids.shape[1]:].tolist(), skip_special_tokens=False)
        assert g == text.split(tok.eos_token)[0]


def test_sampling_is_seeded_per_request_and_independent_of_the_batch(tiny_lm):
    lm = tiny_lm["lm"]
    contexts = [pf.render_context(it, "default") for it in (MC, YN, END)]
    reqs = [_Req(c, kw) for c in contexts for kw in (GREEDY, _sampled(0), _sampled(1), _sampled(2))]
    a = lm.generate_until(reqs, disable_tqdm=True)
    assert lm.generate_until(reqs, disable_tqdm=True) == a  # deterministic
    alone = lm.generate_until(reqs[5:8], disable_tqdm=True)  # YN's three samples, without the rest
    assert alone == a[5:8]
    assert len({tuple(a[i::4]) for i in range(1, 4)}) > 1  # the seeds give different samples


def test_loglikelihood_pass_feeds_generation(tiny_lm, monkeypatch):
    """The log-likelihood pass scores like the plain forward pass and keeps every context's
    state; generate_until then decodes from it (no second prefill), with the same answers."""
    import torch.nn.functional as F

    lm, tok, model = tiny_lm["lm"], tiny_lm["tok"], tiny_lm["model"]
    items = (MC, YN, END)
    contexts = [pf.render_context(it, "default") for it in items]
    reqs = [_Req(c, kw) for c in contexts for kw in (GREEDY, _sampled(0))]
    fresh = lm.generate_until(reqs, disable_tqdm=True)
    ll_reqs = []
    for it, c in zip(items, contexts):
        ctx = tok(c, add_special_tokens=False)["input_ids"]
        for a in pf.answer_texts(it):
            ll_reqs.append(((c, " " + a), ctx, tok(c + " " + a, add_special_tokens=False)["input_ids"][len(ctx):]))
    got = lm._loglikelihood_tokens(ll_reqs, disable_tqdm=True)
    for (_, ctx, cont), (lp, _) in zip(ll_reqs, got):
        with torch.no_grad():
            logits = model(torch.tensor([ctx + cont[:-1]])).logits[0, len(ctx) - 1:]
        ref = F.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont).unsqueeze(1)).sum()
        assert lp == pytest.approx(float(ref), abs=1e-4)
    assert len(lm._kept) == len(contexts)
    calls = []
    real = lm._prefill_tokens
    monkeypatch.setattr(lm, "_prefill_tokens", lambda encs: calls.append(len(encs)) or real(encs))
    assert lm.generate_until(reqs, disable_tqdm=True) == fresh
    assert calls == [] and lm._kept == {}  # decoded from the kept states, which are then dropped


def test_sample_token_respects_top_k_and_top_p():
    from dnd.scoring.lm_generate import sample_token

    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    draws = {sample_token(logits, 1.0, None, 0.7, g) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3: the nucleus is the first two tokens
    draws = {sample_token(logits, 1.0, 1, None, g) for _ in range(50)}
    assert draws == {0}
    draws = {sample_token(logits, 1.0, None, None, g) for _ in range(2000)}
    assert draws == {0, 1, 2, 3}


def test_stop_chars_and_max_tokens(tiny_lm):
    """A stream stops after its own max_gen_toks, or once its text has stop_chars characters,
    whatever the other streams of its batch do."""
    lm = tiny_lm["lm"]
    c = pf.render_context(MC, "default")
    full, short, chars = lm.generate_until([_Req(c, {**GREEDY, "max_gen_toks": 30}),
                                            _Req(c, {**GREEDY, "max_gen_toks": 3}),
                                            _Req(c, {**GREEDY, "max_gen_toks": 30, "stop_chars": 5})],
                                           disable_tqdm=True)
    assert len(full) > len(short) > 0 and full.startswith(short)
    assert full.startswith(chars) and 5 <= len(chars) < len(full)


# ------------------------------------------------------------------------------ scoring
DATASETS = ["alpha", "beta", "gamma"]
TARGET, SOURCES = "alpha", ["beta", "gamma"]
WORDS = "cat dog sun moon red blue green big small fast slow tree rock river bird fish".split()


def _items(ds: str, seed: int, n: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        yn = ds == "gamma"
        choices = ["no", "yes"] if yn else list(rng.choice(WORDS, size=3 + i % 2, replace=False))
        out.append({"id": f"{ds}-{i}", "question": "what is " + " ".join(rng.choice(WORDS, size=3)) + "?",
                    "choices": choices, "answer": int(rng.integers(len(choices))), "passage": None, "style": "qa"})
    return out


@pytest.fixture(scope="module")
def pworld(tmp_path_factory):
    root = tmp_path_factory.mktemp("protoworld")
    items = {ds: _items(ds, k) for k, ds in enumerate(DATASETS)}
    pcfg = section("protocol", {"n_test": 5, "seeds": [0, 1], "max_new_tokens": 4})
    texts = [pf.render_context(it, t) + " " + " ".join(pf.answer_texts(it)) for its in items.values() for it in its
             for t in pf.TEMPLATES]
    model_dir, _ = _tiny_model(root, texts)
    data = root / "data"
    for ds, its in items.items():
        (data / ds).mkdir(parents=True)
        (data / ds / "test.jsonl").write_text("".join(json.dumps(it) + "\n" for it in its))
    out = root / "protocol"
    for t in pf.TEMPLATES:  # one task set per test-time template, as the workflow's protocol_tasks jobs
        assert cli_main(["protocol-tasks", "--params", json.dumps({"protocol": pcfg, "datasets": DATASETS}),
                         "--template", t, "--data", *[str(data / ds / "test.jsonl") for ds in DATASETS], "--out",
                         *[str(out / "data" / t / ds / "test.jsonl") for ds in DATASETS],
                         *[str(out / "tasks" / t / f"{name}.yaml") for ds in DATASETS
                           for _, _, name in protocol.task_names(ds, pcfg["seeds"])]]) == 0
    zoo = root / "zoo"
    for k, ds in enumerate(DATASETS):
        save_random_lora(model_dir, zoo / ds / "final", seed=10 + k)
    gen = root / "generated" / TARGET
    save_random_lora(model_dir, gen / "dnd_0", seed=20)
    save_random_lora(model_dir, gen / "dnd_testcond_0", seed=21)
    save_random_lora(model_dir, gen / "control_random_0", seed=22, b_std=0.0)  # B = 0: the base model
    save_random_lora(model_dir, gen / "dnd_hyperconv_0", seed=23)  # not a protocol kind: ignored
    enc = root / "encoded"
    e = torch.eye(8)
    save_encoded(enc / "beta" / "train.pt", e[0], decoy=e[1])
    save_encoded(enc / "gamma" / "train.pt", e[1], decoy=e[0])
    save_encoded(enc / TARGET / "cond.pt", 0.9 * e[1] + 0.2 * e[2], decoy=e[0])
    params = {"protocol": pcfg, "evaluation": {"batch_size": 4, "dtype": "float32"}, "datasets": DATASETS,
              "sources": SOURCES}
    return {"root": root, "model": model_dir, "tasks": out / "tasks" / "default", "data": out / "data" / "default",
            "out": out, "zoo": zoo, "gen": gen, "enc": enc, "params": params, "items": items, "pcfg": pcfg}


def _eval_argv(w, out: Path, cache: Path | None = None, template: str = "default") -> list[str]:
    argv = ["evaluate-protocol", "--params", json.dumps(w["params"]), "--template", template, "--target", TARGET,
            "--model", str(w["model"]),
            *declared_argv(tasks=w["out"] / "tasks" / template, zoo=w["zoo"], generated=w["gen"], encoded=w["enc"]),
            "--out", str(out), "--threads", "1"]
    return argv + (["--cache-dir", str(cache)] if cache else [])


def _evaluate(w, template: str) -> list[dict]:
    out = w["root"] / "eval" / template / f"{TARGET}.jsonl"
    assert cli_main(_eval_argv(w, out, w["root"] / "cache", template)) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def prows(pworld):
    return _evaluate(pworld, "default")


@pytest.fixture(scope="module")
def prows_chatml(pworld, prows):
    """The same adapters scored in the `chatml` task files (after `prows`, into the same cache)."""
    return _evaluate(pworld, "chatml")


def test_tasks_written(pworld):
    for t in pf.TEMPLATES:
        names = sorted(p.stem for p in (pworld["out"] / "tasks" / t).glob("*.yaml"))
        assert names == sorted(n for ds in DATASETS for _, _, n in protocol.task_names(ds, [0, 1]))
        recs = [json.loads(x) for x in (pworld["out"] / "data" / t / "gamma" / "test.jsonl").read_text().splitlines()]
        assert len(recs) == 5 and all(r["kind"] == "truefalse" and r["gold"] in ("True", "False") for r in recs)
        assert all(r["context"] == pf.render_context(it, t) for r, it in zip(recs, pworld["items"]["gamma"]))
    # the loglik task puts the template's delimiter between the context and the bracketed answer
    import yaml

    delim = {t: yaml.safe_load((pworld["out"] / "tasks" / t / "dnd_paper_alpha_loglik.yaml").read_text())[
        "target_delimiter"] for t in pf.TEMPLATES}
    assert delim == {"chatml": "", "default": " "}


@pytest.mark.parametrize("template", pf.TEMPLATES)
def test_test_prompts_are_the_zoo_training_text_in_chatml_only(pworld, template):
    """What lm-eval asks of the model under each template, against what the protocol's zoo trains
    on (dnd.zoo.encode_examples with prompt.format `paper`, as train-lora runs it): under `chatml`
    every prompt is the training text up to the answer, token for token, and the log-likelihood
    task's gold continuation is the trained answer without its end-of-turn marker; under
    `default` (the authors' test script) the prompts are another text."""
    from transformers import AutoTokenizer

    from dnd.evaluate import load_task
    from dnd.zoo import encode_examples

    tok = AutoTokenizer.from_pretrained(str(pworld["model"]))
    items = pworld["items"][TARGET][:5]
    train = encode_examples(items, tok, pf.FORMAT, max_length=512)
    train_text = [pf.training_example(it, "chatml") for it in items]
    assert [ids[:start] for ids, start in train] == [tok(c, add_special_tokens=False)["input_ids"]
                                                    for c, _ in train_text]

    protocol._register_filter()  # the generation tasks name the authors' parser

    def requests(name):
        task = load_task(pworld["out"] / "tasks" / template, name)["tasks"][name]
        task.build_all_requests(rank=0, world_size=1)
        return list(task.instances)

    loglik = requests(protocol.task_name(TARGET, "loglik"))
    gold = {inst.doc["id"]: inst.args for inst in loglik if inst.idx == inst.doc["answer"]}
    greedy = {inst.doc["id"]: inst.args[0] for inst in requests(protocol.task_name(TARGET, "greedy"))}
    assert len(gold) == len(greedy) == len(items)
    same = []
    for it, (ids, start), (ctx, cont) in zip(items, train, train_text):
        prompt_ids = tok(greedy[it["id"]], add_special_tokens=False)["input_ids"]
        same.append((greedy[it["id"]] == ctx, prompt_ids == ids[:start], gold[it["id"]] == (ctx, cont.removesuffix(
            pf.CHATML_END)), ids[:start] == tok(gold[it["id"]][0], add_special_tokens=False)["input_ids"]))
    assert same == [(template == "chatml",) * 4] * len(items)
    if template == "default":
        assert all(g.endswith("\nAssistant:") for g in greedy.values())
        assert all(c == " " + pf.answer_texts(it)[it["answer"]] for it, (_, c) in zip(items, gold.values()))


def test_the_templates_score_apart(pworld, prows, prows_chatml):
    """The same methods and adapters under both templates, each row naming its template; the
    template is part of the cache key, so the chatml scores are not the default ones reused."""
    def cells(rows):
        return [(r["method"], r["adapter"], r["protocol"], r["seed"]) for r in rows]

    assert {r["template"] for r in prows} == {"default"} and {r["template"] for r in prows_chatml} == {"chatml"}
    assert cells(prows) == cells(prows_chatml)
    n_adapters = len({(r["method"], r["adapter"]) for r in prows if r["method"] != "nearest"})
    assert len(list((pworld["root"] / "cache").glob("*.json"))) == 2 * n_adapters
    greedy = {t: [r["outputs"] for r in rows if r["protocol"] == "greedy"]
              for t, rows in (("default", prows), ("chatml", prows_chatml))}
    assert greedy["default"] != greedy["chatml"]  # other prompts, other generations


def test_every_method_under_every_protocol(pworld, prows):
    keys = {(r["method"], r["adapter"], r["protocol"], r["seed"]) for r in prows}
    adapters = [("base", "base"), ("source_lora", "alpha"), ("source_lora", "beta"), ("source_lora", "gamma"),
                ("soup", "soup"), ("dnd", "0"), ("dnd_testcond", "0"), ("control_random", "0")]
    for method, adapter in adapters:
        for protocol_, seed in (("loglik", None), ("greedy", None), ("sampled", 0), ("sampled", 1)):
            assert (method, adapter, protocol_, seed) in keys
    assert not any(r["method"] == "dnd_hyperconv" for r in prows)
    nearest = {r["adapter"] for r in prows if r["method"] == "nearest"}
    assert nearest == {"gamma"}  # the cond prompts sit next to gamma's train prompts
    ids = [it["id"] for it in pworld["items"][TARGET][:5]]
    for r in prows:
        assert r["ids"] == ids and r["n"] == 5 and len(r["correct"]) == len(r["valid"]) == 5
        assert r["acc"] == pytest.approx(sum(r["correct"]) / 5)
        assert r["invalid_rate"] == pytest.approx(1 - sum(r["valid"]) / 5)
        assert all(c <= v for c, v in zip(r["correct"], r["valid"]))  # an invalid answer is never right
        if r["protocol"] == "loglik":
            assert r["invalid_rate"] == 0 and len(r["gold_logprob"]) == 5
        else:
            parsed = [pf.parse_answer(o, "letter") for o in r["outputs"]]
            assert r["valid"] == [int(p != pf.INVALID) for p in parsed]


def test_zero_lora_scores_like_the_base_model(prows):
    def rows(method):
        return {(r["protocol"], r["seed"]): (r["correct"], r.get("outputs")) for r in prows if r["method"] == method}

    assert rows("control_random") == rows("base")


def test_loglik_protocol_is_lm_evals_multiple_choice(pworld, prows):
    """The loglik rows are what dnd.evaluate's lm-eval multiple-choice scoring gives on the same
    records (the paper-format context, the bracketed answers)."""
    from dnd import evaluate as ev

    scorer = ev.InPlaceScorer(pworld["model"], pworld["zoo"] / "beta" / "final", pworld["tasks"],
                              protocol.task_name(TARGET, "loglik"), limit=None, batch_size=4, metric="acc")
    s = scorer.score(ev.load_state_dict(pworld["zoo"] / "beta" / "final"), "beta")
    row = next(r for r in prows if (r["method"], r["adapter"], r["protocol"]) == ("source_lora", "beta", "loglik"))
    assert row["correct"] == s.correct
    assert row["gold_logprob"] == pytest.approx(s.gold_logprob(), abs=1e-4)


def test_cache_reuses_every_adapter(pworld, prows, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded although every adapter is cached")

    monkeypatch.setattr(protocol, "ProtocolScorer", boom)
    out = pworld["root"] / "eval2.jsonl"
    assert cli_main(_eval_argv(pworld, out, pworld["root"] / "cache")) == 0
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again == prows


def test_missing_dnd_adapters_are_named(pworld, tmp_path):
    with pytest.raises(FileNotFoundError, match="no dnd_<i> adapter directory among the --generated paths"):
        protocol.evaluate_protocol(TARGET, pworld["params"], pworld["model"],
                                   declared_paths(pworld["tasks"], "--tasks"), declared_paths(pworld["zoo"], "--zoo"),
                                   [p for p in declared_paths(pworld["gen"], "--generated") if p.name != "dnd_0"],
                                   declared_paths(pworld["enc"], "--encoded"), template="default")


def test_tasks_of_another_template_are_refused(pworld, tmp_path, caplog):
    """--template names the rows' template: task files written for the other one are refused
    before anything is scored."""
    argv = _eval_argv(pworld, tmp_path / "x.jsonl", template="chatml")
    argv[argv.index("--tasks") + 1:argv.index("--zoo")] = [str(p) for p in declared_paths(pworld["tasks"], "--tasks")]
    assert cli_main(argv) == 1 and not (tmp_path / "x.jsonl").exists()
    assert "were written for another template than --template chatml (answer delimiter ' ', expected '')" in caplog.text


def test_paper_format_is_no_run_format():
    from dnd.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "smoke.yaml")
    cfg["prompt"]["format"] = "paper"
    with pytest.raises(ConfigError, match="protocol experiment"):
        validate_config(cfg)


def test_protocol_templates_config():
    """protocol.templates: the schema's choices are dnd.formats.paper.TEMPLATES, both by default;
    an unknown, repeated or empty list, or the old single `template` key, is one line naming it."""
    from dnd.config import load_schema

    item = load_schema()["properties"]["protocol"]["properties"]["templates"]
    assert set(item["items"]["enum"]) == set(pf.TEMPLATES) and tuple(item["default"]) == ("default", "chatml")
    assert section("protocol", {})["templates"] == ["default", "chatml"]
    assert section("protocol", {"templates": ["chatml"]})["templates"] == ["chatml"]
    for bad, msg in (({"templates": ["alpaca"]}, "protocol.templates[0]: 'alpaca' is not one of"),
                     ({"templates": ["chatml", "chatml"]}, "protocol.templates: ['chatml', 'chatml'] has non-unique"),
                     ({"templates": []}, "protocol.templates: [] should be non-empty"),
                     ({"template": "chatml"}, "protocol.template: additional property not allowed")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            section("protocol", bad)


# ------------------------------------------------------------------------------ summary
def _row(target, method, adapter, protocol_, seed, correct, valid, template="default"):
    n = len(correct)
    return {"template": template, "target": target, "method": method, "adapter": adapter, "protocol": protocol_,
            "seed": seed, "n": n, "acc": sum(correct) / n, "invalid_rate": 1 - sum(valid) / n, "correct": correct,
            "valid": valid}


def test_metrics_decompose_the_gain():
    """DnD valid on every item, right on all valid ones; the training LoRAs valid on half, right
    on half of those: the gain splits into validity and accuracy-among-valid exactly."""
    n = 8
    rows = []
    for t, sources in {"t1": ["s1", "s2"]}.items():
        for p, seed in (("greedy", None),):
            rows.append(_row(t, "dnd", "0", p, seed, [1] * n, [1] * n))
            for s in sources:
                rows.append(_row(t, "source_lora", s, p, seed, [1, 0, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]))
            rows.append(_row(t, "source_lora", t, p, seed, [1] * n, [1] * n))
    m = pr.metrics(rows, {"t1": ["s1", "s2"]}, resamples=200, seed=0)
    assert m["greedy/dnd/acc"] == 100 and m["greedy/train_avg/acc"] == 25
    assert m["greedy/train_avg/invalid_rate"] == 50 and m["greedy/dnd/invalid_rate"] == 0
    d = m["greedy/dnd_minus_train_avg/acc"]
    assert d == pytest.approx(75)
    # validity: (1 - 0.5) * 0.5 = 25 points; accuracy among valid: 1 * (1 - 0.5) = 50 points
    assert m["greedy/dnd_minus_train_avg/validity"] == pytest.approx(25)
    assert m["greedy/dnd_minus_train_avg/accuracy_valid"] == pytest.approx(50)
    assert m["greedy/dnd_minus_train_avg/acc_ci_low"] <= d <= m["greedy/dnd_minus_train_avg/acc_ci_high"]
    assert m["greedy/oracle/acc"] == 100
    # the headroom: the target's own LoRA minus the training-LoRA average, paired as the others
    assert m["greedy/oracle_minus_train_avg/acc"] == pytest.approx(75)
    assert m["greedy/oracle_minus_train_avg/acc_ci_low"] > 0
    lines = pr.conclusion(m, {"common_sense": {"average_gain": 21.0}})
    head = next(x for x in lines if "Headroom" in x)
    assert head.startswith("  - Headroom: the oracle minus the training-LoRA average +75.0 points (95% CI [")
    assert head.endswith("the oracle is ahead of the training-LoRA average; DnD's verdict is drawn.")
    line = next(x for x in lines if "Verdict" in x)
    assert "**reproduced**" in line  # DnD +75 [> 21]: the paper's direction and size


def test_no_headroom_makes_the_claim_not_testable():
    """Under a protocol where the oracle (the target's own LoRA) does not beat the training-LoRA
    average, the paper's claim on DnD is "not testable here", whatever DnD scores."""
    n = 8
    rows = [_row("t1", "dnd", "0", "greedy", None, [1] * n, [1] * n)]
    rows += [_row("t1", "source_lora", s, "greedy", None, [1, 0] * 4, [1] * n) for s in ("s1", "s2", "t1")]
    m = pr.metrics(rows, {"t1": ["s1", "s2"]}, resamples=200, seed=0)
    assert m["greedy/oracle_minus_train_avg/acc"] == 0
    assert pr.claim_verdict(m, "greedy", 21.0).startswith(
        "not testable here: the oracle does not beat the training-LoRA average (CI [")
    lines = pr.conclusion(m, {"common_sense": {"average_gain": 21.0}})
    assert "- **Greedy + parser**: DnD is ahead of the training-LoRA average: +50.0 points" in lines[0]
    assert lines[1].startswith("  - Headroom: the oracle minus the training-LoRA average +0.0 points")
    assert lines[1].endswith("no headroom, DnD's claim is not testable here.")
    assert "**not testable here: the oracle does not beat" in lines[2]
    # at the floor (every method 0%) the reason is the floor
    rows = [{**r, "correct": [0] * n, "acc": 0.0} for r in rows]
    m = pr.metrics(rows, {"t1": ["s1", "s2"]}, resamples=200, seed=0)
    assert pr.claim_verdict(m, "greedy", None) == "not testable here: every method at the floor"


def test_report_draws_verdicts_only_where_the_oracle_has_headroom(tmp_path):
    """Two templates, DnD far above the training-LoRA average under both: under `default` the
    oracle scores below the training-LoRA average, so its verdict is "not testable here" (in the
    verdict table and in its section); under `chatml` the oracle beats it and the verdict is drawn."""
    n = 8
    rows = []
    for template, oracle in (("default", [0] * n), ("chatml", [1] * n)):
        rows += [_row("t1", "base", "base", "greedy", None, [0, 1] * 4, [1] * n, template),
                 _row("t1", "dnd", "0", "greedy", None, [1] * n, [1] * n, template),
                 _row("t1", "source_lora", "t1", "greedy", None, oracle, [1] * n, template)]
        rows += [_row("t1", "source_lora", s, "greedy", None, [1, 0] * 4, [1] * n, template) for s in ("s1", "s2")]
    mt = pr.summarize(rows, ["default", "chatml"], {"t1": ["s1", "s2"]}, resamples=200, seed=0)
    assert mt["default"]["greedy/oracle_minus_train_avg/acc"] == -50 < mt["default"]["greedy/dnd_minus_train_avg/acc"]
    assert mt["chatml"]["greedy/oracle_minus_train_avg/acc"] == 50
    paper = {"common_sense": {"average_gain": 21.0}}
    table = pr.verdict_table(mt, paper)
    verdicts = dict(zip(table["Template"], table["Verdict"]))
    assert verdicts["`default`"].startswith("not testable here: the oracle does not beat the training-LoRA average")
    assert verdicts["`chatml`"] == "reproduced"  # +50 [> 21]
    assert list(table["Oracle − training LoRAs (headroom)"]) == [
        pr._ci_text(mt[t], "greedy/oracle_minus_train_avg") for t in ("default", "chatml")]
    text = pr.protocol_markdown(mt, {"protocol": {"n_test": n}}, paper, "f.png")
    default, chatml = text.split("### Template `default`")[1].split("### Template `chatml`")
    assert "no headroom, DnD's claim is not testable here" in default and "**reproduced**" not in default
    assert "**not testable here: the oracle does not beat the training-LoRA average" in default
    assert "DnD's verdict is drawn" in chatml and "**reproduced**" in chatml and "not testable" not in chatml


def test_summary_and_report_from_scored_rows(pworld, prows, prows_chatml, tmp_path):
    """Both templates' evaluation files -> one scores.csv (a template column), metrics per
    template (each from its own rows), one report with a section and a verdict row per template."""
    files = []
    for t, rows in (("default", prows), ("chatml", prows_chatml)):
        files.append(tmp_path / t / "alpha.jsonl")
        files[-1].parent.mkdir()
        files[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores, metrics = tmp_path / "scores.csv", tmp_path / "metrics.json"
    params = {"templates": ["default", "chatml"], "folds": {TARGET: SOURCES}, "bootstrap": 100}
    assert cli_main(["protocol-summary", "--params", json.dumps(params), "--eval", *map(str, files),
                     "--scores", str(scores), "--metrics", str(metrics)]) == 0
    import pandas as pd

    df = pd.read_csv(scores)
    assert list(df.columns) == pr.SCORE_COLUMNS
    assert set(df.protocol) == {"loglik", "greedy", "sampled"} and len(df) == len(prows) + len(prows_chatml)
    assert df.template.value_counts().to_dict() == {"default": len(prows), "chatml": len(prows_chatml)}
    mt = json.loads(metrics.read_text())
    assert mt["templates"] == ["default", "chatml"]
    for t, rows in (("default", prows), ("chatml", prows_chatml)):
        m = mt[t]
        for p in ("loglik", "greedy", "sampled"):
            assert math.isfinite(m[f"{p}/dnd_minus_train_avg/acc"])
            assert math.isfinite(m[f"{p}/oracle_minus_train_avg/acc_ci_low"])
            assert m[f"{p}/train_avg/acc"] == pytest.approx(np.mean([
                np.mean(r["correct"]) * 100 for r in rows if r["method"] == "source_lora" and r["adapter"] in SOURCES
                and r["protocol"] == p]))
    out, fig = tmp_path / "report.md", tmp_path / "figures" / "protocol.png"
    paper = Path(__file__).resolve().parents[1] / "config" / "paper_numbers.yaml"
    assert cli_main(["protocol-report", "--params", json.dumps({"protocol": pworld["pcfg"]}), "--metrics",
                     str(metrics), "--paper-numbers", str(paper), "--out", str(out), "--figure", str(fig)]) == 0
    text = out.read_text()
    assert "## Protocol" in text and "Training LoRAs (avg)" in text and "(figures/protocol.png)" in text
    assert "### Template `default`" in text and "### Template `chatml`" in text
    assert text.index("### Template `default`") < text.index("### Template `chatml`")
    assert text.count("| `default`  |") == 3 and text.count("| `chatml`   |") == 3  # a verdict row per protocol
    assert "+21.0 points" in text and fig.stat().st_size > 0


def test_empty_share_of_invalid_outputs():
    """Of the invalid generations, the share that are empty, for the base model and for adapters
    with a LoRA apart; loglik rows (no outputs) are not counted."""
    rows = [{**_row("t1", "base", "base", "greedy", None, [0, 0, 1, 0], [0, 0, 1, 0]),
             "outputs": ["", "zz", "[A]", " "]},
            {**_row("t1", "dnd", "0", "greedy", None, [0, 1, 0, 0], [0, 1, 0, 1]), "outputs": ["", "[B]", "\n", "[C]"]},
            _row("t1", "dnd", "0", "loglik", None, [1, 1, 0, 0], [1, 1, 1, 1])]
    shares = pr.empty_shares(rows)
    assert shares == {"greedy/base/empty_share_of_invalid": pytest.approx(200 / 3),
                      "greedy/lora/empty_share_of_invalid": 100.0}
    lines = pr.conclusion({**shares}, {})
    assert any("100% of those of the adapters with a LoRA are empty" in x and "67% of the base model's" in x
               for x in lines)


def test_summary_refuses_a_missing_protocol_row_or_target(pworld, prows, tmp_path, caplog):
    """One dnd adapter's sampled row (one seed) missing, or no file for a fold's target: one error naming it."""
    gone = next(r for r in prows if r["method"] == "dnd" and r["protocol"] == "sampled")
    rows = [r for r in prows if r is not gone]
    ev_file = tmp_path / "alpha.jsonl"
    ev_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["protocol-summary", "--params", json.dumps({"templates": ["default"], "folds": {TARGET: SOURCES},
                                                        "bootstrap": 10}),
            "--eval", str(ev_file), "--scores", str(tmp_path / "s.csv"), "--metrics", str(tmp_path / "m.json")]
    assert cli_main(argv) == 1 and not (tmp_path / "s.csv").exists()
    assert "incomplete evaluation rows in template default: " in caplog.text
    assert f"target {TARGET}: no dnd/{gone['adapter']} under sampled/{gone['seed']}" in caplog.text
    caplog.clear()
    ev_file.write_text("".join(json.dumps(r) + "\n" for r in prows))
    argv[2] = json.dumps({"templates": ["default"], "folds": {TARGET: SOURCES, "beta": ["alpha", "gamma"]},
                          "bootstrap": 10})
    assert cli_main(argv) == 1 and "target beta: no evaluation rows" in caplog.text
    caplog.clear()  # a template of the config without rows
    argv[2] = json.dumps({"templates": ["default", "chatml"], "folds": {TARGET: SOURCES}, "bootstrap": 10})
    assert cli_main(argv) == 1 and "in template chatml: target alpha: no evaluation rows" in caplog.text
    caplog.clear()  # rows from before the templates (no template field)
    ev_file.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "template"}) + "\n" for r in prows))
    argv[2] = json.dumps({"templates": ["default"], "folds": {TARGET: SOURCES}, "bootstrap": 10})
    assert cli_main(argv) == 1 and "evaluation rows without a template (targets ['alpha'])" in caplog.text
