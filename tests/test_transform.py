"""phi_p against the float64 formula sign(g) * |g| ** p."""

import math

import pytest
import torch

from gradpower import sign_power, sign_power_


def reference(t: torch.Tensor, p: float) -> torch.Tensor:
    x = t.double()
    return torch.sign(x) * torch.abs(x) ** p


MAGNITUDES = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-12, -3e-7, 1e-3, -0.5, 1.0, -1.0, 7.5, -1e3])


@pytest.mark.parametrize("p", [0.5, 0.8, 1.2, 1.5, 2.0, 3.0])
def test_out_of_place_matches_formula_fp32(p):
    g = torch.cat([MAGNITUDES, torch.randn(1000) * 1e-4])
    out = sign_power(g, p)
    assert out.dtype == torch.float32
    # atol: results below fp32's normal range (1e-30 ** 3) are subnormal, exact only to ~1.4e-45.
    torch.testing.assert_close(out.double(), reference(g, p), rtol=2e-6, atol=2e-45)
    assert torch.equal(g[:2], MAGNITUDES[:2]), "input must not be modified"


@pytest.mark.parametrize("p", [0.7, 1.2, 2.0])
def test_zeros_stay_zero(p):
    g = torch.zeros(5)
    out = sign_power(g, p)
    assert torch.equal(out, torch.zeros(5))
    sign_power_([g, torch.zeros(3)], p)
    assert torch.equal(g, torch.zeros(5)) and not torch.isnan(g).any()


@pytest.mark.parametrize("p", [0.6, 1.2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_fp32_and_rounded_once(p, dtype):
    g = (torch.randn(4096) * 1e-2).to(dtype)
    expected = reference(g, p).to(dtype)  # exact value, rounded once to dtype
    out = sign_power(g, p)
    assert out.dtype == dtype
    # Computing in fp32 then rounding agrees with the correctly rounded value
    # except for rare double-rounding ties: allow at most one ulp.
    diff = (out.float() - expected.float()).abs()
    ulp = torch.finfo(dtype).eps * expected.float().abs()
    assert (diff <= ulp + 1e-30).all()
    inplace = g.clone()
    sign_power_([inplace, g.clone()], p)
    assert torch.equal(inplace, out)


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("p", [0.5, 1.2])
def test_in_place_list_matches_formula(foreach, p):
    grads = [torch.randn(3, 4), torch.randn(7) * 1e-6, torch.randn(2, 2, 2).double(), torch.randn(5).bfloat16()]
    expected = [reference(g, p).to(g.dtype) for g in grads]
    sign_power_(grads, p, foreach=foreach)
    for got, exp in zip(grads, expected):
        assert got.dtype == exp.dtype
        tol = 1e-2 if got.dtype == torch.bfloat16 else 2e-6
        torch.testing.assert_close(got.double(), exp.double(), rtol=tol, atol=0)


def test_single_tensor_in_place():
    g = torch.tensor([-2.0, 0.0, 3.0])
    sign_power_(g, 2.0)
    assert torch.equal(g, torch.tensor([-4.0, 0.0, 9.0]))


def test_p_one_is_exact_noop():
    g = torch.randn(100)
    before = g.clone()
    sign_power_([g], 1.0)
    assert torch.equal(g, before)
    assert torch.equal(sign_power(g, 1), before)


@pytest.mark.parametrize("bad", [0, -1.2, float("nan"), float("inf"), "1.2", None, True])
def test_invalid_p_names_the_value(bad):
    with pytest.raises(ValueError, match=r"p must be a finite number > 0, got " + repr(bad).replace("(", r"\(")[:4]):
        sign_power(torch.ones(2), bad)
    with pytest.raises(ValueError):
        sign_power_([torch.ones(2)], bad)


def test_sparse_and_complex_rejected_clearly():
    sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, -2.0], (4,))
    with pytest.raises(TypeError, match="sparse"):
        sign_power_([sparse], 1.2)
    with pytest.raises(TypeError, match="real"):
        sign_power(torch.ones(2, dtype=torch.complex64), 1.2)
    with pytest.raises(TypeError, match="floating-point"):
        sign_power(torch.ones(2, dtype=torch.int64), 1.2)


def test_large_and_tiny_magnitudes_finite():
    g = torch.tensor([1e-30, 1e-20, 1e3, -1e3])
    out = sign_power(g, 1.2)
    assert torch.isfinite(out).all()
    assert math.isclose(out[2].item(), 1e3**1.2, rel_tol=1e-6)
