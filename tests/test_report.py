"""`dnd report` (dnd.report, dnd.reporting.tables, dnd.reporting.figures) on synthetic but realistic run files: every
section, every figure, and the main table's numbers checked against scores.csv."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnd import report, stats, summary
from dnd.benchmarks.datasets import title
from dnd.cli import main
from dnd.config import validate_config
from dnd.paths import REPO_ROOT
from dnd.reporting import figures, tables

DATASETS = ["arc_easy", "boolq", "piqa"]
N_DND, N_CTRL, N_ITEMS = 4, 2, 200
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _lora_state(rng: np.random.Generator, shift: float) -> dict:
    """A tiny PEFT state dict (2 layers, 2 modules, r=2) with on-disk key names."""
    import torch

    sd = {}
    for layer in range(2):
        for mod, (fan_in, fan_out) in {"self_attn.q_proj": (8, 8), "mlp.down_proj": (16, 8)}.items():
            base = f"base_model.model.model.layers.{layer}.{mod}"
            sd[f"{base}.lora_A.weight"] = torch.tensor(rng.normal(shift, 1, (2, fan_in)), dtype=torch.float32)
            sd[f"{base}.lora_B.weight"] = torch.tensor(rng.normal(-shift, 0.1, (fan_out, 2)), dtype=torch.float32)
    return sd


def _acc(rng: np.random.Generator, p: float) -> float:
    """An accuracy that is a whole number of items out of N_ITEMS, like a real score."""
    return float(rng.binomial(N_ITEMS, p)) / N_ITEMS


def _scores(rng: np.random.Generator) -> pd.DataFrame:
    """scores.csv as `dnd summarize` writes it (adapter 'mean' rows for generated kinds)."""
    rows = []
    for ti, t in enumerate(DATASETS):
        rows.append((t, "base", "", _acc(rng, 0.40 + 0.02 * ti)))
        src = {s: _acc(rng, 0.72 if s == t else 0.44 + 0.03 * si) for si, s in enumerate(DATASETS)}
        rows += [(t, "source_lora", s, a) for s, a in src.items()]
        rows.append((t, "soup", "soup", _acc(rng, 0.46)))
        near = DATASETS[(ti + 1) % len(DATASETS)]
        rows.append((t, "nearest", near, src[near]))
        for kind, p, k in (("dnd", 0.52 + 0.02 * ti, N_DND), ("control_other", 0.45, N_CTRL),
                           ("control_random", 0.42, N_CTRL)):
            accs = [_acc(rng, p) for _ in range(k)]
            rows += [(t, kind, str(i), a) for i, a in enumerate(accs)]
            rows.append((t, kind, "mean", float(np.mean(accs))))
    df = pd.DataFrame(rows, columns=["target", "method", "adapter", "acc"])
    df["n"] = N_ITEMS
    df["ci_low"] = (df.acc - 0.065).round(4)
    df["ci_high"] = (df.acc + 0.065).round(4)
    df["gold_logprob"] = (-3.0 + 2.0 * df.acc).round(4)
    return df[["target", "method", "adapter", "n", "acc", "ci_low", "ci_high", "gold_logprob"]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    from safetensors.torch import save_file

    res = root / "results"
    res.mkdir()
    scores = _scores(rng)
    scores.to_csv(res / "scores.csv", index=False)
    metrics = {"mean/dnd_mean": 0.55, "mean/dnd_ci_low": 0.52, "mean/dnd_ci_high": 0.58,
               "mean/dnd_minus_train_avg": 0.07, "mean/dnd_minus_train_avg_ci_low": 0.04,
               "mean/dnd_minus_train_avg_ci_high": 0.10, "mean/n_targets": 3, "mean/gap_closed": None}
    for t in DATASETS:
        metrics.update({f"{t}/dnd_minus_train_avg": 0.05, f"{t}/dnd_minus_train_avg_ci_low": 0.01,
                        f"{t}/dnd_minus_train_avg_ci_high": 0.09})
    for bi, b in enumerate(summary.COMPARED):  # DnD minus baseline b: bi/100 points, -bi/10 nats
        for ti, t in enumerate([*DATASETS, "mean"]):
            for metric, d in (("acc", bi / 100 - (0.02 if ti == 0 else 0)), ("gold_logprob", -bi / 10)):
                key = f"{t}/dnd_minus_{b}/{metric}"
                metrics.update({key: d, key + "_ci_low": d - 0.03, key + "_ci_high": d + 0.03})
    (res / "metrics.json").write_text(json.dumps(metrics))
    speed = [("hf", t, a, 100, 40.0) for t in DATASETS for a in ("base", t)]
    speed += [("dnd-prefix", t, a, 100, 10.0) for t in DATASETS for a in ("base", t)]
    pd.DataFrame(speed, columns=["backend", "target", "adapter", "items", "seconds"]).to_csv(
        res / "eval_speed.csv", index=False)
    agree = []
    for t in DATASETS:
        for a in ("base", t):
            agree += [(t, a, "dnd-prefix vs hf, bfloat16", 100, 1.0 if a == "base" else 0.99, 1.0, 0.25, 0.01),
                      (t, a, "dnd-prefix vs hf, float32", 20, 1.0, 1.0, 2e-5, 1e-6),
                      (t, a, "hf bfloat16 vs hf float32", 20, 0.95, 1.0, 0.3, 0.02),
                      (t, a, "dnd-prefix bfloat16 vs hf float32", 20, 0.9 if a == "base" else 1.0, 1.0, 0.3, 0.02)]
    pd.DataFrame(agree, columns=["target", "adapter", "comparison", "items", "same_choice", "same_choice_norm",
                                 "max_abs_ll_diff", "mean_abs_ll_diff"]).to_csv(res / "eval_agreement.csv", index=False)
    eff = [(t, f"dnd_{i}", "dnd", 123_456, 0.40 + 0.1 * i, 0.02, 0.01, 0.43 + 0.1 * i, 900.0, 1.2, 128)
           for t in DATASETS for i in range(N_DND)]
    eff += [(t, f"control_other_{i}", "control_other", 123_456, 9.0, 9.0, 9.0, 27.0, 950.0, 1.2, 128)
            for t in DATASETS for i in range(N_CTRL)]
    pd.DataFrame(eff, columns=["target", "adapter", "kind", "generator_params", "encode_s", "decode_s",
                               "write_s", "total_s", "peak_rss_mb", "load_s", "n_prompts"]).to_csv(
        res / "efficiency.csv", index=False)
    pd.DataFrame([(d, s, n) for d in DATASETS for s, n in (("train", 500), ("cond", 100), ("test", 300))],
                 columns=["dataset", "split", "n"]).to_csv(res / "data_summary.csv", index=False)
    for di, d in enumerate(DATASETS):
        ck = res / "zoo" / d / "checkpoints"
        ck.mkdir(parents=True)
        for s in range(11, 17):
            save_file(_lora_state(rng, di), str(ck / f"step-{s:05d}.safetensors"))
        steps = np.arange(1, 17)
        pd.DataFrame({"phase": np.where(steps <= 10, 1, 2), "step": steps, "loss": 2.0 / np.sqrt(steps) + 0.05 * di,
                      "lr": 1e-4, "tokens": 1000}).to_csv(res / "zoo" / d / "train_log.csv", index=False)
        timing = res / "timings" / "train_lora" / f"{d}.json"
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"wall_s": 55.0, "loop_s": 3.0 * 16, "steps": 16, "resumed_from": 0}))
        g = res / "generators" / d
        g.mkdir(parents=True)
        st = np.arange(1, 41)
        pd.DataFrame({"step": st, "loss": 1.0 / st + rng.uniform(0, 0.01, 40), "lr": 1e-3}).to_csv(
            g / "train_log_hyperconv.csv", index=False)
        for i in range(N_DND):
            a = res / "generated" / d / f"dnd_{i}"
            a.mkdir(parents=True)
            save_file(_lora_state(rng, di + 0.3), str(a / "adapter_model.safetensors"))
            (a / "adapter_config.json").write_text("{}")
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for stage, names, sec in (("train_lora", DATASETS, 50.0), ("generate", DATASETS, 4.0), ("evaluate", DATASETS, 30.0),
                              ("report", ["all"], 2.0)):
        b = root / "benchmarks" / stage
        b.mkdir(parents=True)
        for n in names:
            (b / f"{n}.tsv").write_text(header + f"{sec}\t0:00:{int(sec):02d}\t812.5\t900\t700\t710\t1\t2\t95\t{sec}\n")

    diag = []
    for ti, t in enumerate(DATASETS):  # dnd meets the goals on every fold, dnd_basis misses retrieval on one
        diag.append((t, "zoo", "reachability", 0.1 * (ti + 1)))
        for v, fit, ret in (("dnd", 0.05, 1.0), ("dnd_basis", 0.01, 0.5 if ti == 0 else 1.0)):
            diag += [(t, v, "fit_ratio", fit), (t, v, "fit_ratio_dw", fit), (t, v, "retrieval_acc", ret),
                     (t, v, "sensitivity_ratio", 0.9), (t, v, "redraw_ratio", 0.01), (t, v, "heldout_norm_ratio", 1.0)]
    pd.DataFrame(diag, columns=["fold", "variant", "metric", "value"]).to_csv(res / "diagnostics.csv", index=False)
    cfg = validate_config({"name": "unit", "data": {"datasets": DATASETS}, "base_model": {"source": "smollm2_wheel"}})
    paper = Path(__file__).resolve().parents[1] / "config" / "paper_numbers.yaml"
    rc = main(["report", "--params", json.dumps(cfg),
               "--scores", str(res / "scores.csv"), "--metrics", str(res / "metrics.json"),
               "--efficiency", str(res / "efficiency.csv"), "--data-summary", str(res / "data_summary.csv"),
               "--eval-speed", str(res / "eval_speed.csv"), "--eval-agreement", str(res / "eval_agreement.csv"),
               "--diagnostics", str(res / "diagnostics.csv"),
               "--zoo-logs", *map(str, sorted(res.glob("zoo/*/train_log.csv"))),
               "--zoo-checkpoints", *map(str, sorted(res.glob("zoo/*/checkpoints"))),
               "--generator-logs", *map(str, sorted(res.glob("generators/*/train_log_hyperconv.csv"))),
               "--generated", *map(str, sorted(res.glob("generated/*/dnd_*"))),
               "--benchmarks", *map(str, sorted((root / "benchmarks").rglob("*.tsv"))),  # what the rule declares
               "--timings-dir", str(res / "timings"),
               "--paper-numbers", str(paper), "--paper-config", str(REPO_ROOT / "config" / "paper.yaml"),
               "--out", str(res / "report.md"),
               "--figures-dir", str(res / "figures"), "--tables-dir", str(res / "tables")])
    assert rc == 0
    return root


def test_diagnostics_section(run_dir):
    """The diagnostics table per fold and generator with the zoo's reachability, and the selection
    rule's verdict read from diagnostics.csv (dnd qualifies, so the rule names it); DnD is the paper's
    decoder beside the source-basis mixer, with its settings against the paper profile's."""
    text = (run_dir / "results" / "report.md").read_text()
    table = _table_after(text, "## Generator diagnostics")
    dnd = table[table["Generator"] == "DnD"].set_index("Fold")
    assert dnd.loc["Mean", "Fit ratio (tokens)"] == "0.050" and dnd.loc["Mean", "Retrieval"] == "1.000"
    basis = table[table["Generator"] == tables.METHOD_LABELS["dnd_basis"]].set_index("Fold")
    assert basis.loc["Mean", "Retrieval"] == f"{(0.5 + 1.0 * (len(DATASETS) - 1)) / len(DATASETS):.3f}"
    assert basis.iloc[0]["Reachability (zoo)"] == "0.100"
    assert "This run: **DnD (design `hyperconv`)** (meets the fit" in text
    assert "It picks no headline" in text and "**DnD** is the paper's method" in text
    zoo = _table_after(text, "### The LoRA zoo beside the authors'").set_index("Dataset")
    # the authors' ARC-Easy: phase 1 resumed at step 70 of batch 8 on 4 devices = 2240 examples of 2251
    assert zoo.loc["ARC-Easy", "Phase-1 examples (ours / authors)"].endswith(" / 2240")
    assert zoo.loc["ARC-Easy", "Phase-1 epochs"].endswith(" / 1.00") and zoo.loc["BoolQ", "lr"].endswith(" / 0.0001")
    dev = _table_after(text, "### DnD and the paper's decoder").set_index("Setting")
    assert dev.loc["Convolution kernel", "Paper (config/paper.yaml)"] == "9"
    assert dev.loc["Generator design", "Deviation"] != "yes"  # both the hyper-convolutional decoder
    assert "Reachability averages 0.200 over folds (range 0.100–0.300)" in text
    assert ("The default generator reproduces the LoRAs it was trained on from their prompts (fit ratio 0.050 on "
            "average, worst fold 0.050; retrieval 1.00, lowest 1.00); adapters generated from different datasets' "
            "prompts lie 0.90 times as far apart") in text
    assert ("On the held-out targets, DnD and the training-LoRA average are not told apart in accuracy "
            "(+0.0 points, 95% CI [-3.0, +3.0])") in text


