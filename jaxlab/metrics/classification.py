"""Classification metrics over a whole evaluation set: accuracy, NLL, calibration."""

import jax
import jax.numpy as jnp
import numpy as np

ECE_BINS = 15


def accuracy(logits, labels):
  """Fraction of rows whose arg-max equals the label."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def nll(logits, labels):
  """Mean negative log-likelihood of the labels under softmax(logits)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def _calibration(logits, labels):
  """Per example: the confidence (maximum softmax probability) and whether the most probable
  class is the label (1.0 or 0.0)."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
  return conf, correct


def _bin_of(conf, num_bins):
  # ceil(c * B) - 1 maps (b/B, (b+1)/B] to b; conf > 0 always, clip guards c == 0.
  return jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)


def expected_calibration_error(logits, labels, num_bins=ECE_BINS):
  """Global ECE with `num_bins` equal-width bins over (lo, hi].

  Confidence is the maximum softmax probability; a prediction with confidence
  c falls in bin b when b/num_bins < c <= (b+1)/num_bins. ECE is
  sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over the whole set (not a mean of
  per-batch ECEs, which weights small batches wrongly).
  """
  conf, correct = _calibration(logits, labels)
  bins = _bin_of(conf, num_bins)
  conf_sum = jnp.zeros(num_bins).at[bins].add(conf)
  acc_sum = jnp.zeros(num_bins).at[bins].add(correct)
  return jnp.sum(jnp.abs(acc_sum - conf_sum)) / conf.shape[0]


def metric_sums(logits, labels, weight=None, num_bins=ECE_BINS, ece_batch=0):
  """The additive statistics behind acc1, nll and ece, over the examples of weight > 0.

  Sums of disjoint parts of a set add up to the set's (per batch, per device: `psum` them),
  and `metrics_from_sums` turns the total into the metrics. float32 arrays:
    count        sum of the weights (the number of real examples: weight 1, padding 0)
    correct      weighted count of rows whose arg-max (of the logits) is the label
    nll          weighted sum of -log softmax(logits)[label]
    ece_count    [num_bins] weighted count per confidence bin (bins as in
                 `expected_calibration_error`)
    ece_conf     [num_bins] weighted sum of the confidences per bin
    ece_correct  [num_bins] weighted count of correct (most probable class) per bin
    ece_batches  (with ece_batch > 0) the sum over consecutive groups of `ece_batch` rows of
                 each group's sum_b |correct_b - conf_b|: divided by the count it is the mean
                 of per-batch ECEs weighted by batch size, the aggregate the PEFT source
                 code (Tony-lyu/CV, src/week4/train.py `evaluate`) reports at its eval batch
                 128. The rows must be a whole number of groups, aligned with the batches.
  A padding row (weight 0) adds exactly nothing, even if its logits are not finite.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if weight is None:
    weight = jnp.ones(labels.shape, jnp.float32)
  weight = jnp.asarray(weight, jnp.float32)
  real = weight > 0
  masked = lambda x: jnp.where(real, weight * x, 0.0)
  labels = jnp.where(real, labels, 0)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  example_nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  conf, correct = _calibration(logits, labels)
  bins = _bin_of(jnp.where(real, conf, 1.0), num_bins)
  per_bin = lambda x: jnp.zeros(num_bins, jnp.float32).at[bins].add(masked(x))
  sums = {'count': jnp.sum(masked(1.0)), 'correct': jnp.sum(masked(correct)),
          'nll': jnp.sum(masked(example_nll)), 'ece_count': per_bin(jnp.ones_like(conf)),
          'ece_conf': per_bin(conf), 'ece_correct': per_bin(correct)}
  if ece_batch:
    rows = labels.shape[0]
    if rows % ece_batch:
      raise ValueError(f'{rows} rows are not whole batches of {ece_batch} for the per-batch ECE')
    group = jnp.arange(rows) // ece_batch
    cell = group * num_bins + bins  # one (batch, bin) cell per row
    cells = rows // ece_batch * num_bins
    gap = jnp.zeros(cells, jnp.float32).at[cell].add(masked(correct) - masked(conf))
    sums['ece_batches'] = jnp.sum(jnp.abs(gap))
  return sums


def metrics_from_sums(sums):
  """acc1, nll and ece (Python floats) from `metric_sums` totals (host values, in float64).

  With a leading seed axis on the sums (replicas), each metric is a list, one per seed."""
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  count = s['count']
  with np.errstate(invalid='ignore', divide='ignore'):  # an empty set: NaN
    out = {'acc1': s['correct'] / count, 'nll': s['nll'] / count,
           'ece': np.sum(np.abs(s['ece_correct'] - s['ece_conf']), axis=-1) / count}
    if 'ece_batches' in s:
      out['ece_per_batch'] = s['ece_batches'] / count
  return {k: v.tolist() for k, v in out.items()}


def classification_metrics(logits, labels, ece_batch=0):
  """acc1, nll and ece of a full evaluation set, as Python floats (the same statistics as
  evaluation reduced on the devices: `metrics_from_sums(metric_sums(...))`; acc1 is the
  exact fraction correct). With ece_batch > 0 also ece_per_batch: the batch-size-weighted
  mean of the ECEs of consecutive batches of that size (the last one may be smaller)."""
  logits, labels, weight = np.asarray(logits), np.asarray(labels), None
  pad = -len(labels) % ece_batch if ece_batch else 0
  if pad:  # the last batch is short: padding rows (weight 0) make whole groups
    weight = np.concatenate([np.ones(len(labels)), np.zeros(pad)])
    logits = np.concatenate([logits, np.zeros((pad,) + logits.shape[1:], logits.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return metrics_from_sums(jax.device_get(metric_sums(logits, labels, weight, ece_batch=ece_batch)))


def count_params(tree):
  """Number of scalar entries in a pytree of arrays."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
