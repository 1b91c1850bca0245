#!/usr/bin/env bash
# The pilot that chose the default of 'gradpower compare': each candidate setting, AdamW vs AdamPower
# (p=1.2, the preset's lr for both), 3 seeds (100-102). Run from the repository root after 'make demo'
# or 'make test' has built .venv; results go to runs/pilot/NAME/.
set -euo pipefail
cd "$(dirname "$0")/../.."
for file in experiments/pilot/*.toml; do
  name=$(basename "$file" .toml)
  .venv/bin/gradpower compare --config "$file" --out "runs/pilot/$name"
done
