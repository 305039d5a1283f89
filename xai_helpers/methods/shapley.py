"""Shapley values and the Kernel SHAP regression, shared by the image and the tabular methods.

* :func:`shapley_values`: exact values by enumerating the 2^M coalitions;
* :func:`shapley_kernel`: the weight of a coalition in Kernel SHAP's regression;
* :func:`kernel_shap_design`: the coalitions and weights Kernel SHAP fits on;
* :func:`constrained_wls`: the weighted least squares under local accuracy.
"""

from __future__ import annotations

import math

import torch

from ..engine.inputs import positive_int

__all__ = ["shapley_kernel", "shapley_values", "kernel_shap_design", "constrained_wls", "all_coalitions"]


def shapley_kernel(m: int, size: torch.Tensor) -> torch.Tensor:
    """The Shapley kernel (Lundberg & Lee 2017, Theorem 2): pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)).

    Infinite for |z| = 0 and |z| = M; those two coalitions enter as constraints instead.
    """
    size = size.double()
    binom = torch.exp(torch.lgamma(torch.tensor(m + 1.0, dtype=torch.float64)) - torch.lgamma(size + 1) - torch.lgamma(m - size + 1))
    return (m - 1) / (binom * size * (m - size))


def all_coalitions(m: int) -> torch.Tensor:
    """Every z with 0 < |z| < M: (2^M - 2, M)."""
    codes = torch.arange(1, 2**m - 1)
    return ((codes[:, None] >> torch.arange(m)) & 1).to(torch.int64)


def _sample_coalitions(m: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Paired sampling: sizes drawn with probability proportional to the kernel's mass
    C(M, s) pi(s) = (M - 1) / (s (M - s)), each z followed by its complement (equal weights)."""
    sizes = torch.arange(1, m)
    mass = (m - 1) / (sizes * (m - sizes)).double()
    pairs = (samples + 1) // 2
    chosen = sizes[torch.multinomial(mass / mass.sum(), pairs, replacement=True, generator=generator)]
    order = torch.rand(pairs, m, generator=generator).argsort(1)
    z = (order < chosen[:, None]).to(torch.int64)
    return torch.stack([z, 1 - z], 1).reshape(-1, m)[:samples]


def kernel_shap_design(m: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel SHAP's coalitions and weights for M players: every coalition with its Shapley
    kernel weight when ``samples`` >= 2^M - 2 (exact), else paired samples of weight 1."""
    if samples >= 2**m - 2:
        z = all_coalitions(m)
        return z, shapley_kernel(m, z.sum(1))
    z = _sample_coalitions(m, samples, torch.Generator().manual_seed(seed))
    return z, torch.ones(z.shape[0], dtype=torch.float64)


def constrained_wls(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """argmin sum w (y - z phi)^2 subject to sum phi = total, by substituting phi_M = total - sum_{j<M} phi_j."""
    xr = z[:, :-1] - z[:, -1:]
    yr = y - z[:, -1] * total
    sw = w.sqrt()
    head = torch.linalg.lstsq(xr * sw[:, None], (yr * sw)[:, None]).solution[:, 0]
    return torch.cat([head, (total - head.sum()).reshape(1)])


def shapley_values(value, m: int) -> torch.Tensor:
    """Exact Shapley values by enumeration (Shapley 1953; Lundberg & Lee 2017, Eq. 8): (M,) float64.

    .. math::
        \\phi_j = \\sum_{S \\subseteq F \\setminus \\{j\\}} \\frac{|S|!\\,(M - |S| - 1)!}{M!}
                  \\big(v(S \\cup \\{j\\}) - v(S)\\big)

    ``value`` maps a (K, M) 0/1 tensor of coalitions to their (K,) values
    v(S); it is called once, on all 2^M coalitions. Meant for small M (2^M
    model calls); M <= 16 is enforced.
    """
    m = positive_int("m", m)
    if m > 16:
        raise ValueError(f"enumerating 2^{m} coalitions is too many; use kernel_shap's sampling for M > 16")
    codes = torch.arange(2**m)
    z = ((codes[:, None] >> torch.arange(m)) & 1).to(torch.int64)
    v = torch.as_tensor(value(z), dtype=torch.float64).reshape(-1).cpu()
    phi = torch.zeros(m, dtype=torch.float64)
    fact = [math.factorial(k) for k in range(m + 1)]
    for j in range(m):
        without = z[:, j] == 0
        s = z[without].sum(1)
        weight = torch.tensor([fact[k] * fact[m - k - 1] / fact[m] for k in s.tolist()], dtype=torch.float64)
        phi[j] = (weight * (v[codes[without] | (1 << j)] - v[codes[without]])).sum()
    return phi
