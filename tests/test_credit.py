"""Credit rules on the residual MLP: identities that pin BP, FA, uSF and DFA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.credit import rules
from jaxlab.params import flatten

SHAPE = (8, 8, 3)
BLOCKS = (0, 1, 2)


@pytest.fixture(scope='module')
def setup():
  key = jax.random.PRNGKey(0)
  images = jax.random.normal(key, (16, *SHAPE))
  labels = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 10)
  bp = rules.make_model('bp', 10, 32, 3)
  params = bp.init(jax.random.PRNGKey(2), images[:1])['params']
  return bp, params, images, labels


def grads_of(rule, params, feedback, images, labels, rms=False):
  model = rules.make_model(rule, 10, 32, 3)
  (_, _), g = rules.credit_value_and_grad(model, rule, params, feedback, images, labels, BLOCKS,
                                          rms_normalize=rms, axis_name=None)
  return {k: np.asarray(v) for k, v in flatten(g).items()}


def test_bp_without_normalisation_is_autodiff(setup):
  bp, params, images, labels = setup
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      bp.apply({'params': p}, images), labels).mean()
  want = {k: np.asarray(v) for k, v in flatten(jax.grad(loss)(params)).items()}
  got = grads_of('bp', params, {}, images, labels)
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_fa_with_feedback_equal_to_weights_is_bp(setup):
  _, params, images, labels = setup
  fb = {b: {l: {'kernel': params[b][l]['kernel']} for l in ('fc1', 'fc2')}
        for b in ('blocks_0', 'blocks_1', 'blocks_2')}
  for rms in (False, True):
    fa, bp = grads_of('fa', params, fb, images, labels, rms), grads_of('bp', params, {}, images, labels, rms)
    for k in bp:
      np.testing.assert_allclose(fa[k], bp[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_fa_with_random_feedback_differs_below_the_top(setup):
  _, params, images, labels = setup
  model = rules.make_model('fa', 10, 32, 3)
  fb = rules.init_feedback(model, 'fa', jax.random.PRNGKey(5), SHAPE)
  fa, bp = grads_of('fa', params, fb, images, labels), grads_of('bp', params, {}, images, labels)
  # The readout and the last layer of the last block see the exact error; earlier layers do not.
  np.testing.assert_allclose(fa['out_head/kernel'], bp['out_head/kernel'], rtol=1e-6)
  np.testing.assert_allclose(fa['blocks_2/fc2/kernel'], bp['blocks_2/fc2/kernel'], rtol=1e-5)
  assert not np.allclose(fa['blocks_2/fc1/kernel'], bp['blocks_2/fc1/kernel'], rtol=1e-2)
  assert not np.allclose(fa['embed/kernel'], bp['embed/kernel'], rtol=1e-2)


def test_usf_is_fa_with_sign_feedback(setup):
  _, params, images, labels = setup
  fb = {b: {l: {'kernel': jnp.sign(params[b][l]['kernel'])} for l in ('fc1', 'fc2')}
        for b in ('blocks_0', 'blocks_1', 'blocks_2')}
  usf, fa = grads_of('usf', params, {}, images, labels), grads_of('fa', params, fb, images, labels)
  for k in fa:
    np.testing.assert_allclose(usf[k], fa[k], rtol=1e-6, atol=1e-8, err_msg=k)


def test_dfa_signal_is_the_projected_output_error(setup):
  """Block l's parameter gradient is the VJP of f_l at the hand-computed e·B_l / rms(e·B_l)."""
  bp, params, images, labels = setup
  model = rules.make_model('dfa', 10, 32, 3)
  fb = rules.init_feedback(model, 'dfa', jax.random.PRNGKey(7), SHAPE)
  got = grads_of('dfa', params, fb, images, labels, rms=True)
  logits = np.asarray(bp.apply({'params': params}, images), np.float64)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  e = (p - np.eye(10)[np.asarray(labels)]) / 16
  hs = bp.apply({'params': params}, images, method=rules.ResMLP.hidden_states)
  for i in BLOCKS:
    signal = e @ np.asarray(fb[f'blocks_{i}'], np.float64)
    signal /= np.sqrt(np.mean(signal ** 2))
    _, vjp = jax.vjp(lambda q: bp.apply({'params': {**params, f'blocks_{i}': q}}, hs[i], i,
                                        method=rules.ResMLP.branch), params[f'blocks_{i}'])
    (want,) = vjp(jnp.asarray(signal, jnp.float32))
    for k, v in flatten(want).items():
      np.testing.assert_allclose(got[f'blocks_{i}/{k}'], v, rtol=1e-4, atol=1e-7)
  embed_signal = e @ np.asarray(fb['embed'], np.float64)
  want_embed = np.asarray(images).reshape(16, -1).T @ embed_signal
  np.testing.assert_allclose(got['embed/kernel'], want_embed, rtol=1e-4, atol=1e-7)


def test_frozen_blocks_get_no_gradient(setup):
  _, params, images, labels = setup
  model = rules.make_model('bp', 10, 32, 3)
  _, g = rules.credit_value_and_grad(model, 'bp', params, {}, images, labels, (2,), axis_name=None)
  assert sorted(g) == ['blocks_2', 'embed', 'out_head', 'out_ln']
