#!/usr/bin/env bash
# The validation of "Choosing p" (README): a p x batch-size sweep of llama-tiny at an equal token budget
# (5 seeds, each point paired by seed against p = 1.0), next to the p* that gradpower noise predicts for
# each batch size, measured early (after 25 steps) and late (on the finished p = 1.0 run of that batch
# size). Run from the repository root after `make demo` or `make test`; results in runs/choosing-p/,
# the README's table from: .venv/bin/python experiments/choosing_p_table.py runs/choosing-p
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/choosing-p
SHARED=(--preset llama-tiny --set seq_len=64 --set optim=adampower)
BATCHES=8,16,32
.venv/bin/gradpower sweep "${SHARED[@]}" --grid "p=0.6,0.8,1.0,1.2,1.4" --grid "batch_size=$BATCHES" \
    --reference "p=1.0" --tokens 131072 --seeds 5 --out "$OUT/sweep"
MEASURE=(--batch-sizes "$BATCHES" --micro-batch-size 8 --micro-batches 32)
.venv/bin/gradpower noise "${SHARED[@]}" --set p=1.0 --set batch_size=16 --steps-before 25 "${MEASURE[@]}" \
    --out "$OUT/noise-early"
for batch in ${BATCHES//,/ }; do
  run=$(.venv/bin/python -c "import csv, sys; print(next(r['run_dir'] for r in csv.DictReader(open(sys.argv[1]))
    if float(r['p']) == 1.0 and r['batch_size'] == sys.argv[2] and r['seed'] == '0'))" "$OUT/sweep/sweep.csv" "$batch")
  .venv/bin/gradpower noise --from "$OUT/sweep/$run" "${MEASURE[@]}" --out "$OUT/noise-late-b$batch"
done
.venv/bin/python experiments/choosing_p_table.py "$OUT"
