import csv
import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import SMOKE_DATA
from dnd import zoo as lora_mod
from dnd.config import validate_config
from dnd.io import write_jsonl
from dnd.schedule import EpochOrder, warmup_cosine

LCFG = validate_config({"data": {"datasets": ["capitals", "sounds"], "custom": {
    "capitals": {"path": str(SMOKE_DATA / "capitals.jsonl")}, "sounds": {"path": str(SMOKE_DATA / "sounds.jsonl")}}},
    "base_model": {"source": "tiny"}, "generator": {"chunk_width": 32},
    "lora": {"r": 4, "alpha": 8, "lr": 5e-3, "batch_size": 4, "max_length": 48, "phase1_steps": 6,
             "checkpoint_steps": 4, "bf16_autocast": False}})["lora"]


@pytest.fixture()
def train_file(tmp_path, smoke_items):
    p = tmp_path / "train.jsonl"
    write_jsonl(p, smoke_items["capitals"][:20])
    return p


def _read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _interrupt_at(monkeypatch, call: int) -> None:
    """Make the `call`-th loss computation raise KeyboardInterrupt (a simulated kill)."""
    calls = {"n": 0}
    real = lora_mod.answer_loss

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(lora_mod, "answer_loss", crashing)


def test_answer_tokens_are_the_continuation(tiny_model_dir, smoke_items):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = smoke_items["capitals"][0]
    (ids, start), = lora_mod.encode_examples([item], tok, "cloze", 64)
    assert tok.decode(ids[start:]).strip() == item["choices"][item["answer"]]
    ids_t, mask, target = lora_mod.collate([(ids, start)], tok.pad_token_id)
    assert (target != -100).sum() == len(ids) - start


def test_loss_decreases_and_checkpoints_are_ordered(tmp_path, tiny_model_dir, train_file):
    cfg = dict(LCFG, lr=3e-2, phase1_steps=20, checkpoint_steps=5)
    out = tmp_path / "zoo" / "capitals"
    summary = lora_mod.train_lora(tiny_model_dir, train_file, out, cfg, "cloze", seed=0)
    rows = _read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 26))
    assert [int(r["phase"]) for r in rows] == [1] * 20 + [2] * 5
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5  # >20% lower
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == [f"step-{s:05d}.safetensors" for s in range(21, 26)]
    assert summary["checkpoints"] == 5 and not (out / ".work").exists()
    # consecutive checkpoints differ (one optimizer step apart)
    a, b = load_file(ckpts[-2]), load_file(ckpts[-1])
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # the final adapter is the last checkpoint and a standard PEFT directory
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    final = load_file(out / "final" / "adapter_model.safetensors")
    assert set(final) == set(b) and all(torch.equal(final[k], b[k]) for k in b)
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "final")
    x = torch.tensor([[1, 2, 3, 4]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.allclose(pm(x).logits, base(x).logits)


def test_resume_after_interruption_gives_identical_trajectory(tmp_path, tiny_model_dir, train_file, monkeypatch):
    ref = tmp_path / "ref"
    lora_mod.train_lora(tiny_model_dir, train_file, ref, LCFG, "cloze", seed=0, resume_every=3)

    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 8)  # inside phase 2, after a resume point at step 6
    with pytest.raises(KeyboardInterrupt):
        lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    assert (out / ".work" / "resume.pt").exists() and not (out / "final").exists()
    monkeypatch.undo()
    lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    got = sorted((out / "checkpoints").iterdir())
    exp = sorted((ref / "checkpoints").iterdir())
    assert [p.name for p in got] == [p.name for p in exp]
    for g, e in zip(got, exp):
        a, b = load_file(g), load_file(e)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    losses = [r["loss"] for r in _read_log(out / "train_log.csv")]
    assert losses == [r["loss"] for r in _read_log(ref / "train_log.csv")]


def test_batches_are_deterministic_and_cover_epochs():
    a = [EpochOrder(10, seed=0, rng="python").batch(s, 4) for s in range(5)]
    order = EpochOrder(10, seed=0, rng="python")  # stateless given the step: any order, same batches
    assert [order.batch(s, 4) for s in (3, 0, 4, 1, 2)] == [a[s] for s in (3, 0, 4, 1, 2)]
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs are permutations
    assert flat[:10] != flat[10:20]  # each epoch has its own order
    # train-lora's order: random.Random(f"{seed}-epoch{e}").shuffle (kept so existing zoos reproduce)
    perm = list(range(10))
    random.Random("0-epoch1").shuffle(perm)
    assert flat[10:20] == perm


def test_lr_schedule_warmup_and_floor():
    lrs = [warmup_cosine(s, 10, 100, peak=1e-3, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] >= 1e-4 - 1e-12 and lrs[-1] < lrs[50]
    assert warmup_cosine(100, 10, 100, peak=1e-3, min_ratio=0.1) == pytest.approx(1e-4)  # the floor


def test_resume_state_is_safe_and_bound_to_its_config(tmp_path, tiny_model_dir, train_file, monkeypatch):
    from dnd.io import ArtifactError, load_torch

    out = tmp_path / "capitals"
    _interrupt_at(monkeypatch, 8)  # resume point at step 6
    with pytest.raises(KeyboardInterrupt):
        lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    monkeypatch.undo()
    state_file = out / ".work" / "resume.pt"
    state = load_torch(state_file, "LoRA resume state")  # weights_only=True
    assert state["step"] == 6 and isinstance(state["fingerprint"], str) and state["rng"]["cpu"].dtype == torch.uint8

    with pytest.raises(lora_mod.ResumeMismatchError, match=r"delete .*\.work/"):
        lora_mod.train_lora(tiny_model_dir, train_file, out, dict(LCFG, lr=1e-3), "cloze", seed=0, resume_every=3)
    good = state_file.read_bytes()
    state_file.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ArtifactError, match=str(state_file)):
        lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    assert not (out / "final").exists()

    state_file.write_bytes(good)
    timings = tmp_path / "timings.json"
    lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3, timings=timings)
    t = json.loads(timings.read_text())
    assert t["steps"] == 10 and t["resumed_from"] == 6 and t["wall_s"] >= 0 and t["loop_s"] > 0


