"""Evaluation over a whole split: every example exactly once."""

import jax
import numpy as np

from jaxlab.data.pipeline import eval_batches
from jaxlab.metrics.classification import classification_metrics
from jaxlab.parallel.mesh import shard_leading


def predict(logits_fn, params, data, num_examples, batch_size, mesh):
  """Logits [num_examples, classes] of the device-resident split `data` (with a
  leading seed axis when `logits_fn` is vmapped over replicas)."""
  out = []
  for idx, valid in eval_batches(num_examples, batch_size):
    logits = np.asarray(jax.device_get(logits_fn(params, data, shard_leading(idx, mesh))))
    out.append(logits[..., :valid, :])
  return np.concatenate(out, axis=-2)


def evaluate(logits_fn, params, data, labels, batch_size, mesh):
  """acc1, nll and ece of the split, computed globally over all its examples.

  For replicated runs (logits [R, N, C]) each metric is the mean over seeds,
  with `<metric>_per_seed` (list) and `<metric>_std` (sample std, ddof 1) beside it.
  """
  logits = predict(logits_fn, params, data, len(labels), batch_size, mesh)
  if logits.ndim == 2:
    return classification_metrics(logits, labels)
  per_seed = [classification_metrics(l, labels) for l in logits]
  out = {}
  for key in per_seed[0]:
    values = np.array([m[key] for m in per_seed])
    out[key] = float(values.mean())
    out[f'{key}_per_seed'] = values.tolist()
    out[f'{key}_std'] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return out
