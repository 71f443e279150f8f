"""Statistics over seeds against SciPy (an independent implementation) and hand cases."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from jaxlab.metrics import stats


@pytest.mark.parametrize('df', [1, 2, 3, 4, 9, 30, 200])
def test_t_distribution_equals_scipys(df):
  for t in (-12.0, -2.5, -0.3, 0.0, 0.7, 1.96, 4.0, 40.0):
    assert stats.t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), rel=1e-10, abs=1e-14)
  for p in (0.001, 0.025, 0.5, 0.8, 0.975, 0.999):
    assert stats.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9)


def test_summary_is_mean_sample_std_and_t_interval():
  values = [0.912, 0.905, 0.921, 0.917]
  s = stats.summarize(values)
  assert s['n'] == 4 and s['mean'] == pytest.approx(np.mean(values), abs=1e-15)
  assert s['std'] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
  low, high = sp.t.interval(0.95, 3, loc=np.mean(values), scale=sp.sem(values))
  assert s['ci95'] == pytest.approx([low, high], rel=1e-10)
  assert stats.summarize([0.5]) == {'n': 1, 'mean': 0.5, 'std': None, 'ci95': None}
  with pytest.raises(ValueError, match='no values'):
    stats.summarize([])


def test_paired_comparison_equals_scipys_paired_t_test():
  rng = np.random.default_rng(0)
  for n in (3, 5, 12):
    a = rng.normal(0.9, 0.01, n)
    b = a - 0.004 + rng.normal(0, 0.003, n)
    c = stats.paired(a, b)
    d = a - b
    assert c['n'] == n and c['note'] is None
    assert c['mean_diff'] == pytest.approx(d.mean(), abs=1e-15)
    assert c['std_diff'] == pytest.approx(d.std(ddof=1), rel=1e-12)
    assert c['p_value'] == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-9)
    low, high = sp.t.interval(0.95, n - 1, loc=d.mean(), scale=sp.sem(d))
    assert c['ci95'] == pytest.approx([low, high], rel=1e-9)


def test_two_seeds_are_too_few_for_a_verdict():
  c = stats.paired([0.9, 0.91], [0.8, 0.81])
  assert c['note'] == 'n too small' and c['ci95'] is None and c['p_value'] is None
  assert c['mean_diff'] == pytest.approx(0.1)
  assert stats.verdict(c, +1) is None
  with pytest.raises(ValueError, match='one value per seed'):
    stats.paired([1, 2, 3], [1, 2])


def test_verdicts_follow_the_interval():
  higher = stats.paired([0.95, 0.96, 0.97], [0.90, 0.905, 0.93])  # a clearly higher
  assert higher['ci95'][0] > 0
  assert stats.verdict(higher, +1) == 'supported'
  assert stats.verdict(higher, -1) == 'contradicted'
  noise = stats.paired([0.90, 0.92, 0.91], [0.91, 0.90, 0.915])
  assert noise['ci95'][0] < 0 < noise['ci95'][1]
  assert stats.verdict(noise, +1) == stats.verdict(noise, -1) == 'not distinguishable'
  same_shift = stats.paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # no spread: exact
  assert same_shift['p_value'] == 0.0 and same_shift['ci95'] == [0.5, 0.5]
  assert stats.verdict(same_shift, +1) == 'supported'
  assert math.isclose(stats.paired([1, 2, 3], [1, 2, 3])['p_value'], 1.0)
  # A claim of no difference: the interval holding 0 is what it says; excluding 0 refutes it.
  assert stats.verdict(noise, 0) == 'not distinguishable'
  assert stats.verdict(higher, 0) == 'contradicted'
  with pytest.raises(ValueError, match='claimed_sign'):
    stats.verdict(higher, 2)


def test_unpaired_comparison_equals_scipys_welch_t_test():
  """Step times per epoch: two independent samples of different sizes and spreads."""
  rng = np.random.default_rng(1)
  for na, nb in ((3, 3), (6, 11), (20, 4)):
    a, b = rng.normal(0.50, 0.01, na), rng.normal(0.53, 0.04, nb)
    c = stats.unpaired(a, b)
    welch = sp.ttest_ind(a, b, equal_var=False)
    assert c['test'] == 'welch' and c['n'] == [na, nb] and c['note'] is None
    assert c['mean_diff'] == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert c['p_value'] == pytest.approx(welch.pvalue, rel=1e-9)
    assert c['ci95'] == pytest.approx(list(welch.confidence_interval(0.95)), rel=1e-9)
  few = stats.unpaired([0.5, 0.6], [0.4, 0.41, 0.42])
  assert few['note'] == 'n too small' and few['ci95'] is None and stats.verdict(few, -1) is None
  assert stats.describe({**few, 'verdict': None})[0] == '+0.140, n = 2 + 3 epochs'


def test_a_deterministic_figure_is_compared_exactly():
  """Peak memory from XLA's memory analysis: the same on every run, so no spread."""
  less = stats.exact(5_000, 6_000)
  assert less['ci95'] == [-1000.0, -1000.0] and less['p_value'] is None
  assert stats.verdict(less, -1) == 'supported' and stats.verdict(less, +1) == 'contradicted'
  assert stats.verdict(less, 0) == 'contradicted'  # "the same memory" refuted by any difference
  assert stats.verdict(stats.exact(7, 7), 0) == 'not distinguishable'
  assert stats.describe({**less, 'verdict': 'supported'}) == (
      '-1,000 (exact: the same on every run)', 'supported')
