"""Statistics every probe shares: the tie rule, intervals and the logistic link.

One rule for ties, everywhere (probes, trainer logs, reports): a pair whose rewards are
equal earns half a point. That is the expected accuracy of breaking the tie at random; it
neither rewards a constant reward model (counting ties right) nor hides how many pairs it
could not separate (counting them wrong). ``ties`` are reported beside every accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def pair_credit(margins: np.ndarray) -> np.ndarray:
    """1 for a pair ranked right (margin > 0), 0.5 for a tie, 0 for a pair ranked wrong."""
    margins = np.asarray(margins, dtype=np.float64)
    return np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function (scipy's ``expit``: stable at +-1000)."""
    return special.expit(np.asarray(x, dtype=np.float64))


DRAWS_PER_BLOCK = 1 << 22  # cluster indices drawn at once by the bootstrap (32 MiB of int64)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound for small n and extreme rates).

    Half-credit ties make ``successes`` fractional; it is rounded to the nearest count."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(round(successes)), n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def cluster_bootstrap_interval(values: np.ndarray, clusters: np.ndarray, *, confidence: float = 0.95,
                               n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``, resampling whole clusters.

    Pairs that share a prompt are not independent evidence: resampling prompts, not pairs,
    keeps a prompt with twenty pairs from counting as twenty observations."""
    values = np.asarray(values, dtype=np.float64)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(index.max()) + 1 if len(index) else 0
    if n_clusters < 2:
        return float("nan"), float("nan")
    sums = np.bincount(index, weights=values, minlength=n_clusters)
    counts = np.bincount(index, minlength=n_clusters).astype(np.float64)
    rng = np.random.default_rng(seed)
    # Draws a block of resamples at a time: all 2,000 at once for 100k prompts were 1.6 GB of
    # indices (the same stream of draws either way).
    block = max(1, DRAWS_PER_BLOCK // n_clusters)
    means = np.empty(n_boot)
    for start in range(0, n_boot, block):
        draws = rng.integers(0, n_clusters, size=(min(block, n_boot - start), n_clusters))
        means[start:start + len(draws)] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def cluster_bootstrap_statistic(statistic, clusters: np.ndarray, *, confidence: float = 0.95, n_boot: int = 1000,
                                seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` resampling whole clusters (prompts).

    ``statistic`` takes the row indices of one resample (rows repeat when their cluster is
    drawn twice) and returns a float; NaN draws are dropped. For statistics that are not a
    plain mean (a gap between two groups' rates), where :func:`cluster_bootstrap_interval`
    does not apply."""
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(index.max()) + 1 if len(index) else 0
    if n_clusters < 2:
        return float("nan"), float("nan")
    # Rows grouped by cluster (ascending within one): cluster c's rows are
    # order[starts[c]:starts[c] + sizes[c]]; a resample's rows are built in one vectorised step,
    # where a list of per-cluster arrays cost O(rows x clusters) to build and a Python loop per draw.
    order = np.argsort(index, kind="stable")
    sizes = np.bincount(index, minlength=n_clusters)
    starts = np.cumsum(sizes) - sizes
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        chosen = rng.integers(0, n_clusters, size=n_clusters)
        lengths = sizes[chosen]
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        value = statistic(order[np.repeat(starts[chosen], lengths) + within])
        if np.isfinite(value):
            draws.append(value)
    if not draws:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def cluster_mean_test(values: np.ndarray, clusters: np.ndarray, alternative: str = "greater") -> float:
    """p-value of a one-sample t-test on per-cluster means (H0: mean 0).

    One mean per prompt, so a prompt with many responses counts once (the clustering the
    bootstrap intervals use); NaN with fewer than 2 clusters or no spread."""
    values = np.asarray(values, dtype=np.float64)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    if len(index) == 0 or index.max() < 1:
        return float("nan")
    means = np.bincount(index, weights=values) / np.bincount(index)
    if np.ptp(means) == 0:
        return float("nan") if means[0] == 0 else (0.0 if (means[0] > 0) == (alternative == "greater") else 1.0)
    return float(stats.ttest_1samp(means, 0.0, alternative=alternative).pvalue)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): reject where q <= the FDR level.

    q_(i) = min over j >= i of p_(j) * m / j, capped at 1 (step-up; monotone in p)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
