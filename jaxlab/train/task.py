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
  loss(logits, labels) -> scalar mean loss over the (local) batch.
  hold_schedule(step) -> frozenset of trainable labels to hold still at that
    step (selective freezing); each distinct set compiles its own step.
  diagnostics: labels whose grad/update norms (and, for two, the cosine of
    their logit-space effects) the step reports.
  controller: optional host-side controller with `init_extra()` (the initial
    TrainState.extra, e.g. learning-rate scales) and `observe(extra,
    first_step, metrics) -> extra`, called after every dispatch.
  """
  params: Any
  apply: Callable[..., jax.Array]
  rules: Sequence[tuple[str, str | None]]
  loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  hold_schedule: Callable[[int], frozenset] | None = None
  diagnostics: tuple[str, ...] = ()
  controller: Any = None

  def held_at(self, step):
    return frozenset() if self.hold_schedule is None else frozenset(self.hold_schedule(step))

  def loss_fn(self, logits, labels):
    if self.loss is not None:
      return self.loss(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def flax_apply(model):
  """Task.apply for a Linen module with an optional 'dropout' rng."""
  def apply(params, images, train, rng):
    rngs = {'dropout': rng} if rng is not None else None
    return model.apply({'params': params}, images, train=train, rngs=rngs)
  return apply
