"""Generator end to end on a tiny Llama: encoder, zoo tokens, training (overfit, determinism,
resume), generation through the CLI, PEFT loading, efficiency table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import dnd.generators as training
from conftest import TINY_LLAMA
from dnd.cli import main
from dnd.config import section
from dnd.generate import draw_prompts, random_text_prompts, read_prompts
from dnd.generators import weighted_mse
from dnd.method.encoder import ConditionEncoder, encoding_signature
from dnd.method.generator_checkpoint import load_generator
from dnd.method.generator_model import HyperConvDecoder
from dnd.method.tokenization import MODULE_ORDER, LoraLayout, detokenize
from dnd.schedule import EpochOrder, derive_seed, warmup_cosine

SOURCES = ("alpha", "beta")
TARGET = "gamma"
N_PROMPTS, MAX_LEN, W = 4, 16, 32
ENCODER = {"max_length": MAX_LEN, "batch_size": 8}
GENERATOR = {
    "chunk_width": W,
    "n_prompts": N_PROMPTS,
    "stages": [[4, 8, 32]],
    "batch_size": 2,
    "steps": 6,
    "warmup_steps": 2,
    "save_every": 2,
    "lr": 1e-3,
}


# tiny models only slow down when threads fight over a shared CPU (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_base(path: Path):
    """A random tiny Llama saved to `path` and loaded back (so PEFT records the path)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**TINY_LLAMA)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return LlamaForCausalLM.from_pretrained(path)


