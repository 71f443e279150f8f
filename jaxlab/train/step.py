"""The pure training step, and its data-parallel, multi-step compiled form.

`train_step(state, batch)` is the per-device step: augment on the device,
differentiate only the live trainable params, sum over the mesh's 'data' axis
each device's share of the global batch's mean gradient (`psum`; padding
examples weigh 0), apply the optimizer. Groups named in `hold`
(a static set of labels) are held still for the step: not differentiated,
not updated, their optimizer state untouched. `make_train_chunk` wraps the
step in `lax.scan` over several batches and in `jax.shard_map` over the mesh;
it is jitted with the state donated.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from jaxlab.data.augment import mix_images, mix_params
from jaxlab.metrics.classification import count_params
from jaxlab.models import autodiff
from jaxlab.optim.optimizers import hold_groups
from jaxlab.parallel.mesh import DATA, all_sum
from jaxlab.params import merge, split, subtree_labels


def example_keys(step_key, batch_size, axis_name=DATA):
  """One key per example, from its position in the global batch.

  Position, not device, decides an example's augmentation, so a batch gives
  the same images on one device or many. With axis_name=None (a worker's own
  batch, not sharded) the position is the index within the batch.
  """
  offset = jax.lax.axis_index(axis_name) * batch_size if axis_name else 0
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(offset + jnp.arange(batch_size))


def _sq_norm(tree):
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def _only(tree, labels, label):
  """`tree` with every leaf not labelled `label` replaced by zeros."""
  return jax.tree.map(lambda x, l: x if l == label else jnp.zeros_like(x), tree, labels)


def all_finite(tree):
  """A bool scalar: every element of every leaf is finite."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _forward_backward(state, batch, *, task, tx, augment, labels, hold, axis_name,
                      ordered=True, accumulate=1, mix=None):
  """Everything a step computes before it writes the state: the live and held params, the
  logits function, the loss (a weighted mean over the real examples of the global batch),
  logits, the all-reduced gradients of the live params, the optimizer's updates and state.

  accumulate = k > 1: the gradient of this device's batch is computed in k micro-batches one
  after another (lax.scan; each holds 1/k of the activations) and summed: the batch's gradient
  up to float rounding, each micro-batch's model randomness (dropout) its own fold of the
  step's key.

  mix = (mixup_alpha, cutmix_alpha, prob, switch_prob): timm's Mixup / CutMix on each device's
  batch (augment.mix_params, mix_images: each example with its mirror in that batch, one lam
  per device, as timm mixes each process's batch), the loss lam·L(y) + (1 − lam)·L(y_mirror)."""
  aug_key, model_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
  images = augment(example_keys(aug_key, batch['label'].shape[0], axis_name), batch['image'])
  if axis_name:
    model_key = jax.random.fold_in(model_key, jax.lax.axis_index(axis_name))
  lam = None
  if mix is not None:
    mix_key = jax.random.fold_in(aug_key, 0x6d6978)  # 'mix': a key of its own
    if axis_name:
      mix_key = jax.random.fold_in(mix_key, jax.lax.axis_index(axis_name))
    images, lam = mix_images(images, mix_params(mix_key, images.shape, *mix))
  total = (lambda x: all_sum(x, axis_name, ordered)) if axis_name else (lambda x: x)
  weight = batch['weight']
  # Real examples in the global batch: the loss is their mean, as PyTorch's over a partial
  # batch; padding (weight 0) adds nothing to the loss, its gradient or the metrics.
  count = total(jnp.sum(weight))
  denom = jnp.maximum(count, 1.0)
  live, held = split(state.params, labels, hold)

  def logits_of(params):
    return task.apply(merge(params, held, state.frozen), images, True, model_key)

  def example_loss(logits, labels, mirror):
    loss = task.example_loss(logits, labels)
    if lam is None:
      return loss
    return lam * loss + (1.0 - lam) * task.example_loss(logits, mirror)

  def micro(images, labels, weight, key, mirror):
    if task.grad_fn is not None:
      return task.grad_fn(live, merge(held, state.frozen), images, labels, key, state.extra,
                          weight=weight, denom=denom)

    def loss_of(params):
      logits = task.apply(merge(params, held, state.frozen), images, True, key)
      return jnp.sum(weight * example_loss(logits, labels, mirror)) / denom, logits
    return jax.value_and_grad(loss_of, has_aux=True)(live)

  mirror = batch['label'][::-1]
  if accumulate == 1:
    (loss, logits), grads = micro(images, batch['label'], weight, model_key, mirror)
  else:
    local = weight.shape[0]
    if local % accumulate:
      raise ValueError(f'train.grad_accumulation={accumulate} does not divide the batch of '
                       f'{local} examples each device (or worker) computes')
    parts = lambda x: x.reshape(accumulate, local // accumulate, *x.shape[1:])

    def body(total, xs):
      i, (images_i, labels_i, weight_i, mirror_i) = xs[0], xs[1:]
      (loss_i, logits_i), grads_i = micro(images_i, labels_i, weight_i,
                                          jax.random.fold_in(model_key, i), mirror_i)
      return jax.tree.map(jnp.add, total, (loss_i, grads_i)), logits_i
    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, live))
    (loss, grads), logits = jax.lax.scan(
        body, zero, (jnp.arange(accumulate), parts(images), parts(batch['label']), parts(weight),
                     parts(mirror)))
    logits = logits.reshape(local, *logits.shape[2:])
  grads = total(grads)  # each device's share of the global mean: their sum is the gradient
  all_grads = merge(grads, jax.tree.map(jnp.zeros_like, held))
  updates, opt_state = tx.update(all_grads, state.opt_state, state.params,
                                 global_step=state.step, lr_scales=state.extra.get('lr_scales'))
  opt_state = hold_groups(opt_state, state.opt_state, hold)
  live_updates, _ = split(updates, labels, hold)
  correct = jnp.sum(weight * (jnp.argmax(logits, -1) == batch['label']))
  return dict(live=live, held=held, logits_of=logits_of, loss=total(loss),
              acc=total(correct) / denom, count=count, grads=grads, updates=live_updates,
              opt_state=opt_state)


