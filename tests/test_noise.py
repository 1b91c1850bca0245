"""Gradient statistics and the predicted p: estimators on known distributions, the Gaussian formulas
against Monte Carlo, a probe that changes nothing, and --p auto resuming exactly."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from gradpower.cli import main
from gradpower.diagnostics import P_GRID, Measurement, MicroBatchProbe, MovingAverageProbe, predict_p, summary_rows
from gradpower.diagnostics.predict import choose_p
from gradpower.theory import gaussian_moments, update_limit
from gradpower.train import TrainConfig, train

from .helpers import MICRO_EVAL_TOKENS


def synthetic_probe(mu, sigma, k=8, steps=25, seed=0):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.zeros(mu.numel()))
    probe = MicroBatchProbe([("model.layers.0.mlp.up_proj.weight", p)], sample=mu.numel())
    for _ in range(steps):
        probe.start_step(k, 4)
        p.grad = None
        for _ in range(k):
            g = mu + sigma * torch.randn(mu.numel())
            p.grad = g / k if p.grad is None else p.grad + g / k
            probe.after_backward()
        probe.end_step()
    order = np.argsort(probe.samples["model.layers.0.mlp.up_proj.weight"].index.numpy())
    return probe.measurement(), order


def test_micro_batch_estimators_recover_known_mean_noise_and_noise_scale():
    n = 4000
    mu = torch.linspace(-1, 1, n) * 1e-3
    sigma = torch.linspace(0.5, 3, n) * 1e-3
    meas, order = synthetic_probe(mu, sigma)
    samples = 8 * 25
    # Means within 5 standard errors everywhere; noise within 25% each (a chi distribution with 175
    # degrees of freedom: 5% standard error) and within 1% on average.
    assert np.all(np.abs(meas.mu[order] - mu.numpy()) < 5 * sigma.numpy() / np.sqrt(samples))
    assert np.allclose(meas.sigma_micro[order], sigma.numpy(), rtol=0.25)
    assert np.mean(meas.sigma_micro[order] / sigma.numpy()) == pytest.approx(1.0, abs=0.01)
    # B_simple = tr(Sigma_per_sequence) / |G|^2 with micro-batches of 4 sequences.
    expected = float((sigma.double() ** 2).sum() * 4 / (mu.double() ** 2).sum())
    assert meas.noise_scale() == pytest.approx(expected, rel=0.1)
    assert meas.sigma_at(16)[0] == pytest.approx(meas.sigma_micro[0] / 2)  # sqrt(4 / 16)
    # The signal estimate removes the mean's own sampling noise: its square is unbiased for mu^2.
    assert np.mean(meas.signal**2) == pytest.approx(float((mu.double() ** 2).mean()), rel=0.05)
    assert np.mean(meas.mu**2) > 1.02 * float((mu.double() ** 2).mean())  # the raw mean overstates it


def test_moving_average_estimator_for_one_micro_batch_per_step():
    torch.manual_seed(1)
    n = 2000
    mu, sigma = torch.full((n,), 2e-3), torch.full((n,), 1e-3)
    p = torch.nn.Parameter(torch.zeros(n))
    probe = MovingAverageProbe([("model.layers.0.self_attn.q_proj.weight", p)], sample=n, beta=0.99)
    for _ in range(3000):
        p.grad = mu + sigma * torch.randn(n)
        probe.observe(8)
    meas = probe.measurement()
    assert np.mean(meas.mu) == pytest.approx(2e-3, rel=0.02)
    assert np.mean(meas.sigma_micro) == pytest.approx(1e-3, rel=0.1)


@pytest.mark.parametrize("mu, sigma", [(1.0, 1.0), (0.3, 2.0), (-1.0, 0.4), (6.0, 1.0)])
@pytest.mark.parametrize("p", [0.6, 1.2, 2.2])
def test_gaussian_moments_match_monte_carlo(mu, sigma, p):
    rng = np.random.default_rng(0)
    x = rng.normal(mu, sigma, 2_000_000)
    first, second = gaussian_moments(p, mu, sigma)
    mc_first = np.mean(np.sign(x) * np.abs(x) ** p)
    mc_second = np.mean(np.abs(x) ** (2 * p))
    se_first = np.std(np.sign(x) * np.abs(x) ** p) / np.sqrt(x.size)
    se_second = np.std(np.abs(x) ** (2 * p)) / np.sqrt(x.size)
    assert abs(float(first) - mc_first) < 5 * se_first
    assert abs(float(second) - mc_second) < 5 * se_second
    u = update_limit(p, mu * 1e-6, sigma * 1e-6, 1e-8, "gaussian")
    assert np.isfinite(u) and np.sign(u) == np.sign(mu)


def _mpmath_moments(p: float, t: float) -> tuple[float, float]:
    """E[sign(g)|g|^p] and E|g|^(2p) for g ~ N(t, 1), in 40-digit arithmetic (an independent reference)."""
    import mpmath

    with mpmath.workdps(40):
        q, t = mpmath.mpf(2 * p), mpmath.mpf(t)
        z = -t * t / 2
        root_pi = mpmath.sqrt(mpmath.pi)
        second = 2 ** (q / 2) * mpmath.gamma((q + 1) / 2) / root_pi * mpmath.hyp1f1(-q / 2, 0.5, z)
        first = 2 ** ((p + 1) / 2) * t * mpmath.gamma(mpmath.mpf(p + 2) / 2) / root_pi \
            * mpmath.hyp1f1(mpmath.mpf(1 - p) / 2, 1.5, z)
        return float(first), float(second)


def test_gaussian_moments_match_mpmath_over_the_whole_range():
    """p in [0.3, 3], mu/sigma from 1e-3 to 1e3 (dense through 5-200, where 1F1 used to overflow)."""
    ps = np.linspace(0.3, 3.0, 7)
    ts = np.concatenate([np.logspace(-3, 3, 40), np.linspace(5, 200, 25)])
    for p in ps:
        for t in ts:
            ref_first, ref_second = _mpmath_moments(float(p), float(t))
            first, second = gaussian_moments(p, t, 1.0)
            assert float(first) == pytest.approx(ref_first, rel=1e-6), (p, t)
            assert float(second) == pytest.approx(ref_second, rel=1e-6), (p, t)


def test_gaussian_update_is_finite_and_within_jensen_bound_everywhere():
    """|E phi| <= sqrt(E phi^2): the eps-free update lies in [0, 1] for mu > 0 at every grid point."""
    p, t = np.meshgrid(np.linspace(0.3, 3.0, 55), np.concatenate([np.logspace(-3, 3, 600), np.linspace(5, 200, 4000)]))
    u = update_limit(p, t * 4.57e-5, 4.57e-5, 0.0, "gaussian")
    assert np.isfinite(u).all()
    assert u.min() >= 0 and u.max() <= 1 + 1e-12
    # The point of the report: quadrature gives 0.99813 here; 1F1 overflowed to inf.
    assert float(update_limit(1.2, 4.57e-5, 8.583e-7, 1e-8, "gaussian")) == pytest.approx(0.99813, abs=1e-5)


def test_predicted_p_follows_the_theory_on_synthetic_gradients():
    """Strong noise at small batch -> p* > 1; the same gradients at a large batch -> a smaller p*."""
    n = 3000
    mu = torch.full((n,), 1e-6)
    sigma = torch.full((n,), 4e-5)  # per micro-batch of 4: sigma/mu = 40
    meas, _ = synthetic_probe(mu, sigma, k=8, steps=30)
    small, _ = predict_p(meas, 4)
    large, _ = predict_p(meas, 4096)
    assert small > 1.0
    assert large < small


def tiny(tmp_path, **kw):
    base = dict(preset="llama-tiny", seq_len=16, batch_size=8, micro_batch_size=2, steps=10, eval_every=5,
                eval_batches=1, log_every=1, bpe_vocab_size=300, cache_dir=str(tmp_path / "cache"),
                out=str(tmp_path / "run"), device="cpu", eval_tokens=MICRO_EVAL_TOKENS)
    return TrainConfig(**{**base, **kw})


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_probe_leaves_the_gradients_and_the_run_bit_identical(tmp_path):
    plain = records(train(tiny(tmp_path / "a")).run_dir)
    probed = records(train(tiny(tmp_path / "b", noise_every=3)).run_dir)
    assert [(r["loss"], r["grad_norm"], r.get("val_loss")) for r in plain] == \
           [(r["loss"], r["grad_norm"], r.get("val_loss")) for r in probed]
    noise = [r["noise"] for r in probed if "noise" in r]
    assert len(noise) == 3 and all(n["p_star_gaussian"] > 0 and n["b_simple"] for n in noise)
    single = records(train(tiny(tmp_path / "c", micro_batch_size=None, noise_every=5)).run_dir)
    assert [r["step"] for r in single if "noise" in r] == [5, 10]  # moving averages with one micro-batch


def test_p_auto_chooses_logs_and_resumes_exactly(tmp_path):
    cfg = tiny(tmp_path, p="auto", p_auto_steps=4, ckpt_every=2)
    straight = records(train(dataclasses.replace(cfg, out=str(tmp_path / "straight"))).run_dir)
    chosen = [r for r in straight if "p_auto" in r]
    assert len(chosen) == 1 and chosen[0]["step"] == 4 and 0.3 <= chosen[0]["p_auto"] <= 2.5
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["resolved"]["p"] == chosen[0]["p_auto"] and config["train"]["p_auto"] is True
    for stop in (3, 6):  # interrupted during the measurement, and after the choice
        out = tmp_path / f"cut{stop}"
        train(dataclasses.replace(cfg, out=str(out), stop_after=stop))
        train(dataclasses.replace(cfg, out=str(out), resume=True))
        assert [(r["step"], r["loss"], r.get("p_auto")) for r in records(out)] == \
               [(r["step"], r["loss"], r.get("p_auto")) for r in straight]


def test_coordinates_without_a_resolvable_mean_are_counted_not_divided_by_zero():
    """A corrected mean of exactly 0 is reported as a weighted share and kept out of the sigma/|mu| quantiles."""
    mu = np.array([0.0, 1e-3, -2e-3, 0.0, 4e-3])
    weights = np.array([3.0, 1.0, 1.0, 1.0, 2.0])
    meas = Measurement(np.array(["model.layers.0.mlp.up_proj.weight"] * 5), weights, mu,
                       np.full(5, 1e-3), micro_batch_size=4, micro_per_step=1, tensor_norms={}, samples=0.0)
    row = summary_rows(meas, 16, 1.2)[0]
    assert row["frac_no_mean"] == pytest.approx(4 / 8)
    ratios = 1e-3 * np.sqrt(4 / 16) / np.array([1e-3, 2e-3, 4e-3])  # sigma at batch 16 over the resolvable |mu|
    assert row["noise_ratio_q50"] == pytest.approx(np.median(ratios))
    assert row["noise_ratio_q90"] == pytest.approx(np.percentile(ratios, 90))
    _, stats = choose_p(meas, 16, 1e-8, "gaussian")
    assert stats["frac_no_mean"] == pytest.approx(0.5)
    assert stats["noise_ratio_median"] == pytest.approx(np.median(ratios))


def test_p_auto_on_the_grid_edge_warns_once_and_records_it(tmp_path, capsys, monkeypatch):
    """Almost noiseless coordinates far above eps favour the smallest p: the edge is named, not hidden."""
    import gradpower.train.noise_monitor as monitor

    real = monitor.choose_p
    monkeypatch.setattr(monitor, "choose_p", lambda meas, b, eps, noise: (float(P_GRID[0]),
                        {**real(meas, b, eps, noise)[1], "p_auto": float(P_GRID[0]), "p_auto_edge": "lower"}))
    run = train(tiny(tmp_path, p="auto", p_auto_steps=4)).run_dir
    err = capsys.readouterr().err
    assert err.count("warning: --p auto: p* = 0.3 is the lower edge of the grid [0.3, 2.5]") == 1
    assert [r["p_auto_edge"] for r in records(run) if "p_auto" in r] == ["lower"]


def test_the_grid_edge_is_named_for_both_ends():
    from gradpower.diagnostics.predict import grid_edge

    assert P_GRID[0] == pytest.approx(0.3) and P_GRID[-1] == pytest.approx(2.5)
    assert [grid_edge(p) for p in (0.3, 0.35, 1.2, 2.45, 2.5)] == ["lower", None, None, None, "upper"]


def test_p_auto_needs_a_power_optimizer_and_parses_from_the_command_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="needs a \\*power optimizer"):
        tiny(tmp_path, p="auto", optim="adamw")
    assert main(["train", "--p", "auto", "--optim", "adamw", "--out", str(tmp_path / "x")]) == 2
    assert "needs a *power optimizer" in capsys.readouterr().err


def test_noise_command_writes_the_table_and_figures(tmp_path, capsys):
    out = tmp_path / "noise"
    assert main(["noise", "--preset", "llama-tiny", "--batch-sizes", "4,64", "--micro-batch", "2",
                 "--micro-batches", "6", "--out", str(out), "--set", "seq_len=16", "--set", "bpe_vocab_size=300",
                 "--set", f"cache_dir={tmp_path / 'cache'}", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| 4 |" in printed and "| 64 |" in printed
    import csv

    with open(out / "noise.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["batch_size"] for r in rows} == {"4", "64"}
    assert {"all", "attn_qk", "mlp", "embedding"} <= {r["block"] for r in rows}
    assert all(0.3 <= float(r["p_star_uniform"]) <= 2.5 for r in rows)
    assert (out / "noise_dp.png").exists() and (out / "noise_map.png").exists()
    # a registered kind: 'gradpower report' rebuilds the tables from the saved measurement, the same numbers
    table = (out / "noise.csv").read_text()
    (out / "noise.csv").unlink()
    hint = printed.rsplit("(", 1)[-1]
    assert f"report {out}' rebuilds the tables" in hint
    assert main(["report", str(out)]) == 0 and (out / "noise.csv").read_text() == table
    assert "| 4 |" in capsys.readouterr().out
    (out / "measurement.npz").write_bytes(b"damaged")
    assert main(["report", str(out)]) == 2
    assert "measurement.npz: the saved measurement cannot be read" in capsys.readouterr().err
