"""Evaluation over a whole split: every example exactly once, reduced on the devices.

Evaluation never fetches logits. Per batch, a compiled `jax.shard_map` over the mesh's 'data'
axis computes the additive statistics of acc1, NLL and ECE on each device's share of the batch
(`metric_sums`; padding weighs 0), sums them over 'data' (`psum`) and returns them replicated;
the host adds the batches' sums in float64 and forms the metrics. So it is the same on one
process or many (the mesh spanning every process's devices), and every process gets the same
result. Outputs that the host does need row by row (embeddings for kNN) come from `predict`,
which gathers them from every process.

A batch is named by its reference (see step.batch_of): int32 indices [B] into the
device-resident split `data = {'image', 'label'}` (PAD, -1, marks padding), or the batch
itself, {'image', 'label', 'weight'}, delivered by the host (streamed data; `data` is then
{}). `feed(idx)` turns the host's indices into the reference on the mesh.
"""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxlab.data.pipeline import PAD
from jaxlab.metrics.classification import metric_sums, metrics_from_sums
from jaxlab.parallel.mesh import DATA, shard_leading, to_host
from jaxlab.train.step import batch_of, seed_map


def eval_indices(num_examples, batch_size):
  """Yield int32 indices [batch_size] covering 0..num_examples-1 once, in order; the last
  batch is padded with PAD (weight 0)."""
  for start in range(0, num_examples, batch_size):
    idx = np.arange(start, start + batch_size)
    yield np.where(idx < num_examples, idx, PAD).astype(np.int32)


def _apply(task, preprocess, replicas):
  """(params, batch) -> outputs [b, ...] ([R, b, ...] with replicas: over the params' seed axis,
  as task.seed_loop says)."""
  def outputs(params, batch):
    images = preprocess(batch['image'])
    if replicas:
      return seed_map(lambda p: task.apply(p, images, False, None), task.seed_loop)(params)
    return task.apply(params, images, False, None)
  return outputs


def make_outputs_fn(task, preprocess, mesh, replicas=False):
  """jit(shard_map): (params, data, ref [B]) -> the model's outputs (task.apply in eval mode,
  e.g. logits or embeddings) [B, ...], sharded over 'data' on B ([R, B, ...] with replicas,
  params carrying a leading seed axis). Padding rows are included; `predict` drops them."""
  apply = _apply(task, preprocess, replicas)
  sharded = jax.shard_map(lambda params, data, ref: apply(params, batch_of(data, ref)),
                          mesh=mesh, in_specs=(P(), P(), P(DATA)),
                          out_specs=P(None, DATA) if replicas else P(DATA), check_vma=False)
  return jax.jit(sharded)


def make_eval_fn(task, preprocess, mesh, replicas=False, ece_batch=0):
  """jit(shard_map): (params, data, ref [B]) -> the batch's `metric_sums` over its real
  examples, summed over the mesh and replicated on every device (each with a leading seed
  axis [R, ...] with replicas). One compiled function for every batch of the split.

  ece_batch > 0 adds the per-batch ECE over consecutive groups of that many examples of the
  split: each device's share of B must then be whole groups (`ece_eval_batch_size`)."""
  apply = _apply(task, preprocess, replicas)

  def sums(params, data, ref):
    batch = batch_of(data, ref)
    logits = apply(params, batch)
    one = lambda l: metric_sums(l, batch['label'], batch['weight'], ece_batch=ece_batch)
    local = seed_map(one, task.seed_loop)(logits) if replicas else one(logits)
    return jax.lax.psum(local, DATA)

  sharded = jax.shard_map(sums, mesh=mesh, in_specs=(P(), P(), P(DATA)), out_specs=P(),
                          check_vma=False)
  return jax.jit(sharded)


def ece_eval_batch_size(eval_batch_size, ece_batch, num_devices):
  """The eval batch size to use with a per-batch ECE over groups of `ece_batch`: the smallest
  multiple of ece_batch × num_devices at least `eval_batch_size` (so each device's share is
  whole groups that start where the split's batches of ece_batch start)."""
  if not ece_batch:
    return eval_batch_size
  unit = ece_batch * num_devices
  return -(-eval_batch_size // unit) * unit


def _feed(mesh, feed):
  return feed if feed is not None else (lambda idx: shard_leading(idx, mesh))


def evaluate(eval_fn, params, data, num_examples, batch_size, mesh, feed=None):
  """acc1, nll and ece of the split's `num_examples` examples, computed globally over all of
  them (`eval_fn` from `make_eval_fn`; every process calls this together).

  For replicated runs (eval_fn with replicas=True) each metric is the mean over seeds,
  with `<metric>_per_seed` (list) and `<metric>_std` (sample std, ddof 1) beside it.
  """
  feed = _feed(mesh, feed)
  # Dispatch every batch, then fetch the (small, replicated) sums: no host wait per batch.
  pending = [eval_fn(params, data, feed(idx)) for idx in eval_indices(num_examples, batch_size)]
  total = None
  for sums in to_host(pending):
    sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    total = sums if total is None else {k: total[k] + v for k, v in sums.items()}
  metrics = metrics_from_sums(total)
  if np.ndim(total['count']) == 0:
    return metrics
  out = {}
  for key, per_seed in metrics.items():
    out.update(seed_fields(key, per_seed))
  return out


def seed_fields(key, per_seed):
  """How a summary reports a metric of several seeds: {key: their mean, `key`_per_seed: the
  values, `key`_std: their sample std (ddof 1; 0 for one seed)}."""
  values = np.asarray(per_seed, np.float64)
  return {key: float(values.mean()), f'{key}_per_seed': values.tolist(),
          f'{key}_std': float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def predict(fn, params, data, num_examples, batch_size, mesh, feed=None):
  """The outputs of `fn` (from `make_outputs_fn`) for the split's examples, in order, on the
  host: rows [num_examples, ...] on axis -2 ([R, num_examples, D] with replicas), gathered
  from every process (all call this together), padding rows dropped."""
  feed = _feed(mesh, feed)
  batches = list(eval_indices(num_examples, batch_size))
  pending = [fn(params, data, feed(idx)) for idx in batches]
  rows = [np.compress(idx >= 0, out, axis=-2) for idx, out in zip(batches, to_host(pending))]
  return np.concatenate(rows, axis=-2)
