"""The pure training step, and its data-parallel, multi-step compiled form.

`train_step(state, batch)` is the per-device step: augment on the device,
differentiate the trainable params only, average gradients over the mesh's
'data' axis with `pmean`, apply the optimizer. `make_train_chunk` wraps it in
`lax.scan` over several batches (few dispatches for small models) and in
`jax.shard_map` over the mesh; it is jitted with the state donated.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from jaxlab.parallel.mesh import DATA
from jaxlab.peft.partition import merge


def example_keys(step_key, batch_size):
  """One key per example, from its position in the global batch.

  Position, not device, decides an example's augmentation, so a batch gives
  the same images on one device or many.
  """
  offset = jax.lax.axis_index(DATA) * batch_size
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(offset + jnp.arange(batch_size))


def train_step(state, batch, *, task, tx, augment):
  """One optimizer step on this device's part of the batch; collectives over DATA.

  batch: {'image': uint8 [b, H, W, C], 'label': int32 [b]}. Returns the new
  state and {'loss', 'acc'} averaged over the global batch.
  """
  aug_key, model_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  images = augment(example_keys(aug_key, batch['label'].shape[0]), batch['image'])
  model_key = jax.random.fold_in(model_key, jax.lax.axis_index(DATA))

  def loss_of(params):
    logits = task.apply(merge(params, state.frozen), images, True, model_key)
    return task.loss_fn(logits, batch['label']), logits

  (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, DATA)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, 'acc': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
  metrics = jax.lax.pmean(metrics, DATA)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def gather(data, idx):
  """The batch of the device-resident data set at indices `idx`."""
  return {'image': data['image'][idx], 'label': data['label'][idx]}


def make_train_chunk(step_fn, mesh):
  """jit(shard_map(scan(step_fn))): (state, data, idx [S, B]) -> (state, metrics [S]).

  `data` is the whole training split, replicated; `idx` holds the global
  batch indices of S consecutive steps, sharded over DATA along the batch.
  The state is donated.
  """
  def chunk(state, data, idx):
    if idx.shape[0] == 1:
      # No loop for one step: XLA:CPU runs convolution gradients ~25x slower
      # inside a while loop (seen with jax 0.10.2), so conv nets use S = 1 there.
      state, metrics = step_fn(state, gather(data, idx[0]))
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(lambda s, i: step_fn(s, gather(data, i)), state, idx)

  # check_vma=False: gradients are per-device values until the explicit pmean.
  sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(P(), P(), P(None, DATA)),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0)


def make_eval_logits(task, preprocess, mesh):
  """jit(shard_map): (params, data, idx [B]) -> logits [B, classes], batch sharded."""
  def logits(params, data, idx):
    images = preprocess(data['image'][idx])
    return task.apply(params, images, False, None)

  sharded = jax.shard_map(logits, mesh=mesh, in_specs=(P(), P(), P(DATA)),
                          out_specs=P(DATA), check_vma=False)
  return jax.jit(sharded)
