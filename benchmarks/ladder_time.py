"""Whole-ladder time (`ladder_time/<variant>` rows of the suite): one epoch of a ladder cell
trained by the real trainer at the variant's real size, compile included, and the time both
ladders would take, projected from it.

A cell is one (rule, k) of the sweep with its seeds vmapped in one program (configs/ladder.py:
3 seeds, batch 128, 23 steps per dispatch, 100 epochs, evaluation every 10). For each rule the
row trains its k = L cell (every block trainable: the most work of the rule's cells, so the
projection is an upper bound) for one epoch on random data of CIFAR-10's size, and splits the
wall time into compile, training steps and the rest (the end-of-epoch evaluation, the data's
placement, the files). A run of the variant then takes, per cell,
    compile + epochs × train_epoch + (epochs / eval_every) × rest
summed over its rules × (L + 1) cells; `rest` is counted at every evaluation although the
evaluation's compile and the data's placement happen once (another reason it is an upper
bound). The seed ran both ladders (72 runs: 24 cells × 3 seeds)
in about 7 hours on one GPU.
"""

import tempfile
import time

REFERENCE_GPU_HOURS = 7.0  # the reference run (docs/references.md): both ladders, 72 runs, one GPU


def time_ladder_epoch(variant, small, rules=('bp', 'fa', 'dfa')):
  """The `ladder_time/<variant>` row: one epoch of each rule's k = L cell, and the projection."""
  import jax

  from benchmarks.workloads import random_dataset
  from configs.ladder import get_config
  from jaxlab.experiments.ladder import cells, make_task
  from jaxlab.train.loop import fit

  config = get_config('quick' if small else variant)  # small: quick's cell, digits' size
  examples, test = (1437, 360) if small else (50_000, 10_000)
  shape, classes = (32, 32, 3), 10
  dataset = random_dataset(shape, examples, classes, test=test)
  epochs, eval_every = config.train.epochs, config.train.eval_every_epochs
  depth = config.model.depth
  per_rule = {}
  for rule in rules:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.progress = False
      c.train.update(epochs=1, steps=0)
      c.checkpoint.every_steps = 10 ** 9  # the end's save only
    task = make_task(c, rule, depth, tuple(c.seeds), shape, classes)
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      summary, _ = fit(c, workdir, task, dataset)
      wall = time.perf_counter() - t0
    train = summary['avg_step_time_s'] * summary['timed_steps']
    compile_s = summary['compile_time_s']
    rest = wall - train - compile_s
    per_rule[rule] = {'wall_s': wall, 'compile_s': compile_s, 'train_epoch_s': train,
                      'rest_s': rest, 'steps_per_epoch': summary['steps_per_epoch'],
                      'img_s': summary['throughput_img_s'], 'acc1_after_one_epoch': summary['acc1']}
  cells_per_rule = len([k for r, k in cells(config) if r == config.credit.rules[0]])
  run_s, projected = project(per_rule, cells_per_rule, epochs, eval_every)
  device = jax.devices()[0]
  return {'workload': f'ladder_time/{variant}', 'variant': variant,
          'width': config.model.width, 'depth': depth, 'seeds': len(config.seeds),
          'batch': config.train.batch_size, 'steps_per_dispatch': config.train.steps_per_dispatch,
          'train_examples': examples, 'epochs': epochs, 'eval_every_epochs': eval_every,
          'cells_per_rule': cells_per_rule, 'per_rule': per_rule, 'cell_run_s': run_s,
          'projected_s': projected, 'projected_h': projected / 3600,
          'device_kind': device.device_kind, 'platform': device.platform,
          'num_devices': len(jax.devices()), 'jax_version': jax.__version__}


def project(per_rule, cells_per_rule, epochs, eval_every):
  """({rule: seconds of one cell's run}, seconds of the whole ladder) from each rule's epoch."""
  run_s = {r: v['compile_s'] + epochs * v['train_epoch_s'] + epochs / eval_every * v['rest_s']
           for r, v in per_rule.items()}
  return run_s, sum(run_s.values()) * cells_per_rule


def markdown(rows):
  ok = [r for r in rows if 'error' not in r]
  lines = ['| ladder | cells × seeds | one epoch, k = L (s): ' + ' / '.join(
      ok[0]['per_rule']) + ' | compile (s) | projected run (h) |',
           '| --- | ---: | ---: | ---: | ---: |'] if ok else []
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["workload"]} | error: {r["error"][:80]} | | | |')
      continue
    epoch = ' / '.join(f'{v["train_epoch_s"]:.1f}' for v in r['per_rule'].values())
    comp = ' / '.join(f'{v["compile_s"]:.1f}' for v in r['per_rule'].values())
    cells = r['cells_per_rule'] * len(r['per_rule'])
    lines.append(f'| {r["variant"]} (d {r["width"]}, L {r["depth"]}) | {cells} × {r["seeds"]} | '
                 f'{epoch} | {comp} | {r["projected_h"]:.2f} |')
  if ok:
    total = sum(r['projected_h'] for r in ok)
    lines.append(f'\nBoth ladders projected: **{total:.2f} h** on this machine (an upper bound: '
                 f'every cell costed as its rule\'s k = L cell); the reference run: about '
                 f'{REFERENCE_GPU_HOURS:g} GPU-hours for the 72 runs.')
  return '\n'.join(lines)
