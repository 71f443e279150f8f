"""The one training loop: init or restore → steps → periodic eval → checkpoint → summary.

Side effects (files, progress bar, checkpoints) live here; the step itself is
pure (see step.py). An experiment family supplies a `Task` and a data set. What
depends on how the models sit on the devices is the layout's (layouts.py), how
batches reach the step the feed's (feeds.py): the loop is the same for one model,
seeds in one program, local-SGD workers, resident or streamed data, one process or many.
"""

import os
import shutil
import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxlab import checks
from jaxlab.data.augment import make_eval_preprocess
from jaxlab.data.stream import device_memory_bytes
from jaxlab.io import lock, provenance, trackers
from jaxlab.io.checkpoint import (Checkpointer, backbone_record, check_backbone,
                                  describe_backbone, saved_steps)
from jaxlab.io.tensorboard import TensorBoardLog
from jaxlab.io.writers import JsonlLog, is_writer, read_json, write_json
from jaxlab.metrics.classification import count_params
from jaxlab.metrics.system import peak_memory
from jaxlab.models import vit_arch
from jaxlab.parallel.mesh import check_divisible, make_mesh, to_host
from jaxlab.train import feeds, guards, layouts, preemption
from jaxlab.train.evaluate import ece_eval_batch_size, evaluate, make_eval_fn
from jaxlab.train.setup import build_setup
from jaxlab.train.step import seed_map

__all__ = ['fit']

# Host-side counters of a run, saved with each checkpoint: a resumed run counts on from them.
COUNTERS = ('train_time_s', 'timed_steps', 'compile_time_s', 'diagnostics_time_s',
            'input_wait_s', 'wall_time_s', 'wall_steps')


