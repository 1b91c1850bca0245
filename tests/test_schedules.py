"""Schedules against their closed formulas at the boundaries."""

import math

import pytest
import torch

from gradpower import build_optimizer
from gradpower.train import build_scheduler, lr_multiplier

from .helpers import TinyNet

W, T, M = 10, 100, 0.1


def test_cos_boundaries():
    f = lr_multiplier("cos", warmup=W, total=T, min_ratio=M)
    assert f(0) == pytest.approx(1 / W)            # first warm-up step
    assert f(W - 1) == pytest.approx(1.0)          # end of warm-up reaches the peak
    assert f(W) == pytest.approx(1.0)              # decay starts at the peak
    mid = W + (T - 1 - W) / 2
    assert f(int(mid)) == pytest.approx(M + (1 - M) * 0.5 * (1 + math.cos(math.pi * (int(mid) - W) / (T - 1 - W))))
    assert f(T - 1) == pytest.approx(M)            # last step reaches lr_min


def test_wsd_boundaries():
    f = lr_multiplier("wsd", warmup=W, total=T, min_ratio=M, stable_frac=0.8)
    assert f(0) == pytest.approx(1 / W)
    assert f(W - 1) == pytest.approx(1.0)
    assert f(W) == f(79) == pytest.approx(1.0)     # stable until 80% of the steps
    assert f(80) == pytest.approx(1.0)             # decay starts at step 80
    assert f(81) == pytest.approx(1 - (1 - M) * 1 / 19)
    assert f(T - 1) == pytest.approx(M)            # linear to lr_min at the last step


def test_constant_and_no_warmup():
    f = lr_multiplier("constant", warmup=5, total=T)
    assert [f(s) for s in (0, 4, 5, 99)] == pytest.approx([0.2, 1.0, 1.0, 1.0])
    g = lr_multiplier("cos", warmup=0, total=T)
    assert g(0) == pytest.approx(1.0) and g(T - 1) == pytest.approx(0.1)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="valid: cos, wsd, constant"):
        lr_multiplier("linear", warmup=1, total=10)
    with pytest.raises(ValueError, match="warmup"):
        lr_multiplier("cos", warmup=10, total=10)


@pytest.mark.parametrize("name", ["muonpower", "adampower"])
def test_schedule_drives_every_group(name):
    opt = build_optimizer(name, TinyNet().named_parameters(), lr=1e-3, blockwise_lr=True)
    base = [g["lr"] for g in opt.param_groups]
    sched = build_scheduler(opt, "wsd", warmup=2, total=10, min_ratio=0.1, stable_frac=0.5)
    f = lr_multiplier("wsd", warmup=2, total=10, min_ratio=0.1, stable_frac=0.5)
    for step in range(10):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * f(step) for b in base])
        opt.step()
        sched.step()
    assert len(set(base)) > 1  # blockwise groups really have different base lrs
    assert isinstance(opt, torch.optim.Optimizer)