def train_step(state, batch, *, task, tx, augment, labels, hold=frozenset(), grad_norms=(),
               axis_name=DATA, ordered=True, accumulate=1, ema_decay=0.0, mix=None):
  """One optimizer step on this device's part of the batch; collectives over `axis_name`.

  axis_name=None makes the step local: a worker of local SGD, which neither
  shares its batch with nor averages its gradients across devices.

  batch: {'image': uint8 [b, H, W, C], 'label': int32 [b], 'weight': float32 [b]}, weight 0
  marking the padding of a partial batch. `labels` is the label tree of `state.params`.
  Returns the new state and metrics over the global batch's real examples: loss, acc,
  trainable_params (live count), finite/loss and finite/params (1.0 when the loss and the
  updated params are finite: the trainer's divergence guard reads them from the metrics it
  fetches anyway) and, for each group named in `grad_norms` (what an LR controller needs),
  grad_norm/<g> (NaN for a held or absent group). A batch with no real example (a local-SGD
  worker whose shard ran out) leaves params and optimizer state as they were.
  ordered: sums over the devices in device order (mesh.all_sum), the same on any
  split of the devices into processes. accumulate: micro-batches per device (_forward_backward).
  ema_decay > 0: state.extra['ema'] (float32, shaped like the params) becomes
  decay·ema + (1 − decay)·params after the update, as timm's ModelEmaV2 updates after each step.
  """
  fb = _forward_backward(state, batch, task=task, tx=tx, augment=augment, labels=labels,
                         hold=hold, axis_name=axis_name, ordered=ordered, accumulate=accumulate,
                         mix=mix)
  live, held = fb['live'], fb['held']
  new_live = optax.apply_updates(live, fb['updates'])
  opt_state = fb['opt_state']
  if axis_name is None:  # a worker's own batch may be all padding: then no update at all
    keep = fb['count'] > 0
    new_live, opt_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old),
                                       (new_live, opt_state), (live, state.opt_state))
  metrics = {'loss': fb['loss'], 'acc': fb['acc'],
             'trainable_params': jnp.asarray(count_params(live), jnp.float32),
             'finite/loss': jnp.isfinite(fb['loss']).astype(jnp.float32),
             'finite/params': all_finite(new_live).astype(jnp.float32)}
  if grad_norms:
    metrics.update(_group_norms('grad_norm', fb['grads'], subtree_labels(live, labels),
                                grad_norms))
  params = merge(new_live, held)
  extra = state.extra
  if ema_decay:
    extra = {**extra, 'ema': jax.tree.map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p.astype(jnp.float32), extra['ema'],
        params)}
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            extra=extra)
  return new_state, metrics


def _group_norms(name, tree, live_labels, groups):
  present = set(jax.tree.leaves(live_labels))
  return {f'{name}/{g}': (jnp.sqrt(_sq_norm(_only(tree, live_labels, g))) if g in present
                          else jnp.float32(jnp.nan)) for g in groups}


