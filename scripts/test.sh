#!/usr/bin/env bash
# Set up the environment and run the test suite (includes the whole smoke DAG).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python -m pytest -q "$@"