def _table_after(text: str, heading: str) -> pd.DataFrame:
    """Parse the first Markdown pipe table after `heading` back into strings."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip().strip("|").split("|")])
    return pd.DataFrame(block[2:], columns=block[0])


def _num(cell: str) -> float:
    return float(re.sub(r"[*%×,+]", "", cell).strip())


def test_sections_and_figures(run_dir):
    text = (run_dir / "results" / "report.md").read_text()
    for heading in report.SECTIONS:
        assert f"\n{heading}\n" in text, heading
    for name in figures.FIGURES.values():
        png = run_dir / "results" / "figures" / name
        assert png.exists() and png.read_bytes()[:8] == PNG_MAGIC, name
        assert f"](figures/{name})" in text, f"{name} not linked with a relative path"
    assert "placeholder" not in text.lower()
    for table in tables.TABLES:
        df = pd.read_csv(run_dir / "results" / "tables" / f"{table}.csv")
        assert len(df) and "note" not in df.columns, table
    main_csv = pd.read_csv(run_dir / "results" / "tables" / "main_table.csv", dtype=str).set_index("Target")
    main_md = _table_after(text, "## Main results").set_index("Target")
    assert (main_csv.fillna("") == main_md.replace(r"\*\*", "", regex=True)).all().all()


def test_main_table_matches_scores(run_dir):
    text = (run_dir / "results" / "report.md").read_text()
    tab = _table_after(text, "## Main results").set_index("Target")
    sc = pd.read_csv(run_dir / "results" / "scores.csv", keep_default_na=False)
    exp_rows = {}
    for t in DATASETS:
        s = sc[sc.target == t]
        src = s[s.method == "source_lora"].set_index("adapter").acc
        train = src.drop(t)
        dnd = s[(s.method == "dnd") & (s.adapter != "mean")].acc
        one = lambda m: float(s[s.method == m].acc.iloc[0])  # noqa: E731
        exp_rows[title(t)] = {"Base": one("base"), "Training LoRAs (avg)": train.mean(),
                              "Best training LoRA †": train.max(), "Soup": one("soup"), "Nearest": one("nearest"),
                              "dnd": dnd.mean(), "dnd_sd": dnd.std(ddof=1), "Oracle ‡": src[t],
                              "gap": (dnd.mean() - train.mean()) / (src[t] - train.mean())}
    exp = pd.DataFrame(exp_rows).T
    exp.loc["Mean"] = exp.mean()
    exp.loc["Mean", "gap"] = ((exp.loc["Mean", "dnd"] - exp.loc["Mean", "Training LoRAs (avg)"])
                              / (exp.loc["Mean", "Oracle ‡"] - exp.loc["Mean", "Training LoRAs (avg)"]))
    assert list(tab.index) == [title(t) for t in DATASETS] + ["Mean"]
    # at most 7 columns (this run has no multi-task LoRA: 6); the soup, the references, the spread and the
    # headroom in the second table
    assert len(tab.columns) + 1 <= 6
    assert list(tab.columns) == [h for h in tables.MAIN_HEADERS[1:] if h != tables.MULTITASK_HEADER]
    detail = _table_after(text, "The references and DnD's spread").set_index("Target")
    assert list(detail.index) == list(tab.index) and len(detail.columns) + 1 <= 7
    assert "Gap closed" not in text and "gap closed" not in text
    for row, e in exp.iterrows():
        got, ref = tab.loc[row], detail.loc[row]
        for col in ("Base", "Training LoRAs (avg)", "Nearest"):
            assert _num(got[col]) == pytest.approx(100 * e[col], abs=0.051), (row, col)
        for col in ("Soup", "Best training LoRA †", "Oracle ‡"):
            assert _num(ref[col]) == pytest.approx(100 * e[col], abs=0.051), (row, col)
        mean_txt = got["DnD (95% CI)"].replace("*", "").split("[")[0]
        assert float(mean_txt) == pytest.approx(100 * e["dnd"], abs=0.051), row
        assert float(ref["DnD sd over adapters"]) == pytest.approx(
            100 * e["dnd_sd"] if row != "Mean" else 100 * exp["dnd_sd"][:-1].mean(), abs=0.051), row
        # nothing is bold on a difference no CI separates: here DnD's paired CI against the training
        # average (+5 [+1, +9]) is above 0 but against soup and nearest (fixture: CIs of ±3 around
        # 0-2 points) it is not
        assert not any(str(v).startswith("**") for v in got.values), row
    # the per-target DnD CI is the adapter-'mean' row's bootstrap CI of scores.csv, in the one format
    for t in DATASETS:
        m = sc[(sc.target == t) & (sc.method == "dnd") & (sc.adapter == "mean")].iloc[0]
        assert tab.loc[title(t), "DnD (95% CI)"].endswith(f" [{100 * m.ci_low:.1f}, {100 * m.ci_high:.1f}]")
    assert tab.loc["Mean", "DnD (95% CI)"].endswith(" [52.0, 58.0]")  # the CI from metrics.json
    assert tab.loc["Mean", tables.DELTA_COLUMN] == "+7.0 [+4.0, +10.0]"


def test_bold_only_where_paired_cis_separate():
    """DnD is bold only where its paired CIs against every compared zero-shot baseline lie above 0
    and its mean is above the base model's."""
    mt = pd.DataFrame({"base": [30.0, 30.0], "train_avg": [31.0, 31.0], "soup": [31.0, 31.0],
                       "nearest": [31.0, 31.0], "dnd_mean": [31.1, 31.1], "dnd_sd": [0.1, 0.1],
                       "dnd_ci_low": [28.0, 28.0], "dnd_ci_high": [34.0, 34.0], "best_train": [32.0, 32.0],
                       "oracle": [35.0, 35.0]}, index=["a", "b"])
    m = {}
    for t, low in (("a", 0.001), ("b", -0.001)):  # a: every paired CI above 0; b: one reaching 0
        for bl in ("train_avg", "soup", "nearest"):
            key = f"{t}/dnd_minus_{bl}/acc"
            m.update({key: 0.01, key + "_ci_low": 0.002 if bl != "nearest" else low, key + "_ci_high": 0.02})
    disp = tables.render_main_table(mt, m).set_index("Target")
    assert disp.loc["a", "DnD (95% CI)"].startswith("**") and not disp.loc["b", "DnD (95% CI)"].startswith("**")
    assert not any(str(v).startswith("**") for c, v in disp.loc["a"].items() if c != "DnD (95% CI)")
    # with the multi-task LoRA scored: its column, and DnD bold only where it is ahead of it too
    mt["multitask"] = [32.0, 32.0]
    for t, low in (("a", -0.001), ("b", 0.003)):
        key = f"{t}/dnd_minus_multitask_lora/acc"
        m.update({key: 0.01, key + "_ci_low": low, key + "_ci_high": 0.02})
    disp = tables.render_main_table(mt, m).set_index("Target")
    assert list(disp.columns) == tables.MAIN_HEADERS[1:] and disp.loc["a", tables.MULTITASK_HEADER] == "32.0"
    assert not disp.loc["a", "DnD (95% CI)"].startswith("**")  # its CI against the multi-task LoRA reaches 0
    assert not disp.loc["b", "DnD (95% CI)"].startswith("**")  # still level with nearest


