"""Gradient statistics and the predicted p: estimators on known distributions, the Gaussian formulas
against Monte Carlo, a probe that changes nothing, and --p auto resuming exactly."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from gradpower.cli import main
from gradpower.diagnostics import MicroBatchProbe, MovingAverageProbe, predict_p
from gradpower.theory import gaussian_moments, update_limit
from gradpower.train import TrainConfig, train


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
                out=str(tmp_path / "run"), device="cpu")
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
    assert len(chosen) == 1 and chosen[0]["step"] == 4 and 0.5 <= chosen[0]["p_auto"] <= 2.5
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["resolved"]["p"] == chosen[0]["p_auto"] and config["train"]["p_auto"] is True
    for stop in (3, 6):  # interrupted during the measurement, and after the choice
        out = tmp_path / f"cut{stop}"
        train(dataclasses.replace(cfg, out=str(out), stop_after=stop))
        train(dataclasses.replace(cfg, out=str(out), resume=True))
        assert [(r["step"], r["loss"], r.get("p_auto")) for r in records(out)] == \
               [(r["step"], r["loss"], r.get("p_auto")) for r in straight]


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
    assert all(0.5 <= float(r["p_star_uniform"]) <= 2.5 for r in rows)
    assert (out / "noise_dp.png").exists() and (out / "noise_map.png").exists()
