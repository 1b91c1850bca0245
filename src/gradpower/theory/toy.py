"""The paper's toy model (Example 4.1): AdamPower's update along a flat, noisy direction.

Stochastic gradients g = mu + sigma * xi with xi uniform on [-1, 1], so g is
uniform on [a, b] = [mu - sigma, mu + sigma]. AdamPower feeds phi_p(g) =
sign(g) |g|^p to Adam, whose (bias-corrected, weight decay 0) update is
u_t = m_t / (sqrt(v_t) + eps).

Long-averaging limit (beta1, beta2 -> 1): m -> E[phi_p(g)], v -> E[|g|^(2p)],

    u(p) = E[phi_p(g)] / (sqrt(E[|g|^(2p)]) + eps).

Closed forms for uniform g (derivation): an antiderivative of sign(g)|g|^p is
|g|^(p+1)/(p+1), and of |g|^(2p) is sign(g)|g|^(2p+1)/(2p+1), so

    E[phi_p(g)]   = (|b|^(p+1) - |a|^(p+1)) / ((p+1)(b-a)),
    E[|g|^(2p)]   = (sign(b)|b|^(2p+1) - sign(a)|a|^(2p+1)) / ((2p+1)(b-a)),

valid whether or not [a, b] contains 0; at sigma = 0 they are mu^p and mu^(2p).

Gaussian noise, g ~ N(mu, sigma^2), t = mu / sigma (Winkelbauer 2012, "Moments
and absolute moments of the normal distribution"; checked against Monte Carlo
in the tests):

    E|g|^q         = sigma^q 2^(q/2) Gamma((q+1)/2) / sqrt(pi) 1F1(-q/2; 1/2; -t^2/2),
    E[sign(g)|g|^q] = sigma^q 2^((q+1)/2) t Gamma((q+2)/2) / sqrt(pi) 1F1((1-q)/2; 3/2; -t^2/2),

1F1 at large negative arguments cancels catastrophically (SciPy's ``hyp1f1``
returns inf or garbage at scattered points with |t| between 5 and 200), so
it is evaluated through Kummer's transformation 1F1(a; b; z) = e^z 1F1(b - a; b; -z),
whose power series has only positive terms here (b - a > 0, -z >= 0) and is
summed directly: no cancellation, and no SciPy, so the optimizer library's
``PowerController`` (which predicts p from these moments) needs torch and
numpy alone. Beyond |t| = 10 the large-t
expansion of a noisy power is used instead,

    E|g|^q ~ |mu|^q sum_k C(q, 2k) (2k - 1)!! t^(-2k),

the same series for E[sign(g)|g|^q] up to sign(mu) (the two differ by the
probability mass below 0, of order e^(-t^2/2) < 1e-21 relative); it is exact
at sigma = 0 (the point mass mu^q). Both agree with mpmath to 1e-12 relative
over p in [0.3, 3] and |t| in [1e-3, 1e3] (tested). This module is the single
source of these formulas for ``gradpower theory``, ``gradpower noise`` and ``--p auto``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadInput

#: Below this sigma/|mu| the interval formulas lose precision to cancellation; use the sigma -> 0 limit.
_DEGENERATE = 1e-9


def _signed_pow(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** q


def uniform_moments(p: np.ndarray | float, mu: np.ndarray | float, sigma: np.ndarray | float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """E[phi_p(g)] and E[|g|^(2p)] for g uniform on [mu - sigma, mu + sigma] (broadcasting)."""
    p, mu, sigma = np.broadcast_arrays(np.asarray(p, float), np.asarray(mu, float), np.asarray(sigma, float))
    a, b = mu - sigma, mu + sigma
    width = np.where(sigma > _DEGENERATE * np.abs(mu), b - a, 1.0)
    first = (np.abs(b) ** (p + 1) - np.abs(a) ** (p + 1)) / ((p + 1) * width)
    second = (_signed_pow(b, 2 * p + 1) - _signed_pow(a, 2 * p + 1)) / ((2 * p + 1) * width)
    point = sigma <= _DEGENERATE * np.abs(mu)
    first = np.where(point, _signed_pow(mu, p), first)
    second = np.where(point, np.abs(mu) ** (2 * p), second)
    return first, second


NOISE_MODELS = ("uniform", "gaussian")

#: Beyond this |mu| / sigma the Gaussian moments use the large-t series (its terms fall off as (q / t)^2).
_LARGE_T = 10.0


def _noisy_power(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sum_k C(q, 2k) (2k - 1)!! t^(-2k): E|g|^q / |mu|^q for |t| = |mu| / sigma >= _LARGE_T (1 at t = inf).

    Term k is term k-1 times (q - 2k + 2)(q - 2k + 1) / (2k t^2); summed until the terms stop shrinking
    (an asymptotic series) or fall below float64's resolution.
    """
    inv = 1.0 / (t * t)
    total = np.ones_like(q)
    term = np.ones_like(q)
    for k in range(1, 60):
        nxt = term * (q - 2 * k + 2) * (q - 2 * k + 1) / (2 * k) * inv
        growing = np.abs(nxt) >= np.abs(term)
        term = np.where(growing, 0.0, nxt)
        total = total + term
        if not np.any(np.abs(term) > 1e-17 * np.abs(total)):
            break
    return total


