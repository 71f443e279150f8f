"""The feedback-alignment matmul: a forward x·W whose backward sends the error through B."""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def feedback_matmul(x, w, feedback):
  """x @ w in the forward pass. Backward: dx = δ·feedbackᵀ (not δ·Wᵀ), dW = xᵀ·δ, no gradient to B.

  With feedback = W this is exactly the ordinary matmul's gradient (FA with B = W is BP).
  """
  del feedback
  return x @ w


def _fwd(x, w, feedback):
  return x @ w, (x, feedback)


def _bwd(residuals, delta):
  x, feedback = residuals
  dx = delta @ feedback.T
  dw = jnp.einsum('...i,...o->io', x, delta)
  return dx.astype(x.dtype), dw, jnp.zeros_like(feedback)


feedback_matmul.defvjp(_fwd, _bwd)
