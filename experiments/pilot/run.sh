#!/usr/bin/env bash
# The pilot that chooses the default of 'gradpower compare': each candidate (AdamW vs AdamPower p=1.2 at the
# preset's lr) at the horizon given (default 320 steps, the ladder's first rung) on pilot seeds 100-102, then the
# rule in choose.py (cost and noise only). Run from the repository root after 'make demo' or 'make test' built
# .venv: 'bash experiments/pilot/run.sh [STEPS] [JOBS]'; results go to runs/pilot/NAME-hSTEPS/.
set -euo pipefail
cd "$(dirname "$0")/../.."
horizon=${1:-320}
jobs=${2:-1}
for file in experiments/pilot/*.toml; do
  name=$(basename "$file" .toml)
  .venv/bin/gradpower compare --plan --pilot-seeds 3 --config "$file" --steps "$horizon" --jobs "$jobs" \
    --out "runs/pilot/$name-h$horizon"
done
.venv/bin/python experiments/pilot/choose.py runs/pilot --jobs "$jobs"
