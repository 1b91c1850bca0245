#!/usr/bin/env bash
# How claim C5's setting (loss spikes on Qwen2-MoE) is found: AdamW alone, on pilot seeds 100 and 101 (never the
# claims' seeds), qwen2moe-pico, wsd, 4 x 64 at C5's horizon (2.5 tokens per parameter: 289,040 tokens), lr doubling
# from the preset's 3e-3. rule.py then picks the smallest lr at which every pilot seed spikes and none diverges (when
# none does, the grid extends by the same doubling, as rule.py asks). AdamPower never runs here, so the choice cannot
# look at the effect. Run from the repository root after 'make demo' or 'make test'.
#
# The first declaration's pilot (experiments/claims-early.toml: qwen2moe-tiny at 81,920 tokens) was
#   gradpower sweep --preset qwen2moe-tiny --schedule wsd --batch-size 4 --set seq_len=64 --set optim=adamw \
#     --grid lr=0.003,0.006,0.012,0.024,0.048,0.096,0.192,0.384 --tokens 81920 --seeds 2 --first-seed 100
# and chose 0.384.
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=$(.venv/bin/python -c "from gradpower.models import count_params, preset
print(int(0.125 * 20 * count_params(preset('qwen2moe-pico')).total))")
.venv/bin/gradpower sweep --preset qwen2moe-pico --schedule wsd --batch-size 4 --set seq_len=64 --set optim=adamw \
  --grid lr=0.003,0.006,0.012,0.024,0.048,0.096,0.192,0.384 --tokens "$tokens" --seeds 2 --first-seed 100 \
  --out runs/c5-spikes
.venv/bin/python experiments/c5-spikes/rule.py runs/c5-spikes
