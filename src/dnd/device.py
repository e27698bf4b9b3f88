"""The one device setting every stage honours: `--device auto|cpu|cuda[:N]`.

Why a command-line flag and not a config key: the device is where a job runs, not what it
computes, so it belongs to the job's resources, like `--threads`. The Snakemake rules pass
`--device cuda` exactly when the job was given a GPU (`resources.gpu`, set by a cluster profile
such as workflow/profiles/slurm) and `--device cpu` otherwise: the default run, whose jobs hold no
GPU, is on the CPU on any machine, a GPU host included, so its numbers never move by accident.
By hand, `auto` takes the first CUDA device when there is one and the CPU otherwise, and says so.

What a device changes is recorded, never implied: `describe()` names it (`cpu`, or `cuda` with the
card's name), the stages write it into their artifacts' metadata, and every score-cache key of a
non-CPU device carries it (dnd.scoring.cache.content_context): a GPU score is never served for a
CPU run. On CUDA the deterministic settings are on (cuDNN deterministic, no autotuning,
deterministic algorithms where torch has them, CUBLAS_WORKSPACE_CONFIG), so one card gives the
same numbers run after run; across cards and against the CPU only float32 agreement to rounding
is promised (scripts/gpu_check.py measures it).
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceError(ValueError):
    """A device that is not a valid setting or not present on this machine (one line)."""


def resolve(spec: str | None):
    """The torch.device of a `--device` setting; one line naming what is missing where it is not
    available (a CUDA device on a CPU-only build, or an index past the machine's cards)."""
    import torch

    spec = (spec or "cpu").strip()
    m = _SPEC.match(spec)
    if m is None:
        raise DeviceError(f"--device {spec!r} is not one of {CHOICES}")
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        dev = torch.device("cuda:0" if available else "cpu")
        log.info("--device auto: %s", describe(dev))
        return dev
    if not available:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
        raise DeviceError(f"--device {spec} asked for, but torch {torch.__version__} has no CUDA device here ({build})")
    index = int(m.group(2) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {spec} asked for, but this machine has {count} CUDA device(s) (0..{count - 1})")
    return torch.device("cuda", index)


def describe(device) -> str:
    """What the device is, for metadata and cache keys: `cpu`, or `cuda` and the card's name."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return f"cuda ({torch.cuda.get_device_name(device)})"


def set_deterministic(device) -> None:
    """The CUDA settings that make one card repeat its numbers; nothing to do on the CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def recorded(device) -> dict[str, str]:
    """A device as artifacts and score-cache keys record it: `{"device": describe(device)}`, and
    nothing for the CPU, the default, so that every artifact and cache key of the CPU run stays
    what it was before devices were recorded (its dvc.lock hashes, its committed scores)."""
    text = describe(device)
    return {} if text == "cpu" else {"device": text}