def test_non_finite_loss_stops_before_anything_is_written(tmp_path, tiny_model_dir, train_file):
    out = tmp_path / "capitals"
    with pytest.raises(lora_mod.NonFiniteError) as err:
        lora_mod.train_lora(tiny_model_dir, train_file, out, dict(LCFG, lr=1e30), "cloze", seed=0, resume_every=1)
    step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    assert step >= 2 and f"resume point, step {step - 1}, is kept" in str(err.value)
    from dnd.io import load_torch

    assert load_torch(out / ".work" / "resume.pt", "LoRA resume state")["step"] == step - 1
    assert all(int(p.stem.split("-")[1]) < step for p in (out / ".work" / "checkpoints").iterdir())
    assert sorted(p.name for p in out.iterdir()) == [".work"]  # nothing published


def test_same_seed_gives_byte_identical_outputs(tmp_path, tiny_model_dir, train_file):
    from dnd.cli import main

    cfg = dict(LCFG, phase1_steps=2, checkpoint_steps=2)
    a, b = tmp_path / "a" / "capitals", tmp_path / "b" / "capitals"
    lora_mod.train_lora(tiny_model_dir, train_file, a, cfg, "cloze", seed=0)
    params = json.dumps({"lora": cfg, "prompt": {"format": "cloze"}, "seed": 0})
    assert main(["train-lora", "--params", params, "--model", str(tiny_model_dir), "--train", str(train_file),
                 "--out-dir", str(b), "--timings", str(tmp_path / "t.json")]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {"train_log.csv", "summary.json", "checkpoints/step-00004.safetensors"} <= {str(f) for f in files}
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert "elapsed_s" not in (a / "train_log.csv").read_text() and "wall_s" not in (a / "summary.json").read_text()
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["steps"] == 4 and t["resumed_from"] == 0 and t["wall_s"] >= t["loop_s"] > 0


def test_adapter_config_is_canonical(tmp_path):
    """peft writes target_modules from a set (order follows the per-process string hash): the
    published config is sorted, so one adapter has one byte representation."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"r": 4, "target_modules": ["v_proj", "q_proj", "down_proj"]}))
    b.write_text(json.dumps({"target_modules": ["down_proj", "v_proj", "q_proj"], "r": 4}))
    for p in (a, b):
        lora_mod.canonicalize_adapter_config(p)
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_text())["target_modules"] == ["down_proj", "q_proj", "v_proj"]


def test_pack_rows_first_fit_decreasing():
    rows = lora_mod.pack_rows([5, 9, 3, 4, 9, 1], capacity=9)
    assert rows == [[1], [4], [0, 3], [2, 5]]  # longest first, ties by index; every row within capacity
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert lora_mod.pack_rows([12, 3], capacity=9) == [[0], [1]]  # too long for any row: alone
    assert lora_mod.pack_rows([2, 3, 4], capacity=100) == [[2, 1, 0]]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])  # train_lora's (TRAIN_ATTENTION) and the default
@pytest.mark.parametrize("capacity", [None, 10**6])  # rows of the longest example / everything in one row
def test_packed_batch_equals_padded_batch(tiny_model_dir, smoke_items, capacity, attention):
    """The packed layout (block-diagonal causal mask, positions restarting at 0) computes the
    same loss and gradients as the padded batch (float32; equal up to rounding), with either
    attention implementation."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = smoke_items["capitals"][:4] + smoke_items["sounds"][:4]
    # full-length and left-cut (short) examples mixed: lengths differ, so the padded batch pads
    examples = [ex for i, it in enumerate(items) for ex in lora_mod.encode_examples([it], tok, "cloze", 48 if i % 2
                                                                                    else 8 + i)]
    assert len({len(ids) for ids, _ in examples}) > 3
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attention)
    pm = get_peft_model(model, lora_mod.make_lora_config(dict(LCFG, r=4), tiny_model_dir))
    for n, p in pm.named_parameters():  # peft starts B at 0; random B makes every LoRA gradient non-trivial
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    params = [p for p in pm.parameters() if p.requires_grad]

    def loss_and_grads(*batch):
        pm.zero_grad(set_to_none=True)
        loss = lora_mod.answer_loss(pm, *batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    ids, mask, target = lora_mod.collate(examples, tok.pad_token_id)
    ref_loss, ref_grads = loss_and_grads(ids, mask, target)
    p_ids, p_mask, position_ids, p_target = lora_mod.pack(examples, tok.pad_token_id, capacity)
    loss, grads = loss_and_grads(p_ids, p_mask, p_target, position_ids)

    lengths = [len(s) for s, _ in examples]
    assert p_mask.dtype == torch.bool and p_mask.shape == (len(p_ids), 1, p_ids.shape[1], p_ids.shape[1])
    assert p_ids.shape[1] <= (capacity or max(lengths)) and p_ids.numel() < ids.numel()  # less padding
    assert (p_target != -100).sum() == (target != -100).sum()
    assert sorted(p_target[p_target != -100].tolist()) == sorted(target[target != -100].tolist())
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in ref_grads)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6), (g - r).abs().max()


def test_train_log_tokens_are_the_real_tokens(tmp_path, tiny_model_dir, train_file):
    from transformers import AutoTokenizer

    cfg = dict(LCFG, phase1_steps=2, checkpoint_steps=1)
    out = tmp_path / "capitals"
    lora_mod.train_lora(tiny_model_dir, train_file, out, cfg, "cloze", seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    from dnd.io import read_jsonl

    examples = lora_mod.encode_examples(read_jsonl(train_file), tok, "cloze", cfg["max_length"])
    order = EpochOrder(len(examples), 0, rng="python")
    expected = [sum(len(examples[i][0]) for i in order.batch(s, cfg["batch_size"])) for s in range(3)]
    assert [int(r["tokens"]) for r in _read_log(out / "train_log.csv")] == expected
