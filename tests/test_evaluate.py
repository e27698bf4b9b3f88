"""dnd.evaluate (in-place adapter scoring with lm-eval, baselines) and dnd.scoring.cache, and
`dnd summarize` on real evaluation rows (dnd.summary itself: tests/test_summary.py).

Everything is built in a temporary directory: a tiny random Llama with a word-level tokenizer,
three hand-written multiple-choice datasets with lm-eval task YAMLs, random PEFT LoRA adapters
and encoded prompt files. No download.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import (
    declared_argv,
    declared_paths,
    save_encoded as _save_encoded,
    save_random_lora as _save_lora,
    word_tokenizer as _tokenizer,
)
from dnd import (
    evaluate as ev,  # first: sets HF_*_OFFLINE before transformers/lm_eval load
    summary,
)
from dnd.cli import main as cli_main
from dnd.config import section
from dnd.formats.prompts import lm_eval_task_yaml, to_eval_record
from dnd.scoring import cache as sc

DATASETS = ["alpha", "beta", "gamma"]
TARGET, SOURCES = "alpha", ["beta", "gamma"]
N_ITEMS, LIMIT = 10, 8
WORDS = ("cat dog sun moon red blue green big small fast slow tree rock river bird fish cold hot "
         "day night yes no old new").split()
ENC_DIM = 8


# ------------------------------------------------------------------------------ fixtures
def _items(ds: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    pick = lambda k: " ".join(rng.choice(WORDS, size=k))  # noqa: E731
    out = []
    for i in range(N_ITEMS):
        n_choices = 3 + i % 2  # one-word choices: the LoRAs, not the lengths, decide
        out.append({"id": f"{ds}-{i}", "question": f"what is {pick(3)}?", "passage": None, "style": "qa",
                    "choices": list(rng.choice(WORDS, size=n_choices, replace=False)),
                    "answer": int(rng.integers(n_choices))})
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("evalworld")
    items = {ds: _items(ds, k) for k, ds in enumerate(DATASETS)}
    records = {ds: [to_eval_record(it) for it in its] for ds, its in items.items()}
    texts = [r["context"] + " " + c for rs in records.values() for r in rs for c in r["choices"]]
    tok = _tokenizer(texts)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))

    tasks = root / "tasks"
    tasks.mkdir()
    for ds, rs in records.items():
        data = root / "data" / ds / "test.lmeval.jsonl"
        data.parent.mkdir(parents=True)
        data.write_text("".join(json.dumps(r) + "\n" for r in rs))
        (tasks / f"dnd_{ds}.yaml").write_text(lm_eval_task_yaml(ds, data))

    zoo = root / "zoo"
    for k, ds in enumerate(DATASETS):
        _save_lora(model_dir, zoo / ds / "final", seed=10 + k)
    gen = root / "generated" / TARGET
    _save_lora(model_dir, gen / "dnd_0", seed=20)
    shutil.copytree(zoo / "beta" / "final", gen / "dnd_1")  # the same adapter scored twice
    _save_lora(model_dir, gen / "control_other_0", seed=21)
    _save_lora(model_dir, gen / "control_random_0", seed=22, b_std=0.0)  # B = 0: must equal base

    enc = root / "encoded"
    e = torch.eye(ENC_DIM)
    _save_encoded(enc / "beta" / "train.pt", e[0], decoy=e[1])
    _save_encoded(enc / "gamma" / "train.pt", e[1], decoy=e[0])
    _save_encoded(enc / TARGET / "cond.pt", 0.9 * e[1] + 0.2 * e[2], decoy=e[0])
    params = {"evaluation": {"limit": LIMIT, "batch_size": 4, "bootstrap": 500},
              "datasets": DATASETS, "sources": SOURCES, "seed": 0}
    return {"root": root, "model": model_dir, "tasks": tasks, "zoo": zoo, "gen": gen, "enc": enc,
            "params": params, "records": records}


def _tasks(w: dict) -> list[Path]:
    return declared_paths(w["tasks"], "--tasks")


def _zoo(zoo: Path) -> list[Path]:
    return declared_paths(zoo, "--zoo")


def _adapters(gen: Path) -> list[Path]:
    return declared_paths(gen, "--generated")


def _encoded(enc: Path) -> list[Path]:
    return declared_paths(enc, "--encoded")


def _evaluate_argv(w: dict, out: Path, params: dict | None = None, gen: Path | None = None) -> list[str]:
    return ["evaluate", "--params", json.dumps(params or w["params"]), "--target", TARGET, "--model", str(w["model"]),
            *declared_argv(tasks=w["tasks"], zoo=w["zoo"], generated=gen or w["gen"], encoded=w["enc"]),
            "--out", str(out), "--threads", "1"]


def _plan(w: dict, datasets=DATASETS, sources=SOURCES, zoo=None, enc=None) -> dict:
    return ev.plan_target(TARGET, datasets, sources, _zoo(w["zoo"]) if zoo is None else zoo, _adapters(w["gen"]),
                          _encoded(w["enc"]) if enc is None else enc)


@pytest.fixture(scope="module")
def eval_rows(world) -> tuple[Path, list[dict]]:
    out = world["root"] / "eval" / f"{TARGET}.jsonl"
    assert cli_main(_evaluate_argv(world, out)) == 0
    return out, [json.loads(line) for line in out.read_text().splitlines()]


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_rows(world, eval_rows):
    _, rows = eval_rows
    keys = [(r["method"], r["adapter"]) for r in rows]
    assert keys == [("base", "base"), ("source_lora", "alpha"), ("source_lora", "beta"), ("source_lora", "gamma"),
                    ("soup", "soup"), ("nearest", "gamma"), ("dnd", "0"), ("dnd", "1"),
                    ("control_other", "0"), ("control_random", "0")]
    first_ids = [r["id"] for r in world["records"][TARGET][:LIMIT]]
    for r in rows:
        assert r["target"] == TARGET and r["n"] == LIMIT and r["ids"] == first_ids
        assert set(r["correct"]) <= {0, 1} and r["acc"] == pytest.approx(np.mean(r["correct"]))
    assert len({tuple(r["correct"]) for r in rows}) >= 4  # the adapters do change the answers
    by = {k: r for k, r in zip(keys, rows)}
    # nearest reuses the source_lora result of the chosen dataset
    assert by[("nearest", "gamma")]["correct"] == by[("source_lora", "gamma")]["correct"]
    assert by[("nearest", "gamma")]["info"]["cosine"]["gamma"] > by[("nearest", "gamma")]["info"]["cosine"]["beta"]
    # the same adapter scored at two points of the job (after other swaps) gives the same items right
    assert by[("dnd", "1")]["correct"] == by[("source_lora", "beta")]["correct"]
    # an adapter with B = 0 is the base model
    assert by[("control_random", "0")]["correct"] == by[("base", "base")]["correct"]
    # continuous metrics: log P(gold) (summed, per character), margin to the best wrong answer
    for r in rows:
        recs = world["records"][TARGET][:LIMIT]
        for c, lp, lpn, mg, rec in zip(r["correct"], r["gold_logprob"], r["gold_logprob_norm"], r["margin"], recs):
            assert lp < 0 and lpn == pytest.approx(lp / len(rec["choices"][rec["answer"]]), abs=1e-5)
            assert (mg > 0) == bool(c)  # acc: the gold answer is chosen iff it beats every wrong one
    assert by[("control_random", "0")]["gold_logprob"] == by[("base", "base")]["gold_logprob"]
    assert by[("dnd", "0")]["gold_logprob"] != by[("base", "base")]["gold_logprob"]


def test_score_cache_reuses_unchanged_adapters(world, eval_rows, tmp_path, monkeypatch):
    """Cached results equal fresh ones; entries are addressed by content (a copied adapter is
    a hit); a changed adapter is a miss; with every adapter cached the model is never loaded."""
    _, fresh = eval_rows
    gen = tmp_path / "generated"
    shutil.copytree(world["gen"], gen)
    cache = tmp_path / "cache"

    def run(name: str) -> list[dict]:
        out = tmp_path / f"{name}.jsonl"
        argv = _evaluate_argv(world, out, gen=gen) + ["--cache-dir", str(cache)]
        assert cli_main(argv) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    assert run("first") == fresh
    # 10 rows: nearest reuses gamma's result, dnd_1 is a copy of beta's final LoRA -> 8 entries
    assert len(list(cache.glob("*.json"))) == 8

    shutil.rmtree(gen / "dnd_0")
    _save_lora(world["model"], gen / "dnd_0", seed=99)
    second = run("second")
    assert len(list(cache.glob("*.json"))) == 9  # only the changed adapter was scored
    changed = [i for i, (a, b) in enumerate(zip(fresh, second)) if a != b]
    assert [(second[i]["method"], second[i]["adapter"]) for i in changed] == [("dnd", "0")]

    def no_model(*a, **k):
        raise AssertionError("the model was loaded although every result is cached")

    monkeypatch.setattr(ev, "InPlaceScorer", no_model)
    assert run("third") == second


def test_edited_score_cache_entries_are_rescored(world, eval_rows, tmp_path, caplog):
    """The issue's reproduction: every cached `correct` set to 1 (acc 1.0) must not make every
    method score 1.0; the edited entries are discarded by name and scored again."""
    _, fresh = eval_rows
    cache = tmp_path / "cache"
    out = tmp_path / "eval.jsonl"
    argv = _evaluate_argv(world, out) + ["--cache-dir", str(cache)]
    assert cli_main(argv) == 0
    entries = sorted(cache.glob("*.json"))
    for path in entries:
        e = json.loads(path.read_text())
        e.update(correct=[1] * len(e["correct"]), acc=1.0)
        path.write_text(json.dumps(e))
    caplog.clear()
    assert cli_main(argv) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == fresh
    assert all(f"{p} not trusted" in caplog.text for p in entries)
    assert all(sc.unseal(json.loads(p.read_text()), p.stem) for p in entries)  # rewritten, sealed


def test_score_cache_recomputes_lm_eval_acc_norm(world, tmp_path):
    """Under acc_norm, lm-eval's per-item results are what dnd.scoring.cache.recompute_correct gives
    from their log-likelihoods and choice lengths: every adapter's entry is stored (one that did
    not verify would not be) and read back as trusted."""
    params = {**world["params"], "evaluation": {**world["params"]["evaluation"], "metric": "acc_norm"}}
    cache = tmp_path / "cache"
    argv = _evaluate_argv(world, tmp_path / "a.jsonl", params) + ["--cache-dir", str(cache)]
    assert cli_main(argv) == 0
    assert len(list(cache.glob("*.json"))) == 8
    entries = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert {e["metric"] for e in entries} == {"acc_norm"}
    scored = [sc.Scored(ids=e["ids"], correct=e["correct"], acc=e["acc"], seconds=0, loglikelihoods=e["loglikelihoods"],
                        gold=e["gold"], choice_chars=e["choice_chars"]) for e in entries]
    # acc and acc_norm pick differently on some item here, so the check does depend on the metric
    assert any(sc.recompute_correct(s, "acc") != s.correct for s in scored)
    argv[argv.index("--out") + 1] = str(tmp_path / "b.jsonl")
    assert cli_main(argv) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


@pytest.mark.parametrize("backend", ev.BACKENDS)
def test_inplace_swap_equals_fresh_lm_eval(world, backend):
    """Swapping weights into one wrapped model, scored by either backend (the packed dnd-prefix
    or lm-eval's HFLM) == lm-eval's plain `hf` loading base + peft= from scratch."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    task = f"dnd_{TARGET}"
    scorer = ev.InPlaceScorer(world["model"], world["zoo"] / "beta" / "final", world["tasks"], task,
                              limit=LIMIT, batch_size=4, backend=backend)
    adapter = world["gen"] / "dnd_0"
    scorer.score(ev.load_state_dict(world["zoo"] / "gamma" / "final"))  # leave other weights in place first
    swapped = scorer.score(ev.load_state_dict(adapter))
    again = scorer.score(ev.load_state_dict(adapter))
    base = scorer.score(None)
    assert swapped.loglikelihoods == again.loglikelihoods and swapped.correct == again.correct

    def fresh(model_args, model="hf"):
        res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task],
                                      task_manager=TaskManager(include_path=str(world["tasks"]),
                                                               include_defaults=False),
                                      device="cpu", batch_size=4, limit=LIMIT, log_samples=True,
                                      bootstrap_iters=0)
        return sc.samples_to_scored(res, task, "acc")

    ref = fresh({"pretrained": str(world["model"]), "peft": str(adapter), "dtype": "float32"})
    assert swapped.ids == ref.ids and swapped.correct == ref.correct and swapped.acc == ref.acc
    np.testing.assert_allclose(np.concatenate(swapped.loglikelihoods), np.concatenate(ref.loglikelihoods),
                               rtol=0, atol=1e-5)
    ref_base = fresh({"pretrained": str(world["model"]), "dtype": "float32"})
    assert base.correct == ref_base.correct
    np.testing.assert_allclose(np.concatenate(base.loglikelihoods), np.concatenate(ref_base.loglikelihoods),
                               rtol=0, atol=1e-5)
    assert not np.allclose(np.concatenate(base.loglikelihoods), np.concatenate(swapped.loglikelihoods))
    if backend == "dnd-prefix":  # the registered backend, used like hf from lm-eval's own entry point
        packed = fresh({"pretrained": str(world["model"]), "peft": str(adapter), "dtype": "float32"}, backend)
        assert packed.correct == ref.correct
        np.testing.assert_allclose(np.concatenate(packed.loglikelihoods), np.concatenate(ref.loglikelihoods),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_merged_adapters_do_not_drift(world, dtype):
    """Adapters are merged into the weights from a pristine copy, never unmerged by subtraction:
    scoring A, B, A gives A's scores twice bit for bit, the base model after adapters is the
    base model before (its weights restored exactly), and a merged weight is
    (W0.float() + scaling * B.float() @ A.float()) rounded once to the model's dtype."""
    task = f"dnd_{TARGET}"
    scorer = ev.InPlaceScorer(world["model"], world["zoo"] / "beta" / "final", world["tasks"], task,
                              limit=LIMIT, batch_size=4, dtype=dtype)
    before = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    a, b = (ev.load_state_dict(world["zoo"] / d / "final") for d in ("beta", "gamma"))
    base = scorer.score(None)
    first = scorer.score(a)
    other = scorer.score(b)
    again = scorer.score(a)
    assert first.loglikelihoods == again.loglikelihoods and first.correct == again.correct
    assert other.loglikelihoods != first.loglikelihoods != base.loglikelihoods
    for slot in scorer.slots:  # every weight, after B's merge reused the same work buffers
        w = (slot.pristine.float() + slot.scaling * (a[slot.key_b].float() @ a[slot.key_a].float())
             ).to(slot.pristine.dtype)
        assert torch.equal(slot.module.weight, w) and not torch.equal(w, slot.pristine), slot.name
    assert scorer.score(None).loglikelihoods == base.loglikelihoods
    after = scorer.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in scorer.lora_keys)
    assert len(scorer.lora_keys) == 2 * len(scorer.slots) == len(a)