#: Log-gamma elementwise (the standard library's, on arrays).
_gammaln = np.vectorize(math.lgamma, otypes=[float])


def _hyp1f1_positive(a: np.ndarray, b: float, x: np.ndarray) -> np.ndarray:
    """1F1(a; b; x) = sum_k (a)_k / (b)_k x^k / k! for a > 0, b > 0, x >= 0: every term positive, so the sum loses
    nothing to cancellation. Term k is term k-1 times (a + k - 1) x / ((b + k - 1) k); the terms rise until k ~ x
    and then fall faster than geometrically, so the sum stops when every term is below float64's resolution of its
    total (x < 50 here: a few hundred terms)."""
    a, x = np.broadcast_arrays(np.asarray(a, float), np.asarray(x, float))
    total, term = np.ones_like(x), np.ones_like(x)
    for k in range(1, 2000):
        term = term * (a + k - 1) * x / ((b + k - 1) * k)
        total = total + term
        if k > x.max(initial=0.0) and not np.any(term > 1e-17 * total):
            break
    return total


def _hyp1f1_negative(a: np.ndarray, b: float, z: np.ndarray) -> np.ndarray:
    """1F1(a; b; z) for z <= 0 by Kummer's transformation (a positive-term series, no cancellation)."""
    return np.exp(z) * _hyp1f1_positive(b - a, b, -z)


def gaussian_moments(p: np.ndarray | float, mu: np.ndarray | float, sigma: np.ndarray | float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """E[phi_p(g)] and E[|g|^(2p)] for g ~ N(mu, sigma^2) (broadcasting; closed forms above)."""
    p, mu, sigma = np.broadcast_arrays(np.asarray(p, float), np.asarray(mu, float), np.asarray(sigma, float))
    q = 2 * p
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sigma > 0, mu / np.where(sigma > 0, sigma, 1.0), np.where(mu == 0, 0.0, np.sign(mu) * np.inf))
    large = np.abs(t) >= _LARGE_T
    zero = (sigma == 0) & (mu == 0)  # g = 0 always: both moments are 0
    # The hypergeometric forms, on a safe stand-in where the series takes over.
    s = np.where(large | zero, 1.0, sigma)
    ts = np.where(large, 0.0, t)
    z = -ts * ts / 2
    log_c2 = q * np.log(s) + q / 2 * np.log(2) + _gammaln((q + 1) / 2) - 0.5 * np.log(np.pi)
    second = np.exp(log_c2) * _hyp1f1_negative(-q / 2, 0.5, z)
    log_c1 = p * np.log(s) + (p + 1) / 2 * np.log(2) + _gammaln((p + 2) / 2) - 0.5 * np.log(np.pi)
    first = np.exp(log_c1) * ts * _hyp1f1_negative((1 - p) / 2, 1.5, z)
    if large.any():  # the series only where it is used (it is summed until its slowest element converges)
        first, second = np.array(first, dtype=float), np.array(second, dtype=float)  # writable, scalars too
        t_large, mu_large = t[large], mu[large]
        first[large] = _signed_pow(mu_large, p[large]) * _noisy_power(p[large], t_large)
        second[large] = np.abs(mu_large) ** q[large] * _noisy_power(q[large], t_large)
    return np.where(zero, 0.0, first), np.where(zero, 0.0, second)


