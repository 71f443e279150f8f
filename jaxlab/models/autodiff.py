"""Hand-written backward passes (jax.custom_vjp) for speed, and the switch that turns them off
where forward-mode autodiff must go through the model.

A custom_vjp function cannot be differentiated forward (jax.jvp). The functions that use one
for speed alone (the same mathematics as autodiff, arranged for XLA; see vit.low_rank,
vit.materialize_grad, hyper_connections.premix / combine) check `forward_mode()` when traced
and then use their plain form, which jax.jvp can differentiate:

  with autodiff.forward_mode():
    _, tangent = jax.jvp(f, primals, tangents)
"""

import contextlib
import threading

_state = threading.local()


@contextlib.contextmanager
def forward_mode():
  """While tracing inside it, the custom backward passes give way to plain autodiff."""
  before = getattr(_state, 'forward', False)
  _state.forward = True
  try:
    yield
  finally:
    _state.forward = before


def in_forward_mode():
  return getattr(_state, 'forward', False)


def fast_or_plain(fast, plain):
  """A function that calls `fast` (with its custom_vjp), or `plain` inside forward_mode()."""
  def call(*args):
    return (plain if in_forward_mode() else fast)(*args)
  call.__doc__ = fast.__doc__
  return call
