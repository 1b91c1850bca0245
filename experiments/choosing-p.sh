#!/usr/bin/env bash
# The validation of "Choosing p" (README): the predicted p* per batch size from the measured gradient
# noise, next to a p x batch-size sweep over seeds, on the bundled corpus. Run from the repository root
# after `make demo` or `make test`; results in runs/choosing-p/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/gradpower noise --preset llama-tiny --set seq_len=64 --steps-before 50 --set batch_size=8 \
    --batch-sizes 2,8,32 --micro-batch-size 2 --micro-batches 32 --out runs/choosing-p/noise
.venv/bin/gradpower sweep --preset llama-tiny --set seq_len=64 --steps 150 --set optim=adampower \
    --grid "batch_size=2,8,32" --grid "p=0.8,1.0,1.2,1.4" --seeds 2 --out runs/choosing-p/sweep
