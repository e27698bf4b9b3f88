#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned dependencies and the package installed editable.
# torch==2.13.0 is pinned because a bare "torch" pulls a multi-GB CUDA build on CPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
# DVC and Snakemake run offline: no analytics, no update checks.
export DVC_NO_ANALYTICS=1
echo "environment ready: $(.venv/bin/python -c 'import torch, transformers, peft, lm_eval; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "lm-eval", lm_eval.__version__)')"
