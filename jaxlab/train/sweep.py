"""Resumable sweeps: cells run one after another, each result saved atomically as it finishes.

A rerun reads the results file and skips the cells already there for the same length of
run, so a killed sweep loses at most the cell that was running (which itself resumes from
its own checkpoints). A cell recorded for another length (a smoke run with train.steps,
then the full run) runs again: it resumes from its checkpoints and continues.
"""

import ast
import itertools
import os

from jaxlab.io.writers import read_json, write_json


def run_length(config):
  """How long a run of `config` is: what a finished cell must have run to count as done."""
  return {'train.epochs': config.train.epochs, 'train.steps': config.train.get('steps', 0)}


def run_cells(results_path, cells, log=print):
  """Run `cells` [(name, fn, length)] in order (`length`: run_length of the cell's config);
  returns {'cells': {name: fn()}} incl. earlier results of the same length."""
  results = {'cells': {}}
  if os.path.exists(results_path):
    results = read_json(results_path, f'delete {results_path}: the rerun collects each cell '
                        'again from its own workdir (finished cells are not retrained)')
  for name, fn, length in cells:
    done = results['cells'].get(name)
    if done is not None and done.get('length') == length:
      log(f'{name}: finished earlier, skipped')
      continue
    if done is not None:
      log(f'{name}: recorded for {_describe(done.get("length"))}; now {_describe(length)}')
    results['cells'][name] = {**fn(), 'length': length}
    write_json(results_path, results)  # atomic: a kill loses no finished cell
  return results


def _describe(length):
  if not length:
    return 'an unknown length'
  steps = length.get('train.steps', 0)
  return f'{length["train.epochs"]} epochs' + (f', stopping at step {steps}' if steps else '')


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
