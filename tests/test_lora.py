import csv

import pytest
import torch
from safetensors.torch import load_file

from dnd import lora as lora_mod
from dnd.config import validate_config
from dnd.io import write_jsonl

from conftest import SMOKE_DATA

LCFG = validate_config({"data": {"datasets": ["capitals", "sounds"], "custom": {
    "capitals": {"path": str(SMOKE_DATA / "capitals.jsonl")}, "sounds": {"path": str(SMOKE_DATA / "sounds.jsonl")}}},
    "base_model": {"source": "tiny"},
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

    calls = {"n": 0}
    real = lora_mod.answer_loss

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # inside phase 2, after a resume point at step 6
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(lora_mod, "answer_loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    assert (out / ".work" / "resume.pt").exists() and not (out / "final").exists()
    monkeypatch.setattr(lora_mod, "answer_loss", real)
    lora_mod.train_lora(tiny_model_dir, train_file, out, LCFG, "cloze", seed=0, resume_every=3)
    got = sorted((out / "checkpoints").iterdir())
    exp = sorted((ref / "checkpoints").iterdir())
    assert [p.name for p in got] == [p.name for p in exp]
    for g, e in zip(got, exp):
        a, b = load_file(g), load_file(e)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["loss"] for r in _read_log(out / "train_log.csv")] == [r["loss"] for r in _read_log(ref / "train_log.csv")]


def test_batches_are_deterministic_and_cover_epochs():
    a = [lora_mod.batch_indices(s, 10, 4, seed=0) for s in range(5)]
    assert a == [lora_mod.batch_indices(s, 10, 4, seed=0) for s in range(5)]
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10))  # first epoch is a permutation


def test_lr_schedule_warmup_and_floor():
    lrs = [lora_mod.lr_at(s, 100, 10, 1e-3, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] >= 1e-4 - 1e-12 and lrs[-1] < lrs[50]