def test_other_tables(run_dir):
    text = (run_dir / "results" / "report.md").read_text()
    paper = _table_after(text, "## Paper's reported numbers beside ours").set_index("Dataset")
    assert paper.loc["ARC-Easy", "Paper: training LoRAs"] == "37.5" and paper.loc["ARC-Easy", "Paper: DnD"] == "68.6"
    assert paper.loc["BoolQ", "Paper: Δ"] == "+31.4"
    assert paper.loc["Average gain (held-out datasets)", "Paper: Δ"] == "+21.0"
    # our pooled gain +7.0 [4.0, 10.0] (metrics.json) against the paper's +21.0, in the verdict words
    assert paper.loc["Average gain (held-out datasets)", "Ours: Δ (95% CI)"].endswith(" [+4.0, +10.0]")
    assert (paper.loc["Average gain (held-out datasets)", "Verdict"]
            == "reproduced in direction, smaller than the paper's +21.0")
    assert all(stats.verdict_word(v) in stats.VERDICTS for v in paper["Verdict"]), paper["Verdict"].tolist()
    main_tab = _table_after(text, "## Main results").set_index("Target")
    ours_dnd = main_tab.loc["ARC-Easy", "DnD (95% CI)"].replace("*", "").split(" [")[0]
    assert paper.loc["ARC-Easy", "Ours: DnD"] == ours_dnd

    ctrl = _table_after(text, "## Controls").set_index("Target")
    sc = pd.read_csv(run_dir / "results" / "scores.csv", keep_default_na=False)
    for t in DATASETS:
        for kind, col in (("control_other", "Control: other prompts"), ("control_random", "Control: random text")):
            accs = sc[(sc.target == t) & (sc.method == kind) & (sc.adapter != "mean")].acc
            assert float(ctrl.loc[title(t), col].split("±")[0]) == pytest.approx(100 * accs.mean(), abs=0.051)

    eff = _table_after(text, "## Efficiency").set_index("Target")
    # DnD adapters only (controls excluded): median total 0.58 s; tuning = loop_s of the zoo timings file = 48 s
    assert eff.loc["ARC-Easy", "Total (s)"] == "0.580"
    assert eff.loc["ARC-Easy", "LoRA tuning, train loop (s)"] == "48.00"
    assert eff.loc["ARC-Easy", "LoRA tuning, whole job (s)"] == "50.00"
    assert eff.loc["ARC-Easy", "Tuning / generation"] == "83×"

    comp = _table_after(text, "### Compute (Snakemake benchmarks)").set_index("Stage (rule)")
    assert comp.loc["train_lora", "Jobs"] == "3" and comp.loc["train_lora", "Wall, total (s)"] == "150"
    assert comp.loc["**all stages**", "Wall, total (s)"] == "254"
    assert "cloze" in text and "log-likelihood" in text and "Q4_1" in text