def update_limit(p: np.ndarray | float, mu: float | np.ndarray, sigma: np.ndarray | float, eps: float = 1e-8,
                 noise: str = "uniform") -> np.ndarray:
    """The long-averaging AdamPower update E[phi_p(g)] / (sqrt(E[|g|^(2p)]) + eps) (uniform or Gaussian noise)."""
    if noise not in NOISE_MODELS:
        raise BadInput(f"unknown noise model {noise!r}; valid: {', '.join(NOISE_MODELS)}")
    first, second = (uniform_moments if noise == "uniform" else gaussian_moments)(p, mu, sigma)
    return first / (np.sqrt(second) + eps)


def simulate_update(
    p: np.ndarray, mu: float, sigma: np.ndarray, eps: float = 1e-8, beta1: float = 0.9, beta2: float = 0.95,
    steps: int = 20000, chains: int = 8, burn_in: int | None = None, seed: int = 0,
) -> np.ndarray:
    """Long-run mean of Adam's bias-corrected update u_t on phi_p(g_t), g_t = mu + sigma * U[-1, 1].

    ``p`` and ``sigma`` broadcast against each other; each value runs
    ``chains`` independent chains of ``steps`` steps, and the mean of u_t
    after ``burn_in`` steps (default: 5 / (1 - beta2), when the moments have
    forgotten their zero start) is averaged over chains. Same noise draws for
    every p, so curves over p are smooth.
    """
    p_arr, sigma_arr = np.broadcast_arrays(np.asarray(p, float), np.asarray(sigma, float))
    burn = int(5 / (1 - beta2)) if burn_in is None else burn_in
    if burn >= steps:
        raise BadInput(f"steps ({steps}) must exceed the burn-in ({burn}) of beta2={beta2}")
    rng = np.random.default_rng(seed)
    shape = p_arr.shape + (chains,)
    pp, ss = p_arr[..., None], sigma_arr[..., None]
    m = np.zeros(shape)
    v = np.zeros(shape)
    total = np.zeros(shape)
    for t in range(1, steps + 1):
        xi = rng.uniform(-1.0, 1.0, size=(chains,))
        g = mu + ss * xi
        phi = _signed_pow(g, pp)
        m = beta1 * m + (1 - beta1) * phi
        v = beta2 * v + (1 - beta2) * phi * phi
        if t > burn:
            total += (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    return (total / (steps - burn)).mean(axis=-1)


def best_p(p_grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The p of the largest update along the last axis of ``values`` (one per leading index)."""
    return np.asarray(p_grid)[np.argmax(values, axis=-1)]


def grid_edge(p_star: float, ps: np.ndarray) -> str | None:
    """``"lower"`` or ``"upper"`` when ``p_star`` is an end of the grid ``ps`` (the optimum may lie beyond)."""
    if p_star <= float(np.min(ps)):
        return "lower"
    if p_star >= float(np.max(ps)):
        return "upper"
    return None


def edge_warning(what: str, p_star: float, ps: np.ndarray) -> str | None:
    """One line for an optimal p on the grid's edge, or None."""
    edge = grid_edge(p_star, ps)
    if edge is None:
        return None
    return (f"{what} p* = {p_star:g} is the {edge} edge of the grid [{float(np.min(ps)):g}, {float(np.max(ps)):g}]: "
            f"the optimum may lie beyond it, so treat p* as a bound, not an estimate")
