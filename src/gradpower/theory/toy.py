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

with the point mass mu^q used beyond |t| = 100 (relative error below 1e-4).
This module is the single source of these formulas for ``gradpower theory``,
``gradpower noise`` and ``--p auto``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, hyp1f1

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


_POINT_MASS_T = 100.0
NOISE_MODELS = ("uniform", "gaussian")


def gaussian_moments(p: np.ndarray | float, mu: np.ndarray | float, sigma: np.ndarray | float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """E[phi_p(g)] and E[|g|^(2p)] for g ~ N(mu, sigma^2) (broadcasting; closed forms above)."""
    p, mu, sigma = np.broadcast_arrays(np.asarray(p, float), np.asarray(mu, float), np.asarray(sigma, float))
    point = sigma <= np.abs(mu) / _POINT_MASS_T
    s = np.where(point, 1.0, sigma)
    t = np.where(point, 0.0, mu / s)
    z = -t * t / 2
    q = 2 * p
    log_c2 = q * np.log(s) + q / 2 * np.log(2) + gammaln((q + 1) / 2) - 0.5 * np.log(np.pi)
    second = np.exp(log_c2) * hyp1f1(-q / 2, 0.5, z)
    log_c1 = p * np.log(s) + (p + 1) / 2 * np.log(2) + gammaln((p + 2) / 2) - 0.5 * np.log(np.pi)
    first = np.exp(log_c1) * t * hyp1f1((1 - p) / 2, 1.5, z)
    first = np.where(point, _signed_pow(mu, p), first)
    second = np.where(point, np.abs(mu) ** q, second)
    return first, second


def update_limit(p: np.ndarray | float, mu: float | np.ndarray, sigma: np.ndarray | float, eps: float = 1e-8,
                 noise: str = "uniform") -> np.ndarray:
    """The long-averaging AdamPower update E[phi_p(g)] / (sqrt(E[|g|^(2p)]) + eps) (uniform or Gaussian noise)."""
    if noise not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {noise!r}; valid: {', '.join(NOISE_MODELS)}")
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
        raise ValueError(f"steps ({steps}) must exceed the burn-in ({burn}) of beta2={beta2}")
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