def diagnostics_step(state, batch, *, task, tx, augment, labels, hold=frozenset(), groups=(),
                     axis_name=DATA, accumulate=1, mix=None):
  """What the step at `state` would do on `batch`, measured and not applied (the PEFT
  reference's diagnostics, docs/references.md): per group grad_norm/<g> and update_norm/<g>
  (NaN for a held or absent group) and, for two groups (a, b), cos/a_b: the cosine between
  the logit changes J_a·g_a and J_b·g_b that each group's gradient makes (both live in logit
  space; raw parameter gradients of disjoint groups are orthogonal by construction, so their
  cosine is always 0).

  Its own compiled function, run every `peft.diagnostics_every` steps outside the timed
  training step, so step times and memory are those of training alone.
  """
  fb = _forward_backward(state, batch, task=task, tx=tx, augment=augment, labels=labels,
                         hold=hold, axis_name=axis_name, accumulate=accumulate, mix=mix)
  live, grads = fb['live'], fb['grads']
  live_labels = subtree_labels(live, labels)
  out = {**_group_norms('grad_norm', grads, live_labels, groups),
         **_group_norms('update_norm', fb['updates'], live_labels, groups)}
  if len(groups) == 2:
    a, b = groups
    present = set(jax.tree.leaves(live_labels))
    if a in present and b in present:
      with autodiff.forward_mode():  # the models' custom backward passes give way
        _, dza = jax.jvp(fb['logits_of'], (live,), (_only(grads, live_labels, a),))
        _, dzb = jax.jvp(fb['logits_of'], (live,), (_only(grads, live_labels, b),))
      w = batch['weight'][:, None]
      dot, na, nb = jnp.sum(w * dza * dzb), jnp.sum(w * dza ** 2), jnp.sum(w * dzb ** 2)
      if axis_name:
        dot, na, nb = jax.lax.psum((dot, na, nb), axis_name)
      out[f'cos/{a}_{b}'] = dot / jnp.sqrt(na * nb)
    else:
      out[f'cos/{a}_{b}'] = jnp.float32(jnp.nan)
  return out


def gather(data, idx):
  """The batch of the device-resident data set at indices `idx`; a negative index (PAD) is a
  padding example of weight 0 (it reads example 0, as a streamed batch does)."""
  real = idx >= 0
  safe = jnp.where(real, idx, 0)
  return {'image': data['image'][safe], 'label': data['label'][safe],
          'weight': real.astype(jnp.float32)}


def batch_of(data, ref):
  """A step's batch from its reference: batch indices into the device-resident split `data`
  (data placement 'device'), or the batch itself, {'image', 'label', 'weight'}, delivered by
  the host ('stream'; `data` is then empty)."""
  return ref if isinstance(ref, dict) else gather(data, ref)


LAYOUTS = ('data', 'replicas', 'workers')
SEED_LOOPS = ('vmap', 'map')


def seed_map(fn, seed_loop='vmap', in_axes=0):
  """`fn` over a leading seed axis of its arguments and outputs: `jax.vmap(fn, in_axes)`, or
  with seed_loop='map' a loop over the seeds whose body is `fn` of one seed.

  Under vmap a product's batched form may sum in another order than the single one (XLA:CPU
  blocks them differently), so a seed's numbers can differ from its run alone in the last bits.
  The loop computes one seed at a time with the same compiled body whatever the number of
  seeds: its trip count is hidden from XLA (an optimization barrier) and a single seed's axis
  is padded to two slots, so a one-seed run is a loop of one trip over the same body, not one
  XLA would inline or compile in another context (where LLVM may contract another a·b + c·d
  into a fused multiply-add, or sum in another order). A seed trained with others is then, bit
  for bit, its run as a group of one, config.seeds = (s,) (tested in every family). `in_axes`: 0
  or None per argument (a prefix tree, as vmap's); a None part is given to every seed as it
  is."""
  if seed_loop not in SEED_LOOPS:
    raise ValueError(f'unknown seed_loop {seed_loop!r}; choose one of {SEED_LOOPS}')
  if seed_loop == 'vmap':
    return jax.vmap(fn, in_axes=in_axes)
  is_axis = lambda x: x is None or isinstance(x, int)

  def mapped(*args):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    pick = lambda seeded: tuple(
        jax.tree.map(lambda ax, x: x if (ax is None) != seeded else None, a, arg, is_leaf=is_axis)
        for a, arg in zip(axes, args))
    seeded, shared = pick(True), pick(False)
    join = lambda xs: tuple(
        jax.tree.map(lambda ax, x, y: y if ax is None else x, a, m, s, is_leaf=is_axis)
        for a, m, s in zip(axes, xs, shared))
    seeds = jax.tree.leaves(seeded)[0].shape[0]
    # One seed: its slot and an unread copy, so the body indexes an axis of 2 as it does for
    # any number of seeds (on an axis of 1 XLA drops the indexing and compiles the body
    # otherwise: without the copy the ladder's BP and FA seeds differ from their runs alone at
    # XLA's default compile level, tests/test_default_compile_level.py).
    slots = max(seeds, 2)
    if seeds == 1:
      seeded = jax.tree.map(lambda x: jnp.concatenate([x, x]), seeded)
    one_seed = lambda i: fn(*join(jax.tree.map(
        lambda x: jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False), seeded)))
    out = jax.tree.map(lambda s: jnp.zeros((slots, *s.shape), s.dtype),
                       jax.eval_shape(one_seed, 0))

    def body(i, out):
      return jax.tree.map(lambda o, y: jax.lax.dynamic_update_index_in_dim(o, y, i, 0), out,
                          one_seed(i))
    trips = jax.lax.optimization_barrier(jnp.int32(seeds))  # not a constant XLA unrolls
    out = jax.lax.fori_loop(0, trips, body, out)
    return out if seeds == slots else jax.tree.map(lambda o: o[:seeds], out)
  return mapped


