"""Parameter partitions by ordered (regex, label) rules over '/'-joined paths, and a run's keys.

The first rule whose regex matches the whole path gives the leaf's label; a
leaf that no rule matches is an error that names it. The label FROZEN (or
None in a rule) means "not differentiated at all": `split` moves those
leaves out of the tree that the trainer differentiates.
"""

import re
from typing import Iterable, Sequence

import jax
import numpy as np
from flax import traverse_util

FROZEN = 'frozen'
Rules = Sequence[tuple[str, str | None]]


def flatten(tree):
  """{'a/b/c': leaf} for a nested dict of parameters."""
  return traverse_util.flatten_dict(tree, sep='/')


def unflatten(flat):
  """Inverse of `flatten`."""
  return traverse_util.unflatten_dict(flat, sep='/')


def label_paths(paths: Iterable[str], rules: Rules) -> dict[str, str]:
  """Label of each path: the label of the first rule that fully matches it."""
  compiled = [(re.compile(pattern), label or FROZEN) for pattern, label in rules]
  labels, unmatched = {}, []
  for path in paths:
    for regex, label in compiled:
      if regex.fullmatch(path):
        labels[path] = label
        break
    else:
      unmatched.append(path)
  if unmatched:
    shown = ', '.join(unmatched[:10]) + (' ...' if len(unmatched) > 10 else '')
    raise ValueError(
        f'{len(unmatched)} parameter(s) match no partition rule: {shown}. '
        f'Rules (regex, label), first full match wins: {list(rules)}. '
        "Add a rule for them, e.g. ('.*', 'frozen') last to freeze the rest.")
  return labels


def label_tree(params, rules: Rules):
  """A tree shaped like `params` whose leaves are the labels."""
  return unflatten(label_paths(flatten(params).keys(), rules))


def split(params, labels, held=(FROZEN,)):
  """(rest, held): two nested dicts that together hold every leaf of `params`.

  `labels` is a label tree covering `params` (or more). Leaves whose label is
  in `held` go to the second tree, all others to the first; either may be
  empty. With the default, this is (trainable, frozen).
  """
  flat_params, flat_labels = flatten(params), flatten(labels)
  rest = {k: v for k, v in flat_params.items() if flat_labels[k] not in held}
  kept = {k: v for k, v in flat_params.items() if flat_labels[k] in held}
  return unflatten(rest), unflatten(kept)


def merge(*trees):
  """Union of disjoint nested dicts (the inverse of `split`)."""
  flat = {}
  for tree in trees:
    flat.update(flatten(tree))
  return unflatten(flat)


def subtree_labels(tree, labels):
  """The labels of the leaves present in `tree` (a part of the full params)."""
  flat_labels = flatten(labels)
  return unflatten({k: flat_labels[k] for k in flatten(tree)})


def shared_copy(stacked):
  """The one copy of a tree stacked on a leading (seed) axis whose copies are all equal (the
  frozen backbone every seed transfers from), or None when any leaf differs between copies."""
  leaves = [np.asarray(x) for x in jax.tree.leaves(stacked)]
  if not all(x.ndim and all(np.array_equal(x[0], c) for c in x[1:]) for x in leaves):
    return None
  return jax.tree.map(lambda x: x[0], stacked)


def run_keys(seed):
  """(init, data, step) keys of a run, all derived from `seed`."""
  root = jax.random.PRNGKey(seed)
  return tuple(jax.random.fold_in(root, i) for i in range(3))