def test_optional_inputs_missing(tmp_path, run_dir):
    """Only scores.csv: every section says what is missing, all figures still exist."""
    out = tmp_path / "r" / "report.md"
    rc = main(["report", "--scores", str(run_dir / "results" / "scores.csv"), "--metrics", str(tmp_path / "no.json"),
               "--efficiency", str(tmp_path / "no.csv"), "--data-summary", str(tmp_path / "no.csv"),
               "--zoo-logs", str(tmp_path / "no" / "a" / "train_log.csv"),
               "--zoo-checkpoints", str(tmp_path / "no" / "a" / "checkpoints"),
               "--generated", str(tmp_path / "no" / "t" / "dnd_0"),
               "--paper-numbers", str(tmp_path / "no.yaml"), "--out", str(out),
               "--figures-dir", str(tmp_path / "r" / "figures"), "--tables-dir", str(tmp_path / "r" / "tables")])
    assert rc == 0
    text = out.read_text()
    for table in tables.TABLES:  # every declared table exists, as a note when its input is missing
        assert (tmp_path / "r" / "tables" / f"{table}.csv").exists()
    assert "note" in pd.read_csv(tmp_path / "r" / "tables" / "efficiency.csv").columns
    for heading in report.SECTIONS:
        assert f"\n{heading}\n" in text
    for phrase in ("No generation timings", "No benchmark files", "No metrics file", "No paper numbers file",
                   "No data summary", "Not enough LoRA checkpoints", "No training logs"):
        assert phrase in text, phrase
    for name in figures.FIGURES.values():
        assert (tmp_path / "r" / "figures" / name).read_bytes()[:8] == PNG_MAGIC


