#!/usr/bin/env bash
# Set up the environment and run the whole test suite: the fast tests and the slow smoke-DAG tests
# (a bare `pytest` runs only the fast ones), with the 25 slowest setups/calls listed at the end.
# Extra arguments go to pytest (a later -m replaces the one here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python -m pytest -q -m "slow or not slow" --durations=25 "$@"