def test_adapter_keys_and_shapes_are_checked(world):
    """An adapter must have every LoRA key of the model's LoRA config with its shape, and nothing
    else; a refused adapter leaves the weights as they were."""
    scorer = ev.InPlaceScorer(world["model"], world["zoo"] / "beta" / "final", world["tasks"], None,
                              limit=LIMIT, batch_size=4)
    sd = ev.load_state_dict(world["zoo"] / "beta" / "final")
    before = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    key = sorted(sd)[0]
    with pytest.raises(ValueError, match="1 missing"):
        scorer.load_adapter({k: v for k, v in sd.items() if k != key}, "x")
    with pytest.raises(ValueError, match="1 unexpected"):
        scorer.load_adapter({**sd, "base_model.model.lm_head.lora_A.weight": torch.zeros(4, 64)}, "x")
    with pytest.raises(ValueError, match="shape"):
        scorer.load_adapter({**sd, key: sd[key][:2]}, "x")
    assert all(torch.equal(v, before[k]) for k, v in scorer.model.state_dict().items())
    assert scorer.merged is None


def test_unmergeable_lora_config_is_refused(world, tmp_path):
    cfg_dir = tmp_path / "dora"
    shutil.copytree(world["zoo"] / "beta" / "final", cfg_dir)
    cfg = json.loads((cfg_dir / "adapter_config.json").read_text())
    (cfg_dir / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        ev.InPlaceScorer(world["model"], cfg_dir, world["tasks"], None, limit=LIMIT, batch_size=4)


def _nan_adapter(src: Path, out: Path) -> None:
    """A copy of adapter `src` whose lora_B weights are NaN."""
    from safetensors.torch import save_file

    shutil.copytree(src, out)
    sd = ev.load_state_dict(out)
    save_file({k: v.fill_(math.nan) if "lora_B" in k else v for k, v in sd.items()},
              str(out / "adapter_model.safetensors"))


def test_non_finite_adapter_is_an_error_never_a_score(world, tmp_path, caplog):
    """NaN weights give NaN log-likelihoods (lm-eval would pick choice 0 and report ~25%): the
    job fails naming the adapter, writes no output and caches nothing for it."""
    gen = tmp_path / "generated"
    shutil.copytree(world["gen"], gen, ignore=shutil.ignore_patterns("dnd_0"))
    _nan_adapter(world["gen"] / "dnd_0", gen / "dnd_0")
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache"
    argv = _evaluate_argv(world, out, gen=gen) + ["--cache-dir", str(cache)]
    assert cli_main(argv) == 1 and not out.exists()
    assert f"dnd/0 ({gen / 'dnd_0'}): non-finite (NaN/inf) log-likelihoods" in caplog.text
    entries = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert len(entries) == 5  # base, 3 source LoRAs, soup: scored before dnd_0; nothing for dnd_0
    assert all(np.isfinite(np.concatenate(e["loglikelihoods"])).all() for e in entries)


def test_score_cache_refuses_non_finite(world, tmp_path):
    task_yaml = world["tasks"] / f"dnd_{TARGET}.yaml"
    cache = ev.open_score_cache(tmp_path / "c", world["model"], task_yaml, ev.task_data_file(task_yaml),
                                ev.read_adapter_config(world["zoo"] / "beta" / "final"), section("evaluation", {}))
    bad = sc.Scored(ids=["a"], correct=[1], acc=1.0, seconds=0.0, loglikelihoods=[[-1.0, math.nan]])
    with pytest.raises(sc.NonFiniteScoreError, match="non-finite"):
        cache.put("k", bad)
    assert not (tmp_path / "c").exists()
    # an entry written by an older version with a NaN inside is a miss, not a score
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "k.json").write_text(json.dumps({"key": "k", "ids": ["a"], "correct": [1], "acc": 1.0,
                                                       "loglikelihoods": [[-1.0, math.nan]]}))
    assert cache.get("k") is None
    cache.put("k", sc.Scored(ids=["a"], correct=[1], acc=1.0, seconds=0.0, loglikelihoods=[[-1.0, -2.0]],
                             gold=[0], choice_chars=[[3, 3]]))
    assert cache.get("k").loglikelihoods == [[-1.0, -2.0]]


