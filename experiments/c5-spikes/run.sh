#!/usr/bin/env bash
# How claim C5's setting (loss spikes on Qwen2-MoE) was found: AdamW alone, on pilot seeds 100 and 101 (never the
# claims' seeds), qwen2moe-tiny, wsd, 4 x 64 at the quick budget's 81,920 tokens, lr doubling from the preset's
# 3e-3 (the first five values gave no spike at all, so the grid was extended by the same doubling, as rule.py asks).
# rule.py then picks the smallest lr at which every pilot seed spikes and none diverges. AdamPower never runs here,
# so the choice cannot look at the effect. Run from the repository root after 'make demo' or 'make test'.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/gradpower sweep --preset qwen2moe-tiny --schedule wsd --batch-size 4 --set seq_len=64 --set optim=adamw \
  --grid lr=0.003,0.006,0.012,0.024,0.048,0.096,0.192,0.384 --tokens 81920 --seeds 2 --first-seed 100 --out runs/c5-spikes
.venv/bin/python experiments/c5-spikes/rule.py runs/c5-spikes
