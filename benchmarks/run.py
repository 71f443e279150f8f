"""The speed suite: each family's full training step (on-device augmentation included), timed
the way the trainer runs it, with XLA's FLOP count and the fraction of the device's peak.

  python -m benchmarks                   # real sizes (a GPU machine)
  python -m benchmarks --small           # CPU sizes: tiny models, small batches
  python -m benchmarks --small --only=lenet/64,vit_tiny/plain
  python -m benchmarks --small --torch_python=/tmp/tvenv/bin/python   # race PyTorch too

Workloads (real size on a GPU; real size on a CPU in parentheses; --small in brackets):
  peft/<method>[@held]  ViT-S/16 at 224 px from 32 px CIFAR images, batch 128 (8) [the quick
                        ViT, batch 8], for norm, lora, hybrid_parallel, deep_lora and the
                        hybrids' freeze states (a CPU runs the four methods only); with
                        --largest also at the largest batch that fits
  ladder                a ResMLP ladder cell (BP, every block trainable) with 3 seeds vmapped,
                        d 256, L 4, batch 128 [d 64, L 2]
  vit_tiny/<residual>   ViT-Ti/4 at 32 px, batch 256, plain / mhc_static / mhc_dynamic, bf16
                        (batch 64, fp32) [the mhc quick ViT, batch 64, fp32]
  vit_tiny/race         the plain ViT-Ti/4 as PyTorch's reference has it: learned position
                        embedding, flip + normalisation only (no RandAugment, no erasing)
  lenet/<batch>         LeNet-5 at batch 64 and 8192 (64 and 1024) [64 and 1024]
  seeds/<model>/<n>     LeNet-5 at batch 64 and the ladder cell (sizes as above) with n = 1
                        and n = 3 seeds vmapped in one step: the seeds' cost (3 seeds' step
                        time over 1 seed's, target ≤ 2)
  local/<arm>           LeNet-5, 4 workers (or one per device if more) × batch 64 [16] a step:
                        sync (one model, the same images a step in one global batch over the
                        devices) or local SGD averaging every 1, 8, 32 steps
                        (j1, j8, j32); the average is compiled and timed apart and its cost
                        spread over the J steps of a round; on a CPU, 4 simulated devices
  loop/<workload>       loop efficiency: the trainer's img/s over a bare loop of the same
                        compiled step, one step per dispatch (ladder and the PEFT methods at
                        the --small sizes; see benchmarks/loop.py)
  ladder_time/<variant> one epoch of each rule's k = L ladder cell by the trainer, compile
                        included, and both ladders' projected time (benchmarks/ladder_time.py)

With --torch_python, the PEFT, ladder, LeNet-5 and vit_tiny/race rows race PyTorch eager and
torch.compile (the model compiled; see benchmarks/torch_refs.py), the same batch and precision.

Each workload runs in its own process (its peak memory is its own): the step is compiled ahead
of time, run --warmup times, then timed over --steps steps, each ended by block_until_ready.
FLOPs are XLA's cost analysis of the same step lowered for one device (see step_flops).
Results: benchmarks/results/suite_<device>_<date>[_small].json and a markdown table printed
for docs/benchmarks.md.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from jaxlab import host

from benchmarks.workloads import (LOCAL_ARMS, LOCAL_WORKERS, WORKLOADS, default_out,
                                  default_workloads, index_drawer, make_workload, placed_step,
                                  sizes_of)

RESULT_PREFIX = 'SUITE_JSON '

# Dense tensor-core peaks (FLOP/s, no sparsity) of each accelerator by the dtype a row computes
# in: bfloat16, and float32 as JAX multiplies it there by default (TF32 on NVIDIA GPUs from
# Ampere on). A device kind matches a name as a whole word sequence, after the vendor's prefix
# ('NVIDIA H100 80GB HBM3' is an H100 SXM; 'NVIDIA L40S' is not an L4); None where unknown
# (CPUs, a dtype a device has no tensor-core path for).
PEAK_FLOPS = (
    ('H200', {'bfloat16': 989e12, 'float32': 494.7e12}),
    ('H100 PCIe', {'bfloat16': 756e12, 'float32': 378e12}),
    ('H100', {'bfloat16': 989e12, 'float32': 494.7e12}),  # SXM
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
    ('L40S', {'bfloat16': 362e12, 'float32': 183e12}),
    ('L40', {'bfloat16': 181e12, 'float32': 90.5e12}),
    ('L4', {'bfloat16': 121e12, 'float32': 60e12}),
    ('A10', {'bfloat16': 125e12, 'float32': 62.5e12}),
    ('RTX 4090', {'bfloat16': 165e12, 'float32': 82.6e12}),
    ('RTX 3090', {'bfloat16': 71e12, 'float32': 35.6e12}),
    ('V100', {'float32': 15.7e12}),  # no bfloat16 tensor cores (its 125e12 is float16)
    ('TPU v4', {'bfloat16': 275e12}),
    ('TPU v5 lite', {'bfloat16': 197e12}),  # v5e
    ('TPU v5e', {'bfloat16': 197e12}),
)
_VENDOR_PREFIXES = ('nvidia ', 'geforce ', 'tesla ')


def peak_flops(device_kind, dtype='bfloat16'):
  """The peak of PEAK_FLOPS for `device_kind` and `dtype`, or None."""
  kind = (device_kind or '').lower().strip()
  for prefix in _VENDOR_PREFIXES:
    kind = kind[len(prefix):] if kind.startswith(prefix) else kind
  for name, peaks in PEAK_FLOPS:
    if re.match(re.escape(name.lower()) + r'(?![\w])', kind):
      return peaks.get(str(dtype))
  return None


def step_flops(name, small, held, batch=0):
  """FLOPs of one training step of workload `name` at `batch` (0: its own), all devices together:
  XLA's cost analysis of the step lowered (not compiled) for one device of this machine, with
  library convolutions. One device, because a partitioned program's count is per device;
  lowered, because the compiled count sees a loop body once, and the patch convolution loops
  over chunks of the batch. Seeds trained together are counted vmapped: the count of a loop over
  the seeds (Task.seed_loop 'map', the trainer's default) sees one seed, which made the rows of
  3 seeds report a third of their FLOPs. On a CPU, any workload's FLOPs at any sizes
  (JAXLAB_BENCH_SIZES=gpu: the GPU rows'; the math is the same, the attention is XLA's). None
  where XLA gives none."""
  import dataclasses

  import jax
  import numpy as np

  from jaxlab.parallel.mesh import make_mesh
  from jaxlab.train.setup import build_setup
  config, task, shape, _ = make_workload(name, small, conv_impl='xla')
  task = dataclasses.replace(task, seed_loop='vmap')
  if batch:
    with config.unlocked():
      config.train.batch_size = batch
  mesh = make_mesh(jax.devices()[:1])
  setup = build_setup(config, task, mesh, total_steps=10_000, steps_per_epoch=100)
  spec = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  pool = max(4 * config.train.batch_size, 512)
  data = {'image': jax.ShapeDtypeStruct((pool, *shape), np.uint8),
          'label': jax.ShapeDtypeStruct((pool,), np.int32)}
  indices = index_drawer(np.random.default_rng(0), pool, config.train.batch_size, setup, mesh)()
  return flops_of(setup.chunk_fn(held).lower(spec(setup.state), data, spec(indices)))


def flops_of(program):
  """XLA's FLOP count of a lowered or compiled program, or None where it gives none."""
  cost = program.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and cost.get('flops', -1) >= 0 else None


def time_workload(name, small, steps, warmup, seed=0, profile='', batch=0):
  """Compile and time one workload in this process; returns its record. With `profile` (a
  directory), the timed steps are also captured as a jax.profiler trace there; `batch` > 0
  replaces the workload's batch size (per worker for local SGD)."""
  import jax
  import numpy as np

  from jaxlab.metrics.classification import count_params
  from jaxlab.metrics.system import peak_memory
  from jaxlab.parallel.local import make_average

  w = placed_step(name, small, batch, seed)
  config, task, held, mesh, setup = w.config, w.task, w.held, w.mesh, w.setup
  state, data, indices, compiled, compile_s = w.state, w.data, w.indices, w.compiled, w.compile_s
  batch, copies = config.train.batch_size, setup.copies
  flops, flops_source = step_flops(name, small, held, batch), 'lowered'
  if flops is None:  # a backend whose lowered programs give no count: the compiled step's
    flops = flops_of(compiled)
    flops_source = None if flops is None else 'compiled'

  def timed(call, carry, start=None):
    """carry = call(carry) warmup + steps times, each synchronised; (carry, the timed seconds).
    `start()` runs once, just before the first timed call."""
    times = []
    for i in range(warmup + steps):
      if start and i == warmup:
        start()
      t0 = time.perf_counter()
      carry = jax.block_until_ready(call(carry))
      if i >= warmup:
        times.append(time.perf_counter() - t0)
    return carry, times

  batches = iter([indices() for _ in range(warmup + steps)])  # drawn and placed before timing
  (state, metrics), times = timed(lambda c: compiled(c[0], data, next(batches)), (state, None),
                                  start=(lambda: jax.profiler.start_trace(profile)) if profile else None)
  if profile:
    jax.profiler.stop_trace()
  average = {}
  if task.workers is not None:  # the parameter average, timed apart, its cost spread over J steps
    state, avg_times = timed(make_average(task.workers, mesh).lower(state).compile(), state)
    average_s = statistics.median(avg_times)
    average = {'sync_every': task.workers.sync_every, 'average_s': average_s,
               'average_per_step_s': average_s / task.workers.sync_every}
  loss = float(np.mean(jax.device_get(metrics)['loss']))
  mem, mem_source = peak_memory()
  device = jax.devices()[0]
  median = statistics.median(times)
  per_step = median + average.get('average_per_step_s', 0.0)
  images = batch * copies
  dtype = str(config.model.get('dtype', 'float32'))
  peak = peak_flops(device.device_kind, dtype)
  return {
      'workload': name, 'batch': batch, 'copies': copies, 'held': sorted(held),
      'dtype': dtype,
      'trainable_params': count_params(state.params) // copies,
      'total_params': (count_params(state.params) // copies
                       + count_params(state.frozen) // setup.layout.frozen_copies),
      'compile_s': compile_s, 'warmup_steps': warmup, 'timed_steps': steps,
      'step_time_median_s': median, 'step_time_mean_s': statistics.fmean(times),
      **average, 'step_time_s': per_step, 'img_s': images / per_step,
      'flops_per_step': flops, 'flops_source': flops_source,
      'gflop_per_image': None if flops is None else flops / images / 1e9,
      'achieved_tflop_s': None if flops is None else flops / per_step / 1e12,
      'peak_tflop_s': None if peak is None else peak / 1e12,
      'fraction_of_peak': None if flops is None or peak is None else flops / per_step / peak,
      'peak_mem_bytes': mem, 'peak_mem_source': mem_source, 'final_loss': loss,
      'device_kind': device.device_kind, 'platform': device.platform,
      'num_devices': int(mesh.devices.size), 'jax_version': jax.__version__,
      'malloc': host.setting(),
  }


def has_torch_reference(name):
  family, _, rest = name.partition('/')
  return ((family == 'peft' and '@' not in rest) or name in ('ladder', 'vit_tiny/race')
          or family == 'lenet')


def time_torch_reference(name, batch, small, steps, warmup, amp, compile=False):
  """The PyTorch reference of a workload (run with a Python that has torch), eager or with the
  model under torch.compile; or a record with 'error' where there is none."""
  from benchmarks import torch_refs
  ok, reason = torch_refs.available()
  if not ok:
    return {'error': reason}
  family, _, rest = name.partition('/')
  common = dict(steps=steps, warmup=warmup, amp=amp, compile=compile)
  if family == 'peft' and '@' not in rest:
    return torch_refs.time_vit_peft(rest, batch=batch, small=small, classes=100, **common)
  if name == 'ladder':
    return torch_refs.time_resmlp(batch=batch, seeds=3, small=small, **common)
  if name == 'vit_tiny/race':
    return torch_refs.time_vit_tiny(batch=batch, small=small, **common)
  if family == 'lenet':
    return torch_refs.time_lenet5(batch=batch, **common)
  return {'error': f'no PyTorch reference for {name}'}


# ----------------------------------------------------------------------------- parent

LARGEST_CAP = 16384
OOM_MARKS = ('RESOURCE_EXHAUSTED', 'out of memory', 'Out of memory', 'MemoryError')


def largest_batch(start, run, cap=LARGEST_CAP):
  """The row of the largest batch that runs, doubling from 2·start up to `cap`: `run(batch)` gives
  a child's row, an 'error' one when it failed. Stops at the first out-of-memory error; any other
  error is returned as the row (with the batch tried), so a broken step never reads as a limit."""
  best, batch = None, 2 * start
  while batch <= cap:
    row = run(batch)
    if 'error' in row:
      if any(mark in row['error'] for mark in OOM_MARKS):
        break
      return {**row, 'batch_tried': batch}
    best, batch = row, 2 * batch
  return best or {'error': f'batch {2 * start} did not fit'}


# Each child takes this fraction of an accelerator's memory, set explicitly (JAX's default
# preallocation is 75%); the parent never opens the accelerator (workloads.sizes_of asks a
# child which backend there is), so every child has the device to itself.
CHILD_MEM_FRACTION = '0.90'


def child_env():
  """The environment of a benchmark child: this one's, with the memory fraction set unless the
  caller set it."""
  env = dict(os.environ)
  env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', CHILD_MEM_FRACTION)
  return env


def run_child(argv, python=None, module='benchmarks.run', prefix=RESULT_PREFIX, timeout=1800,
              devices=0):
  """Run `python -m module *argv` from the repository root; its record is the JSON on the
  stdout line starting with `prefix`, with process_wall_s added; else {'error': ...}.
  devices > 0: that many simulated CPU devices (XLA_FLAGS)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = child_env()
  if devices:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip()
  env['PYTHONPATH'] = root + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
  t0 = time.perf_counter()
  try:
    proc = subprocess.run([python or sys.executable, '-m', module, *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s', 'process_wall_s': time.perf_counter() - t0}
  for line in proc.stdout.splitlines():
    if line.startswith(prefix):
      return {**json.loads(line[len(prefix):]), 'process_wall_s': time.perf_counter() - t0}
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
  return {'error': f'exit status {proc.returncode}: ' + '\n'.join(tail),
          'process_wall_s': time.perf_counter() - t0}


def _fmt(value, spec):
  return '–' if value is None else format(value, spec)


def is_step_row(row):
  """A row of the main table (a timed training step), not a loop or ladder-time row."""
  return not row['workload'].startswith(('loop/', 'ladder_time/'))


def torch_ratio(row, key):
  """Our img/s over PyTorch's (`key`: 'torch' eager or 'torch_compile'), or None."""
  ref = row.get(key) or {}
  return row['img_s'] / ref['img_s'] if ref.get('img_s') and row.get('img_s') else None


def markdown(rows):
  head = ('| workload | batch | dtype | img/s | s/step | GFLOP/img | TFLOP/s | % of peak | '
          'peak mem (MiB) | PyTorch eager img/s | ours / eager | torch.compile img/s | '
          'ours / compiled |')
  lines = [head, '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: '
                 '| ---: | ---: |']
  for r in filter(is_step_row, rows):
    if 'error' in r:
      lines.append(f'| {r["workload"]} | error: {r["error"][:80]} |' + ' |' * 11)
      continue
    batch = f'{r["batch"]}×{r["copies"]}' if r['copies'] > 1 else str(r['batch'])
    pct = None if r['fraction_of_peak'] is None else 100 * r['fraction_of_peak']
    eager, compiled = r.get('torch') or {}, r.get('torch_compile') or {}
    # A PyTorch child that failed says so ('failed': the error is in the JSON row and was
    # printed as the row ran), never a blank '–' that reads as "not raced".
    eager_img_s = 'failed' if 'error' in eager else _fmt(eager.get('img_s'), ',.0f')
    compiled_img_s = (_fmt(compiled.get('img_s'), ',.0f') if 'error' not in compiled
                      else 'did not compile' if compiled.get('torch_compile') else 'failed')
    lines.append(
        f'| {r["workload"]} | {batch} | {r["dtype"]} | {r["img_s"]:,.0f} | '
        f'{r["step_time_s"]:.4f} | {_fmt(r["gflop_per_image"], ".2f")} | '
        f'{_fmt(r["achieved_tflop_s"], ".3f")} | {_fmt(pct, ".1f")} | '
        f'{r["peak_mem_bytes"] / 2**20:,.0f} | {eager_img_s} | '
        f'{_fmt(torch_ratio(r, "torch"), ".2f")} | {compiled_img_s} | '
        f'{_fmt(torch_ratio(r, "torch_compile"), ".2f")} |')
  return '\n'.join(lines)


MHC_TARGETS = {'mhc_static': 1.3, 'mhc_dynamic': 1.6}  # × the plain step (issue 15)


def mhc_report(rows):
  """Markdown: each mHC arm's step time over the plain ViT's, beside its target."""
  ok = {r['workload']: r for r in rows if 'error' not in r and r['workload'].startswith('vit_tiny/')}
  plain = ok.get('vit_tiny/plain')
  if plain is None:
    return ''
  lines = ['| residual | s/step | × plain | target |', '| --- | ---: | ---: | ---: |',
           f'| plain | {plain["step_time_s"]:.4f} | 1.00 | |']
  for arm, target in MHC_TARGETS.items():
    r = ok.get(f'vit_tiny/{arm}')
    if r is not None:
      lines.append(f'| {arm} | {r["step_time_s"]:.4f} | '
                   f'{r["step_time_s"] / plain["step_time_s"]:.2f} | ≤ {target} |')
  return '\n'.join(lines)


def local_report(rows):
  """Markdown: each local-SGD arm's img/s over the synchronous step's, and the average's own
  time per round."""
  ok = {r['workload']: r for r in rows if 'error' not in r and r['workload'].startswith('local/')}
  sync = ok.get('local/sync')
  if sync is None:
    return ''
  lines = ['| local SGD | img/s | × sync (target ≥ 0.95 for J = 8, 32) | average per round (s) '
           '| its share of a round |', '| --- | ---: | ---: | ---: | ---: |',
           f'| sync | {sync["img_s"]:,.0f} | 1.00 | | |']
  for arm in LOCAL_ARMS[1:]:
    r = ok.get(f'local/{arm}')
    if r is not None:
      share = r['average_s'] / (r['average_s'] + r['sync_every'] * r['step_time_median_s'])
      lines.append(f'| {arm} | {r["img_s"]:,.0f} | {r["img_s"] / sync["img_s"]:.2f} | '
                   f'{r["average_s"]:.4f} | {share:.1%} |')
  return '\n'.join(lines)


SEEDS_TARGET = 2.0  # 3 seeds together at most twice one seed's step time


def seeds_report(rows):
  """Markdown: each seeds/<model> pair's step time with 3 seeds vmapped over 1 seed's."""
  ok = {r['workload']: r for r in rows if 'error' not in r and r['workload'].startswith('seeds/')}
  lines = ['| seeds trained together | 1 seed s/step | 3 seeds s/step | 3 / 1 | target |',
           '| --- | ---: | ---: | ---: | ---: |']
  for model in ('lenet', 'ladder'):
    one, three = ok.get(f'seeds/{model}/1'), ok.get(f'seeds/{model}/3')
    if one and three:
      lines.append(f'| {model} (batch {one["batch"]}) | {one["step_time_s"]:.4f} | '
                   f'{three["step_time_s"]:.4f} | '
                   f'{three["step_time_s"] / one["step_time_s"]:.2f} | ≤ {SEEDS_TARGET:g} |')
  return '\n'.join(lines)


# The PEFT reference run's PyTorch numbers for ViT-S/16, batch 128, 224 px, on its GPU
# (docs/references.md; the alternation ratio from the 5-epoch runs): a reference to print
# beside ours, not a like-for-like comparison off that GPU.
REFERENCE_PEFT_GPU = {
    'step_time_s': {'norm': '0.50', 'lora': '0.72-0.81', 'hybrid_parallel': '0.73',
                    'hybrid_layerwise/deep_lora': '0.57'},
    'img_s': 224,
    'alternation_over_both_live': 0.84,  # 5 epochs: alternation K=50 0.4781 s / baseline 0.5698 s
}


def freeze_report(rows):
  """Markdown: each PEFT method's step time beside the reference run's, and each held group's
  step time over the method's both-live step (alternation spends half its steps in each phase)."""
  ok = {r['workload']: r for r in rows if 'error' not in r and r['workload'].startswith('peft/')}
  if not ok:
    return ''
  lines = ["| PEFT method | ours s/step (batch) | reference GPU s/step (batch 128) "
           "| LoRA held / live "
           "| Norm held / live | alternation / live (reference 0.84) |",
           '| --- | ---: | ---: | ---: | ---: | ---: |']
  for method, reference in REFERENCE_PEFT_GPU['step_time_s'].items():
    live = ok.get(f'peft/{method}')
    if live is None:
      continue
    held = [ok.get(f'peft/{method}@{g}') for g in ('lora', 'norm')]
    ratios = [h and h['step_time_s'] / live['step_time_s'] for h in held]
    alternation = sum(ratios) / 2 if all(ratios) else None
    lines.append(f'| {method} | {live["step_time_s"]:.4f} ({live["batch"]}) | {reference} | '
                 + ' | '.join(_fmt(x, '.3f') for x in (*ratios, alternation)) + ' |')
  return '\n'.join(lines) + (f"\n\nThe reference run reached about "
                             f"{REFERENCE_PEFT_GPU['img_s']} img/s on its GPU "
                             '(not comparable to a run on another device).')


def report(rows):
  """Every table of the suite's rows, in markdown."""
  from benchmarks import ladder_time, loop
  parts = [markdown(rows), mhc_report(rows), local_report(rows), seeds_report(rows),
           freeze_report(rows),
           loop.markdown([r for r in rows if r['workload'].startswith('loop/')]),
           ladder_time.markdown([r for r in rows if r['workload'].startswith('ladder_time/')])]
  return '\n\n'.join(p for p in parts if p and p.count('\n') > 1)


def _one_line(row):
  if row['workload'].startswith('loop/'):
    return f'loop efficiency {row["loop_efficiency"]:.3f}'
  if row['workload'].startswith('ladder_time/'):
    return f'projected {row["projected_h"]:.2f} h for the ladder'
  return f'{row["img_s"]:,.0f} img/s, {row["step_time_s"]:.4f} s/step'


def time_child(args):
  """The child process's row of workload `args.workload`."""
  family, _, rest = args.workload.partition('/')
  if family == 'loop':
    from benchmarks.loop import time_loop
    return time_loop(rest, True, args.loop_steps)  # where the loop's overhead shows: small
  if family == 'ladder_time':
    from benchmarks.ladder_time import time_ladder_epoch
    return time_ladder_epoch(rest, args.small)
  return time_workload(args.workload, args.small, args.steps or 20, args.warmup,
                       profile=args.profile, batch=args.batch)


def recount_flops(path):
  """Fill the FLOP columns of a suite JSON's rows by lowering each row's step on this machine at
  the file's sizes and batches (a GPU whose lowered programs gave no count; the math is the
  same, the attention is XLA's: cuDNN's fused attention computes the same products)."""
  import jax
  with open(path) as f:
    result = json.load(f)
  rows = [r for r in result['rows'] if 'error' not in r and is_step_row(r)]
  before = os.environ.get('JAXLAB_BENCH_SIZES')
  os.environ['JAXLAB_BENCH_SIZES'] = result['sizes']
  try:
    counts = [step_flops(r['workload'], result['small'], frozenset(r['held']), r['batch'])
              for r in rows]
  finally:
    if before is None:
      del os.environ['JAXLAB_BENCH_SIZES']
    else:
      os.environ['JAXLAB_BENCH_SIZES'] = before
  for row, flops in zip(rows, counts):
    per_step, images = row['step_time_s'], row['batch'] * row['copies']
    peak = peak_flops(row['device_kind'], row['dtype'])
    row.update({
        'flops_per_step': flops,
        'flops_source': f'lowered on {jax.devices()[0].platform} (--recount_flops)',
        'gflop_per_image': flops / images / 1e9, 'achieved_tflop_s': flops / per_step / 1e12,
        'peak_tflop_s': None if peak is None else peak / 1e12,
        'fraction_of_peak': None if peak is None else flops / per_step / peak})
    print(f'{row["workload"]}: {flops / images / 1e9:.2f} GFLOP/image', file=sys.stderr)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  return result


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true', help='CPU sizes')
  p.add_argument('--only', default='', help='comma-separated workloads (default: all)')
  p.add_argument('--steps', type=int, default=0, help='timed steps (default 20)')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--torch_python', default='',
                 help='a Python with torch (and timm) to race benchmarks/torch_refs.py')
  p.add_argument('--torch_modes', default='eager,compile',
                 help='with --torch_python: race PyTorch eager, the model under torch.compile, '
                      'or both (comma-separated)')
  p.add_argument('--out', default='', help='JSON path (default benchmarks/results/...)')
  p.add_argument('--largest', action='store_true',
                 help='for each PEFT workload, also the largest batch that fits (doubling until '
                      f'out of memory, at most {LARGEST_CAP})')
  p.add_argument('--profile', default='',
                 help='capture a jax.profiler trace of the timed steps under DIR/<workload>')
  p.add_argument('--recount_flops', default='', metavar='JSON',
                 help="fill a suite JSON's FLOP columns by lowering its rows' steps here")
  p.add_argument('--workload', default='', help=argparse.SUPPRESS)  # child mode
  p.add_argument('--torch_workload', default='', help=argparse.SUPPRESS)  # torch child mode
  p.add_argument('--batch', type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument('--loop_steps', type=int, default=100,
                 help='steps of each loop-efficiency round (loop/* rows)')
  p.add_argument('--amp', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--torch_compile', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  steps = args.steps or 20
  if args.torch_workload:
    # PyTorch runs with malloc as its users have it: JAXLAB_MALLOC is jaxlab's setting, so a
    # PyTorch child leaves malloc alone (under keep PyTorch's LeNet-5 at batch 1024 ran 1.7×
    # faster, which once made the race compare kept against kept).
    print(RESULT_PREFIX + json.dumps({**time_torch_reference(
        args.torch_workload, args.batch, args.small, steps, args.warmup, args.amp,
        compile=args.torch_compile), 'malloc': host.setting()}), flush=True)
    return
  host.from_environment()  # JAXLAB_MALLOC, before JAX starts a thread (jaxlab/host.py)
  if args.workload:
    print(RESULT_PREFIX + json.dumps(time_child(args)), flush=True)
    return
  if args.recount_flops:
    print(report(recount_flops(args.recount_flops)['rows']))
    return
  sizes = sizes_of(args.small)
  chosen = [w for w in args.only.split(',') if w] or list(default_workloads(sizes))
  unknown = [w for w in chosen if w not in WORKLOADS]
  if unknown:
    p.error(f'unknown workload(s) {unknown}; choose from {", ".join(WORKLOADS)}')
  modes = [m for m in args.torch_modes.split(',') if m]
  if set(modes) - {'eager', 'compile'}:
    p.error(f'--torch_modes={args.torch_modes}: choose from eager, compile (comma-separated)')
  rows, done, t0 = [], [], time.perf_counter()
  out = args.out

  def write():
    """The suite's JSON with the rows so far (after each row: a run cut short keeps them)."""
    nonlocal out
    ok = [r for r in rows if 'error' not in r]
    first = ok[0] if ok else {}
    result = {
        'benchmark': 'suite', 'small': args.small, 'sizes': sizes,
        'device_kind': first.get('device_kind'), 'platform': first.get('platform'),
        'num_devices': first.get('num_devices'), 'jax_version': first.get('jax_version'),
        'malloc': first.get('malloc'), 'cpu_count': os.cpu_count(),
        'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'command': 'python -m benchmarks ' + ' '.join(shlex.quote(a) for a in argv),
        'complete': len(done) == len(chosen), 'rows': rows,
        'reference_peft_gpu': REFERENCE_PEFT_GPU,
    }
    out = out or default_out('suite', first.get('device_kind'), args.small)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + '.tmp', 'w') as f:
      json.dump(result, f, indent=2)
    os.replace(out + '.tmp', out)
    return result
  for name in chosen:
    print(f'[{time.perf_counter() - t0:6.0f} s] {name} ...', file=sys.stderr, flush=True)
    child = ['--workload', name, '--steps', str(steps), '--warmup', str(args.warmup)]
    if args.profile:
      child += ['--profile', os.path.join(os.path.abspath(args.profile), name.replace('/', '-'))]
    if name.startswith('loop/'):
      child += ['--loop_steps', str(args.loop_steps)]
    # Local SGD on a CPU: one simulated device per worker, as the distributed family runs.
    devices = LOCAL_WORKERS if name.startswith('local/') and sizes != 'gpu' else 0
    row = {'workload': name, **run_child(child + (['--small'] if args.small else []),
                                         devices=devices)}
    if args.torch_python and 'error' not in row and has_torch_reference(name):
      # Same batch, same precision (bf16 autocast where ours computes in bf16).
      race = (['--torch_workload', name, '--batch', str(row['batch']), '--steps', str(steps),
               '--warmup', str(args.warmup)] + (['--small'] if args.small else [])
              + (['--amp'] if row['dtype'] == 'bfloat16' else []))
      if 'eager' in modes:
        row['torch'] = run_child(race, python=args.torch_python)
      if 'compile' in modes:
        row['torch_compile'] = run_child(race + ['--torch_compile'], python=args.torch_python)
    rows.append(row)
    if args.largest and name.startswith('peft/') and 'error' not in row:
      child_small = child + (['--small'] if args.small else [])
      big = largest_batch(row['batch'], lambda b: run_child(child_small + ['--batch', str(b)]))
      rows.append({**big, 'workload': f'{name} (largest batch)'})
      print(f'    largest batch: {big.get("batch", big.get("error"))}', file=sys.stderr, flush=True)
    summary = row.get('error') or _one_line(row)
    for key in ('torch', 'torch_compile'):
      if torch_ratio(row, key):
        summary += (f'; {key} {row[key]["img_s"]:,.0f} img/s, ratio '
                    f'{torch_ratio(row, key):.2f}')
      elif 'error' in (row.get(key) or {}):
        summary += f'; {key} failed: {row[key]["error"].strip().splitlines()[-1]}'
    print(f'    {summary}', file=sys.stderr, flush=True)
    done.append(name)
    if any('error' not in r for r in rows):  # (the file is named by the device of a row)
      write()
  result = write()
  print(f'\n{result["device_kind"]} ({result["platform"]}), jax {result["jax_version"]}, '
        f'{result["date"]}, malloc: jaxlab {result["malloc"]}, PyTorch system (as its users '
        f'run it)\n\n' + report(rows))
  print(f'\nwrote {out}')


if __name__ == '__main__':
  main()
