"""One resumable sweep runner for every family: arms, cells and grids alike.

A sweep is a list of cells. Each cell trains in its own sub-workdir and, when it ends (or
diverges: a diverged cell is a result), writes its own result file there, `cell.json`,
atomically. The family's tables, figures and aggregates are then assembled from the result
files of every finished cell, so assembling again after any job gives the same files.

A rerun skips every cell whose result file records the same length of run, so a killed
sweep loses at most the cell that was running (which itself resumes from its checkpoints).
A cell recorded for another length (a smoke run with train.steps, then the full run) runs
again: it resumes from its checkpoints and continues.

`sweep.only=<cell>` runs one cell, so that a cluster can run one job per cell: each job
writes only its own cell's files (its sub-workdir, held under that sub-workdir's lock, so
that two jobs on one cell are refused) and rebuilds the assembled outputs from all the
finished cells, one job at a time (lock.serial).
"""

import ast
import dataclasses
import itertools
import json
import os
from typing import Callable

from jaxlab import checks
from jaxlab.io import lock
from jaxlab.io.writers import plain, read_json, write_json
from jaxlab.train.guards import check_sweep, run_or_diverged

RESULT_FILE = 'cell.json'


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of a sweep. `run()` trains it in `workdir` (its own sub-workdir) and returns its
  result (a JSON-able dict); `length` (run_length of the cell's config) is what a finished
  cell must have run to count as done."""
  name: str
  workdir: str
  run: Callable[[], dict]
  length: dict


def run_length(config):
  """How long a run of `config` is: what a finished cell must have run to count as done."""
  return {'train.epochs': config.train.epochs, 'train.steps': config.train.get('steps', 0)}


def only_of(config):
  """The cell `config` asks for alone (sweep.only), or '' for every cell."""
  return config.get('sweep', {}).get('only', '')


def check_only(only, names):
  """checks.BadInput unless `only` is '' or one of the cells `names`."""
  if not only or only in names:
    return
  if not names:
    raise checks.BadInput(f'sweep.only={only!r}, but this run is not a sweep (it has no cells)',
                          '--config.sweep.only', 'drop --config.sweep.only')
  raise checks.BadInput(f'sweep.only={only!r} is not a cell of this sweep', '--config.sweep.only',
                        f'choose one of {", ".join(names)} (or \'\' for every cell)')


def result_path(cell):
  return os.path.join(cell.workdir, RESULT_FILE)


def finished(cell):
  """The cell's recorded result if its result file records `cell.length`, else None."""
  path = result_path(cell)
  if not os.path.exists(path):
    return None
  record = read_json(path, f'delete {path}: the rerun collects the cell again from its own '
                     'workdir (a finished run is not retrained)')
  if not isinstance(record, dict) or 'result' not in record:
    raise checks.Damaged(f'{RESULT_FILE} is damaged: not a cell record', path,
                         f'delete {path}: the rerun collects the cell again from its own workdir')
  if record.get('length') != cell.length:
    return None
  return record['result']


def collect(cells, ran=None):
  """{name: result} of every finished cell, in the order of `cells`; `ran`: results this
  process has in hand (in a multi-process run process 0 alone writes the files: the others
  take what they ran from here, not from a file that may not have landed yet)."""
  ran = ran or {}
  results = {}
  for cell in cells:
    result = ran[cell.name] if cell.name in ran else finished(cell)
    if result is not None:
      results[cell.name] = result
  return results


def run_sweep(config, workdir, cells, assemble, log=print):
  """Run `cells` [Cell] (all, or sweep.only's alone), skipping finished ones, then assemble.

  `assemble(results, final)` writes the family's outputs from {name: result} of the finished
  cells (cells not finished are absent) and returns what the family's run returns; it is
  called after each cell this job ran (final=False) and once at the end (final=True: print
  the table). When every cell of the sweep has a result and every one diverged, raises
  guards.SweepDivergedError. Returns assemble's value."""
  names = [c.name for c in cells]
  if len(set(names)) != len(names):
    raise ValueError(f'two cells of one sweep share a name: {names}')
  only = only_of(config)
  check_only(only, names)
  ran = {}
  for cell in cells:
    if only and cell.name != only:
      continue
    with lock.hold(cell.workdir):  # a second job on this cell is refused (checks.WorkdirBusy)
      if finished(cell) is not None:
        log(f'{cell.name}: finished earlier, skipped ({result_path(cell)})')
        continue
      # As the file will hold it (JSON: NaN as null), whether assembled from here or the file.
      ran[cell.name] = json.loads(json.dumps(plain(run_or_diverged(cell.run, log))))
      write_json(result_path(cell), {'cell': cell.name, 'length': cell.length,
                                     'result': ran[cell.name]})
    with lock.serial(workdir):
      assemble(collect(cells, ran), False)
  with lock.serial(workdir):  # jobs on other cells assemble one at a time: the last sees all
    results = collect(cells, ran)
    out = assemble(results, True)
  if len(results) == len(cells):
    check_sweep(results.items(), config)
  return out


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
