"""Statistics over seeds: mean ± std with a 95% t-interval, paired differences with their
t-test, and the verdict a comparison earns; for step times, measured per epoch and not per
seed, Welch's unpaired t-test; for a deterministic figure (XLA's memory analysis), the exact
difference.

Plain Python (no SciPy): Student's t distribution through the regularised incomplete beta
function (its continued fraction, evaluated by the modified Lentz method), the quantile by
bisection. With fewer than two values there is no spread; with fewer than three a comparison
says "n too small" and earns no verdict.
"""

import math

CONFIDENCE = 0.95
MIN_PAIRED = 3  # fewer seeds than this: a paired comparison says "n too small"


def _beta_fraction(a, b, x, iterations=300, eps=1e-15):
  """The continued fraction of the regularised incomplete beta function I_x(a, b)."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, iterations + 1):
    for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + numerator / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < eps:
      break
  return h


def incomplete_beta(a, b, x, y=None):
  """The regularised incomplete beta function I_x(a, b), 0 ≤ x ≤ 1; `y`: 1 − x when the caller
  knows it more precisely than 1 − x rounds (x near 1)."""
  y = 1.0 - x if y is None else y
  if x <= 0.0:
    return 0.0
  if y <= 0.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log(y))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _beta_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def t_cdf(t, df):
  """P(T ≤ t) for Student's t with `df` degrees of freedom."""
  t2 = t * t
  tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
  """The t with P(T ≤ t) = p (bisection to double precision)."""
  if not 0.0 < p < 1.0:
    raise ValueError(f'a quantile needs 0 < p < 1, got {p}')
  lo, hi = -1.0, 1.0
  while t_cdf(lo, df) > p:
    lo *= 2.0
  while t_cdf(hi, df) < p:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-14 * max(1.0, abs(mid)):
      break
  return 0.5 * (lo + hi)


def summarize(values):
  """{'n', 'mean', 'std' (ddof 1), 'ci95': [low, high] (the t-interval of the mean)} of the
  per-seed `values`; std and ci95 are None below two values."""
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    raise ValueError('no values to summarise')
  mean = math.fsum(values) / n
  if n < 2:
    return {'n': n, 'mean': mean, 'std': None, 'ci95': None}
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
  half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
  return {'n': n, 'mean': mean, 'std': std, 'ci95': [mean - half, mean + half]}


def paired(a, b):
  """The paired comparison of `a` and `b` (the same seeds, in the same order): the
  difference a − b summarised, and the two-sided paired t-test's p-value. Below MIN_PAIRED
  seeds, 'note' is 'n too small' and there is no interval, p-value or verdict."""
  if len(a) != len(b):
    raise ValueError(f'a paired comparison needs one value per seed on each side, got '
                     f'{len(a)} and {len(b)}')
  diffs = [float(x) - float(y) for x, y in zip(a, b)]
  out = summarize(diffs)
  out = {'n': out['n'], 'mean_diff': out['mean'], 'std_diff': out['std'], 'ci95': out['ci95'],
         'p_value': None, 'note': None}
  if out['n'] < MIN_PAIRED:
    return {**out, 'ci95': None, 'note': 'n too small'}
  # Every seed differs by the same amount (to rounding: accuracies are multiples of 1/n_test).
  if out['std_diff'] <= 1e-12 * max(1.0, abs(out['mean_diff'])):
    out['std_diff'] = 0.0
    out['ci95'] = [out['mean_diff'], out['mean_diff']]
    out['p_value'] = 1.0 if abs(out['mean_diff']) <= 1e-12 else 0.0
    return out
  t = out['mean_diff'] / (out['std_diff'] / math.sqrt(out['n']))
  out['p_value'] = min(1.0, 2.0 * t_cdf(-abs(t), out['n'] - 1))
  return out