def make_train_chunk(step_fn, mesh, layout='data', state_axes=0, seed_loop='vmap'):
  """jit(shard_map(scan(step_fn))): (state, data, idx) -> (state, metrics [S, ...]).

  `data` is the whole training split, replicated; `idx` holds the batch
  indices of S consecutive steps (or, streamed, a tuple of the S steps' batches,
  `data` then empty). The state is donated. Layouts:
    data      one model, state replicated; idx [S, B] sharded over DATA on B.
    replicas  a leading seed axis on the state (replicated), the seeds run by seed_map:
              a loop over them (`seed_loop` 'map') or vmapped ('vmap'); `state_axes`: the
              seed axes of the state's parts, e.g. None for a frozen backbone the seeds
              share; idx [S, R, B] sharded on B: every seed's batch is split over devices.
    workers   a leading worker axis on the state, sharded over DATA (K/D
              workers per device, vmapped); idx [S, K, b] sharded on K: each
              worker steps on its own batch; no collective inside the step.
  """
  if layout not in LAYOUTS:
    raise ValueError(f'unknown layout {layout!r}; choose one of {LAYOUTS}')

  def one(state, data, idx):
    if layout == 'data':
      return step_fn(state, batch_of(data, idx))
    if layout == 'workers':
      return jax.vmap(lambda s, i: step_fn(s, batch_of(data, i)))(state, idx)
    # Seeds: a shared part (a frozen backbone, axis None) leaves the step unchanged, so it is
    # put back after the seeds' step rather than returned by it (under vmap or the loop alike).
    shared = getattr(state_axes, 'frozen', 0) is None  # state_axes 0: nothing shared

    def seed_step(s, i):
      new, metrics = step_fn(s, batch_of(data, i))
      return (new.replace(frozen=None) if shared else new), metrics
    new, metrics = seed_map(seed_step, seed_loop, in_axes=(state_axes, 0))(state, idx)
    return (new.replace(frozen=state.frozen) if shared else new), metrics

  def chunk(state, data, idx):
    if jax.tree.leaves(idx)[0].shape[0] == 1:
      # No loop for one step: XLA:CPU runs convolution gradients ~25x slower
      # inside a while loop (seen with jax 0.10.2), so conv nets use S = 1 there.
      state, metrics = one(state, data, jax.tree.map(lambda x: x[0], idx))
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(lambda s, i: one(s, data, i), state, idx)

  state_spec = P(DATA) if layout == 'workers' else P()
  idx_spec = {'data': P(None, DATA), 'replicas': P(None, None, DATA),
              'workers': P(None, DATA)}[layout]
  metrics_spec = P(None, DATA) if layout == 'workers' else P()
  # check_vma=False: gradients are per-device values until the explicit pmean.
  sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(state_spec, P(), idx_spec),
                          out_specs=(state_spec, metrics_spec), check_vma=False)

  def run(state, data, idx):
    if isinstance(idx, tuple):  # streamed: one batch per step, stacked in the same program
      idx = jax.tree.map(lambda *steps: jnp.stack(steps), *idx)
    return sharded(state, data, idx)
  return jax.jit(run, donate_argnums=0)


def make_diagnostics(diag_fn, mesh):
  """jit(shard_map): (state, data, idx [B]) -> diagnostics of one step (single-model layout)."""
  sharded = jax.shard_map(lambda state, data, idx: diag_fn(state, batch_of(data, idx)), mesh=mesh,
                          in_specs=(P(), P(), P(DATA)), out_specs=P(), check_vma=False)
  return jax.jit(sharded)
