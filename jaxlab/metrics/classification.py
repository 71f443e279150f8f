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


def expected_calibration_error(logits, labels, num_bins=ECE_BINS):
  """Global ECE with `num_bins` equal-width bins over (lo, hi].

  Confidence is the maximum softmax probability; a prediction with confidence
  c falls in bin b when b/num_bins < c <= (b+1)/num_bins. ECE is
  sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over the whole set (not a mean of
  per-batch ECEs, which weights small batches wrongly).
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
  # ceil(c * B) - 1 maps (b/B, (b+1)/B] to b; conf > 0 always, clip guards c == 0.
  bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
  count = jnp.zeros(num_bins).at[bins].add(1.0)
  conf_sum = jnp.zeros(num_bins).at[bins].add(conf)
  acc_sum = jnp.zeros(num_bins).at[bins].add(correct)
  return jnp.sum(jnp.abs(acc_sum - conf_sum)) / conf.shape[0]


def classification_metrics(logits, labels):
  """acc1, nll and ece of a full evaluation set, as Python floats."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  return {
      'acc1': float(accuracy(logits, labels)),
      'nll': float(nll(logits, labels)),
      'ece': float(expected_calibration_error(logits, labels)),
  }


def count_params(tree):
  """Number of scalar entries in a pytree of arrays."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
