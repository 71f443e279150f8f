"""The train state: one pytree that holds everything a step reads and writes."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step, the differentiated params, the frozen params, optimizer state, PRNG key.

  `params` holds only the trainable leaves; `frozen` the rest (never
  differentiated). `extra` is for family-specific statistics (e.g. averaged
  parameters, feedback matrices); it defaults to an empty dict.
  """
  step: jax.Array
  params: Any
  frozen: Any
  opt_state: Any
  rng: jax.Array
  extra: Any = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, params, frozen, tx, rng, extra=None):
    return cls(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
               opt_state=tx.init(params), rng=rng, extra=extra or {})
