"""How sure is a mean, and do two rankings agree? The bootstrap, Wilson's interval and Kendall's tau."""

from __future__ import annotations

import torch

__all__ = ["bootstrap_ci", "proportion_ci", "kendall_tau"]


def bootstrap_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani 1993, Sec. 13.3).

    Draws ``resamples`` samples of the same size with replacement (CPU
    generator seeded ``seed``, so every machine gets the same interval) and
    returns the (1 - level)/2 and (1 + level)/2 quantiles of their means. The
    values are taken in float64, so the interval does not depend on threads.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if v.numel() == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    index = torch.randint(0, v.numel(), (resamples, v.numel()), generator=torch.Generator().manual_seed(seed))
    means = v[index].mean(1)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(low), float(high)


def proportion_ci(hits, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a hit rate (Wilson 1927; Brown, Cai & DasGupta 2001, Eq. 4).

    For k hits in n trials, p = k / n and z the (1 + level) / 2 normal quantile::

        (p + z^2 / 2n  -/+  z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)

    computed by ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.
    For 0/1 values (a pointing game's hits) use it instead of
    :func:`bootstrap_ci`: a bootstrap of n hits out of n only ever resamples
    ones, and gives the zero-width interval [1, 1].
    """
    from scipy.stats import binomtest

    v = torch.as_tensor(hits, dtype=torch.float64).flatten().cpu()
    if v.numel() == 0:
        raise ValueError("proportion_ci needs at least one value")
    if not bool(((v == 0) | (v == 1)).all()):
        raise ValueError("proportion_ci takes hits as 0 or 1 (or False/True); for other values use bootstrap_ci")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    interval = binomtest(int(v.sum()), v.numel()).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two score lists (Kendall 1945, Eq. 1): agreement of the orders they imply.

    (concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b)) over all
    n0 = n(n-1)/2 pairs, as ``scipy.stats.kendalltau``; 1 is the same ranking,
    -1 the reverse, 0 unrelated. 0 if either list is constant.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"kendall_tau needs two lists of the same length >= 2, got {a.numel()} and {b.numel()}")
    da = torch.sign(a[:, None] - a[None, :]).triu(1)
    db = torch.sign(b[:, None] - b[None, :]).triu(1)
    pairs_a, pairs_b = da.abs().sum(), db.abs().sum()  # pairs not tied in a, in b
    if pairs_a == 0 or pairs_b == 0:
        return 0.0
    return float((da * db).sum() / torch.sqrt(pairs_a * pairs_b))