def test_missing_scores_is_a_clear_error(tmp_path, caplog):
    rc = main(["report", "--scores", str(tmp_path / "scores.csv"), "--out", str(tmp_path / "report.md"),
               "--figures-dir", str(tmp_path / "figures")])
    assert rc == 1
    assert "scores file not found" in caplog.text
    assert not (tmp_path / "report.md").exists()


def test_pooled_comparisons_and_backend_section(run_dir):
    """The pooled DnD-minus-baseline table reads metrics.json (points and nats with CIs, targets
    ahead); the backend section pools items/s from eval_speed.csv and agreement from
    eval_agreement.csv; the main table's caption states n and the CI half-widths."""
    text = (run_dir / "results" / "report.md").read_text()
    comp = _table_after(text, "**DnD against each zero-shot baseline")
    assert set(comp["Method"]) == {"DnD"}
    assert list(comp["minus"]) == [tables.METHOD_LABELS[b] for b in summary.COMPARED]
    soup = comp.set_index("minus").loc["Soup"]  # bi = 1
    assert soup["Accuracy (points, 95% CI)"] == "+1.0 [-2.0, +4.0]"
    assert soup["Gold log-prob (nats, 95% CI)"] == "-0.100 [-0.130, -0.070]"  # half-width 0.03: 3 decimals
    assert soup["Targets ahead (acc)"] == "2/3"  # the first target is 2 points lower
    assert "n = 200 (every method scores the same items)" in text
    assert "half-widths: 6.5–6.5 points per target, ±3.0 for the mean over targets" in text
    backend = _table_after(text, "## Evaluation backend").set_index("Target")
    assert backend.loc["Pooled", "hf (items/s)"] == "2.50" and backend.loc["Pooled", "dnd-prefix (items/s)"] == "10.00"
    assert backend.loc["Pooled", "Speed-up"] == "4.00×"
    assert backend.loc["Pooled", "Same answer (%, n)"] == "99.5 (600)"
    assert backend.loc["Pooled", "Same answer, float32 (%, n)"] == "100.0 (120)"
    assert backend.loc["Pooled", "Largest Δ log-lik, float32 (nats)"] == "2.0e-05"
    assert backend.loc["Pooled", "hf = float32 ref (%, n)"] == "95.0 (120)"
    assert backend.loc["Pooled", "dnd-prefix = float32 ref (%, n)"] == "95.0 (120)"
    assert backend.loc["ARC-Easy", "Same answer (%, n)"] == "99.5 (200)"
    assert "**4.00×** (95% CI [4.00, 4.00]" in text  # every timing here is 4x: no spread over the cells
    assert "The evaluate stage (every item, every method, 3 jobs) took 0:01:30" in text


