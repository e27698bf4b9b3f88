#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned dependencies and the package installed editable.
# torch==2.13.0 is pinned because a bare "torch" pulls a multi-GB CUDA build on CPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# dnd.benchmarks.code_exec runs model-generated programs inside bubblewrap; without bwrap the code experiment
# refuses to run (unless config `code.sandbox: unsafe-python-guard`) and its sandbox tests are
# skipped (they fail under CI=true). Install it where we can: as root with apt-get.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bubblewrap (bwrap) for the code sandbox"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; then
      echo "setup_env.sh: apt-get could not install bubblewrap; install it by hand (the code sandbox needs bwrap)" >&2
    fi
  else
    echo "setup_env.sh: bwrap (bubblewrap) is missing and cannot be installed here (needs root and apt-get);" \
         "install it, or opt out with code.sandbox: unsafe-python-guard" >&2
  fi
fi
# tests/headless_browser.py renders the HTML report (`snakemake --report`) in a headless Chromium; without
# it the browser checks of tests/test_glance.py and test_smoke_html_report_renders are skipped. Debian's
# `chromium` (about 45 s to download and install as root, apt lists current). Install it where we can.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (headless) for the HTML report's browser checks"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      echo "setup_env.sh: apt-get could not install chromium; install it by hand (the HTML report's browser" \
           "checks are skipped without it)" >&2
    fi
  else
    echo "setup_env.sh: chromium is missing and cannot be installed here (needs root and apt-get); the HTML" \
         "report's browser checks are skipped without it" >&2
  fi
fi
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