def test_relative_task_path_resolves_against_the_run_directory(world, tmp_path, monkeypatch):
    """Task YAMLs name their test file relative to the run's working directory (no machine
    path in the artifact); evaluation resolves it there and hands lm-eval an absolute copy, and
    the score cache key does not depend on how the path is written."""
    import yaml

    task = f"dnd_{TARGET}"
    cfg = yaml.safe_load((world["tasks"] / f"{task}.yaml").read_text())
    cfg["dataset_kwargs"]["data_files"]["test"] = f"data/{TARGET}/test.lmeval.jsonl"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{task}.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(world["root"])

    test_file = ev.task_data_file(tasks / f"{task}.yaml")
    assert test_file == world["root"] / "data" / TARGET / "test.lmeval.jsonl"
    lora = world["zoo"] / "beta" / "final"
    rel = ev.InPlaceScorer(world["model"], lora, tasks, task, limit=LIMIT, batch_size=4).score(None)
    ref = ev.InPlaceScorer(world["model"], lora, world["tasks"], task, limit=LIMIT, batch_size=4).score(None)
    assert rel.ids == [r["id"] for r in world["records"][TARGET][:LIMIT]]
    assert (rel.ids, rel.correct, rel.loglikelihoods) == (ref.ids, ref.correct, ref.loglikelihoods)

    def key(tasks_dir: Path) -> str:
        yaml_path = tasks_dir / f"{task}.yaml"
        return ev.open_score_cache(tmp_path / "c", world["model"], yaml_path, ev.task_data_file(yaml_path),
                                   ev.read_adapter_config(lora), section("evaluation", {})).key(None)

    assert key(tasks) == key(world["tasks"])


