#!/usr/bin/env bash
# The release as a user gets it: build the sdist and the wheel, check their metadata, then install the wheel alone
# into a fresh virtual environment outside the clone and use it there: the optimizer library with no extras (AdamPower
# on the C++ route, a PowerController update, the command's --version and --help), then with the `train` extra (a few
# training steps, `gradpower claims --budget micro` of C9 and C12). `make test` runs it after the suite; pip's cache
# keeps it to a few minutes. Usage: tools/release_check.sh [PYTHON] (default .venv/bin/python, which needs the `dev` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
say() { echo "release check: $*"; }

"$PY" -m build --sdist --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$PY" -m twine check --strict "$work"/dist/*
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)
if tar tzf "$sdist" | grep '/tests/' > /dev/null; then say "the sdist ships tests/ (MANIFEST.in prunes it)"; exit 1; fi
listing=$(python3 -m zipfile -l "$wheel")
for shipped in gradpower/py.typed gradpower/experiments/claims.toml gradpower/configs/tiny-shakespeare.toml \
               gradpower/optim/csrc/onepass_cpu.cpp; do
  grep -q "$shipped" <<< "$listing" || { say "the wheel lacks $shipped"; exit 1; }
done
say "built $(basename "$sdist") and $(basename "$wheel"); twine check passed"

# A fresh environment outside the clone: the wheel alone (torch as the Makefile installs it).
"$PY" -m venv "$work/venv"
# pip's output goes to a log, shown when an install fails
pip() { "$work/venv/bin/python" -m pip install -q "$@" >> "$work/pip.log" 2>&1 || { tail -20 "$work/pip.log"; return 1; }; }
pip "torch==2.13.0" || pip "torch>=2.9,<2.15"
pip "$wheel"
cd "$work"
"$work/venv/bin/python" - <<'PYTHON'
import importlib.metadata
import importlib.util

import torch

import gradpower
from gradpower.optim import routes

assert importlib.metadata.version("gradpower") == gradpower.__version__
for extra in ("scipy", "tokenizers", "matplotlib", "datasets"):  # the library needs none of the harness's packages
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed without the train extra"
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
opt = gradpower.AdamPower(model.parameters(), lr=1e-2, p=1.2)
assert routes.cpp_ops() is not None, "the C++ kernel did not build"
controller = gradpower.PowerController(every=5)
tracked = gradpower.AdamPower(model.parameters(), lr=1e-3, p=controller)
x, y = torch.randn(64, 16), torch.randn(64, 1)
for optimizer in (opt, tracked):
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
assert controller.take_update() is not None, "the PowerController made no update"
print("release check: AdamPower (C++ route) and a PowerController update in a fresh environment")
PYTHON
"$work/venv/bin/gradpower" --version
"$work/venv/bin/gradpower" compare --help > /dev/null

# With the harness.
pip "$wheel[train]"
"$work/venv/bin/gradpower" train --preset llama-pico --steps 4 --batch-size 2 --eval-tokens 512 --out "$work/train" \
  > "$work/train.log" 2>&1 || { tail -20 "$work/train.log"; exit 1; }
# The shipped claims file, from the installed package: a ladder claim and the size family (the suite runs every
# claim at this budget from the clone; all of them here would take the CI past its 15 minutes).
"$work/venv/bin/gradpower" claims --budget micro --only C9,C12 --out "$work/claims" > "$work/claims.log" 2>&1 \
  || { tail -20 "$work/claims.log"; exit 1; }
tail -1 "$work/claims.log"
say "passed in $(( $(date +%s) - started )) s"