def _next_stop(step, total, *periods):
  """The first step after `step` that is a multiple of any period, or `total`."""
  stops = [total] + [(step // p + 1) * p for p in periods if p and p > 0]
  return min(stops)


def fit(config, workdir, task, dataset, *, mesh=None, on_chunk=None, summary_extra=None):
  """Train `task` on `dataset` as `config` says, writing into `workdir`; returns the summary.

  Rerunning with the same config and workdir resumes from the latest
  checkpoint; a finished run returns its summary (and restored state) without
  training (the returned summary then has finished_earlier=True; the file is
  untouched). Asked for more steps than a finished run took (train.steps), it
  continues to the same state an uninterrupted run of that length reaches;
  asked for fewer than its checkpoints hold, it is refused (checks.BadInput).
  A workdir started with another config, or resolved to another experiment
  (resolved.json: examples, steps per epoch, seeds, workers), is refused
  (guards.ResumeMismatchError); a non-finite loss or parameter stops the run
  before it is saved (guards.DivergenceError); SIGTERM, Ctrl-C (or
  `preemption.request()`) saves a checkpoint at the step reached and raises
  preemption.Preempted. The workdir is locked for the run (io.lock: a second
  writer gets checks.WorkdirBusy). `on_chunk(step, state)` is called after every
  dispatch (tests use it to interrupt a run). `summary_extra` is merged into
  summary.json. With several processes (jax.distributed) every process calls
  fit alike; process 0 alone writes the files, all of them the checkpoints.
  """
  with lock.hold(workdir), preemption.watching():
    return _fit(config, workdir, task, dataset, mesh, on_chunk, summary_extra)


def _fit(config, workdir, task, dataset, mesh, on_chunk, summary_extra):
  tc = config.train
  mesh = mesh or make_mesh()
  check_divisible(tc.eval_batch_size, mesh, 'eval batch size')
  layout = layouts.choose(config, task, mesh)
  plan = layout.batches(len(dataset.train.labels))
  spe = plan.steps_per_epoch
  total = tc.epochs * spe
  end = min(tc.steps, total) if tc.get('steps', 0) > 0 else total  # a short run stops early

  ckpt_dir = os.path.join(workdir, 'checkpoints')
  saved = saved_steps(ckpt_dir)
  if saved and saved[-1] > end:  # before anything is written
    raise checks.BadInput(
        f'{workdir} holds a run already at step {saved[-1]}, past the {end} steps asked for',
        '--config.train.steps', f'ask for {saved[-1]} steps or more (train.steps=0 runs all '
        f'{total}), or use another --workdir')
  guards.check_resume(workdir, config.to_dict(),
                      neutral=guards.neutral_fields(config.get('experiment')))
  setup = build_setup(config, task, mesh, total, spe, layout)
  trainable_only = config.checkpoint.get('params', 'all') == 'trainable'
  if task.backbone is not None or trainable_only:  # before any restore: the frozen weights
    record = backbone_record(setup.state.frozen, task.backbone)
    superseded = check_backbone(workdir, record)
    if superseded is not None:
      _start_again(workdir, f'trained on an earlier state of the pretraining it transfers from '
                   f'({describe_backbone(superseded)}; now {describe_backbone(record)})')
  guards.check_resolved(workdir, _resolved(layout, mesh, dataset, spe, total))
  ckpt = Checkpointer(ckpt_dir, config.checkpoint.every_steps, config.checkpoint.keep,
                      trainable_only)
  try:
    return _train(config, workdir, task, dataset, mesh, on_chunk, summary_extra, layout, plan,
                  setup, ckpt, end, total)
  except Exception as e:  # pylint: disable=broad-except  # a full disk or a long path: one line
    failure = checks.environment_failure(e, workdir, ckpt.nbytes(setup.state))
    if failure is None:
      raise
    raise failure from e


def _start_again(workdir, why):
  """Set aside what a run in `workdir` trained (it no longer belongs to this run), saying so."""
  print(f'note: {workdir} was {why}: its checkpoints and results are superseded; it starts '
        'again', file=sys.stderr)
  if not is_writer():
    return
  for name in ('checkpoints', 'summary.json', 'metrics.jsonl', 'tensorboard', guards.RESOLVED,
               *trackers.STATE_FILES):  # a tracked run of what was superseded is not resumed
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def _resolved(layout, mesh, dataset, spe, total):
  """What the run resolved at its start from the config, the data and the machine
  (resolved.json): guards.check_resolved compares a resumed run with it."""
  return {'layout': layout.name, 'copies': layout.copies, 'frozen_copies': layout.frozen_copies,
          'seeds': list(layout.seeds),
          'train_examples': len(dataset.train.labels),
          'eval_examples': len(dataset.test.labels), 'eval_split': dataset.eval_split,
          'steps_per_epoch': spe, 'planned_steps': total,
          'num_devices': int(mesh.devices.size), 'num_processes': jax.process_count(),
          'platform': jax.default_backend(), 'jax_version': jax.__version__}


def _train(config, workdir, task, dataset, mesh, on_chunk, summary_extra, layout, plan, setup,
           ckpt, end, total):
  tc = config.train
  spe = plan.steps_per_epoch
  averager, chunk_fn = setup.averager, setup.chunk_fn
  resumed_from = ckpt.latest_step()
  ckpt.check_space(setup.state)
  summary_path = os.path.join(workdir, 'summary.json')
  state = layout.place(setup.state)
  counters = dict.fromkeys(COUNTERS, 0.0)
  if resumed_from is not None:
    state = ckpt.restore(state)  # straight onto the mesh, each process its own shards
    counters.update(ckpt.counters(resumed_from))
    done = _finished_summary(summary_path, end)
    if done is not None and resumed_from >= end:
      ckpt.close()
      print(f'{workdir}: finished earlier (step {end}); its summary, unchanged: {summary_path}')
      return {**done, 'finished_earlier': True}, layout.finish(state, end)
  step = layout.step_of(state)
  if step == end:  # resumed at its last checkpoint: what the run hands on, as the loop would
    state = layout.finish(state, step)
  plan.chunk(step, 1)  # this epoch's order drawn (and its program compiled) before any timing
  feed = feeds.make(config.data, dataset, mesh, plan, layout.batch_axis, step, end,
                    tc.steps_per_dispatch)
  ece_batch = tc.get('ece_batch_size', 0)
  eval_batch = ece_eval_batch_size(tc.eval_batch_size, ece_batch, mesh.devices.size)
  eval_fn = make_eval_fn(task, make_eval_preprocess(config.augment), mesh,
                         layout.name == 'replicas', ece_batch)
  compiled, step_mem = {}, {}
  seeds_together = layout.name == 'replicas'
  # Seeds' snapshots through the seeds' loop, as their steps: each seed's running mean is then,
  # bit for bit, its own as a group of one (a vmapped update was not, on 8 CPU devices).
  add_snapshot = (jax.jit(seed_map(averager.update, task.seed_loop) if seeds_together
                          else averager.update) if averager is not None else None)
  board = (TensorBoardLog(os.path.join(workdir, 'tensorboard'), resumed_from)
           if config.get('log', {}).get('tensorboard', False) else None)
  tracked = trackers.open_trackers(workdir, config, resumed_from)  # MLflow, W&B runs
  log = JsonlLog(os.path.join(workdir, 'metrics.jsonl'), keep_until_step=resumed_from,
                 also=[board, *tracked])
  for tracker in tracked:  # what a crashed attempt kept but did not send
    tracker.replay(log.kept)
  # Where the run came from: the log's first record; a resumed run adds its own.
  origin = {**provenance.describe(mesh.devices.size), 'started': provenance.now(),
            'resumed_from_step': resumed_from}
  log.write({'split': 'provenance', 'step': resumed_from or 0, 'provenance': origin},
            mirror=False)
  # The evaluations of the epochs: a shorter earlier run's final one (train.steps) is not one.
  evals = [r for r in log.kept if r.get('split') == dataset.eval_split and r['step'] % spe == 0]
  diag_every = (task.diagnostics_every or tc.log_every_steps) if setup.diagnostics_fn else 0

  def run_eval(state, params=None):
    params = layout.eval_params(state.params if params is None else params, state.frozen)
    return evaluate(eval_fn, params, feed.test, len(dataset.test.labels), eval_batch,
                    mesh, feed=feed.eval_ref)

  # Counted over the whole run, across restarts (each checkpoint keeps them).
  (train_time, timed_steps, compile_time, diag_time, feed_wait, wall_time,
   wall_steps) = (counters[k] for k in COUNTERS)
  timed_steps, wall_steps = int(timed_steps), int(wall_steps)
  epoch_wall = [0.0, 0]  # this epoch's wall-clock seconds and steps
  layout.counters.update({k: counters[k] for k in layout.counters if k in counters})
  window, epoch_window, diag_window, diag_epoch = [], [], [], []
  last_eval = None
  bar = tqdm(total=end, initial=step, disable=not (config.progress and is_writer()), unit='step',
             desc=f'{config.experiment}', dynamic_ncols=True)
  queue = _Queue()

  def settle():
    """Wait for the queued steps and take in their metrics: the divergence guard, the log
    windows, the progress bar, a host-side controller (its state in state.extra, updated and
    placed back). Their time, device-synchronised here, is the span from the first one's
    batch to now."""
    nonlocal train_time, timed_steps, state
    got = queue.settle()
    if got is None:
      return
    metrics, dt, n, first = got
    bad = guards.first_nonfinite(metrics, first)
    if bad is not None:
      bar.close()
      error = guards.DivergenceError(
          *bad, ckpt.latest_step(), workdir, guards.divergence_hint(config),
          details={**(summary_extra or {}),
                   'trainable_params': count_params(setup.state.params) // setup.copies,
                   'provenance': {**origin, 'ended': provenance.now()}})
      write_json(summary_path, error.record())
      raise error
    metrics = {k: v for k, v in metrics.items() if not k.startswith('finite/')}
    train_time, timed_steps = train_time + dt, timed_steps + n
    window.append((metrics, dt, n))
    epoch_window.append((metrics, dt, n))
    bar.set_postfix(loss=f"{float(np.mean(metrics['loss'][-1])):.4f}",
                    img_s=f'{n * tc.batch_size / dt:,.0f}')
    if task.controller is not None:  # it reads every step's metrics, in order
      state = state.replace(extra=layout.place(
          task.controller.observe(to_host(state.extra), first, metrics)))
    return metrics

  try:
    with preemption.training():  # a signal now stops the loop after the step, with a save
      while step < end:
        # The wall clock of the loop as the PEFT reference code timed its own: batches, diagnostics,
        # the step and the host's work around it; compiling, saving and evaluating not.
        t_wall, compiled_before = time.perf_counter(), compile_time
        every = getattr(task.controller, 'every', None)
        stop = min(_next_stop(step, end, spe, tc.log_every_steps, config.checkpoint.every_steps,
                              every, averager and averager.every, diag_every),
                   step + max(tc.steps_per_dispatch, 1))
        stop = layout.stop_before(state, step, stop)
        hold = task.held_at(step)
        stop = next((s for s in range(step + 1, stop) if task.held_at(s) != hold), stop)
        n = stop - step
        diagnose = bool(diag_every) and step % diag_every == 0
        if diagnose or (n, hold) not in compiled:
          settle()  # diagnostics and compiles are measured apart, outside the steps' time
        t_feed = time.perf_counter()
        batches = feed.chunk(step, n)  # streamed: waits here if the host falls behind
        t_feed = time.perf_counter() - t_feed
        feed_wait += t_feed
        if diagnose:
          t0 = time.perf_counter()
          diag = to_host(setup.diagnostics_fn(hold)(state, feed.train, feed.first(batches)))
          diag_time += time.perf_counter() - t0
          diag_window.append(diag)
          diag_epoch.append(diag)
        if (n, hold) not in compiled:
          t0 = time.perf_counter()
          compiled[n, hold] = chunk_fn(hold).lower(state, feed.train, batches).compile()
          compile_time += time.perf_counter() - t0
          step_mem[n, hold] = compiled_memory(compiled[n, hold])
          check_seeds_fit(layout, step_mem[n, hold])
        # A step's time includes waiting for its batch; the metrics stay on the device until
        # settle() fetches them, so dispatches queue while the device computes.
        queue.open(step, t_feed)
        state, metrics = compiled[n, hold](state, feed.train, batches)
        queue.add(metrics, n)
        step = stop
        bar.update(n)

        logged = step % tc.log_every_steps == 0 or step == end
        epoch_done = step % spe == 0
        stopping = preemption.requested()  # every process agrees on the step it stops at
        saving = step == end or stopping or ckpt.due(step)
        averaging = averager is not None and averager.due(step)
        acting = layout.acts_after(state, step, step - n, end)
        # A controller acts every `every` steps (a chunk ends there): its steps are settled
        # then, and the steps between queue on the device like any others (one without
        # `every` sees each chunk).
        deciding = task.controller is not None and (not every or step % every == 0)
        if (logged or epoch_done or stopping or saving or averaging or acting or deciding
            or on_chunk is not None):
          metrics = settle()  # nothing is saved, logged or averaged before its steps are checked
        if averaging:
          state = state.replace(extra={**state.extra, 'average': add_snapshot(
              state.extra['average'], state.params)})
        if acting:
          state = layout.after(state, step, step - n, end)

        seconds = time.perf_counter() - t_wall - (compile_time - compiled_before)
        wall_time, wall_steps = wall_time + seconds, wall_steps + n
        epoch_wall = [epoch_wall[0] + seconds, epoch_wall[1] + n]
        if logged:
          log.write(_train_record(window, step, spe, tc.batch_size, diag_window))
          window, diag_window = [], []
        if ckpt.save(step, state, force=step == end or stopping, counters={
            **dict(zip(COUNTERS, (train_time, timed_steps, compile_time, diag_time, feed_wait,
                                  wall_time, wall_steps))),
            **layout.counters}):
          for tracker in tracked:  # the records of a checkpoint whole on disk
            tracker.commit(ckpt.durable_step())
        if step == end:  # what the run hands on; its checkpoint holds the state before this
          state = layout.finish(state, step)
        if epoch_done:
          # A resumed epoch averages only the steps run since the restart.
          log.write({**_train_record(epoch_window, step, spe, tc.batch_size, diag_epoch),
                     'split': 'train_epoch', 'wall_step_time_s': epoch_wall[0] / epoch_wall[1]})
          epoch_window, diag_epoch, epoch_wall = [], [], [0.0, 0]
        if epoch_done and ((step // spe) % tc.eval_every_epochs == 0 or step == end):
          last_eval = (step, run_eval(state))
          record = {'step': step, 'epoch': step // spe, 'split': dataset.eval_split,
                    **last_eval[1]}
          log.write(record)
          evals.append(record)
        if stopping:
          if window:  # the steps since the last log line, so none is missing on resume
            log.write(_train_record(window, step, spe, tc.batch_size, diag_window))
          signum = preemption.signal_received()
          preemption.clear()
          raise preemption.Preempted(step, workdir, signum)
        if on_chunk is not None:
          on_chunk(step, state)
  except BaseException:
    ckpt.close()  # the last save whole on disk: what the tracked run may hold
    for tracker in tracked:  # the tracked run ends unfinished; a resume reopens it
      tracker.commit(ckpt.durable_step())
      tracker.close()
    raise
  finally:
    bar.close()
    ckpt.close()
    feed.close()

  if last_eval and last_eval[0] == end:
    final = last_eval[1]
  else:
    final = run_eval(state)
    record = {'step': end, 'epoch': end / spe, 'split': dataset.eval_split, **final}
    log.write(record)
    evals.append(record)
  best = _best_eval(evals)
  if averager is not None:
    averaged = averager.average(state.extra['average'], state.params,
                                layout.name == 'replicas')
    summary_extra = {**(summary_extra or {}), 'averaged': {
        **(run_eval(state, averaged) if averaged is not None else {}),
        'snapshots': averager.snapshots(state.extra['average']),
        'start_step': averager.start, 'every_steps': averager.every, 'window': averager.window}}
  if 'ema' in state.extra:  # the parameter EMA, evaluated beside the final parameters
    ema = jax.tree.map(lambda e, x: e.astype(x.dtype), state.extra['ema'], state.params)
    summary_extra = {**(summary_extra or {}), 'ema': {
        **run_eval(state, ema), 'decay': float(tc.get('ema_decay', 0.0))}}
  runtime_bytes, runtime_source = peak_memory()
  copies = setup.copies
  step_bytes = max(step_mem.values(), default=None)
  summary = {
      **final,
      **best,
      'status': 'finished',
      'eval_split': dataset.eval_split,
      'dataset': dataset.name,
      'steps': end,
      'planned_steps': total,
      'steps_per_epoch': spe,
      'drop_last': bool(tc.drop_last),
      'data_placement': feed.placement,
      'epochs': tc.epochs,
      'batch_size': tc.batch_size,
      'num_devices': int(mesh.devices.size),
      'trainable_params': count_params(state.params) // copies,
      'total_params': (count_params(state.params) // copies
                       + count_params(state.frozen) // layout.frozen_copies),
      'seeds': list(layout.seeds),
      'num_processes': jax.process_count(),
      # A ViT's attention: 'xla' or cuDNN's fused kernel ('cudnn'; model.attention).
      **({'attention': vit_arch(config.model)['attention']}
         if config.model.get('name') == 'vit' else {}),
      # The training step alone: diagnostics and evaluation run outside it.
      'avg_step_time_s': train_time / timed_steps if timed_steps else None,
      # The loop's wall clock a step, batches and diagnostics included (compiles, checkpoint
      # saves and evaluations not): the step time as the PEFT reference code measured it.
      'wall_step_time_s': wall_time / wall_steps if wall_steps else None,
      # Images per second summed over the seeds or workers trained together.
      'throughput_img_s': (timed_steps * tc.batch_size * copies / train_time
                           if timed_steps else None),
      'timed_steps': timed_steps,
      # Of the step time, the time spent waiting for batches (the host's share when streaming).
      'input_wait_s': feed_wait,
      'compile_time_s': compile_time,
      'diagnostics_time_s': diag_time,
      # This run's own figure: XLA's memory analysis of its compiled training step
      # (arguments + outputs − donated aliases + temporaries), on every backend.
      'peak_mem_bytes': step_bytes,
      'peak_mem_source': MEMORY_SOURCE if step_bytes is not None else None,
      # What the runtime saw: the process's peak so far (earlier runs of a sweep included).
      'runtime_peak_mem_bytes': runtime_bytes,
      'runtime_peak_mem_source': runtime_source,
      'resumed_from_step': resumed_from,
      'provenance': {**origin, 'ended': provenance.now()},
      **layout.summary(state, train_time),
      **(summary_extra or {}),
  }
  write_json(summary_path, summary)
  if board is not None:
    board.close()
  for tracker in tracked:
    tracker.finish(summary, end)
  return summary, state


MEMORY_SOURCE = 'xla_memory_analysis'


def check_seeds_fit(layout, needed):
  """Seeds trained together (the Replicas layout) whose compiled step needs more memory than a
  device has (stream.device_memory_bytes: its limit, or on the CPU its share of the host's
  memory) are refused before the step runs: checks.SeedsDoNotFit."""
  if layout.name != 'replicas' or len(layout.seeds) < 2 or needed is None:
    return
  available = device_memory_bytes()
  if needed > available:
    raise checks.SeedsDoNotFit(layout.seeds, needed, available)


def compiled_memory(compiled):
  """Bytes the compiled step needs on one device: arguments + outputs − aliased + temporaries
  (None where the backend gives no analysis)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Some backends do not implement it.
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


class _Queue:
  """Dispatched steps whose metrics are still on the device, and when the first was fed."""

  def __init__(self):
    self.pending, self.t0, self.first = [], None, None

  def open(self, step, t_feed):
    """Before a dispatch: the queue's clock starts at the first one's batch."""
    if not self.pending:
      self.t0, self.first = time.perf_counter() - t_feed, step

  def add(self, metrics, n):
    self.pending.append((metrics, n))

  def settle(self):
    """(host metrics of the queued steps, each [steps, ...]; their seconds; their count; the
    step before the first) after waiting for them, or None if none is queued."""
    if not self.pending:
      return None
    host = to_host([m for m, _ in self.pending])  # waits for the last of them
    dt = time.perf_counter() - self.t0
    n = sum(k for _, k in self.pending)
    metrics = {k: np.concatenate([np.asarray(m[k]) for m in host]) for k in host[0]}
    self.pending = []
    return metrics, dt, n, self.first


def _finished_summary(path, end):
  """The summary of a run that finished at step `end`, or None."""
  if not os.path.exists(path):
    return None
  summary = read_json(path, f'delete {path}: the rerun evaluates the last checkpoint again and '
                      'writes it anew')
  if not isinstance(summary, dict):
    return None
  if summary.get('status') == 'finished' and summary.get('steps') == end:
    return summary
  return None


def _best_eval(records):
  """acc1_best and best_epoch over the run's evaluation records (the PEFT reference run reports
  the best epoch); with several seeds, the best of their mean."""
  evals = [r for r in records if r.get('acc1') is not None]
  if not evals:
    return {}
  best = max(evals, key=lambda r: (r['acc1'], -r['step']))
  return {'acc1_best': best['acc1'], 'best_epoch': best['epoch'], 'best_step': best['step']}


def _train_record(window, step, spe, batch_size, diagnostics=()):
  """One metrics.jsonl record: every train metric averaged over the steps in `window`, and
  each diagnostic averaged over its samples taken in that span.

  NaN entries (a diagnostic of a group held still at that step) are left out
  of the average; a metric NaN at every step stays NaN (written as null).
  """
  record = {'step': step, 'epoch': step / spe, 'split': 'train'}
  sources = [m for m, _, _ in window] + list(diagnostics)
  for key in sorted({k for m in sources for k in m}):
    # A diagnostic sample replaces the step's own value of the same name (e.g. grad norms).
    chosen = [m for m in diagnostics if key in m] or [m for m, _, _ in window if key in m]
    values = np.concatenate([np.atleast_1d(m[key]) for m in chosen]).astype(np.float64)
    finite = values[~np.isnan(values)]
    record[key] = float(finite.mean()) if finite.size else float('nan')
  seconds = sum(dt for _, dt, _ in window)
  steps = sum(n for _, _, n in window)
  record.update(step_time_s=seconds / steps, img_s=steps * batch_size / seconds)
  return record
