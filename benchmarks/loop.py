"""Loop efficiency: the trainer's own images per second over a bare loop of the same compiled
step, one step per dispatch (`loop/<workload>` rows of the suite).

The bare loop is the least a Python driver can do: the compiled step called back to back on
batch indices drawn and placed beforehand, one wait at the end. The trainer (`fit`) does
what a run does: draws each batch's indices, places them, dispatches, logs, evaluates (outside
its timing) and reports `throughput_img_s`. Both run in this process, alternately, `rounds`
times; the row gives the median of each and of their ratio.
"""

import json
import os
import statistics
import tempfile
import time

import numpy as np

def time_loop(name, small, steps, rounds=3):
  """The `loop/<name>` row: trainer and bare-loop img/s of `steps` steps, `rounds` times."""
  import jax

  from benchmarks.workloads import index_drawer, make_workload, random_dataset
  from jaxlab.parallel.mesh import make_mesh, replicate
  from jaxlab.train.loop import fit
  from jaxlab.train.setup import build_setup

  def workload():
    config, task, shape, held = make_workload(name, small)
    if held:
      raise ValueError(f'loop/{name}: a held group is not a run of its own')
    with config.unlocked():
      config.progress = False
      config.train.update(steps_per_dispatch=1, log_every_steps=50, steps=steps,
                          epochs=1, eval_batch_size=32)
      config.checkpoint.every_steps = 10 * steps  # the last step's save only, outside timing
      config.data.placement = 'device'
    return config, task, shape

  config, task, shape = workload()
  batch, mesh = config.train.batch_size, make_mesh()
  dataset = random_dataset(shape, batch * steps, 10)
  setup = build_setup(config, task, mesh, total_steps=steps, steps_per_epoch=steps)
  copies = setup.copies
  data = replicate({'image': dataset.train.images, 'label': dataset.train.labels}, mesh)
  draw = index_drawer(np.random.default_rng(1), len(dataset.train.labels), batch, setup, mesh)
  state = setup.place(setup.state)
  compiled = setup.chunk_fn(frozenset()).lower(state, data, draw()).compile()
  state, _ = jax.block_until_ready(compiled(state, data, draw()))  # warm-up

  def bare():
    nonlocal state
    idx = [draw() for _ in range(steps)]
    t0 = time.perf_counter()
    for i in idx:
      state, metrics = compiled(state, data, i)
    jax.block_until_ready((state, metrics))
    return steps * batch * copies / (time.perf_counter() - t0)

  def trainer():
    """The run's own img/s (summary.json), and its img/s after the first log window (the first
    execution of a freshly compiled program is slow: allocations, thread pools, packed
    weights; the bare loop pays it in its warm-up call)."""
    config, task, _ = workload()
    with tempfile.TemporaryDirectory() as workdir:
      summary, _ = fit(config, workdir, task, dataset, mesh=mesh)
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        windows = [r for r in map(json.loads, f) if r['split'] == 'train']
    spans = [(b['step'] - a['step'], b['step_time_s']) for a, b in zip(windows, windows[1:])]
    steps, seconds = sum(n for n, _ in spans), sum(n * t for n, t in spans)
    return summary['throughput_img_s'], (steps * batch * copies / seconds if seconds else None)

  bares, trainers, steadies = [], [], []
  for _ in range(rounds):
    bares.append(bare())
    whole, steady = trainer()
    trainers.append(whole)
    steadies.append(steady)
  ratios = [t / b for t, b in zip(trainers, bares)]
  steady_ratios = [s / b for s, b in zip(steadies, bares) if s]
  device = jax.devices()[0]
  return {'workload': f'loop/{name}', 'batch': batch, 'copies': copies, 'steps': steps,
          'rounds': rounds, 'bare_img_s': bares, 'trainer_img_s': trainers,
          'bare_img_s_median': statistics.median(bares),
          'trainer_img_s_median': statistics.median(trainers),
          'loop_efficiency': statistics.median(ratios), 'loop_efficiency_rounds': ratios,
          'trainer_after_first_window_img_s': steadies,
          'log_every_steps': config.train.log_every_steps,
          'loop_efficiency_after_first_window': (statistics.median(steady_ratios)
                                                 if steady_ratios else None),
          'device_kind': device.device_kind, 'platform': device.platform,
          'num_devices': int(mesh.devices.size), 'jax_version': jax.__version__}


def _fmt(x):
  return '–' if x is None else f'{x:.3f}'


def markdown(rows):
  lines = ['| loop | batch | bare loop img/s | trainer img/s | trainer / bare (target ≥ 0.97) '
           '| the same after its first log window |', '| --- | ---: | ---: | ---: | ---: | ---: |']
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["workload"]} | error: {r["error"][:80]} | | | | |')
      continue
    batch = f'{r["batch"]}×{r["copies"]}' if r['copies'] > 1 else str(r['batch'])
    lines.append(f'| {r["workload"]} | {batch} | {r["bare_img_s_median"]:,.0f} | '
                 f'{r["trainer_img_s_median"]:,.0f} | {r["loop_efficiency"]:.3f} | '
                 f'{_fmt(r.get("loop_efficiency_after_first_window"))} |')
  return '\n'.join(lines)