def test_speedup_ci_resamples_paired_cells():
    """The pooled speed-up's CI: a bootstrap over (target, adapter) cells with both backends' times
    kept together; it holds the pooled ratio, narrows to it when every cell has the same ratio, and a
    cell scored on different items by the two backends is refused."""
    rows = []
    for i, (t, a) in enumerate([("a", "base"), ("a", "x"), ("b", "base"), ("b", "x"), ("c", "base")]):
        rows += [{"backend": "hf", "target": t, "adapter": a, "items": 30, "seconds": 3.0 + i},
                 {"backend": "dnd-prefix", "target": t, "adapter": a, "items": 30, "seconds": 1.0 + 0.1 * i * i}]
    speed = pd.DataFrame(rows)
    lo, hi, n = tables.speedup_ci(speed, seed=0)
    pooled = speed[speed.backend == "hf"].seconds.sum() / speed[speed.backend == "dnd-prefix"].seconds.sum()
    assert n == 5 and lo < pooled < hi and (lo, hi) == tables.speedup_ci(speed, seed=0)[:2]
    same = speed.assign(seconds=np.where(speed.backend == "hf", 3.0, 1.0) * (1 + speed.index // 2))
    assert tables.speedup_ci(same, seed=1)[:2] == pytest.approx((3.0, 3.0))
    with pytest.raises(ValueError, match="both backends on the same items"):
        tables.speedup_ci(speed.assign(items=np.where(speed.backend == "hf", 30, 20)), seed=0)


def test_pca_takes_only_the_default_designs_adapters(tmp_path):
    """dnd_<i> adapters are the default design's; dnd_<design>_<i> (a variant) stay out of the PCA."""
    for name in ("dnd_0", "dnd_1", "dnd_basis_0", "control_other_0"):
        (tmp_path / "gen" / "t" / name).mkdir(parents=True)
        (tmp_path / "gen" / "t" / name / "adapter_model.safetensors").write_bytes(b"")
    items = figures.collect_pca_inputs([tmp_path / "nozoo" / "a" / "checkpoints"],
                                       sorted((tmp_path / "gen" / "t").iterdir()), 3)
    assert [p.parent.name for _, _, p in items] == ["dnd_0", "dnd_1"]


def test_compute_table_leaves_out_other_experiments(tmp_path):
    """The default report's compute table counts the default run's jobs, not the protocol's."""
    row = "s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t100\t{s}\n"
    for rel, s in {"train_lora/a.tsv": 10, "train_lora/b.tsv": 20, "report.tsv": 1,
                   "protocol/evaluate/a.tsv": 500}.items():
        (tmp_path / "benchmarks" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "benchmarks" / rel).write_text(row.format(s=s))
    files = sorted((tmp_path / "benchmarks").rglob("*.tsv"))
    every = tables.compute_table(files)
    assert set(every["Stage (rule)"]) == {"train_lora", "report", "protocol", "**all stages**"}
    own = tables.compute_table(files, exclude=("protocol",))
    assert set(own["Stage (rule)"]) == {"train_lora", "report", "**all stages**"}
    assert own.set_index("Stage (rule)").loc["train_lora", "Jobs"] == 2


def test_report_reads_the_benchmark_files_it_is_given(tmp_path, monkeypatch):
    """The default report's compute table and LoRA job times come from the benchmark files the
    rule declares (`--benchmarks`, issue 27): the same table as the whole folder gave when they are
    all of it, stale files beside them left out; a missing declared file is one line."""
    monkeypatch.chdir(tmp_path)  # the workflow passes paths relative to the run directory
    row = "s\th:m:s\tmax_rss\tcpu_time\n{s}\t0:00:00\t100\t{s}\n"
    for rel, s in {"base_model.tsv": 3, "train_lora/a.tsv": 10, "train_lora/b.tsv": 20, "evaluate/a.tsv": 40,
                   "generate/a.tsv": 5}.items():
        (Path("benchmarks") / rel).parent.mkdir(parents=True, exist_ok=True)
        (Path("benchmarks") / rel).write_text(row.format(s=s))
    declared = sorted(Path("benchmarks").rglob("*.tsv"), reverse=True)
    # the former folder-based reading: every file under the folder, the stage relative to it
    folder = tables.read_stage_benchmarks(sorted(Path("benchmarks").rglob("*.tsv")), root="benchmarks")
    assert tables.read_stage_benchmarks(declared).equals(folder)
    comp = tables.compute_table(declared).set_index("Stage (rule)")
    assert comp.loc["train_lora", "Wall, total (s)"] == "30.00" and comp.loc["base_model", "Jobs"] == 1
    assert comp.loc["**all stages**", "Jobs"] == 5 and comp.loc["**all stages**", "Wall, total (s)"] == "78.00"
    assert tables.lora_bench_seconds(declared, "b") == 20.0 and tables.lora_bench_seconds(declared, "c") is None
    (Path("benchmarks") / "report.tsv").write_text(row.format(s=1000))  # a previous report's: not declared
    assert tables.compute_table(declared).set_index("Stage (rule)").equals(comp)
    assert "report" in set(tables.read_stage_benchmarks(sorted(Path("benchmarks").rglob("*.tsv")), root="benchmarks")
                           .stage)  # the folder would have counted it
    gone = Path("benchmarks/summarize.tsv")
    with pytest.raises(FileNotFoundError, match=f"^--benchmarks: declared benchmark file {gone} not found$"):
        tables.compute_table([*declared, gone])
    (tmp_path / "x.tsv").write_text(row.format(s=1))
    with pytest.raises(ValueError, match="not under a benchmarks/ folder"):
        tables.compute_table([tmp_path / "x.tsv"])


def test_report_hash_is_the_default_runs(run_dir):
    """The report states the hash of the default run's config: the protocol section (an extra
    experiment, filled in by the schema) is not part of it."""
    from dnd.config import config_hash, run_config

    cfg = validate_config({"name": "unit", "data": {"datasets": DATASETS}, "base_model": {"source": "smollm2_wheel"}})
    assert "protocol" in cfg
    text = (run_dir / "results" / "report.md").read_text()
    assert f"Config hash `{config_hash(run_config(cfg))}`" in text
    assert config_hash(cfg) not in text


_CI_CELL = re.compile(r"^(\*\*)?[+-]?\d+(\.\d+)? \[[+-]?\d+(\.\d+)?, [+-]?\d+(\.\d+)?\](\*\*)?$")


def _tables(text: str) -> list[pd.DataFrame]:
    """Every Markdown pipe table of a report, as strings."""
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            out.append(pd.DataFrame(block[2:], columns=block[0]))
            block = []
    return out


def _check_readable(text: str) -> None:
    """The properties issue 32 asks of every report: the main table at most 7 columns, no dump of
    raw metrics, one CI format (`+1.2 [+0.4, +2.1]`) in every CI column of every table, numbers
    right-aligned."""
    tabs = _tables(text)
    assert len(_table_after(text, "## Main results").columns) <= 7
    assert "Headline metrics" not in text and "accuracies as fractions" not in text
    assert not re.search(r"\d\.\d{3,}e-\d\d", text)  # no raw float dumps such as -2.478e-20
    n_ci = 0
    for tab in tabs:
        for col in [c for c in tab.columns if "CI" in c]:
            for cell in tab[col]:
                if cell not in ("", "n/a", "not in this run"):
                    assert _CI_CELL.match(cell), (col, cell)
                    n_ci += 1
    assert n_ci > 0
    lines = text[text.index("## Main results"):].splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("|"))
    cells = lines[head + 1].strip().strip("|").split("|")  # the alignment row: Target left, numbers right
    assert cells[0].startswith(":") and all(c.endswith(":") and not c.startswith(":") for c in cells[1:])


def test_report_is_readable(run_dir):
    _check_readable((run_dir / "results" / "report.md").read_text())


def test_committed_report_is_readable():
    """results/report.md as committed (written by the report rule's command from the committed
    results) has the same properties."""
    committed = Path(__file__).resolve().parent.parent / "results" / "report.md"
    if not committed.is_file():
        pytest.skip("no committed results/report.md in this checkout")
    text = committed.read_text()
    _check_readable(text)
    main_tab = _table_after(text, "## Main results")
    assert list(main_tab.columns) == tables.MAIN_HEADERS
    assert "Gap closed" not in text
