import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import params as partition

PARAMS = {
    'blocks': {'0': {'kernel': jnp.ones((2, 2)), 'norm': {'scale': jnp.ones(2)}},
               '1': {'kernel': jnp.ones((2, 2)), 'norm': {'scale': jnp.ones(2)}}},
    'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)},
}


def test_first_full_match_wins():
  rules = [('head/.*', 'head'), ('.*/norm/.*', 'norm'), ('blocks/1/.*', 'late'), ('.*', None)]
  labels = partition.flatten(partition.label_tree(PARAMS, rules))
  assert labels == {
      'blocks/0/kernel': 'frozen', 'blocks/0/norm/scale': 'norm',
      'blocks/1/kernel': 'late', 'blocks/1/norm/scale': 'norm',
      'head/kernel': 'head', 'head/bias': 'head'}


def test_regex_must_match_the_whole_path():
  # 'head' alone does not fully match 'head/kernel'.
  with pytest.raises(ValueError, match='head/kernel'):
    partition.label_tree(PARAMS, [('head', 'head'), ('blocks/.*', None)])


def test_unmatched_leaf_is_named():
  with pytest.raises(ValueError, match=r'blocks/0/norm/scale.*blocks/1/norm/scale'):
    partition.label_tree(PARAMS, [('.*kernel', 'w'), ('head/bias', 'b')])


def test_split_merge_roundtrip_and_frozen_not_differentiated():
  labels = partition.label_tree(PARAMS, [('head/.*', 'head'), ('.*', 'frozen')])
  trainable, frozen = partition.split(PARAMS, labels)
  assert set(partition.flatten(trainable)) == {'head/kernel', 'head/bias'}
  assert 'head' not in frozen
  merged = partition.merge(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(PARAMS)

  def loss(tr):
    p = partition.merge(tr, frozen)
    return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))

  grads = jax.grad(loss)(trainable)
  # Only the trainable leaves are differentiated: the gradient tree has no frozen leaf,
  # and the backward pass contains no computation for them.
  assert set(partition.flatten(grads)) == {'head/kernel', 'head/bias'}
  np.testing.assert_allclose(grads['head']['kernel'], 2 * np.ones((2, 3)))
  jaxpr = jax.make_jaxpr(jax.grad(loss))(trainable)
  assert len(jaxpr.jaxpr.invars) == 2
