#!/usr/bin/env bash
# Set up the environment and run the default reproduction end to end (config/config.yaml),
# then render the Snakemake HTML report. Extra arguments go to snakemake; with
# `--configfile config/<profile>.yaml` (another profile) everything, the report included, goes to
# runs/<name>/ (config/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_MININTERVAL=30
snakemake --cores all "$@"
snakemake --cores all --report results/report.html "$@"