def test_new_domain_target_has_no_oracle(world, tmp_path):
    """A target outside the LoRA datasets (the paper's cross-domain test) gets every method but
    the oracle; its cond prompts may live elsewhere (--cond)."""
    cond = tmp_path / "science_cond.pt"
    shutil.copy(world["enc"] / TARGET / "cond.pt", cond)
    params = {**world["params"], "datasets": SOURCES, "sources": SOURCES}
    out = tmp_path / "alpha.jsonl"
    assert cli_main(_evaluate_argv(world, out, params) + ["--cond", str(cond)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["adapter"] for r in rows if r["method"] == "source_lora"} == set(SOURCES)
    assert {"base", "soup", "nearest", "dnd"} <= {r["method"] for r in rows}


def test_declared_zoo_and_encodings_from_several_folders(world, tmp_path):
    """--zoo / --encoded take the declared paths, from any folders (the ablations' extra source
    tasks live apart from the default run's): each dataset's is the one ending in its name
    (dnd.paths.declared); a missing one is named with what was passed, one passed twice is an
    error, not a guess."""
    zoo2, enc2 = tmp_path / "zoo2", tmp_path / "enc2"
    shutil.copytree(world["zoo"] / "beta", zoo2 / "beta")
    shutil.copytree(world["enc"] / "beta", enc2 / "beta")
    zoo = [p for p in _zoo(world["zoo"]) if p.parent.name != "beta"] + _zoo(zoo2)
    enc = [p for p in _encoded(world["enc"]) if p.parent.name != "beta"] + _encoded(enc2)
    with pytest.raises(FileNotFoundError, match=r"^final LoRA of beta: no path ending in beta/final among the --zoo"):
        _plan(world, zoo=zoo[:-1])
    with pytest.raises(FileNotFoundError, match=r"^final LoRA of delta: no path ending in delta/final"):
        _plan(world, datasets=DATASETS + ["delta"], zoo=zoo)
    plan = _plan(world, zoo=zoo, enc=enc)
    assert plan["finals"]["beta"] == zoo2 / "beta" / "final"
    assert plan["encoded"]["beta"] == enc2 / "beta" / "train.pt"
    assert plan["finals"]["alpha"] == world["zoo"] / "alpha" / "final"
    assert plan["cond"] == world["enc"] / TARGET / "cond.pt"
    with pytest.raises(ValueError, match="final LoRA of beta: 2 --zoo paths end in beta/final"):
        _plan(world, zoo=_zoo(world["zoo"]) + _zoo(zoo2), enc=enc)
    # the CLI: the paths after one flag, or the flag repeated
    out = tmp_path / "x.jsonl"
    argv = _evaluate_argv(world, out)
    i = argv.index("--zoo")
    argv[i + 1:argv.index("--generated")] = map(str, zoo[:-1])
    i = argv.index("--encoded")
    argv[i + 1:argv.index("--out")] = map(str, enc[:-1])
    argv += ["--zoo", str(zoo[-1]), "--encoded", str(enc[-1])]
    assert cli_main(argv) == 0
    assert {r["adapter"] for r in map(json.loads, out.read_text().splitlines()) if r["method"] == "source_lora"} \
        == set(DATASETS)


def test_missing_inputs_are_named(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="final LoRA of alpha not found"):
        _plan(world, zoo=[tmp_path / "nozoo" / d / "final" for d in DATASETS])
    gen = tmp_path / "gen"
    shutil.copytree(world["gen"] / "control_other_0", gen / "control_other_0")
    with pytest.raises(FileNotFoundError, match="no dnd_<i> adapter directory among the --generated paths"):
        ev.discover_generated(_adapters(gen))
    # dnd is required; variants and controls are scored when present
    shutil.copytree(world["gen"] / "dnd_0", gen / "dnd_0")
    shutil.copytree(world["gen"] / "dnd_0", gen / "dnd_basis_0")
    assert {k: [i for i, _ in v] for k, v in ev.discover_generated(_adapters(gen)).items()} == {
        "dnd": ["0"], "dnd_basis": ["0"], "control_other": ["0"]}
    with pytest.raises(ValueError, match="own training datasets"):
        _plan(world, sources=["alpha", "beta"])
    # the CLI turns it into one error line and exit status 1, and writes nothing
    out = tmp_path / "x.jsonl"
    argv = _evaluate_argv(world, out)
    i = argv.index("--encoded") + 1
    assert argv[i] == str(world["enc"] / TARGET / "cond.pt")
    argv[i] = str(tmp_path / "noenc" / TARGET / "cond.pt")  # declared, but not there
    assert cli_main(argv) == 1 and not out.exists()


def test_lora_shape_mismatch_rejected(world):
    cfg = ev.read_adapter_config(world["zoo"] / "beta" / "final")
    ev.check_same_lora_shape(cfg, dict(cfg, target_modules=list(reversed(cfg["target_modules"]))), Path("x"))
    with pytest.raises(ValueError, match="lora_alpha"):
        ev.check_same_lora_shape(cfg, dict(cfg, lora_alpha=32), Path("x"))


def test_soup_is_elementwise_mean():
    a = {"x.lora_A.weight": torch.ones(2, 3), "x.lora_B.weight": torch.zeros(3, 2)}
    b = {"x.lora_A.weight": 3 * torch.ones(2, 3), "x.lora_B.weight": 2 * torch.ones(3, 2)}
    s = ev.average_state_dicts([a, b])
    assert torch.equal(s["x.lora_A.weight"], 2 * torch.ones(2, 3))
    assert torch.equal(s["x.lora_B.weight"], torch.ones(3, 2))
    with pytest.raises(ValueError):
        ev.average_state_dicts([a, {"y": torch.ones(1)}])


def test_nearest_uses_masked_mean(world):
    cond = ev.mean_prompt_embedding(world["enc"] / TARGET / "cond.pt")
    srcs = {d: ev.mean_prompt_embedding(world["enc"] / d / "train.pt") for d in SOURCES}
    best, sims = ev.nearest_source(cond, srcs)
    assert best == "gamma" and sims["gamma"] > 0.9 > sims["beta"]
    assert cond.shape == (ENC_DIM,) and abs(float(cond[1]) - 0.9) < 0.05  # padding (50 * e0) ignored


def test_evaluation_settings():
    from dnd.config import section

    s = section("evaluation", {"limit": 5})
    assert s["limit"] == 5 and s["metric"] == "acc" and s["bootstrap"] >= 0
    with pytest.raises(ValueError, match=r"evaluation\.limt: additional property not allowed"):
        section("evaluation", {"limt": 5})


# ----------------------------------------------------------------------------- summarize
def test_summarize_outputs(world, eval_rows, tmp_path):
    path, rows = eval_rows
    scores, metrics = tmp_path / "scores.csv", tmp_path / "metrics.json"
    argv = ["summarize", "--params", json.dumps(world["params"]), "--eval", str(path),
            "--scores", str(scores), "--metrics", str(metrics)]
    assert cli_main(argv) == 0
    first = (scores.read_bytes(), metrics.read_bytes())
    assert cli_main(argv) == 0
    assert (scores.read_bytes(), metrics.read_bytes()) == first  # deterministic, no timestamps

    df = pd.read_csv(scores, keep_default_na=False)
    assert list(df.columns) == ["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob"]
    gold = {(r["method"], r["adapter"]): np.mean(r["gold_logprob"]) for r in rows}
    assert df[df["method"] == "base"]["gold_logprob"].item() == pytest.approx(gold[("base", "base")])
    # the world generates dnd and two controls; variants and the shuffled control are optional kinds, the
    # labeled baselines the function_space experiment's
    assert set(df["method"]) == (set(summary.METHODS) - {"dnd_hyperconv", "dnd_basis", "control_shuffled"}
                                 - set(summary.LABELED_METHODS))
    assert len(df) == len(rows) + 3  # + an adapter "mean" row for dnd and both controls
    assert ((df["ci_low"] <= df["acc"] + 1e-12) & (df["acc"] <= df["ci_high"] + 1e-12)).all()
    dmean = df[(df["method"] == "dnd") & (df["adapter"] == "mean")]["acc"].item()
    assert dmean == pytest.approx(df[(df["method"] == "dnd") & (df["adapter"] != "mean")]["acc"].mean())

    m = json.loads(metrics.read_text())
    acc = {(r["method"], r["adapter"]): r["acc"] for r in rows}
    assert m[f"{TARGET}/base"] == pytest.approx(acc[("base", "base")])
    assert m[f"{TARGET}/oracle"] == pytest.approx(acc[("source_lora", TARGET)])
    train_avg = (acc[("source_lora", "beta")] + acc[("source_lora", "gamma")]) / 2
    assert m[f"{TARGET}/train_avg"] == pytest.approx(train_avg)
    assert m[f"{TARGET}/dnd_mean"] == pytest.approx((acc[("dnd", "0")] + acc[("dnd", "1")]) / 2)
    assert m[f"{TARGET}/dnd_minus_train_avg"] == pytest.approx(m[f"{TARGET}/dnd_mean"] - train_avg)
    assert m[f"{TARGET}/nearest_adapter"] == "gamma" and m["mean/n_targets"] == 1
    lo, hi = m[f"{TARGET}/dnd_minus_train_avg_ci_low"], m[f"{TARGET}/dnd_minus_train_avg_ci_high"]
    assert lo <= m[f"{TARGET}/dnd_minus_train_avg"] <= hi
    assert all(isinstance(v, (int, float, str)) or v is None for v in m.values())


# ----------------------------------------------------------------------------- eval_speed
def test_backend_comparison_agrees_and_is_timed(world, tmp_path):
    """`dnd eval-speed` on the tiny model: base and two LoRAs scored by both backends on the
    same items; in float32 they choose the same answer on every item and their log-likelihoods
    agree to float rounding. The summary writes both CSVs in their columns."""
    from dnd import eval_speed as es

    out = tmp_path / "speed" / f"{TARGET}.json"
    params = {"evaluation": {"compare_items": LIMIT, "batch_size": 4, "dtype": "float32"}, "sources": SOURCES}
    argv = ["eval-speed", "--params", json.dumps(params), "--target", TARGET, "--model", str(world["model"]),
            "--tasks", *map(str, _tasks(world)), "--zoo", *map(str, _zoo(world["zoo"])), "--out", str(out),
            "--threads", "1"]
    assert cli_main(argv) == 0
    res = json.loads(out.read_text())
    assert [a["adapter"] for a in res["agreement"]] == ["base", TARGET, SOURCES[0]]
    assert {a["comparison"] for a in res["agreement"]} == {"dnd-prefix vs hf, float32"}  # float32: no reference run
    for a in res["agreement"]:
        assert a["items"] == LIMIT and a["same_choice"] == 1.0 and a["same_choice_norm"] == 1.0
        assert a["max_abs_ll_diff"] < 1e-4
    speed_csv, agree_csv = tmp_path / "eval_speed.csv", tmp_path / "eval_agreement.csv"
    assert cli_main(["eval-speed-summary", "--in", str(out), "--speed", str(speed_csv),
                     "--agreement", str(agree_csv)]) == 0
    speed = pd.read_csv(speed_csv)
    assert list(speed.columns) == ["backend", "target", "adapter", "items", "seconds"]
    assert sorted(speed["backend"].unique()) == ["dnd-prefix", "hf"] and len(speed) == 6
    assert (speed["seconds"] > 0).all() and (speed["items"] == LIMIT).all()
    assert list(pd.read_csv(agree_csv).columns) == es.AGREEMENT_COLUMNS
    fig = es.speed_figures(speed)
    assert fig["ratio"] == pytest.approx(fig["dnd-prefix"] / fig["hf"])


def test_backend_comparison_in_bfloat16_adds_the_float32_reference(world, tmp_path):
    """In bfloat16 both backends also score the first compare_float32_items items in float32
    (where they agree to rounding), and each bfloat16 result is compared with hf's float32 one."""
    from dnd import eval_speed as es

    params = {"evaluation": {"compare_items": LIMIT, "compare_float32_items": 3, "batch_size": 4,
                             "dtype": "bfloat16"}, "sources": SOURCES}
    res = es.compare_target(TARGET, params, world["model"], _tasks(world), _zoo(world["zoo"]))
    kinds = [a["comparison"] for a in res["agreement"]]
    assert kinds[:4] == ["dnd-prefix vs hf, bfloat16", "dnd-prefix vs hf, float32", "hf bfloat16 vs hf float32",
                         "dnd-prefix bfloat16 vs hf float32"] and len(kinds) == 12
    for a in res["agreement"]:
        assert a["items"] == (LIMIT if a["comparison"] == kinds[0] else 3)
        if a["comparison"] == "dnd-prefix vs hf, float32":
            assert a["same_choice"] == 1.0 and a["max_abs_ll_diff"] < 1e-4
    assert len(res["timings"]) == 6  # only the evaluation dtype is timed


def test_backend_comparison_needs_items(world, tmp_path):
    params = {"evaluation": {"compare_items": 0}, "sources": SOURCES}
    argv = ["eval-speed", "--params", json.dumps(params), "--target", TARGET, "--model", str(world["model"]),
            "--tasks", *map(str, _tasks(world)), "--zoo", *map(str, _zoo(world["zoo"])),
            "--out", str(tmp_path / "x.json")]
    assert cli_main(argv) != 0
    assert not (tmp_path / "x.json").exists()


def test_verify_cache_recomputes_a_sample(world, tmp_path, caplog):
    """`dnd verify-cache` scores sampled entries again from the recipe and source stored with
    them: the same scores pass; a cached score the current code does not give (what a scoring
    change without a SCORER_VERSION bump would leave behind), sealed and self-consistent, fails."""
    cache, out = tmp_path / "cache", tmp_path / "eval.jsonl"
    assert cli_main(_evaluate_argv(world, out) + ["--cache-dir", str(cache)]) == 0
    assert cli_main(["verify-cache", "--cache-dir", str(cache), "--sample", "3"]) == 0
    for p in sorted(cache.glob("*.json")):
        e = json.loads(p.read_text())
        e["loglikelihoods"][0] = [x - 0.5 for x in e["loglikelihoods"][0]]  # argmax (acc) unchanged
        p.write_text(json.dumps(sc.seal({k: v for k, v in e.items() if k != sc.HASH_FIELD})))
    caplog.clear()
    assert cli_main(["verify-cache", "--cache-dir", str(cache), "--sample", "2"]) == 1
    assert "differ from a fresh score" in caplog.text


def test_score_cache_key_is_the_scorer_version_not_the_code(world, tmp_path, monkeypatch):
    """Keys hash what determines a score and dnd.scoring.SCORER_VERSION, not the scoring
    modules' files: a bump of the version changes every key."""
    import dnd.scoring

    task_yaml = world["tasks"] / f"dnd_{TARGET}.yaml"

    def key() -> str:
        return ev.open_score_cache(tmp_path / "c", world["model"], task_yaml, ev.task_data_file(task_yaml),
                                   ev.read_adapter_config(world["zoo"] / "beta" / "final"),
                                   section("evaluation", {})).key(None)

    before = key()
    assert key() == before
    monkeypatch.setattr(dnd.scoring, "SCORER_VERSION", dnd.scoring.SCORER_VERSION + 1)
    assert key() != before


def test_padded_vocabulary_is_accepted_and_scored_as_hf_scores_it(world, tmp_path):
    """A base model whose embedding has more rows than its tokenizer has tokens (Qwen2.5: 151,936
    rows for 151,665 tokens) is scored, and dnd-prefix gives what lm-eval's hf gives: hf
    normalizes over every output row, padding included, and so must the packed backend (it once
    cut the logits at the tokenizer's vocab_size). A tokenizer with more tokens than the embedding
    has rows is refused in one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(world["model"]))
    model = AutoModelForCausalLM.from_pretrained(str(world["model"]))
    n = model.config.vocab_size
    torch.manual_seed(1)
    model.resize_token_embeddings(n + 16, mean_resizing=False)
    padded = tmp_path / "padded"
    model.save_pretrained(str(padded))
    tok.save_pretrained(str(padded))
    task, adapter = f"dnd_{TARGET}", ev.load_state_dict(world["gen"] / "dnd_0")
    scores = {}
    for backend in ev.BACKENDS:
        scorer = ev.InPlaceScorer(padded, world["zoo"] / "beta" / "final", world["tasks"], task,
                                  limit=LIMIT, batch_size=4, backend=backend)
        scores[backend] = [scorer.score(None), scorer.score(adapter)]
    for ours, ref in zip(*scores.values()):
        assert ours.correct == ref.correct
        for a, b in zip(ours.loglikelihoods, ref.loglikelihoods):
            assert np.allclose(a, b, atol=1e-4)

    model.resize_token_embeddings(n - 8)
    short = tmp_path / "short"
    model.save_pretrained(str(short))
    tok.save_pretrained(str(short))
    with pytest.raises(ValueError, match=rf"vocab_size {n - 8} < tokenizer length {len(tok)}"):
        ev.InPlaceScorer(short, world["zoo"] / "beta" / "final", world["tasks"], task, limit=LIMIT, batch_size=4)
