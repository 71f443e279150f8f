"""Resumable sweeps: cells run one after another, each result saved atomically as it finishes.

A rerun reads the results file and skips the cells already there, so a killed
sweep loses at most the cell that was running (which itself resumes from its
own checkpoints).
"""

import ast
import itertools
import json
import os

from jaxlab.io.writers import write_json


def run_cells(results_path, cells, log=print):
  """Run `cells` [(name, fn)] in order; returns {'cells': {name: fn()}} incl. earlier results."""
  results = {'cells': {}}
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
  for name, fn in cells:
    if name in results['cells']:
      log(f'{name}: finished earlier, skipped')
      continue
    results['cells'][name] = fn()
    write_json(results_path, results)  # atomic: a kill loses no finished cell
  return results


def parse_grid(spec):
  """'optim.lr=0.01,0.05;train.batch_size=64,128' -> [{'optim.lr': 0.01, ...}, ...] (product).

  Values are Python literals. An empty spec is the one empty cell.
  """
  axes = []
  for part in filter(None, (p.strip() for p in spec.split(';'))):
    field, sep, values = part.partition('=')
    if not sep or not values:
      raise ValueError(f'grid axis {part!r} must look like field=value1,value2')
    try:
      parsed = [ast.literal_eval(v.strip()) for v in values.split(',')]
    except (ValueError, SyntaxError):
      raise ValueError(f'grid axis {part!r}: values must be Python literals') from None
    axes.append((field.strip(), parsed))
  return [dict(zip([f for f, _ in axes], combo)) for combo in
          itertools.product(*[v for _, v in axes])]


def cell_name(overrides):
  return '_'.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in overrides.items()) or 'base'


def apply_overrides(config, overrides):
  """Set dotted fields of a (locked) ConfigDict; an unknown field is an error naming it."""
  with config.unlocked():
    for dotted, value in overrides.items():
      node = config
      *path, last = dotted.split('.')
      for key in path:
        node = node[key]
      if last not in node:
        raise ValueError(f'grid field {dotted!r} is not a config field')
      node[last] = type(node[last])(value) if isinstance(node[last], float) else value
  return config
