#!/usr/bin/env bash
# The pilot that chose the default of 'gradpower compare': each candidate setting, AdamW vs AdamPower
# (p=1.2, the preset's lr for both), on pilot seeds 100-103, then the selection rule in choose.py
# (noise and cost only). Run from the repository root after 'make demo' or 'make test' has built .venv;
# results go to runs/pilot/NAME/.
set -euo pipefail
cd "$(dirname "$0")/../.."
for file in experiments/pilot/*.toml; do
  name=$(basename "$file" .toml)
  .venv/bin/gradpower compare --plan --pilot-seeds 4 --config "$file" --out "runs/pilot/$name"
done
.venv/bin/python experiments/pilot/choose.py runs/pilot
