"""The toy model: closed forms against numerical integration, simulation against the limit, the CLI."""

import csv

import numpy as np
import pytest
from scipy import integrate

from gradpower.cli import main
from gradpower.theory import best_p, simulate_update, uniform_moments, update_limit


@pytest.mark.parametrize(
    "mu, sigma", [(1e-6, 0.0), (1e-6, 5e-7), (1e-6, 2e-6), (1e-6, 5e-5), (-2e-6, 3e-6), (0.3, 0.1)]
)
@pytest.mark.parametrize("p", [0.5, 1.0, 1.2, 2.3])
def test_closed_forms_match_numerical_integration(mu, sigma, p):
    first, second = uniform_moments(p, mu, sigma)
    if sigma == 0:
        assert float(first) == pytest.approx(np.sign(mu) * abs(mu) ** p, rel=1e-12)
        assert float(second) == pytest.approx(abs(mu) ** (2 * p), rel=1e-12)
        return
    a, b = mu - sigma, mu + sigma
    scale = max(abs(a), abs(b))  # integrate on [-1, 1]-sized numbers, then scale back
    phi = integrate.quad(lambda x: np.sign(x) * abs(x) ** p, a / scale, b / scale, points=[0.0], epsabs=0,
                         epsrel=1e-12)[0] * scale ** (p + 1) / (b - a)
    moment = integrate.quad(lambda x: abs(x) ** (2 * p), a / scale, b / scale, points=[0.0], epsabs=0,
                            epsrel=1e-12)[0] * scale ** (2 * p + 1) / (b - a)
    assert float(first) == pytest.approx(phi, rel=1e-8)
    assert float(second) == pytest.approx(moment, rel=1e-8)


def test_simulation_approaches_the_closed_form_as_betas_go_to_one():
    ps = np.array([0.8, 1.2, 1.6])
    limit = update_limit(ps, 1e-6, 5e-6)
    short = simulate_update(ps, 1e-6, 5e-6, beta1=0.9, beta2=0.95, steps=20000, chains=4)
    long = simulate_update(ps, 1e-6, 5e-6, beta1=0.99, beta2=0.999, steps=40000, chains=16)
    err_short = np.abs(short / limit - 1)
    err_long = np.abs(long / limit - 1)
    assert np.all(err_long < err_short)
    assert np.all(err_long < 0.01), err_long


def test_the_curves_show_what_the_theory_says():
    ps = np.round(np.arange(0.5, 2.51, 0.05), 10)
    ratios = np.array([0.5, 2.0, 5.0, 10.0, 50.0])[:, None]
    limit = update_limit(ps[None, :], 1e-6, ratios * 1e-6)
    optimal = best_p(ps, limit)
    assert optimal[0] == ps[0]  # low noise: the smallest p gives the largest update
    assert np.all(np.diff(limit[0]) < 0)
    assert np.all(optimal[2:] > 1.0)  # strong noise: a maximum at some p > 1 ...
    assert np.all(np.diff(optimal) >= 0)  # ... growing with sigma/mu
    strong = limit[3]
    assert strong[0] < strong.max() > strong[-1]  # rises, then falls


def test_theory_command_writes_the_tables_and_figure(tmp_path, capsys):
    out = tmp_path / "theory"
    assert main(["theory", "--steps", "2000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "optimal p" in printed and "| 50 |" in printed
    with open(out / "theory.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["p", "mu", "sigma", "eps", "update_sim", "update_limit"]
    assert len(rows) == 5 * 41
    with open(out / "optimal_p.csv") as f:
        optimal = list(csv.DictReader(f))
    assert [r["sigma_over_mu"] for r in optimal] == ["0.5", "2", "5", "10", "50"]
    assert float(optimal[0]["p_opt_limit"]) == 0.5 and float(optimal[-1]["p_opt_limit"]) > 1
    assert (out / "theory.png").stat().st_size > 10_000
    assert main(["theory", "--p-grid", "0.5:2.5:0.1", "--out", str(out)]) == 2
    assert "at most 0.05 apart" in capsys.readouterr().err


def test_theory_adagrad_command(tmp_path, capsys):
    out = tmp_path / "adagrad"
    assert main(["theory", "adagrad", "--steps", "60", "--seeds", "2", "--p-grid", "1.0,1.2", "--out", str(out)]) == 0
    assert "p=1.2" in capsys.readouterr().out
    with open(out / "adagrad.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sigma", "p", "seed", "step", "loss"]
    assert {(r["sigma"], r["p"]) for r in rows} == {("0.1", "1.0"), ("0.1", "1.2"), ("3.0", "1.0"), ("3.0", "1.2")}
    assert (out / "adagrad.png").exists()