def unpaired(a, b):
  """Welch's comparison of two independent samples `a` and `b` (e.g. the step times of two
  runs' epochs): the difference of their means, its 95% interval (Welch-Satterthwaite
  degrees of freedom) and the two-sided p-value. Below MIN_PAIRED values on either side, 'note'
  is 'n too small' and there is no interval, p-value or verdict."""
  sa, sb = summarize(a), summarize(b)
  out = {'test': 'welch', 'n': [sa['n'], sb['n']], 'mean_diff': sa['mean'] - sb['mean'],
         'std_diff': None, 'ci95': None, 'p_value': None, 'note': None}
  if min(sa['n'], sb['n']) < MIN_PAIRED:
    return {**out, 'note': 'n too small'}
  va, vb = sa['std'] ** 2 / sa['n'], sb['std'] ** 2 / sb['n']
  se = math.sqrt(va + vb)
  out['std_diff'] = se  # the standard error of the difference
  if se <= 1e-12 * max(1.0, abs(out['mean_diff'])):  # both samples constant
    out['ci95'] = [out['mean_diff'], out['mean_diff']]
    out['p_value'] = 1.0 if abs(out['mean_diff']) <= 1e-12 else 0.0
    return out
  df = (va + vb) ** 2 / (va ** 2 / (sa['n'] - 1) + vb ** 2 / (sb['n'] - 1))
  half = t_quantile(0.5 + CONFIDENCE / 2, df) * se
  out['ci95'] = [out['mean_diff'] - half, out['mean_diff'] + half]
  out['p_value'] = min(1.0, 2.0 * t_cdf(-abs(out['mean_diff']) / se, df))
  return out


def exact(a, b):
  """The difference of two deterministic figures (the same on every run and seed, e.g. XLA's
  memory analysis of a compiled step): no spread, so its interval is the difference itself."""
  diff = float(a) - float(b)
  return {'test': 'exact', 'n': 1, 'mean_diff': diff, 'std_diff': 0.0, 'ci95': [diff, diff],
          'p_value': None, 'note': None}


def verdict(comparison, claimed_sign):
  """What a paired comparison says of a claim that a − b has sign `claimed_sign` (+1: a is
  higher, -1: a is lower, 0: no difference): 'supported' when the 95% interval lies on the
  claimed side of zero, 'contradicted' when it lies on the other side (for a claim of no
  difference: when it excludes zero), 'not distinguishable' when it holds zero (which is
  what a claim of no difference says); None when the comparison had too few seeds."""
  if claimed_sign not in (1, 0, -1):
    raise ValueError(f'claimed_sign must be +1, 0 or -1, got {claimed_sign}')
  ci = comparison.get('ci95')
  if ci is None:
    return None
  if claimed_sign == 0:
    return 'not distinguishable' if ci[0] <= 0 <= ci[1] else 'contradicted'
  low, high = (v * claimed_sign for v in ci)
  low, high = min(low, high), max(low, high)
  if low > 0:
    return 'supported'
  if high < 0:
    return 'contradicted'
  return 'not distinguishable'


def describe(comparison, places=3):
  """(measured, verdict) of a comparison as tables print it: the mean difference with its 95%
  interval, p-value and n; below MIN_PAIRED seeds the difference and n with no verdict; a
  comparison with `not_measured` says why in the verdict."""
  if comparison.get('not_measured'):
    return '–', f'not measured: {comparison["not_measured"]}'
  diff, n = f'{comparison["mean_diff"]:+.{places}f}', comparison['n']
  test = comparison.get('test', 'paired')
  if test == 'welch':
    n = f'{n[0]} + {n[1]} epochs'
  if comparison.get('note'):
    return f'{diff}, n = {n}', f'{comparison["note"]}: no verdict'
  if test == 'exact':  # bytes and counts: whole numbers, with thousands separators
    whole = float(comparison['mean_diff']).is_integer()
    diff = f'{comparison["mean_diff"]:+,.{0 if whole else places}f}'
    return f'{diff} (exact: the same on every run)', comparison['verdict']
  low, high = comparison['ci95']
  p = 'Welch t-test p' if test == 'welch' else 'p'
  return (f'{diff} [{low:+.{places}f}, {high:+.{places}f}], {p} = '
          f'{comparison["p_value"]:.3g}, n = {n}'), comparison['verdict']