def items(name: str, n: int) -> list[dict]:
    return [
        {
            "id": f"{name}-{i}",
            "question": f"{name} question number {i}: which {['color', 'animal', 'city'][i % 3]} fits best?",
            "choices": [f"option {j} of {name}" for j in range(3)],
            "answer": i % 3,
            "passage": None,
            "style": "qa",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The results tree of `make_work`."""
    return make_work(tmp_path_factory.mktemp("dnd"))


def make_work(root: Path) -> Path:
    """A results tree under `root`: base model, LoRA zoo (4 checkpoints x 3 datasets: the two
    sources and the held-out target), prepared prompts, encoded prompts and zoo tokens (the last
    two made through the CLI)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    base = tiny_base(root / "base")
    peft_model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=list(MODULE_ORDER), lora_dropout=0.0, task_type="CAUSAL_LM")
    )
    template = get_peft_model_state_dict(peft_model)
    g = torch.Generator().manual_seed(1)
    for d, name in enumerate((*SOURCES, TARGET)):
        center = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in template.items()}
        for s in range(4):
            sd = {k: v + 0.002 * s * torch.randn(v.shape, generator=g) for k, v in center.items()}
            ckpt = root / f"results/zoo/{name}/checkpoints/step-{s + 1:05d}.safetensors"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_file(sd, ckpt)
        set_peft_model_state_dict(peft_model, sd)
        peft_model.save_pretrained(root / f"results/zoo/{name}/final")
        data = root / f"results/data/{name}"
        data.mkdir(parents=True)
        for split, n in (("train", 6 + 3 * d), ("cond", 5)):
            (data / f"{split}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items(f"{name}-{split}", n)))
        for split in ("train", "cond"):
            rc = main(
                ["encode", "--params", json.dumps(ENCODER), "--data", str(data / f"{split}.jsonl"),
                 "--out", str(root / f"results/encoded/{name}/{split}.pt")]
            )  # fmt: skip
            assert rc == 0
        rc = main(
            ["tokenize-zoo", "--params", json.dumps({"chunk_width": W}),
             "--checkpoints", str(root / f"results/zoo/{name}/checkpoints"),
             "--out", str(root / f"results/zoo/{name}/tokens.pt")]
        )  # fmt: skip
        assert rc == 0
    return root


def params(**generator) -> dict:
    return {"seed": 3, "generator": {**GENERATOR, **generator}, "encoder": ENCODER, "lora": {"r": 8, "alpha": 16}}


def train(work: Path, out: Path, timings: Path | None = None, **generator) -> dict:
    return training.train_generator(
        params(**generator),
        TARGET,
        SOURCES,
        [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
        [work / f"results/encoded/{d}/train.pt" for d in SOURCES],
        work / "results/zoo/alpha/final",
        out,
        out.with_suffix(".csv"),
        timings,
    )


# ----------------------------------------------------------------------------- encoder


def test_encoder_shapes_mask_and_pooling() -> None:
    texts = ["A short prompt.", "A much longer prompt that has quite a few more words in it than the first one."]
    enc = ConditionEncoder(section("encoder", {"max_length": 12}))
    states, mask = enc.encode(texts)
    assert states.shape == (2, 12, 384) and mask.shape == (2, 12) and mask.dtype == torch.bool
    assert mask[1].all() and 2 < mask[0].sum() < 12  # the long prompt is truncated, the short padded
    assert (states[~mask] == 0).all() and (states[mask].abs().sum(-1) > 0).all()
    alone, _ = enc.encode(texts[:1])  # padding of the batch does not change the states
    torch.testing.assert_close(alone[0], states[0], atol=1e-4, rtol=1e-4)

    pooled_enc = ConditionEncoder(section("encoder", {"max_length": 12, "pooling": "mean"}))
    pooled, pmask = pooled_enc.encode(texts)
    assert pooled.shape == (2, 1, 384) and pmask.shape == (2, 1) and pmask.all()
    expected = states.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(pooled[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_encoder_bfloat16_is_close_and_part_of_the_signature() -> None:
    texts = ["Which gas do plants take in?", "Pick the best ending: the cat sat on the"]
    ref, mask = ConditionEncoder(section("encoder", {"max_length": 12})).encode(texts)
    fast, fmask = ConditionEncoder(section("encoder", {"max_length": 12, "dtype": "bfloat16"})).encode(texts)
    assert fast.dtype == torch.float32 and torch.equal(mask, fmask)
    assert (fast - ref).norm() / ref.norm() < 0.05  # bf16 rounding, not a different encoder
    assert encoding_signature({"max_length": 12}) != encoding_signature({"max_length": 12, "dtype": "bfloat16"})
    assert encoding_signature({"max_length": 12})["dtype"] == "float32"  # caches written before the key


def test_encode_cache(work: Path) -> None:
    cache = torch.load(work / "results/encoded/beta/train.pt", weights_only=True)
    assert cache["ids"] == [f"beta-train-{i}" for i in range(9)]
    assert cache["states"].dtype == torch.float16 and cache["states"].shape == (9, MAX_LEN, 384)
    assert cache["mask"].shape == (9, MAX_LEN) and cache["encoder"]["max_length"] == MAX_LEN


# ----------------------------------------------------------------------------- zoo and weights


def test_zoo_tokens(work: Path) -> None:
    zoo = training.load_zoo_tokens(work / "results/zoo/alpha/tokens.pt")
    layout = LoraLayout.from_dict(zoo["layout"])
    assert zoo["steps"] == [1, 2, 3, 4]
    assert zoo["tokens"].shape == (4, 64, 10, 34) == (4, layout.n_tokens, *layout.token_shape)
    last = load_file(work / "results/zoo/alpha/checkpoints/step-00004.safetensors")
    back = detokenize(zoo["tokens"][3], layout)
    assert max((back[k] - last[k]).abs().max().item() for k in last) < 1e-5


def test_criterion_weights() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 2, 2, generator=g) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    w = training.criterion_weights([a])
    std = a.std(0, correction=0).mean((1, 2))
    torch.testing.assert_close(w, std / std.mean())
    assert w.mean().item() == pytest.approx(1.0)
    w2 = training.criterion_weights([a, torch.ones(1, 3, 2, 2)])  # no spread -> uniform weights
    torch.testing.assert_close(w2, (w + 1) / 2)


def test_weighted_mse() -> None:
    pred, target = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    w = torch.tensor([0.0, 1.0, 2.0])
    expected = ((pred - target) ** 2 * w.view(1, 3, 1, 1)).mean()
    torch.testing.assert_close(weighted_mse(pred, target, w), expected)
    torch.testing.assert_close(weighted_mse(pred, target, torch.ones(3)), torch.nn.functional.mse_loss(pred, target))


def test_weighted_mse_gradient() -> None:
    pred = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target, w = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: weighted_mse(p, target, w), (pred,))
    (3 * weighted_mse(pred, target, w)).backward()
    torch.testing.assert_close(pred.grad, 3 * 2 * (pred - target).detach() * w.view(1, 3, 1, 1) / pred.numel())


def test_pair_sampler_draws() -> None:
    tokens = [torch.zeros(3, 2, 1, 1), torch.ones(2, 2, 1, 1)]
    pools = [torch.arange(10.0).view(10, 1, 1), torch.arange(100.0, 102.0).view(2, 1, 1)]
    sampler = training.PairSampler(tokens, pools, n_prompts=4, batch_size=5, seed=7)
    cond, target = sampler.batch(0)
    assert cond.shape == (5, 4, 1, 1) and target.shape == (5, 2, 1, 1)
    for c, t in zip(cond, target):  # prompts come from the pool of the checkpoint's dataset
        if t.flatten()[0] == 0:
            assert len(set(c.flatten().tolist())) == 4 and (c < 10).all()  # distinct draw
        else:
            assert (c >= 100).all()  # pool of 2 < N: with replacement
    # one epoch (5 items) visits every checkpoint once; the draw is a function of the step
    assert sorted(target.flatten(1)[:, 0].tolist()) == [0, 0, 0, 1, 1]
    again, _ = training.PairSampler(tokens, pools, 4, 5, seed=7).batch(0)
    torch.testing.assert_close(again, cond)
    assert not torch.equal(sampler.batch(1)[0], cond)


def test_generator_epoch_order_is_torch_seeded() -> None:
    """train-generator's epoch order: torch.randperm seeded by derive_seed(seed, "epoch", e)
    (not train-lora's Python shuffle; both are kept so existing runs reproduce)."""
    order = EpochOrder(7, seed=3, rng="torch")
    for epoch in range(3):
        g = torch.Generator().manual_seed(derive_seed(3, "epoch", epoch))
        assert order.batch(epoch, 7) == torch.randperm(7, generator=g).tolist()
    assert order.batch(1, 5) == [order[p] for p in range(5, 10)]  # a batch across an epoch boundary
    with pytest.raises(ValueError, match="unknown rng"):
        EpochOrder(7, seed=3, rng="numpy")


def test_lr_schedule() -> None:
    lrs = [warmup_cosine(s, 2, 10) for s in range(10)]  # the LambdaLR factor: decay to 0
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.05 and warmup_cosine(10, 2, 10) == 0.0


# ----------------------------------------------------------------------------- training


def test_overfits_two_pairs(work: Path) -> None:
    torch.manual_seed(0)
    targets = torch.stack([training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"][0] for d in SOURCES])
    conds = torch.randn(2, N_PROMPTS, 8, 16)
    model = HyperConvDecoder((N_PROMPTS, 8, 16), [[16, 16, 64], [64, 10, 34]], (64, 10, 34), kernel=3)
    weights = training.criterion_weights([targets])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(200):
        loss = weighted_mse(model(conds), targets, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])


def test_training_is_deterministic_and_resumes_exactly(work: Path, tmp_path: Path, monkeypatch) -> None:
    first = train(work, tmp_path / "a/generator.pt")
    second = train(work, tmp_path / "b/generator.pt")
    for k in first["model"]:
        assert torch.equal(first["model"][k], second["model"][k]), k
    for name in ("generator.pt", "generator.csv"):  # no timings in the outputs: byte-identical
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a/generator.csv").read_text().splitlines()[0] == "step,loss,lr"

    # crash after step 5 (a resume checkpoint exists from step 4), then rerun
    calls = {"n": 0}

    def crashing_loss(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return weighted_mse(*a)

    out = tmp_path / "c/generator.pt"
    monkeypatch.setattr(training, "weighted_mse", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train(work, out)
    monkeypatch.undo()
    assert training.resume_path(out).exists()
    resumed = train(work, out, timings=tmp_path / "timings.json")
    assert not training.resume_path(out).exists()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["steps"] == 6 and timings["resumed_from"] == 4 and timings["wall_s"] > 0 and timings["loop_s"] > 0
    for k in first["model"]:
        assert torch.equal(first["model"][k], resumed["model"][k]), k
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert [r["loss"] for r in rows] == [r["loss"] for r in csv.DictReader((tmp_path / "a/generator.csv").open())]


def test_non_finite_loss_stops_training(work: Path, tmp_path: Path, monkeypatch) -> None:
    """A NaN loss at step 5 stops the run there: no output, the resume point of step 4 stays."""
    from dnd.io import ArtifactError, load_torch
    from dnd.zoo import NonFiniteError

    calls = {"n": 0}

    def nan_at_step_5(*a):
        calls["n"] += 1
        loss = weighted_mse(*a)
        return loss * float("nan") if calls["n"] == 5 else loss

    out = tmp_path / "g/generator.pt"
    monkeypatch.setattr(training, "weighted_mse", nan_at_step_5)
    with pytest.raises(NonFiniteError, match=r"at step 5: .*resume point, step 4, is kept"):
        train(work, out, timings=tmp_path / "timings.json")
    monkeypatch.undo()
    resume = training.resume_path(out)
    assert load_torch(resume, "resume")["step"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == [resume.name]  # no checkpoint, log or timings
    resume.write_bytes(resume.read_bytes()[:100])  # truncated
    with pytest.raises(ArtifactError, match=str(resume)):
        train(work, out)


def test_mean_output_offset(work: Path, tmp_path: Path) -> None:
    """`output_offset: mean`: the decoder adds the mean training token (of the sources only),
    which is saved with the checkpoint and restored by load_generator."""
    ckpt = train(work, tmp_path / "g/generator.pt", output_offset="mean", steps=2)
    tokens = [training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"] for d in SOURCES]
    expected = (tokens[0].mean(0) + tokens[1].mean(0)) / 2
    torch.testing.assert_close(ckpt["model"]["output_offset"], expected)
    assert ckpt["decoder"]["output_offset"] is True
    model, _ = load_generator(tmp_path / "g/generator.pt")
    with torch.no_grad():
        for layer in model.layers:  # a silent decoder outputs exactly the offset
            layer.channel.weight.zero_()
            layer.channel.bias.zero_()
        out = model(torch.randn(1, *model.input_shape))[0]
    torch.testing.assert_close(out, expected)
    plain = train(work, tmp_path / "p/generator.pt", steps=2)
    assert "output_offset" not in plain["model"] and plain["decoder"]["output_offset"] is False


def test_training_rejects_mismatches(work: Path, tmp_path: Path) -> None:
    def fit(p: dict, target: str = "gamma") -> None:
        training.train_generator(
            p, target, SOURCES,
            [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
            [work / f"results/encoded/{d}/train.pt" for d in SOURCES],
            work / "results/zoo/alpha/final", tmp_path / "g.pt", tmp_path / "g.csv",
        )  # fmt: skip

    with pytest.raises(ValueError, match="LoRA rank"):
        fit({**params(), "lora": {"r": 4, "alpha": 16}})
    with pytest.raises(ValueError, match="encoded with"):
        fit({**params(), "encoder": {"max_length": 32}})
    with pytest.raises(ValueError, match="leave-one-out"):
        fit(params(), target="alpha")


# ----------------------------------------------------------------------------- generation


def test_prompt_sources(tmp_path: Path) -> None:
    assert random_text_prompts(3, 0) == random_text_prompts(3, 0) != random_text_prompts(3, 1)
    assert len(read_prompts("random:7")) == 7
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert read_prompts(str(tmp_path / "p.txt")) == ["first", "second"]
    (tmp_path / "p.jsonl").write_text('{"text": "t1"}\n{"prompt": "p2"}\n')
    assert read_prompts(str(tmp_path / "p.jsonl")) == ["t1", "p2"]
    pool = [str(i) for i in range(10)]
    drawn = draw_prompts(pool, 6, seed=1)
    assert len(set(drawn)) == 6 and drawn == draw_prompts(pool, 6, seed=1) != draw_prompts(pool, 6, seed=2)
    assert len(draw_prompts(pool[:2], 5, seed=1)) == 5  # with replacement
    # the shuffled-words control: each prompt's own words in a seeded order
    (tmp_path / "q.txt").write_text("one two three four five six\nalpha beta  gamma\n")
    shuffled = read_prompts(f"shuffled:{tmp_path / 'q.txt'}", seed=4)
    assert [sorted(p.split()) for p in shuffled] == [sorted("one two three four five six".split()),
                                                     ["alpha", "beta", "gamma"]]
    assert shuffled == read_prompts(f"shuffled:{tmp_path / 'q.txt'}", seed=4)
    assert shuffled[0] != "one two three four five six" or shuffled != read_prompts(f"shuffled:{tmp_path / 'q.txt'}", 5)


def test_generate_cli_end_to_end(work: Path) -> None:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    gen_dir = work / "results/generators/gamma"
    rc = main(
        ["train-generator", "--params", json.dumps(params()), "--target", "gamma", "--sources", *SOURCES,
         "--tokens", *[str(work / f"results/zoo/{d}/tokens.pt") for d in SOURCES],
         "--encoded", *[str(work / f"results/encoded/{d}/train.pt") for d in SOURCES],
         "--template-adapter", str(work / "results/zoo/alpha/final"),
         "--out", str(gen_dir / "generator.pt"), "--log", str(gen_dir / "train_log.csv"),
         "--timings", str(gen_dir / "timings.json")]
    )  # fmt: skip
    assert rc == 0
    train_timings = json.loads((gen_dir / "timings.json").read_text())
    assert {"wall_s", "loop_s", "steps", "resumed_from"} <= set(train_timings) and train_timings["steps"] == 6
    ckpt = torch.load(gen_dir / "generator.pt", weights_only=True)
    assert ckpt["sources"] == list(SOURCES) and ckpt["step"] == 6 and ckpt["n_params"] > 0
    assert ckpt["lora_config"]["base_model_name_or_path"] == str(work / "base")
    assert len(list(csv.DictReader((gen_dir / "train_log.csv").open()))) == 6
    assert not training.resume_path(gen_dir / "generator.pt").exists()

    out = work / "results/generated/gamma"
    timing_dir = work / "results/timings/generate/gamma"
    prompts = str(work / "results/data/alpha/cond.jsonl")
    runs = {"dnd_0": (prompts, 1), "dnd_1": (prompts, 1), "dnd_2": (prompts, 2), "control_random_0": ("random:20", 1)}
    for name, (src, seed) in runs.items():
        rc = main(["generate", "--generator", str(gen_dir / "generator.pt"), "--prompts", src,
                   "--out", str(out / name), "--seed", str(seed), "--n-prompts", str(N_PROMPTS),
                   "--timing", str(timing_dir / f"{name}.json")])  # fmt: skip
        assert rc == 0
        assert not (out / name / "timing.json").exists()  # the adapter holds no wall-clock time
    adapters = {n: load_file(out / n / "adapter_model.safetensors") for n in runs}
    template = json.loads((work / "results/zoo/alpha/final/adapter_config.json").read_text())
    assert json.loads((out / "dnd_0/adapter_config.json").read_text()) == template  # the zoo's own config
    assert all(torch.equal(adapters["dnd_0"][k], adapters["dnd_1"][k]) for k in adapters["dnd_0"])  # deterministic
    assert any(not torch.equal(adapters["dnd_0"][k], adapters["dnd_2"][k]) for k in adapters["dnd_0"])  # seed matters
    timing = json.loads((timing_dir / "dnd_0.json").read_text())
    assert timing["total_s"] == pytest.approx(timing["encode_s"] + timing["decode_s"] + timing["write_s"], abs=1e-3)
    assert timing["n_prompts"] == N_PROMPTS and timing["generator_params"] == ckpt["n_params"]

    base = LlamaForCausalLM.from_pretrained(work / "base")
    ids = torch.arange(1, 20).view(1, -1)
    with torch.no_grad():
        base_logits = base(ids).logits
        model = PeftModel.from_pretrained(base, out / "dnd_0").eval()
        lora_logits = model(ids).logits
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(adapters["dnd_0"])
    key = "base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight"
    assert torch.equal(loaded[key], adapters["dnd_0"][key.replace(".default", "")])
    assert not torch.allclose(base_logits, lora_logits)

    assert main(["generate", "--generator", str(gen_dir / "generator.pt"), "--prompts", prompts,
                 "--out", str(out / "bad"), "--n-prompts", "5"]) == 1  # fmt: skip
    timings = sorted(str(p) for p in timing_dir.glob("*.json"))
    assert main(["efficiency", "--timings", *timings, "--out", str(work / "results/efficiency.csv")]) == 0
    rows = list(csv.DictReader((work / "results/efficiency.csv").open()))
    assert [r["adapter"] for r in rows] == ["control_random_0", "dnd_0", "dnd_1", "dnd_2"]
    assert {r["target"] for r in rows} == {"gamma"} and float(rows[1]["total_s"]) > 0


def test_designs_side_by_side_and_their_diagnostics(work: Path, tmp_path: Path) -> None:
    """The basis design reproduces each source's mean LoRA from that source's prompts (fit ratio
    near 0, every source retrieved); the hyper-convolutional decoder with a zero-initialized local
    head starts at the mean token; both go through diagnose-fold and generate."""
    import csv

    basis = train(work, tmp_path / "basis.pt", design="basis", basis_steps=150, lr=1e-2, basis_hidden=16)
    assert basis["decoder"]["design"] == "basis" and basis["step"] == 150
    tokens = [training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"] for d in SOURCES]
    torch.testing.assert_close(basis["model"]["basis"], torch.stack([t.mean(0) for t in tokens]))
    local = train(work, tmp_path / "local.pt", head="local", output_init="zero", output_offset="mean", steps=2)
    assert local["decoder"] | {"head": "local", "zero_init_output": True, "design": "hyperconv"} == local["decoder"]

    out = tmp_path / "diag.csv"
    tok = [str(tmp_path / "tok" / f"{d}.pt") for d in (*SOURCES, TARGET)]
    enc = [str(work / f"results/encoded/{d}/cond.pt") for d in (*SOURCES, TARGET)]
    rc = main(["diagnose-fold", "--target", TARGET, "--sources", *SOURCES,
               "--generators", str(tmp_path / "local.pt"), str(tmp_path / "basis.pt"),
               "--variants", "dnd", "dnd_basis", "--tokens", *tok,
               "--encoded", *enc, "--out", str(out)])  # fmt: skip
    assert rc == 1  # declared tokens that do not exist: one error naming the file
    (tmp_path / "tok").mkdir()
    for d in (*SOURCES, TARGET):
        (tmp_path / "tok" / f"{d}.pt").symlink_to(work / f"results/zoo/{d}/tokens.pt")
    rc = main(["diagnose-fold", "--target", TARGET, "--sources", *SOURCES,
               "--generators", str(tmp_path / "local.pt"), str(tmp_path / "basis.pt"),
               "--variants", "dnd", "dnd_basis", "--tokens", *tok,
               "--encoded", *enc, "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = {(r["variant"], r["metric"]): float(r["value"]) for r in csv.DictReader(out.open())}
    assert rows[("dnd_basis", "fit_ratio")] < 0.05 and rows[("dnd_basis", "retrieval_acc")] == 1.0
    assert rows[("dnd_basis", "fit_ratio_dw")] < 0.1
    # two training steps from a zero-initialized head: still (almost) the mean token
    assert rows[("dnd", "fit_ratio")] == pytest.approx(1.0, abs=0.05)
    assert 0.0 <= rows[("zoo", "reachability")] <= 1.0 + 1e-9
    assert rows[("dnd_basis", "sensitivity_ratio")] > rows[("dnd", "sensitivity_ratio")]

    adapter = tmp_path / "adapter"
    rc = main(["generate", "--generator", str(tmp_path / "basis.pt"),
               "--prompts", f"shuffled:{work / 'results/data/alpha/cond.jsonl'}", "--out", str(adapter)])
    assert rc == 0 and (adapter / "adapter_model.safetensors").exists()
