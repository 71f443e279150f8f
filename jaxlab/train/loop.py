"""The one training loop: init or restore → steps → periodic eval → checkpoint → summary.

Side effects (files, progress bar, checkpoints) live here; the step itself is
pure (see step.py). An experiment family supplies a `Task` and a data set.
"""

import os
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxlab.data.augment import make_eval_preprocess
from jaxlab.data.pipeline import EpochIndices
from jaxlab.io.checkpoint import Checkpointer
from jaxlab.io.writers import JsonlLog, write_json
from jaxlab.metrics.classification import count_params
from jaxlab.metrics.system import peak_memory
from jaxlab.parallel.local import WorkerIndices, make_average
from jaxlab.parallel.mesh import check_divisible, make_mesh, replicate, shard_leading
from jaxlab.peft.partition import merge
from jaxlab.train.evaluate import evaluate
from jaxlab.train.setup import build, layout_of, run_keys
from jaxlab.train.step import make_eval_logits

__all__ = ['fit', 'run_keys']


def _next_stop(step, total, *periods):
  """The first step after `step` that is a multiple of any period, or `total`."""
  stops = [total] + [(step // p + 1) * p for p in periods if p and p > 0]
  return min(stops)


def fit(config, workdir, task, dataset, *, mesh=None, on_chunk=None, summary_extra=None):
  """Train `task` on `dataset` as `config` says, writing into `workdir`; returns the summary.

  Rerunning with the same config and workdir resumes from the latest
  checkpoint. `on_chunk(step, state)` is called after every dispatch (tests use
  it to interrupt a run). `summary_extra` is merged into summary.json.
  """
  tc = config.train
  mesh = mesh or make_mesh()
  workers = task.workers
  check_divisible(tc.eval_batch_size, mesh, 'eval batch size')
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  layout = layout_of(task)
  replicas = layout == 'replicas'
  seeds = task.seeds if replicas else (config.seed,)
  keys = [run_keys(s) for s in seeds]
  if workers is not None:
    indices = [WorkerIndices(keys[0][1], len(dataset.train.labels), workers.workers,
                             tc.batch_size)]
  else:
    indices = [EpochIndices(k[1], len(dataset.train.labels), tc.batch_size) for k in keys]
  spe = indices[0].steps_per_epoch
  total = tc.epochs * spe

  setup = build(config, task, mesh, total, spe)
  averager, place, chunk_fn, state = setup.averager, setup.place, setup.chunk_fn, setup.state
  if workers is not None:
    average = make_average(workers, mesh)

  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), config.checkpoint.every_steps,
                      config.checkpoint.keep)
  resumed_from = ckpt.latest_step()
  if resumed_from is not None:
    state = ckpt.restore(state)
  state = place(state)
  train_data = replicate({'image': dataset.train.images, 'label': dataset.train.labels}, mesh)
  eval_data = replicate({'image': dataset.test.images}, mesh)

  logits_fn = make_eval_logits(task, make_eval_preprocess(config.augment), mesh, replicas)

  def batch_indices(step, n):
    if replicas:  # [n, R, B]: each seed its own data order
      return np.stack([ix.chunk(step, n) for ix in indices], axis=1)
    return indices[0].chunk(step, n)  # [n, B], or [n, K, b] for workers
  compiled = {}
  add_snapshot = jax.jit(averager.update) if averager is not None else None
  log = JsonlLog(os.path.join(workdir, 'metrics.jsonl'), keep_until_step=resumed_from)

  def next_sync(state, step):
    """The step count of the next parameter average after `step` (workers only)."""
    if workers.dynamic_alpha:
      return max(int(np.max(jax.device_get(state.extra['next_sync']))), step + 1)
    return workers.next_average(step)

  def run_eval(state, params=None):
    params = merge(state.params if params is None else params, state.frozen)
    if workers is not None:  # the workers' mean (their common value right after an average)
      params = jax.tree.map(lambda x: x.mean(axis=0), params)
    return evaluate(logits_fn, params, eval_data, dataset.test.labels, tc.eval_batch_size, mesh)

  step = int(np.max(jax.device_get(state.step)))
  train_time, timed_steps, compile_time = 0.0, 0, 0.0
  comm_time, comm_rounds = 0.0, 0
  window, epoch_window = [], []
  last_eval = None
  bar = tqdm(total=total, initial=step, disable=not config.progress, unit='step',
             desc=f'{config.experiment}', dynamic_ncols=True)
  try:
    while step < total:
      every = getattr(task.controller, 'every', None)
      stop = min(_next_stop(step, total, spe, tc.log_every_steps, config.checkpoint.every_steps,
                            every, averager and averager.every),
                 step + max(tc.steps_per_dispatch, 1))
      if workers is not None:
        stop = min(stop, next_sync(state, step))
      hold = task.held_at(step)
      stop = next((s for s in range(step + 1, stop) if task.held_at(s) != hold), stop)
      n = stop - step
      idx = shard_leading(batch_indices(step, n), mesh, axis=2 if replicas else 1)
      if (n, hold) not in compiled:
        t0 = time.perf_counter()
        compiled[n, hold] = chunk_fn(hold).lower(state, train_data, idx).compile()
        compile_time += time.perf_counter() - t0
      t0 = time.perf_counter()
      state, metrics = compiled[n, hold](state, train_data, idx)
      metrics = jax.device_get(metrics)  # waits for the step: timing is device-synchronised
      dt = time.perf_counter() - t0
      if task.controller is not None:
        extra = task.controller.observe(jax.device_get(state.extra), step, metrics)
        state = state.replace(extra=place(extra))
      train_time, timed_steps, step = train_time + dt, timed_steps + n, stop
      if averager is not None and averager.due(step):
        state = state.replace(extra={**state.extra, 'average': add_snapshot(
            state.extra['average'], state.params)})
      if workers is not None and (step == next_sync(state, step - n) or step == total):  # ends as one model
        t0 = time.perf_counter()
        state = jax.block_until_ready(average(state))
        comm_time, comm_rounds = comm_time + time.perf_counter() - t0, comm_rounds + 1
      window.append((metrics, dt, n))
      epoch_window.append((metrics, dt, n))
      bar.update(n)
      bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.4f}",
                      img_s=f'{n * tc.batch_size / dt:,.0f}')

      if step % tc.log_every_steps == 0 or step == total:
        log.write(_train_record(window, step, spe, tc.batch_size))
        window = []
      ckpt.save(step, state, force=step == total)
      epoch_done = step % spe == 0
      if epoch_done:
        # A resumed epoch averages only the steps run since the restart.
        log.write({**_train_record(epoch_window, step, spe, tc.batch_size), 'split': 'train_epoch'})
        epoch_window = []
      if epoch_done and ((step // spe) % tc.eval_every_epochs == 0 or step == total):
        last_eval = (step, run_eval(state))
        log.write({'step': step, 'epoch': step // spe, 'split': dataset.eval_split,
                   **last_eval[1]})
      if on_chunk is not None:
        on_chunk(step, state)
  finally:
    bar.close()
    ckpt.close()

  final = last_eval[1] if last_eval and last_eval[0] == total else run_eval(state)
  if averager is not None:
    averaged = averager.average(state.extra['average'], state.params)
    summary_extra = {**(summary_extra or {}), 'averaged': {
        **(run_eval(state, averaged) if averaged is not None else {}),
        'snapshots': int(state.extra['average']['count']),
        'start_step': averager.start, 'every_steps': averager.every, 'window': averager.window}}
  mem_bytes, mem_source = peak_memory()
  copies = setup.copies
  if workers is not None:
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params)) // copies
    summary_extra = {
        'workers': workers.workers, 'sync_every': workers.sync_every, 'method': workers.method,
        # Computation (the local steps, incl. the first dispatch of each shape) and
        # communication (the parameter averages) measured apart.
        'compute_time_s': train_time, 'comm_time_s': comm_time, 'comm_rounds': comm_rounds,
        # Each worker sends and receives its parameters once per round (an all-reduce).
        'comm_bytes_per_round_per_worker': int(param_bytes),
        **(summary_extra or {})}
  summary = {
      **final,
      'eval_split': dataset.eval_split,
      'dataset': dataset.name,
      'steps': total,
      'epochs': tc.epochs,
      'batch_size': tc.batch_size,
      'num_devices': int(mesh.devices.size),
      'trainable_params': count_params(state.params) // copies,
      'total_params': (count_params(state.params) + count_params(state.frozen)) // copies,
      'seeds': list(seeds),
      'avg_step_time_s': train_time / timed_steps if timed_steps else None,
      # Images per second summed over the seeds or workers trained together.
      'throughput_img_s': (timed_steps * tc.batch_size * copies / train_time
                           if timed_steps else None),
      'timed_steps': timed_steps,
      'compile_time_s': compile_time,
      'peak_mem_bytes': mem_bytes,
      'peak_mem_source': mem_source,
      'resumed_from_step': resumed_from,
      **(summary_extra or {}),
  }
  write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary, state


def _train_record(window, step, spe, batch_size):
  """One metrics.jsonl record: every train metric averaged over the steps in `window`.

  NaN entries (a diagnostic of a group held still at that step) are left out
  of the average; a metric NaN at every step stays NaN (written as null).
  """
  record = {'step': step, 'epoch': step / spe, 'split': 'train'}
  for key in window[0][0]:
    values = np.concatenate([np.atleast_1d(m[key]) for m, _, _ in window]).astype(np.float64)
    finite = values[~np.isnan(values)]
    record[key] = float(finite.mean()) if finite.size else float('nan')
  seconds = sum(dt for _, dt, _ in window)
  steps = sum(n for _, _, n in window)
  record.update(step_time_s=seconds / steps, img_s=steps * batch_size / seconds)
  return record
