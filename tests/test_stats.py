"""The shared statistics (rmaudit/stats.py): prompt-clustered bootstrap intervals at any size."""

import numpy as np
import pytest

import rmaudit.stats as rstats


def clustered(n_rows: int, n_clusters: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, n_clusters, size=n_rows)
    effect = rng.normal(size=n_clusters)[clusters]  # rows of one prompt move together
    return (effect + rng.normal(size=n_rows) > 0).astype(float), np.array([f"prompt {c}" for c in clusters])


def reference_statistic_interval(statistic, clusters, n_boot, seed=0):
    """The bootstrap written the plain way: per-cluster row lists, one concatenation per draw."""
    _, index = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(index == c) for c in range(index.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = [statistic(np.concatenate([members[c] for c in rng.integers(0, len(members), size=len(members))]))
             for _ in range(n_boot)]
    return tuple(np.percentile([d for d in draws if np.isfinite(d)], [2.5, 97.5]))


def test_the_statistic_bootstrap_resamples_whole_clusters_as_the_plain_version_does():
    values, clusters = clustered(600, 70)
    seen: list[np.ndarray] = []

    def mean_of(rows):
        seen.append(rows)
        return values[rows].mean()

    got = rstats.cluster_bootstrap_statistic(mean_of, clusters, n_boot=200)
    np.testing.assert_allclose(got, reference_statistic_interval(lambda r: values[r].mean(), clusters, 200))
    sizes = {c: int((clusters == c).sum()) for c in set(clusters)}
    for rows in seen[:5]:  # a drawn cluster comes with all of its rows, once per draw
        labels, counts = np.unique(clusters[rows], return_counts=True)
        assert all(n % sizes[c] == 0 for c, n in zip(labels, counts))


def test_the_mean_bootstrap_draws_the_same_stream_in_blocks(monkeypatch):
    values, clusters = clustered(3000, 900)
    whole = rstats.cluster_bootstrap_interval(values, clusters)
    monkeypatch.setattr(rstats, "DRAWS_PER_BLOCK", 1000)  # about one resample per block
    assert rstats.cluster_bootstrap_interval(values, clusters) == whole
    low, high = whole
    assert low < values.mean() < high


def test_shared_prompts_widen_the_interval():
    values, clusters = clustered(2000, 40)
    low, high = rstats.cluster_bootstrap_interval(values, clusters)
    naive_low, naive_high = rstats.cluster_bootstrap_interval(values, np.arange(len(values)))
    assert high - low > 2 * (naive_high - naive_low)


@pytest.mark.parametrize("function", ["interval", "statistic"])
def test_fewer_than_two_clusters_give_no_interval(function):
    values, clusters = np.ones(5), np.array(["p"] * 5)
    if function == "interval":
        assert np.isnan(rstats.cluster_bootstrap_interval(values, clusters)).all()
    else:
        assert np.isnan(rstats.cluster_bootstrap_statistic(lambda r: values[r].mean(), clusters)).all()
