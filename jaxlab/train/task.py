"""What an experiment family hands to the shared trainer."""

import dataclasses
from typing import Any, Callable, Sequence

import jax
import optax


@dataclasses.dataclass(frozen=True)
class Task:
  """A model to train: its parameters, how to call it, how to partition it.

  apply(params, images, train, rng) -> logits, with float images NHWC.
  rules: ordered (regex, label) partition rules over '/'-joined paths.
  loss(logits, labels) -> per-example losses [b] (default: softmax cross-entropy); the
    step takes their mean over the real examples of the global batch.
  hold_schedule(step) -> frozenset of trainable labels to hold still at that
    step (selective freezing); each distinct set compiles its own step.
  diagnostics: labels whose grad/update norms (and, for two, the cosine of
    their logit-space effects) the trainer measures every `diagnostics_every`
    steps with its own compiled function, outside the timed training step.
  diagnostics_every: how often (in steps) to measure them; 0: every
    train.log_every_steps.
  grad_fn(live, rest, images, labels, rng, extra, *, weight, denom) -> ((loss, logits), grads):
    a custom gradient (e.g. a credit-assignment rule) in place of autodiff of
    `loss`; `rest` holds the non-live params, `extra` is TrainState.extra; the
    loss is sum(weight · per-example loss) / denom, this device's share of the
    global batch's mean over its real examples (weight 0 marks padding).
  extra: initial TrainState.extra (e.g. fixed feedback matrices).
  seeds: when set, `params` and `extra` carry a leading axis, one entry per
    seed, and the trainer runs all seeds together in one program (each
    seed with its own data order, augmentation and optimizer state).
  seed_loop: how those seeds run in the program (SEED_LOOPS): 'map' (the default: a loop over
    the seeds whose body is the computation of one seed, compiled alike for any number of
    seeds, so each seed's numbers are, bit for bit, those of its run as a group of one,
    config.seeds = (s,); see jaxlab.train.step.seed_map) or 'vmap' (batched ops: equal to
    that run only to float32 rounding, as XLA:CPU sums a batched product in another order).
  workers: a jaxlab.parallel.local.LocalSpec: train K workers with their own
    data shards and optimizer states, averaging parameters every J steps.
  controller: optional host-side controller with `init_extra()` (the initial
    TrainState.extra, e.g. learning-rate scales) and `observe(extra,
    first_step, metrics) -> extra`, called after every dispatch.
  backbone: where the frozen parameters come from (e.g. {'source': 'timm', 'path': FILE}),
    recorded in workdir/backbone.json when checkpoints leave them out
    (checkpoint.params='trainable').
  """
  params: Any
  apply: Callable[..., jax.Array]
  rules: Sequence[tuple[str, str | None]]
  loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  hold_schedule: Callable[[int], frozenset] | None = None
  diagnostics: tuple[str, ...] = ()
  diagnostics_every: int = 0
  grad_fn: Callable[..., Any] | None = None
  extra: Any = None
  seeds: tuple[int, ...] | None = None
  seed_loop: str = 'map'
  workers: Any = None
  controller: Any = None
  backbone: dict | None = None

  def initial_extra(self):
    out = dict(self.extra or {})
    if self.controller is not None:
      out.update(self.controller.init_extra())
    return out

  def held_at(self, step):
    return frozenset() if self.hold_schedule is None else frozenset(self.hold_schedule(step))

  def example_loss(self, logits, labels):
    """Per-example losses [b]."""
    if self.loss is not None:
      return self.loss(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def with_label_smoothing(task, epsilon):
  """`task` trained on the cross-entropy with targets (1 − ε)·one-hot + ε/classes (PyTorch's
  CrossEntropyLoss(label_smoothing=ε), timm's LabelSmoothingCrossEntropy); ε = 0 returns it
  unchanged. A task with its own loss or gradient (a credit-assignment rule) is refused."""
  if not epsilon:
    return task
  if task.grad_fn is not None or task.loss is not None:
    raise ValueError('label smoothing replaces the softmax cross-entropy, and this task computes '
                     'its own loss or gradient')

  def loss(logits, labels):
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, epsilon))

  return dataclasses.replace(task, loss=loss)


def flax_apply(model):
  """Task.apply for a Linen module with an optional 'dropout' rng."""
  def apply(params, images, train, rng):
    rngs = {'dropout': rng} if rng is not None else None
    return model.apply({'params': params}, images, train=train, rngs=rngs)
  return apply
