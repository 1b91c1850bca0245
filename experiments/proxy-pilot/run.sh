#!/usr/bin/env bash
# The pilot that chooses the default of 'gradpower compare' at 20 tokens per parameter: each candidate (AdamW vs
# AdamPower p=1.2 on llama-nano at the preset's lr) to the end of its schedule at 20 tokens per parameter, on pilot
# seeds 100-102, two runs at a time; then the rule in choose.py (cost and noise only). Run from the repository root
# after 'make demo' or 'make test' built .venv: 'bash experiments/proxy-pilot/run.sh'; results go to
# runs/proxy-pilot/NAME-hSTEPS/ (about 35 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
for file in experiments/proxy-pilot/*.toml; do
  name=$(basename "$file" .toml)
  batch=$(sed -n 's/^batch_size = //p' "$file")
  # 20 tokens per parameter of llama-nano at batch x 128 tokens a step
  steps=$(.venv/bin/python -c "from gradpower.models import count_params, preset
print(20 * count_params(preset('llama-nano')).total // ($batch * 128))")
  .venv/bin/gradpower compare --plan --pilot-seeds 3 --config "$file" --steps "$steps" --jobs 2 \
    --out "runs/proxy-pilot/$name-h$steps"
done
.venv/bin/python experiments/proxy-pilot/choose.py runs/proxy-pilot --jobs 2
