"""Evaluation over a whole split: every example exactly once."""

import jax
import numpy as np

from jaxlab.data.pipeline import eval_batches
from jaxlab.metrics.classification import classification_metrics
from jaxlab.parallel.mesh import shard_leading


def predict(logits_fn, params, data, num_examples, batch_size, mesh):
  """Logits [num_examples, classes] of the device-resident split `data`."""
  out = []
  for idx, valid in eval_batches(num_examples, batch_size):
    logits = logits_fn(params, data, shard_leading(idx, mesh))
    out.append(np.asarray(jax.device_get(logits))[:valid])
  return np.concatenate(out)


def evaluate(logits_fn, params, data, labels, batch_size, mesh):
  """acc1, nll and ece of the split, computed globally over all its examples."""
  logits = predict(logits_fn, params, data, len(labels), batch_size, mesh)
  return classification_metrics(logits, labels)
