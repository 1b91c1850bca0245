"""The papers' own setting as a budget: declared in the claims file, priced by ``claims --budget paper --plan``
without running anything, its GPU-hours recomputed here from the model's FLOPs per token."""

import contextlib
import io

import pytest

from gradpower.cli import main
from gradpower.experiments.claims import (
    CLAIMS_FILE,
    GPU_PEAK_FLOPS,
    GPU_UTILISATION,
    TOKEN_BLOCK,
    _spec,
    for_budget,
    load_claims,
)
from gradpower.models import count_params, preset


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_the_plan_prices_each_claim_from_its_flops_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, printed, _ = run_main(["claims", "--budget", "paper", "--plan", "--only", "C4,C8"])
    assert code == 0 and not any(tmp_path.iterdir())  # nothing ran, nothing was written
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines()
            if line.startswith("| C")}
    # C4 by hand: llama-0.2b on C4 at sequence 256, batch 8 x 64 = 512, 20 tokens per parameter, 2 arms x 3 seeds
    model = preset("llama-0.2b", max_seq_len=256)
    params = count_params(model).total
    steps = int(20 * params) // (512 * 256)
    per_token = 6 * (params - model.vocab_size * model.d_model) + 6 * model.n_layers * 256 * model.d_model
    hours = 2 * 3 * steps * 512 * 256 * per_token / (GPU_PEAK_FLOPS * GPU_UTILISATION) / 3600
    assert rows["C4"][1] == "llama-0.2b" and rows["C4"][2] == "6"
    assert int(rows["C4"][3].replace(",", "")) == steps * 512 * 256 and int(rows["C4"][4].replace(",", "")) == steps
    assert int(rows["C4"][5].replace(",", "")) == 2 * 3 * steps * 512 * 256
    assert float(rows["C4"][6].strip(" |").replace(",", "")) == pytest.approx(hours, abs=0.5)
    assert "Nothing ran." in printed and "40% of 989 TFLOP/s" in printed


def test_the_paper_budget_scales_a_claim_without_merging_its_arms():
    claims, budgets = load_claims(CLAIMS_FILE)
    c8 = next(c for c in claims if c.id == "C8")
    claim, budget = for_budget(c8, budgets["paper"])
    spec = _spec(claim, budget, 3, {}, None)
    configs = {arm.name: spec.arm_config(arm, 0, spec.headline) for arm in spec.arms}
    assert {name: cfg.batch_size for name, cfg in configs.items()} == {
        "b8 p=0.8": 512, "b8 p=1.4": 512, "b32 p=0.8": 2048, "b32 p=1.4": 2048}
    assert all(cfg.data == "c4" and cfg.seq_len == 256 and cfg.preset == "llama-0.2b" and cfg.warmup == 1000
               for cfg in configs.values())
    # equal tokens at both batch sizes: a quarter of the steps at batch 2048 (each rounded down to whole steps)
    assert configs["b8 p=0.8"].steps // 4 == configs["b32 p=0.8"].steps
    c1 = next(c for c in claims if c.id == "C1")
    assert for_budget(c1, budgets["paper"])[0].tune_lr == [1e-4, 2e-4, 3e-4, 6e-4, 1e-3, 1.5e-3]


def test_the_claims_proxys_cost_input_is_what_the_quick_plan_trains():
    """models/proxy.py sizes the claims' proxy by the quick design's headline runs: the tokens the plan totals."""
    from gradpower.models.proxy import CLAIMS_QUICK_RUNS

    code, printed, _ = run_main(["claims", "--budget", "quick", "--plan"])
    total = next(line for line in printed.splitlines() if line.startswith("| total"))
    trained = int(total.split("|")[6].replace(",", ""))
    headline = 20 * count_params(preset("llama-pico")).total // TOKEN_BLOCK * TOKEN_BLOCK
    assert round(trained / headline) == CLAIMS_QUICK_RUNS
